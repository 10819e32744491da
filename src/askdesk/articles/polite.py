"""The feeds' manners toward a site: its robots.txt (with `urllib.robotparser`), its Crawl-delay,
and backing off a feed that keeps failing.

robots.txt is read the RFC 9309 way: a 2xx is parsed; a 4xx (no robots.txt) allows everything;
a 5xx, a 429, a timeout or a refused connection means the site is unreachable, so nothing on it
is fetched until the next poll round asks again. A parsed or missing robots.txt is kept for
``ROBOTS_TTL_S``. The stdlib parser matches rules as path prefixes in file order: the ``*`` and
``$`` patterns and the longest-match rule of RFC 9309 are not understood.
"""

from __future__ import annotations

import time
import urllib.parse
import urllib.robotparser
from collections.abc import Callable
from dataclasses import dataclass

ROBOTS_AGENT = "askdesk"  # the product token of feeds.USER_AGENT, matched against User-agent lines
ROBOTS_TTL_S = 3600.0  # a robots.txt read (or found missing) is asked for again after an hour (RFC 9309: at most 24 h)
MAX_CRAWL_DELAY_S = 60.0  # a site asking for more between two requests is not fetched (the watcher waits in line)
BACKOFF_MIN_S = 60.0  # the back-off's base when polls are asked for more often than this
BACKOFF_MAX_S = 3600.0  # a failing feed is still tried every hour (unless polled less often anyway)


class FeedError(Exception):
    """A feed or page that could not be fetched or read: one line for the log.

    ``status`` is the HTTP status when the server answered with an error, else None.
    """

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class Disallowed(FeedError):
    """A URL its site's robots.txt does not let askdesk fetch: skipped, not a failure of the feed."""


@dataclass
class _Rules:
    parser: urllib.robotparser.RobotFileParser | None  # None: no robots.txt (4xx), everything allowed
    until: float | None  # monotonic time it is asked for again; None: unreachable, asked again next round
    why: str = ""  # why it is unreachable, for the log line


class Robots:
    """Each host's robots.txt, read once per ``ttl`` seconds through ``fetch`` (a GET of the URL
    that returns the body or raises FeedError).

    Args:
        fetch: reads a robots.txt URL (the feeds' own GET: its user agent, timeout and size cap).
        ttl: seconds a read robots.txt is kept.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(self, fetch: Callable[[str], bytes], *, ttl: float = ROBOTS_TTL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.fetch, self.ttl, self.clock = fetch, ttl, clock
        self._rules: dict[str, _Rules] = {}  # "scheme://host" -> its rules

    def new_round(self) -> None:
        """A poll round starts: unreachable sites are asked again."""
        self._rules = {k: r for k, r in self._rules.items() if r.until is not None}

    def check(self, url: str) -> float:
        """The Crawl-delay of ``url``'s site for askdesk (0 without one), when it may be fetched.

        Raises:
            Disallowed: robots.txt disallows it, or asks for more than ``MAX_CRAWL_DELAY_S`` s between requests.
            FeedError: the site's robots.txt is unreachable (5xx, timeout): nothing there is fetched this round.
        """
        parts = urllib.parse.urlsplit(url)
        site = f"{parts.scheme}://{parts.netloc}"
        rules = self._rules.get(site)
        if rules is None or (rules.until is not None and self.clock() >= rules.until):
            rules = self._rules[site] = self._read(site + "/robots.txt")
        where = f"{site}/robots.txt"
        if rules.until is None:
            raise FeedError(f"not fetched: {rules.why}: nothing on {parts.netloc} is fetched until it answers")
        if rules.parser is None:
            return 0.0
        if not rules.parser.can_fetch(ROBOTS_AGENT, url):
            raise Disallowed(f"not fetched: {where} disallows it for {ROBOTS_AGENT}")
        delay = float(rules.parser.crawl_delay(ROBOTS_AGENT) or 0)
        if delay > MAX_CRAWL_DELAY_S:
            raise Disallowed(f"not fetched: {where} asks for {delay:g} s between requests (askdesk waits at most "
                             f"{MAX_CRAWL_DELAY_S:g} s)")
        return delay

    def _read(self, url: str) -> _Rules:
        try:
            body = self.fetch(url)
        except FeedError as e:
            if e.status is not None and 400 <= e.status < 500 and e.status != 429:  # RFC 9309 "unavailable"
                return _Rules(None, self.clock() + self.ttl)  # no rules at all (429 is "slow down": unreachable)
            why = str(e) if str(e).startswith("cannot fetch") else f"{url} is unreachable ({e})"
            return _Rules(None, None, why)  # "unreachable": a complete disallow
        parser = urllib.robotparser.RobotFileParser(url)
        parser.parse(body.decode("utf-8", errors="replace").splitlines())
        return _Rules(parser, self.clock() + self.ttl)


def backoff_s(every: float, failures: int) -> float:
    """Seconds before a feed that failed ``failures`` times in a row is tried again: the poll interval
    doubled at each failure, at most ``BACKOFF_MAX_S`` (but never sooner than its next poll).

    >>> [backoff_s(900, n) / 60 for n in (1, 2, 3)]  # every 15 minutes: 30, then 60 at most
    [30.0, 60.0, 60.0]
    """
    base = max(every, BACKOFF_MIN_S)
    return max(every, min(base * 2.0 ** min(failures, 30), BACKOFF_MAX_S))


def minutes(seconds: float) -> str:
    """A wait for a log line: "30 min", or "45 s" under a minute."""
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
