"""Feeds against a local HTTP server (127.0.0.1, no outside network): new entries become article
files with front matter, conditional requests, no entry fetched twice, limits, failures in one line,
robots.txt and Crawl-delay honoured, a failing feed backed off (on a fake clock: no sleeps)."""

from __future__ import annotations

import http.server
import threading
import time
from email.utils import formatdate

import pytest
from conftest import break_html_reader, write
from test_keep_articles import fake_cli
from test_watch import expect, read_lines

from askdesk.articles.feeds import Feeds
from askdesk.articles.ingest import read_article
from askdesk.errors import BadInputError

PAGE = """<html><head><title>{title} | Harbor Times</title><meta property="og:site_name" content="Harbor Times">
<meta name="date" content="{date}"></head><body><nav>Home | News | Sport</nav><article><h1>{title}</h1>
<p>{body}</p><p>The harbour master said the work would go on through the summer, and that the fleet would
return to the inner basin once the new breakwater had been inspected by the regional authority.</p></article>
<footer>Copyright Harbor Times</footer></body></html>"""

STORIES = {
    "a1": ("Varsk harbour reopens", "2025-03-03", "The harbour of Varsk reopened on Monday after an 18-month renovation "
                                                 "that cost 42 million euros."),
    "a2": ("Ferry to Brask returns", "2025-03-04", "The ferry to Brask runs again from 9 June, the operator said, "
                                                  "with two crossings a day."),
    "a3": ("Mill in Orm hires", "2025-03-05", "The mill in Orm hired 40 workers for its new line, the owner said on "
                                             "Wednesday."),
}


def rss(base: str, ids: list[str], teasers: dict[str, str] | None = None) -> str:
    items = "".join(f"<item><title>{STORIES[i][0]}</title><link>{base}/{i}.html</link><guid>{base}/{i}</guid>"
                    f"<pubDate>{formatdate(time.mktime(time.strptime(STORIES[i][1], '%Y-%m-%d')))}</pubDate>"
                    f"<description>{(teasers or {}).get(i, 'Short teaser.')}</description></item>"
                    for i in reversed(ids))
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>Harbor Times</title><link>{base}/</link>'
            f"<description>News</description>{items}</channel></rss>")


class Site:
    """A local news site: /feed.xml (RSS with an ETag), /<id>.html pages, /broken.xml (500 while ``broken``,
    then the feed), /big.html, and /robots.txt (``robots``, answered with ``robots_status``; None: 404)."""

    def __init__(self):
        self.entries = ["a1", "a2"]
        self.teasers: dict[str, str] = {}  # entry id -> its <description>, when not "Short teaser."
        self.broken = True
        self.robots: str | None = None
        self.robots_status = 200
        self.requests: list[tuple[str, str | None, float]] = []  # (path, If-None-Match, time)
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                site.requests.append((self.path, self.headers.get("If-None-Match"), time.monotonic()))
                etag = f'"v{len(site.entries)}"'
                if self.path == "/robots.txt":
                    if site.robots is None or site.robots_status != 200:
                        self.send_response(404 if site.robots is None else site.robots_status)
                        self.end_headers()
                        return
                    return self._send(site.robots, "text/plain")
                if self.path == "/feed.xml" or (self.path == "/broken.xml" and not site.broken):
                    if self.headers.get("If-None-Match") == etag:
                        self.send_response(304)
                        self.send_header("ETag", etag)
                        self.end_headers()
                        return
                    return self._send(rss(site.base, site.entries, site.teasers), "application/rss+xml", etag=etag)
                if self.path == "/broken.xml":
                    self.send_response(500)
                    self.end_headers()
                    return
                if self.path == "/big.html":
                    return self._send("<html><body><p>" + "x" * 3_000_000 + "</p></body></html>", "text/html")
                key = self.path.strip("/").removesuffix(".html")
                if key in STORIES:
                    title, date, body = STORIES[key]
                    return self._send(PAGE.format(title=title, date=date, body=body), "text/html; charset=utf-8")
                self.send_response(404)
                self.end_headers()

            def _send(self, text: str, kind: str, etag: str | None = None):
                data = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                if etag:
                    self.send_header("ETag", etag)
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def paths(self) -> list[str]:
        return [p for p, _, _ in self.requests]


@pytest.fixture
def site():
    s = Site()
    yield s
    s.server.shutdown()


