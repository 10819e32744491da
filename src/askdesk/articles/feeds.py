"""Feeds: RSS and Atom subscriptions whose new entries become article files in the corpus folder.

`askdesk feed add URL` subscribes; `askdesk watch` polls each feed every ``Config.feed_every``
seconds. A new entry's page is fetched and its text extracted with trafilatura, then written as
``<corpus>/feeds/<host>/<date>-<slug>.md`` with front matter (title, date, source, url): the corpus
stays the one source of truth, and `askdesk index` rebuilds the same index from it. The watcher
indexes the file like any other that lands in the folder.

Polite by default (polite.py): the site's robots.txt is honoured (a disallowed feed or page is
one line and never fetched) and so is its Crawl-delay; conditional requests (ETag /
Last-Modified), `HOST_DELAY_S` at least between two requests to one host, a timeout, a size cap;
a feed that fails is one log line and is tried again later and later (the poll interval doubled
at each failure in a row, at most an hour), and at its next poll once it worked again; an entry
seen before is never fetched again.

The subscriptions and what was seen live in ``<corpus>/.askdesk-feeds.json`` (plain JSON, hidden
from the indexer): with the articles they produced, so a rebuilt index does not fetch them again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import BadInputError
from ..version import __version__
from .ingest import html_document, normalize_date
from .polite import Disallowed, FeedError, Robots, backoff_s, minutes

logger = logging.getLogger(__name__)

STATE = ".askdesk-feeds.json"
USER_AGENT = f"askdesk/{__version__} (feed reader; one request per host every few seconds)"
HOST_DELAY_S = 2.0  # between two requests to the same host
TIMEOUT_S = 20.0  # per request: connect and each read
MAX_FEED_BYTES = 5_000_000  # a feed or a page larger than this is not read
SEEN_KEPT = 5000  # entry ids remembered per feed (a feed lists its last few dozen)
MIN_TEXT = 200  # characters: an extracted page shorter than this falls back to the entry's summary


@dataclass
class Feed:
    """One subscription and what polling it has seen."""

    url: str
    title: str | None = None
    added: str | None = None
    etag: str | None = None
    modified: str | None = None  # the Last-Modified header, as sent
    last_poll: float | None = None  # unix time
    last_error: str | None = None
    seen: list[str] = field(default_factory=list)  # entry ids, oldest first
    failures: int = 0  # failed polls in a row (0 after one that worked)
    next_try: float | None = None  # unix time before which a failing feed is not polled again (the back-off)


class Feeds:
    """The subscriptions of one corpus folder, and the polling of them.

    Args:
        corpus: the article folder the entries are written into (and the state kept in).
        max_bytes: size cap of a feed or a page.
        host_delay: seconds between two requests to one host.
        timeout: seconds for each request.
        log: where one line per saved article or failing feed goes (default: the logger).
        now: unix time (poll times and back-off, kept in the state file); tests pass a fake clock.
        monotonic: the clock of the spacing between requests and of robots.txt's cache.
        sleep: waits out that spacing (tests pass one that moves their fake ``monotonic``).
    """

    def __init__(self, corpus: str | Path, *, max_bytes: int = MAX_FEED_BYTES, host_delay: float = HOST_DELAY_S,
                 timeout: float = TIMEOUT_S, log: Callable[[str], None] | None = None,
                 now: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.corpus = Path(corpus)
        self.path = self.corpus / STATE
        self.max_bytes, self.host_delay, self.timeout = max_bytes, host_delay, timeout
        self.log = log or logger.info
        self.now, self.monotonic, self.sleep = now, monotonic, sleep
        self.robots = Robots(lambda url: self._get(url, {}, robots=False)[1], clock=monotonic)
        self._last: dict[str, float] = {}  # host -> monotonic time of the last request
        self._lock = threading.Lock()

    # -- the subscription list ------------------------------------------------------------------
    def load(self) -> list[Feed]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            raise BadInputError(f"{str(self.path)!r} is not readable feed state ({e}); fix or delete it "
                                "(the feeds are then added again with askdesk feed add)") from None
        return [Feed(**f) for f in raw.get("feeds", [])]

    def save(self, feeds: list[Feed]) -> None:
        self.corpus.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": 1, "feeds": [asdict(f) for f in feeds]}, indent=1, ensure_ascii=False),
                       encoding="utf-8")
        os.replace(tmp, self.path)

    def add(self, url: str, *, check: bool = True) -> tuple[Feed, int]:
        """Subscribe to ``url`` (http or https): (the feed, how many entries it lists now).

        With ``check`` the feed is fetched once (no page is) and must parse as RSS or Atom.

        Raises:
            BadInputError: another scheme, a duplicate, or (``check``) a feed that cannot be read.
        """
        url = url.strip()
        if urllib.parse.urlsplit(url).scheme not in ("http", "https") or not urllib.parse.urlsplit(url).netloc:
            raise BadInputError(f"{url!r} is not an http(s) URL; give the feed's address, e.g. "
                                "https://example.org/rss.xml")
        if any(f.url == url for f in self.load()):
            raise BadInputError(f"already subscribed to {url!r}; `askdesk feed list` shows the feeds")
        feed, n = Feed(url, added=datetime.fromtimestamp(self.now(), timezone.utc).isoformat(timespec="seconds")), 0
        if check:
            import feedparser

            try:
                _, body, _ = self._get(url, {})
            except Disallowed as e:
                raise BadInputError(f"cannot subscribe to {url!r}: {e} (askdesk honours robots.txt)") from None
            except FeedError as e:
                raise BadInputError(f"cannot read the feed at {url!r}: {e}; check the address and try again") from None
            parsed = feedparser.parse(body)
            if parsed.bozo and not parsed.entries:
                raise BadInputError(f"{url!r} is not an RSS or Atom feed; give the feed's own address "
                                    "(often /feed, /rss or /atom.xml)")
            feed.title, n = parsed.feed.get("title"), len(parsed.entries)
        with self._lock:
            feeds = self.load()
            if any(f.url == url for f in feeds):
                raise BadInputError(f"already subscribed to {url!r}; `askdesk feed list` shows the feeds")
            self.save([*feeds, feed])
        return feed, n

    def remove(self, url: str) -> Feed:
        """Unsubscribe (the articles it brought stay in the corpus); raises BadInputError when not subscribed."""
        with self._lock:
            feeds = self.load()
            gone = [f for f in feeds if f.url == url.strip()]
            if not gone:
                raise BadInputError(f"not subscribed to {url!r}; `askdesk feed list` shows the feeds")
            self.save([f for f in feeds if f.url != url.strip()])
        return gone[0]

    # -- polling ----------------------------------------------------------------------------------
    def due(self, every: float, now: float | None = None) -> bool:
        """Whether any feed was last polled ``every`` seconds ago or more (or never), and is not backing off."""
        now = self.now() if now is None else now
        return any(_due(f, every, now) for f in self.load())

    def poll(self, every: float = 0.0) -> list[Path]:
        """Poll each feed not polled in the last ``every`` seconds; returns the article files written.

        Never raises for a feed or page that fails: it is logged in one line. A page that fails is
        not marked seen, and is fetched again at the next poll; a feed that fails is tried again
        after `polite.backoff_s` (``every`` doubled at each failure in a row, at most an hour).
        One that robots.txt disallows is one line at each poll, and is not fetched.
        """
        written: list[Path] = []
        self.robots.new_round()
        for feed in self.load():
            if not _due(feed, every, self.now()):
                continue
            try:
                written += self._poll_one(feed)
                feed.last_error, feed.failures, feed.next_try = None, 0, None
            except Disallowed as e:  # the site's choice, not a failure: asked again at the next poll
                feed.last_error = str(e)
                self.log(f"feed {feed.url}: {e}")
            except FeedError as e:
                feed.last_error, feed.failures = str(e), feed.failures + 1
                wait = backoff_s(every, feed.failures)
                feed.next_try = self.now() + wait
                self.log(f"feed {feed.url}: {e}; failed {feed.failures} time{'s' * (feed.failures != 1)} in a row, "
                         f"next try in {minutes(wait)}")
            feed.last_poll = self.now()
            self._update(feed)
        return written

    def _update(self, feed: Feed) -> None:
        """Write back one feed's state (another process may have added or removed feeds meanwhile)."""
        with self._lock:
            feeds = self.load()
            self.save([feed if f.url == feed.url else f for f in feeds])

    def _poll_one(self, feed: Feed) -> list[Path]:
        import feedparser

        headers = {}
        if feed.etag:
            headers["If-None-Match"] = feed.etag
        if feed.modified:
            headers["If-Modified-Since"] = feed.modified
        status, body, got = self._get(feed.url, headers)
        if status == 304:
            return []
        parsed = feedparser.parse(body)
        if parsed.bozo and not parsed.entries:
            raise FeedError(f"not an RSS or Atom feed ({type(parsed.bozo_exception).__name__}: "
                            f"{str(parsed.bozo_exception)[:80]})")
        feed.title = parsed.feed.get("title") or feed.title
        seen = set(feed.seen)
        written = []
        failed = False
        for entry in reversed(parsed.entries):  # feeds list the newest first: write the oldest first
            eid = entry.get("id") or entry.get("link") or hashlib.sha1(
                (entry.get("title", "") + entry.get("summary", "")).encode()).hexdigest()
            if eid in seen:
                continue
            try:
                path = self._save_entry(feed, entry)
            except FeedError as e:  # the page failed: logged, and fetched again at the next poll
                self.log(f"feed {feed.title or feed.url}: {entry.get('link') or eid}: {e}; "
                         "tried again at the next poll")
                failed = True
                continue
            feed.seen.append(eid)
            seen.add(eid)
            feed.seen = feed.seen[-SEEN_KEPT:]
            self._update(feed)  # seen is on disk before the next page: a crash never fetches it twice
            if path is not None:
                written.append(path)
                self.log(f"feed {feed.title or feed.url}: saved {path.relative_to(self.corpus)}")
        # Kept only when every new entry was saved: with a page still to fetch, the feed's own 304
        # to these validators would hide that entry until the feed changed.
        feed.etag, feed.modified = (None, None) if failed else (got.get("ETag"), got.get("Last-Modified"))
        return written

    def _save_entry(self, feed: Feed, entry) -> Path | None:
        """Fetch an entry's page, extract it, write the article file; None when it holds no text."""
        link = entry.get("link")
        title = _plain(entry.get("title") or "")
        date = None
        for k in ("published_parsed", "updated_parsed"):
            if entry.get(k):
                date = time.strftime("%Y-%m-%d", entry[k])
                break
        text, meta, disallowed = "", {}, None
        if link:
            try:
                status, body, got = self._get(link, {})
            except Disallowed as e:  # the feed itself was allowed: what it says of the entry may still be kept
                disallowed = e
            else:
                kind = got.get("Content-Type", "")
                if "html" in kind or not kind:
                    text, meta = _extract(body.decode(_charset(kind), errors="replace"), link)
        if len(text) < MIN_TEXT:  # no page, or trafilatura found little: the entry's own text, when longer
            summary = _plain(_entry_html(entry))
            if len(summary) > len(text):
                text = summary
        if disallowed is not None:
            kept = len(text) >= MIN_TEXT  # a teaser alone is no article
            self.log(f"feed {feed.title or feed.url}: {link}: {disallowed}; "
                     + ("saved from the feed's own text" if kept else "skipped (the feed holds only a teaser)"))
            if not kept:
                return None
        if not text.strip():
            self.log(f"feed {feed.title or feed.url}: {link or title!r} has no article text; skipped")
            return None
        title = title or meta.get("title") or "Untitled"
        date = date or normalize_date(meta.get("date"))
        source = feed.title or meta.get("sitename") or urllib.parse.urlsplit(feed.url).netloc
        return self._write(title, date, source, link, text)

    def _write(self, title: str, date: str | None, source: str, url: str | None, text: str) -> Path:
        host = re.sub(r"[^\w.-]+", "_", urllib.parse.urlsplit(url or "").netloc or "feed")
        slug = re.sub(r"[^\w-]+", "-", title.lower()).strip("-")[:60] or "article"
        digest = hashlib.sha1((url or title).encode()).hexdigest()[:8]
        folder = self.corpus / "feeds" / host
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{date or 'undated'}-{slug}-{digest}.md"
        front = {"title": title, "date": date, "source": source, "url": url}
        head = "".join(f"{k}: {json.dumps(v, ensure_ascii=False)}\n" for k, v in front.items() if v)
        tmp = folder / f".{path.name}.{os.getpid()}.part"  # hidden: the watcher and a sync skip it
        tmp.write_text(f"---\n{head}---\n{text.strip()}\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    def _get(self, url: str, headers: dict, *, robots: bool = True) -> tuple[int, bytes, dict]:
        """GET with the politeness rules: (status, body, headers); 304 has an empty body.

        With ``robots`` the site's robots.txt is asked first (Disallowed or FeedError when it says no).
        """
        host = urllib.parse.urlsplit(url).netloc
        delay = max(self.host_delay, self.robots.check(url) if robots else 0.0)
        wait = self._last.get(host, -1e9) + delay - self.monotonic()
        if wait > 0:
            self.sleep(wait)  # the poller's own thread: nothing else waits for it
        self._last[host] = self.monotonic()
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:  # noqa: S310 - http(s) only, checked at add
                size = r.headers.get("Content-Length")
                if size and size.isdigit() and int(size) > self.max_bytes:
                    raise FeedError(f"{int(size):,} bytes, over the {self.max_bytes:,}-byte limit")
                body = r.read(self.max_bytes + 1)
                if len(body) > self.max_bytes:
                    raise FeedError(f"over the {self.max_bytes:,}-byte limit")
                return r.status, body, dict(r.headers)
        except urllib.error.HTTPError as e:
            if e.code == 304:
                return 304, b"", dict(e.headers)
            raise FeedError(f"HTTP {e.code} {e.reason}", status=e.code) from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise FeedError(f"cannot fetch {url} ({reason})") from None


def _due(feed: Feed, every: float, now: float) -> bool:
    """Not polled in the last ``every`` seconds, and not backing off after a failure."""
    return ((feed.last_poll is None or now - feed.last_poll >= every)
            and (feed.next_try is None or now >= feed.next_try))


def _charset(content_type: str) -> str:
    m = re.search(r"charset=([\w-]+)", content_type or "")
    return m.group(1) if m else "utf-8"


def _extract(html: str, url: str) -> tuple[str, dict]:
    """The page's main text and metadata (title, date, sitename), with trafilatura as ingest uses it."""
    try:
        doc = html_document(html, url=url)
    except BadInputError as e:  # the reader's library fails to load: one line, the entry tried again next poll
        raise FeedError(str(e)) from None
    if not doc:
        return "", {}
    return (doc.get("text") or "").strip(), {k: doc.get(k) for k in ("title", "date", "sitename")}


def _entry_html(entry) -> str:
    content = entry.get("content") or []
    return content[0].get("value", "") if content else entry.get("summary", "")


def _plain(html: str) -> str:
    """Markup out, paragraphs kept as blank lines."""
    import html as html_mod

    text = re.sub(r"(?i)<\s*(br|/p|/div|/li|/h\d)\s*/?>", "\n\n", html or "")
    text = html_mod.unescape(re.sub(r"<[^>]+>", "", text))
    return "\n\n".join(" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip())