def test_new_entries_become_article_files_and_are_never_fetched_twice(tmp_path, site):
    corpus = tmp_path / "corpus"
    lines: list[str] = []
    feeds = Feeds(corpus, host_delay=0.0, log=lines.append)
    feed, n = feeds.add(f"{site.base}/feed.xml")
    assert (feed.title, n) == ("Harbor Times", 2)
    written = feeds.poll()
    assert len(written) == 2 and all(p.suffix == ".md" and ".askdesk" not in p.name for p in written)
    a = read_article(written[0], root=corpus)
    assert (a.title, a.date, a.source, a.url) == ("Varsk harbour reopens", "2025-03-03", "Harbor Times",
                                                  f"{site.base}/a1.html")
    assert "42 million euros" in a.text and "Home | News" not in a.text and "Copyright" not in a.text
    assert written[0].read_text().startswith('---\ntitle: "Varsk harbour reopens"\ndate: "2025-03-03"\n')
    assert [line.split(": saved ")[0] for line in lines] == ["feed Harbor Times"] * 2

    site.requests.clear()
    assert feeds.poll() == []  # nothing new: the feed answers 304 to its ETag, no page is fetched
    assert site.requests and [(p, etag) for p, etag, _ in site.requests] == [("/feed.xml", '"v2"')]

    site.entries.append("a3")
    site.requests.clear()
    (new,) = feeds.poll()
    assert site.paths() == ["/feed.xml", "/a3.html"]  # only the new entry's page
    assert read_article(new, root=corpus).title == "Mill in Orm hires"
    assert (corpus / ".askdesk-feeds.json").is_file()
    # a new Feeds over the same folder (another process, a restart) knows what was seen
    site.requests.clear()
    site.entries.append("a1")  # listed again (a feed that re-orders): still seen
    assert Feeds(corpus, host_delay=0.0).poll() == [] and "/a1.html" not in site.paths()


def test_requests_to_one_host_are_spaced_by_the_delay(tmp_path, site):
    feeds = Feeds(tmp_path / "corpus", host_delay=0.4)
    feeds.add(f"{site.base}/feed.xml", check=False)
    site.entries.append("a3")
    feeds.poll()
    times = [t for _, _, t in site.requests]
    assert site.paths() == ["/robots.txt", "/feed.xml", "/a1.html", "/a2.html", "/a3.html"]
    assert all(b - a >= 0.39 for a, b in zip(times, times[1:]))


def test_a_failing_feed_is_one_line_and_the_others_still_come(tmp_path, site):
    corpus = tmp_path / "corpus"
    lines: list[str] = []
    feeds = Feeds(corpus, host_delay=0.0, log=lines.append)
    feeds.add(f"{site.base}/broken.xml", check=False)
    feeds.add(f"{site.base}/feed.xml")
    written = feeds.poll()
    assert len(written) == 2
    assert lines[0] == (f"feed {site.base}/broken.xml: HTTP 500 Internal Server Error; failed 1 time in a row, "
                        "next try in 2 min")  # polled on demand (every=0): the back-off starts at a minute, doubled
    state = {f.url: f for f in feeds.load()}
    assert state[f"{site.base}/broken.xml"].last_error == "HTTP 500 Internal Server Error"
    dead = Feeds(corpus, host_delay=0.0, timeout=2.0, log=lines.append)
    dead.add("http://127.0.0.1:9/feed.xml", check=False)  # nothing listens on port 9
    dead.poll()
    # its robots.txt is the first thing asked of a host: that is what cannot be fetched
    assert any(line.startswith("feed http://127.0.0.1:9/feed.xml: not fetched: cannot fetch "
                               "http://127.0.0.1:9/robots.txt (") for line in lines)


def test_a_page_over_the_size_cap_is_not_saved_and_is_tried_again(tmp_path, site):
    lines: list[str] = []
    feeds = Feeds(tmp_path / "corpus", host_delay=0.0, max_bytes=1_000_000, log=lines.append)
    feeds.add(f"{site.base}/feed.xml")
    STORIES["big"] = ("Big page", "2025-03-06", "x")
    try:
        site.entries.append("big")
        feeds.poll()
        assert any("big" in line and "over the 1,000,000-byte limit" in line for line in lines)
        (feed,) = feeds.load()
        assert f"{site.base}/big" not in feed.seen and len(feed.seen) == 2
    finally:
        del STORIES["big"]


def test_a_page_whose_reader_fails_to_load_is_one_line_with_the_fix_and_is_tried_again(tmp_path, site, monkeypatch):
    lines: list[str] = []
    feeds = Feeds(tmp_path / "corpus", host_delay=0.0, log=lines.append)
    feeds.add(f"{site.base}/feed.xml")
    with monkeypatch.context() as m:
        break_html_reader(m)
        assert feeds.poll() == []
    assert len(lines) == 2 and all(line.endswith("run `pip install lxml_html_clean`; tried again at the next poll")
                                   for line in lines)
    assert lines[0].startswith(f"feed Harbor Times: {site.base}/a1.html: the page cannot be read: its reader fails")
    (feed,) = feeds.load()
    assert feed.seen == []
    written = feeds.poll()  # lxml_html_clean installed: the same entries come
    assert len(written) == 2 and "42 million euros" in read_article(written[0]).text


@pytest.mark.parametrize("url,message", [("ftp://example.org/feed", "is not an http(s) URL"),
                                         ("{base}/a1.html", "is not an RSS or Atom feed"),
                                         ("{base}/missing.xml", "cannot read the feed")])
def test_feed_add_refuses_what_is_not_a_feed_in_one_line(tmp_path, site, url, message):
    code, out, err = fake_cli(tmp_path, "feed", "add", url.format(base=site.base), "--corpus", "corpus",
                              env={"ASKDESK_FEED_HOST_DELAY": "0"})
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_feed_commands_and_watch_index_what_the_feed_brings(tmp_path, site):
    corpus = tmp_path / "corpus"
    write(corpus / "seed.txt", "Seed story\n\nThe seed article says the council met in May.")
    env = {"ASKDESK_FEED_HOST_DELAY": "0", "ASKDESK_FEED_EVERY": "1"}
    code, out, err = fake_cli(tmp_path, "feed", "add", f"{site.base}/feed.xml", "--corpus", str(corpus), env=env)
    assert code == 0 and "subscribed" in out and "Harbor Times (2 entries now)" in out, err
    code, out, _ = fake_cli(tmp_path, "feed", "list", "--corpus", str(corpus), env=env)
    assert f"{site.base}/feed.xml  Harbor Times  (never polled)" in out
    p = fake_cli(tmp_path, "watch", str(corpus), "--index", "ix", env=env, wait=False)
    seen: list[str] = []
    try:
        lines = read_lines(p)
        expect(lines, seen, "feed Harbor Times: saved feeds/")
        expect(lines, seen, "(Ferry to Brask returns)")  # indexed as the folder's next batch
        code, out, err = fake_cli(tmp_path, "ask", "When does the ferry to Brask run again?", "--index", "ix")
        assert code == 0 and "9 June" in out, err
        site.entries.append("a3")
        expect(lines, seen, "added feeds/127.0.0.1_")
        assert "(Mill in Orm hires)" in seen[-1]
    finally:
        p.kill()
        p.wait()
    code, out, _ = fake_cli(tmp_path, "feed", "list", "--corpus", str(corpus), "--json", env=env)
    assert '"seen": 3' in out
    code, out, _ = fake_cli(tmp_path, "feed", "remove", f"{site.base}/feed.xml", "--corpus", str(corpus), env=env)
    assert code == 0 and "the articles it brought stay" in out
    assert len(list((corpus / "feeds").rglob("*.md"))) == 3


LONG_TEASER = ("The mill in Orm hired 40 workers for its new line, the owner said on Wednesday. The line makes "
               "boards for the yards of the coast, and the first shift starts in April, the owner added, with "
               "a second to follow in the summer.")


def test_robots_txt_is_honoured_and_a_disallowed_page_is_never_fetched(tmp_path, site):
    # askdesk's own group closes a2 and a3 to it; a1, closed to every other crawler, stays open to askdesk
    site.robots = "User-agent: askdesk\nDisallow: /a2\nDisallow: /a3\n\nUser-agent: *\nDisallow: /a1\n"
    site.entries, site.teasers = ["a1", "a2", "a3"], {"a3": LONG_TEASER}
    corpus, lines, clock = tmp_path / "corpus", [], [0.0]
    feeds = Feeds(corpus, host_delay=0.0, log=lines.append, monotonic=lambda: clock[0])
    feeds.add(f"{site.base}/feed.xml", check=False)
    written = feeds.poll()
    assert site.paths() == ["/robots.txt", "/feed.xml", "/a1.html"]  # never /a2.html nor /a3.html
    robots = f"{site.base}/robots.txt"
    assert f"feed Harbor Times: {site.base}/a2.html: not fetched: {robots} disallows it for askdesk; skipped (the " \
           "feed holds only a teaser)" in lines
    assert f"feed Harbor Times: {site.base}/a3.html: not fetched: {robots} disallows it for askdesk; saved from " \
           "the feed's own text" in lines
    a1, a3 = (read_article(p, root=corpus) for p in written)
    assert "42 million euros" in a1.text and (a3.title, a3.text) == ("Mill in Orm hires", LONG_TEASER)
    (feed,) = feeds.load()
    assert len(feed.seen) == 3 and feed.failures == 0  # the skipped entry is not asked for again

    site.requests.clear()
    assert feeds.poll() == [] and site.paths() == ["/feed.xml"]  # robots.txt is kept for an hour
    clock[0] += 3600
    site.robots = "User-agent: *\nDisallow: /feed.xml\n"
    site.requests.clear()
    assert feeds.poll() == [] and site.paths() == ["/robots.txt"]  # asked again; now the feed itself is closed
    assert lines[-1] == f"feed {site.base}/feed.xml: not fetched: {robots} disallows it for askdesk"
    (feed,) = feeds.load()
    assert (feed.failures, feed.next_try) == (0, None)  # the site's choice, not a failure to back off from
    with pytest.raises(BadInputError, match=r"^cannot subscribe to .*/feed.xml': not fetched: .*/robots.txt "
                                            r"disallows it for askdesk \(askdesk honours robots.txt\)$"):
        Feeds(tmp_path / "other", host_delay=0.0).add(f"{site.base}/feed.xml")


def test_crawl_delay_spaces_the_requests_to_its_host(tmp_path, site):
    site.robots = "User-agent: *\nCrawl-delay: 7\n"
    clock, slept, lines = [100.0], [], []

    def sleep(s: float) -> None:  # the fake clock moves on instead: the test never sleeps
        slept.append(s)
        clock[0] += s

    feeds = Feeds(tmp_path / "corpus", host_delay=2.0, log=lines.append, monotonic=lambda: clock[0], sleep=sleep)
    feeds.add(f"{site.base}/feed.xml", check=False)
    assert len(feeds.poll()) == 2
    assert site.paths() == ["/robots.txt", "/feed.xml", "/a1.html", "/a2.html"]
    assert slept == [7.0, 7.0, 7.0]  # before the feed and each page: the site's 7 s, not our 2

    site.robots = "User-agent: *\nCrawl-delay: 3600\n"  # more than a watcher can wait between two requests
    site.entries.append("a3")
    site.requests.clear()
    fresh = Feeds(tmp_path / "corpus", host_delay=2.0, log=lines.append, monotonic=lambda: clock[0], sleep=sleep)
    assert fresh.poll() == [] and site.paths() == ["/robots.txt"] and len(slept) == 3
    assert lines[-1] == (f"feed {site.base}/feed.xml: not fetched: {site.base}/robots.txt asks for 3600 s between "
                         "requests (askdesk waits at most 60 s)")


def test_an_unreachable_robots_txt_fetches_nothing_there_until_it_answers(tmp_path, site):
    site.robots, site.robots_status = "", 503
    now, lines = [1_000_000.0], []
    feeds = Feeds(tmp_path / "corpus", host_delay=0.0, log=lines.append, now=lambda: now[0])
    feeds.add(f"{site.base}/feed.xml", check=False)
    assert feeds.poll(900) == [] and site.paths() == ["/robots.txt"]  # RFC 9309: unreachable is a full disallow
    host = site.base.removeprefix("http://")
    assert lines == [f"feed {site.base}/feed.xml: not fetched: {site.base}/robots.txt is unreachable (HTTP 503 "
                     f"Service Unavailable): nothing on {host} is fetched until it answers; failed 1 time in a row, "
                     "next try in 30 min"]
    site.robots_status = 200  # an empty robots.txt: everything allowed
    now[0] += 1800
    assert len(feeds.poll(900)) == 2  # an unreachable robots.txt is asked again at the next round, not cached
    assert site.paths() == ["/robots.txt", "/robots.txt", "/feed.xml", "/a1.html", "/a2.html"]


def test_a_failing_feed_is_tried_later_and_later_and_recovers(tmp_path, site):
    corpus, lines, now = tmp_path / "corpus", [], [1_000_000.0]
    feeds = Feeds(corpus, host_delay=0.0, log=lines.append, now=lambda: now[0])
    url = f"{site.base}/broken.xml"
    feeds.add(url, check=False)

    def attempt(after: float) -> bool:
        """The clock moved on by ``after`` s, a poll as the watcher's (every 15 minutes): whether the feed was asked."""
        now[0] += after
        site.requests.clear()
        feeds.poll(900)
        return "/broken.xml" in site.paths()

    assert attempt(0)
    assert lines[-1] == f"feed {url}: HTTP 500 Internal Server Error; failed 1 time in a row, next try in 30 min"
    assert not attempt(900) and not feeds.due(900)  # its usual 15 minutes later: still backing off
    assert attempt(900)
    assert lines[-1].endswith("; failed 2 times in a row, next try in 60 min")
    assert not attempt(3599) and attempt(1)
    assert lines[-1].endswith("; failed 3 times in a row, next try in 60 min")  # at most an hour between tries
    restarted = Feeds(corpus, host_delay=0.0, now=lambda: now[0])  # the back-off is in the state file
    (feed,) = restarted.load()
    assert (feed.failures, feed.next_try, feed.last_error) == (3, now[0] + 3600, "HTTP 500 Internal Server Error")
    assert not restarted.due(900, now[0] + 3599) and restarted.due(900, now[0] + 3600)

    site.broken = False
    assert attempt(3600) and len(list((corpus / "feeds").rglob("*.md"))) == 2
    (feed,) = feeds.load()
    assert (feed.failures, feed.next_try, feed.last_error) == (0, None, None)
    assert not attempt(899) and attempt(1)  # back on its usual 15 minutes
