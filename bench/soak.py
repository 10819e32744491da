"""Soak: `askdesk serve --watch` for minutes of live news, one SIGKILL mid-write, and a restart.

    python bench/soak.py [--minutes 3] [--json] [--out FILE] [--keep DIR]

The page runs as a real process (`python -m askdesk serve --watch`, the real model, the shipped
settings; ``ASKDESK_READER=0`` and other ``ASKDESK_*`` variables are passed on) on a free loopback
port, over a folder of SQuAD dev paragraphs (``../shared/data/squad-dev``, CC BY-SA 4.0) written as
``.md`` files with front matter. While it runs, for ``--minutes`` (phase A):

- 10 users ask through `/ask` (SQuAD questions about the folder, now and then a question about
  an article that arrived), each waiting ``--think`` seconds on average between questions;
- a batch of 1-3 new articles (more SQuAD paragraphs) is copied into the folder every
  ``--copy-every`` seconds, and an article is deleted every ``--delete-every`` seconds;
- a feed server on 127.0.0.1 (http.server, RSS) publishes a news article (RGB's passages,
  ``../shared/data/rgb-news``, CC BY-NC-SA 4.0) every ``--publish-every`` seconds; the page's
  watcher polls it every 5 seconds (``ASKDESK_FEED_EVERY``; the rest of the politeness as shipped);
- the watcher's writes merge segments as they pile up (10 to a tier), and halfway through an
  editor runs `askdesk optimize` against the live index from another process.

Each new article opens with two coined sentences ("The Velmora council approved 212 new homes
...") under a title of its own; once its file lands, a probe asks "How many new homes did the
Velmora council approve?" until an answer cites that title: landed-to-answerable. Memory (VmRSS)
is sampled every 2 s; open handles (/proc/PID/fd) are counted with the page idle (load paused)
after the first minute and at the end of phase A.

Then phase B: the load resumes, a batch of articles is copied in, and the page's process group is
killed with SIGKILL while the page holds the index's write lock (seen in /proc/locks). The index
is read back with `askdesk info --json` before anything else writes it: every article whose write
the page reported (its `/info` at start, then each "added ..." line) and whose file is still there
must be in it. A file is copied in while the page is down; the page is restarted on the same port,
the load goes on for ``--after`` seconds, and at the end the index must hold exactly the folder.

Requests are counted by when they were sent: while the page was up, in flight at the kill, and
sent while it was down (counted apart). The pass: no failed answer while the page is up, nothing
lost (after the kill, and the folder against the index at the end), memory of the last minute
within 10% of the second minute's, and handles flat (idle at the end against idle after the first
minute: no more than ``HANDLE_SLACK`` more outside the index, and every index handle on a file of
a segment the live generation lists). Exit status 1 when the pass fails.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
HANDLE_SLACK = 5  # handles outside the index that may open once, lazily, after the first minute (a pool's eventfd)
MEMORY_SLACK = 0.10  # the last minute's mean RSS within 10% of the second minute's
PROBE_DEADLINE_S = 240.0  # a new article not cited this long after it landed (while the page is up) counts as never
REQUEST_TIMEOUT_S = 180.0
SYLLABLES = ["ka", "vel", "mor", "tu", "dran", "si", "bo", "rin", "qua", "zet", "om", "pha", "lun", "gri", "vas",
             "nel", "tor", "ek", "mi", "sul", "dar", "yo", "brin", "ced"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]


def data_dir() -> Path:
    """The shared data sets: beside the work tree (every machine), else /work/shared/data."""
    here = ROOT.parent / "shared" / "data"
    return here if here.is_dir() else Path("/work/shared/data")


# ---- articles -------------------------------------------------------------------------------------
@dataclass
class Story:
    """One article: its file text and the question only it answers (None for the starting folder)."""

    key: str
    title: str
    date: str
    text: str
    question: str | None = None


def coined(rng: random.Random, used: set[str]) -> str:
    while True:
        w = "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()
        if w not in used:
            used.add(w)
            return w


def news(key: str, body: str, rng: random.Random, used: set[str]) -> Story:
    """``body`` (real text) under two coined lead sentences and a title that only this article has."""
    place, person, n = coined(rng, used), coined(rng, used), rng.randint(12, 480)
    lead = (f"The {place} council approved {n} new homes on Tuesday, councillor {person} said. "
            f"{person} said that building in {place} would begin in {rng.choice(MONTHS)}.")
    return Story(key, f"{place} approves {n} new homes", time.strftime("%Y-%m-%d"), f"{lead}\n\n{body}",
                 f"How many new homes did the {place} council approve?")


def markdown(s: Story) -> str:
    return f"---\ntitle: {json.dumps(s.title)}\ndate: {json.dumps(s.date)}\n---\n{s.text}\n"


def sources(data: Path, n_initial: int) -> tuple[list[Story], list[str], list[str], list[str]]:
    """(the starting folder's articles, their SQuAD questions, SQuAD paragraphs for copies, RGB texts for the feed)."""
    paras = [json.loads(line) for line in open(data / "squad-dev" / "corpus.jsonl", encoding="utf-8")]
    step = max(1, len(paras) // n_initial)  # every step-th paragraph: the topics of the whole set
    first = paras[::step][:n_initial]
    initial = [Story(p["_id"], p["title"].replace("_", " "), f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}", p["text"])
               for i, p in enumerate(first)]
    ids = {p["_id"] for p in first}
    qids = {q: c for q, c, _ in (line.split("\t") for line in
                                 open(data / "squad-dev" / "qrels.tsv", encoding="utf-8").read().splitlines()[1:])}
    questions = [q["text"] for q in map(json.loads, open(data / "squad-dev" / "queries.jsonl", encoding="utf-8"))
                 if qids.get(q["_id"]) in ids]
    rgb = [json.loads(line) for line in open(data / "rgb-news" / "rgb_en_fact.jsonl", encoding="utf-8")]
    feed = ["\n\n".join(x.strip() for x in r["positive"] if len(x.strip()) > 40) for r in rgb]
    return initial, questions, [p["text"] for p in paras if p["_id"] not in ids], [t for t in feed if t]


# ---- the feed server ----------------------------------------------------------------------------
class FeedSite:
    """A local news site: /feed.xml (RSS 2.0, the newest 50 items, with an ETag) and /items/<k>.html."""

    def __init__(self):
        self.items: list[Story] = []
        self.published: dict[str, float] = {}  # key -> monotonic time published
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                items = list(site.items)
                if self.path == "/feed.xml":
                    etag = f'"{len(items)}"'
                    if self.headers.get("If-None-Match") == etag:
                        self.send_response(304)
                        self.end_headers()
                        return
                    return self._send(site.rss(items), "application/rss+xml", etag)
                m = re.fullmatch(r"/items/(\w+)\.html", self.path)
                story = next((s for s in items if m and s.key == m.group(1)), None)
                if story is None:  # robots.txt too: a missing one allows everything (RFC 9309)
                    self.send_response(404)
                    self.end_headers()
                    return
                title, paras = escape(story.title), "".join(f"<p>{escape(p)}</p>" for p in story.text.split("\n\n"))
                self._send(f'<html><head><title>{title}</title><meta name="date" content="{story.date}"></head>'
                           f"<body><nav>Home | News</nav><article><h1>{title}</h1>{paras}</article>"
                           "<footer>Soak Gazette</footer></body></html>", "text/html; charset=utf-8")

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

    def rss(self, items: list[Story]) -> str:
        entries = "".join(
            f"<item><title>{escape(s.title)}</title><link>{self.base}/items/{s.key}.html</link>"
            f"<guid>{self.base}/items/{s.key}</guid><pubDate>{formatdate(usegmt=True)}</pubDate>"
            f"<description>{escape(s.text[:300])}</description></item>" for s in reversed(items[-50:]))
        return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>Soak Gazette</title><link>{self.base}/'
                f"</link><description>Local news</description>{entries}</channel></rss>")

    def publish(self, story: Story) -> None:
        self.published[story.key] = time.monotonic()
        self.items.append(story)


# ---- the page -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an http_proxy


def call(base: str, api: str, data: list, timeout: float = REQUEST_TIMEOUT_S) -> dict:
    """One request to the page's API (gradio's /gradio_api/call/<api>): the reply's JSON; raises on failure."""
    req = urllib.request.Request(f"{base}/gradio_api/call/{api}", data=json.dumps({"data": data}).encode(),
                                 headers={"Content-Type": "application/json"})
    with LOOPBACK.open(req, timeout=timeout) as r:
        event = json.loads(r.read())["event_id"]
    with LOOPBACK.open(f"{base}/gradio_api/call/{api}/{event}", timeout=timeout) as r:
        body = r.read().decode()
    kind, payload = None, None
    for line in body.splitlines():
        if line.startswith("event: "):
            kind = line[7:].strip()
        elif line.startswith("data: ") and kind in ("complete", "error"):
            payload = line[6:]
    if kind != "complete" or payload is None:
        raise RuntimeError(f"{api}: {kind or 'no event'}: {str(payload)[:200]}")
    return json.loads(json.loads(payload)[0])


LINE = re.compile(r"askdesk: (added|updated|removed|skipped) (\S+?):? (.*)$")


class Page:
    """`askdesk serve --watch` as a process group of its own, its output read line by line by a thread."""

    def __init__(self, index: Path, corpus: Path, port: int, log: Path, env: dict):
        self.index, self.corpus, self.port, self.log_path, self.env = index, corpus, port, log, env
        self.base = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.reported: set[str] = set()  # article paths the page said it wrote (its /info, then its lines)
        self.written: dict[str, float] = {}  # path -> monotonic time of its "added" line
        self.removed: dict[str, float] = {}
        self.skipped: dict[str, str] = {}
        self.merges: list[str] = []
        self.writes = 0  # generations published (writes and merges)
        self.last_write = time.monotonic()
        self.lock = threading.Lock()

    def start(self) -> None:
        cmd = [sys.executable, "-m", "askdesk", "serve", "--watch", "--index", str(self.index), "--corpus",
               str(self.corpus), "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, errors="replace", start_new_session=True)
        self.pump = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self.pump.start()

    def _pump(self, proc: subprocess.Popen) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log:
            for line in proc.stdout:
                log.write(line)
                now = time.monotonic()
                m = LINE.search(line.rstrip("\n"))
                with self.lock:
                    if "merged segments:" in line:
                        self.merges.append(line.strip())
                    self.writes += "askdesk.store.index: published g-" in line
                    if not m:
                        continue
                    what, path, rest = m.groups()
                    if os.path.isabs(path):  # a skipped file is named as the watcher saw it
                        path = os.path.relpath(path, self.corpus)
                    self.last_write = now
                    if what == "skipped":
                        self.skipped[path] = rest
                    elif what == "removed":
                        self.removed.setdefault(path, now)
                        self.reported.discard(path)
                    else:
                        self.written.setdefault(path, now)
                        self.reported.add(path)

    def wait_ready(self, timeout: float = 600) -> dict:
        """Poll `/info` until it answers (the page has synced and serves); its reply."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the page exited with {self.proc.returncode}; see {self.log_path}")
            try:
                info = call(self.base, "info", [], timeout=10)
                with self.lock:
                    self.reported = {a["path"] for a in info["articles"]}
                return info
            except (OSError, RuntimeError, ValueError):
                time.sleep(0.5)
        raise RuntimeError(f"the page did not answer /info within {timeout:.0f} s; see {self.log_path}")

    def writing(self) -> bool:
        """Whether the page's process holds the index's write lock (flock), from /proc/locks."""
        try:
            inode = (self.index / ".lock").stat().st_ino
            locks = Path("/proc/locks").read_text()
        except OSError:
            return False
        return any(f[1] == "FLOCK" and f[4] == str(self.proc.pid) and f[5].endswith(f":{inode}")
                   for f in (line.split() for line in locks.splitlines()) if len(f) > 5)

    def kill(self) -> None:
        """SIGKILL to the process group; returns once the lines it printed before dying are read."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.pump.join(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


def rss_mb(pid: int) -> float | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def handles(pid: int, index: Path) -> dict:
    """Open descriptors of ``pid`` by kind; "stale": those on index files no live segment lists."""
    live = set()
    try:
        gen = (index / "CURRENT").read_text().split()[0]
        live = {e["name"] for e in json.loads((index / gen / "manifest.json").read_text())["segments"]}
    except (OSError, ValueError, KeyError, IndexError):
        pass
    out = {"total": 0, "socket": 0, "index": 0, "other": 0, "stale": 0, "stale_paths": []}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        out["total"] += 1
        if target.startswith("socket:"):
            out["socket"] += 1
        elif target == str(index) or target.startswith(f"{index}/"):
            out["index"] += 1
            seg = (Path(target).relative_to(index).parts or ("",))[0]
            if target.endswith("(deleted)") or (seg.startswith("s-") and seg not in live):
                out["stale"] += 1
                out["stale_paths"].append(target)
        else:
            out["other"] += 1
    return out


# ---- the soak -----------------------------------------------------------------------------------
@dataclass
class Request:
    kind: str  # "user" or "probe"
    sent: float
    done: float
    ok: bool
    error: str | None = None


@dataclass
class Arrival:
    story: Story
    path: str  # relative to the corpus folder, as the page records it
    how: str  # "copy", "feed", "killed batch", "while down"
    landed: float  # monotonic
    answerable: float | None = None
    gave_up: bool = False
    restarted: bool = False  # the page was down between its landing and its answer


@dataclass
class Soak:
    page: Page
    site: FeedSite
    corpus: Path
    questions: list[str]
    think: float
    rng: random.Random
    requests: list[Request] = field(default_factory=list)
    arrivals: dict[str, Arrival] = field(default_factory=dict)
    deleted: dict[str, float] = field(default_factory=dict)
    kills: list[float] = field(default_factory=list)
    ready_at: list[float] = field(default_factory=list)

    def __post_init__(self):
        self.users_on = threading.Event()  # clear: the users pause (probes go on until their article is answerable)
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.inflight = 0

    def ask(self, kind: str, question: str) -> dict | None:
        with self.lock:
            self.inflight += 1
        t0 = time.monotonic()
        try:
            reply = call(self.page.base, "ask", [question, [], None, None, None])
            ok = "answer" in reply and "citations" in reply
            err = None if ok else f"bad reply: {str(reply)[:200]}"
        except Exception as e:  # noqa: BLE001 - every failure counts
            reply, ok, err = None, False, f"{type(e).__name__}: {str(e)[:200]}"
        with self.lock:
            self.inflight -= 1
            self.requests.append(Request(kind, t0, time.monotonic(), ok, err))
        return reply if ok else None

    def spawn(self, fn, *args) -> None:
        threading.Thread(target=fn, args=args, daemon=True).start()

    def user(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.done.is_set():
            if not self.users_on.wait(0.5):
                continue
            answered = [a for a in list(self.arrivals.values()) if a.answerable]
            if answered and rng.random() < 0.2:  # now and then about the news
                q = rng.choice(answered).story.question
            else:
                q = rng.choice(self.questions)
            if self.ask("user", q) is None:
                self.done.wait(0.5)  # the page is down: no busy loop
            self.done.wait(rng.uniform(0, 2 * self.think))

    def arrive(self, story: Story, path: str, how: str, landed: float) -> None:
        a = Arrival(story, path, how, landed)
        with self.lock:
            self.arrivals[path] = a
        self.spawn(self.probe, a)

    def probe(self, a: Arrival) -> None:
        """Ask the article's own question until an answer cites it."""
        while not self.done.is_set():
            down = sum(r - k for k, r in zip(self.kills, self.ready_at[1:]) if k > a.landed)
            if time.monotonic() - a.landed - down > PROBE_DEADLINE_S:
                a.gave_up = True
                return
            reply = self.ask("probe", a.story.question)
            if reply and any(c.get("title") == a.story.title for c in reply["citations"]):
                a.answerable = time.monotonic()
                a.restarted = any(k < a.answerable and r > a.landed for k, r in zip(self.kills, self.ready_at[1:]))
                return
            self.done.wait(0.25)  # the polling interval of a user asking again

    def copy(self, stories: list[Story], how: str = "copy") -> None:
        staging = self.corpus.parent / "staging"
        staging.mkdir(exist_ok=True)
        for s in stories:
            src = staging / f"{s.key}.md"
            src.write_text(markdown(s), encoding="utf-8")
            shutil.copyfile(src, self.corpus / "drop" / src.name)  # the copy lands in the watched folder
            self.arrive(s, f"drop/{src.name}", how, time.monotonic())

    def delete_one(self, initial: list[str]) -> None:
        """Delete a file: a copied article already answered, or one of the starting folder's."""
        answered = [a.path for a in list(self.arrivals.values()) if a.answerable and a.how == "copy"
                    and a.path not in self.deleted]
        pool = answered if answered and self.rng.random() < 0.5 else [p for p in initial if p not in self.deleted]
        if pool:
            path = self.rng.choice(sorted(pool))
            (self.corpus / path).unlink()
            self.deleted[path] = time.monotonic()

    def scan_feeds(self) -> None:
        """New files the page saved from the feed: an arrival each, landed at the file's mtime."""
        folder = self.corpus / "feeds"
        while not self.done.wait(0.2):
            for f in folder.rglob("*.md") if folder.is_dir() else ():
                path = f.relative_to(self.corpus).as_posix()
                if path in self.arrivals:
                    continue
                m = re.search(r'^url: "[^"]*/items/(\w+)\.html"', f.read_text(encoding="utf-8"), re.M)
                story = next((s for s in self.site.items if m and s.key == m.group(1)), None)
                if story is not None:
                    landed = time.monotonic() - max(0.0, time.time() - f.stat().st_mtime)
                    self.arrive(story, path, "feed", landed)

    def sample(self, rss: list[tuple[float, float]], start: float) -> None:
        while not self.done.wait(2.0):
            mb = rss_mb(self.page.proc.pid)
            if mb is not None and not self.kills:  # phase A: the first process, unbroken
                rss.append((time.monotonic() - start, mb))

    def pending(self) -> list[Arrival]:
        return [a for a in list(self.arrivals.values()) if a.answerable is None and not a.gave_up
                and a.path not in self.deleted and a.path not in self.page.skipped]

    def quiesce(self, timeout: float = PROBE_DEADLINE_S) -> float:
        """Pause the users and wait until the page is idle: every probe answered, no request in
        flight, no write for 3 s, the write lock free. Returns the seconds it took."""
        t0 = time.monotonic()
        self.users_on.clear()
        idle_since = None
        while time.monotonic() - t0 < timeout:
            with self.page.lock:
                quiet = time.monotonic() - self.page.last_write > 3.0
            if not self.pending() and self.inflight == 0 and quiet and not self.page.writing():
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= 1.0:  # a user that was about to ask has asked by now
                    break
            else:
                idle_since = None
            time.sleep(0.1)
        return time.monotonic() - t0


def idle_handles(page: Page, timeout: float = 30) -> dict:
    """Handles once two counts 1 s apart agree (closing sockets settle), or after ``timeout``."""
    end, last = time.monotonic() + timeout, None
    while True:
        h = handles(page.proc.pid, page.index)
        if last is not None and h["total"] == last["total"] or time.monotonic() > end:
            return h
        last = h
        time.sleep(1.0)


def run(minutes: float, work: Path, *, users: int = 10, think: float = 1.0, copy_every: float = 8.0,
        delete_every: float = 20.0, publish_every: float = 15.0, after: float = 30.0, n_initial: int = 100,
        seed: int = 0) -> dict:
    """The soak in ``work`` (corpus/, index/, page.log); the report, its "pass" included."""
    began = time.monotonic()
    rng = random.Random(seed)
    coins: set[str] = set()
    initial, questions, copy_texts, feed_texts = sources(data_dir(), n_initial)
    corpus, index = work / "corpus", work / "index"
    (corpus / "drop").mkdir(parents=True)
    for s in initial:
        (corpus / f"{s.key}.md").write_text(markdown(s), encoding="utf-8")
    initial_paths = [f"{s.key}.md" for s in initial]
    made = {"c": 0, "f": 0}

    def story(kind: str) -> Story:
        """The next new article: a SQuAD paragraph to copy ("c") or RGB news for the feed ("f")."""
        texts, i = copy_texts if kind == "c" else feed_texts, made[kind]
        made[kind] += 1
        return news(f"{kind}{i:04d}", texts[i % len(texts)], rng, coins)

    site = FeedSite()
    site.publish(story("f"))
    env = {k: v for k, v in os.environ.items() if k not in ("ASKDESK_INDEX", "ASKDESK_CORPUS", "ASKDESK_STORE")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    env.setdefault("ASKDESK_FEED_EVERY", "5")
    askdesk = [sys.executable, "-m", "askdesk"]
    sub = subprocess.run([*askdesk, "feed", "add", f"{site.base}/feed.xml", "--corpus", str(corpus), "--index",
                          str(index)], env=env, capture_output=True, text=True, timeout=300)
    if sub.returncode:
        raise RuntimeError(f"askdesk feed add failed: {sub.stderr}")
    page = Page(index, corpus, free_port(), work / "page.log", env)
    report: dict = {"minutes": minutes, "users": users, "think_s": think, "reader": env.get("ASKDESK_READER", "on"),
                    "load_average_start": round(os.getloadavg()[0], 1)}
    soak = Soak(page, site, corpus, questions, think, rng)
    t0 = time.monotonic()
    page.start()
    try:
        info = page.wait_ready()
        report["start"] = {"articles": info["n_articles"], "chunks": info["n_chunks"],
                           "ready_s": round(time.monotonic() - t0, 1)}
        soak.ready_at.append(time.monotonic())
        soak.ask("user", questions[0])  # the reader's weights load now
        rss: list[tuple[float, float]] = []
        start = time.monotonic()
        for i in range(users):
            soak.spawn(soak.user, seed + 1 + i)
        soak.spawn(soak.scan_feeds)
        soak.spawn(soak.sample, rss, start)
        soak.users_on.set()

        # ---- phase A: `minutes` of load; after the first, a pause to count handles with the page idle
        due = {"copy": start + 2, "delete": start + delete_every, "publish": start + publish_every}
        optimize: dict = {}
        warm: dict | None = None
        while (now := time.monotonic()) < start + minutes * 60:
            if warm is None and now - start >= min(60.0, minutes * 20):
                paused = soak.quiesce()
                warm = {**idle_handles(page), "paused_s": round(paused, 1)}
                soak.users_on.set()
            if not optimize and now - start >= minutes * 30:
                optimize["started_s"] = round(now - start)
                soak.spawn(run_optimize, [*askdesk, "optimize", "--index", str(index)], env, optimize)
            if now >= due["copy"]:
                soak.copy([story("c") for _ in range(rng.randint(1, 3))])
                due["copy"] = now + copy_every
            if now >= due["delete"]:
                soak.delete_one(initial_paths)
                due["delete"] = now + delete_every
            if now >= due["publish"]:
                site.publish(story("f"))
                due["publish"] = now + publish_every
            time.sleep(0.1)
        report["quiesce_s"] = round(soak.quiesce(), 1)
        report["memory_mb"] = memory(rss, minutes)
        report["handles"] = {"after_first_minute": warm, "end": idle_handles(page)}
        report["segments"] = segment_files(index)
        report["optimize"] = optimize

        # ---- phase B: SIGKILL mid-write, the index read back, a restart on the same port
        soak.users_on.set()
        report["kill"] = kill = kill_mid_write(soak, lambda: [story("c") for _ in range(6)], rng)
        expected = page.reported - set(soak.deleted)  # a deletion not reported yet may be in the index or not
        back = subprocess.run([*askdesk, "info", "--json", "--index", str(index)], env=env, capture_output=True,
                              text=True, timeout=300)
        held = {a["path"] for a in json.loads(back.stdout)["articles"]} if back.returncode == 0 else set()
        report["durability"] = {"reported": len(expected), "index_loads": back.returncode == 0,
                                "in_index": len(expected & held), "lost": sorted(expected - held),
                                "error": back.stderr[-500:] if back.returncode else None}
        soak.copy([story("c")], "while down")
        t_restart = time.monotonic()
        page.start()
        page.wait_ready()
        soak.ready_at.append(time.monotonic())
        kill["down_s"] = round(soak.ready_at[-1] - soak.kills[-1], 1)
        kill["restart_to_ready_s"] = round(soak.ready_at[-1] - t_restart, 1)
        soak.copy([story("c") for _ in range(2)])
        site.publish(story("f"))
        time.sleep(after)  # the load goes on meanwhile

        # ---- the end: every new article answered (or given up on), then the folder against the index
        report["quiesce_end_s"] = round(soak.quiesce(), 1)
        report["final"] = final_check(page, corpus)
        soak.done.set()
        report["answers"] = answers(soak)
        report["arrivals"] = arrival_times(soak, len(site.items))
        report["deleted"] = {"files": len(soak.deleted),
                             "removal_reported": sum(p in page.removed for p in soak.deleted)}
        report["merges"] = {"automatic": len(page.merges), "lines": page.merges[-3:], "generations": page.writes}
    finally:
        soak.done.set()
        page.stop()
        site.server.shutdown()
    report["load_average_end"] = round(os.getloadavg()[0], 1)
    report["wall_s"] = round(time.monotonic() - began)
    report["pass"] = verdict(report)
    return report


def kill_mid_write(soak: Soak, batch, rng: random.Random, tries: int = 3) -> dict:
    """Copy a batch in and SIGKILL the page's process group while it holds the write lock (up to
    ``tries`` batches: a write may end before the kill comes); the page's output is read to its end."""
    out = {"tries": 0, "mid_write": False}
    for _ in range(tries):
        out["tries"] += 1
        soak.copy(batch(), "killed batch")
        deadline = time.monotonic() + 60
        while not soak.page.writing() and time.monotonic() < deadline:
            time.sleep(0.005)
        held = time.monotonic()
        time.sleep(rng.uniform(0.1, 1.0))  # somewhere inside the write: reading, embedding, publishing
        if soak.page.writing():
            out["mid_write"], out["into_write_s"] = True, round(time.monotonic() - held, 2)
            break
    soak.kills.append(time.monotonic())
    soak.page.kill()
    out["leftovers"] = sorted(p.name for p in soak.page.index.iterdir() if p.name.startswith(".tmp-"))
    return out


def run_optimize(cmd: list[str], env: dict, out: dict) -> None:
    """`askdesk optimize` from another process, against the live index (it waits for the page's lock)."""
    t = time.monotonic()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    out.update(returncode=p.returncode, seconds=round(time.monotonic() - t, 1),
               said=(p.stdout.strip() or p.stderr.strip())[-300:])


def memory(rss: list[tuple[float, float]], minutes: float) -> dict:
    """Mean RSS per minute; the second minute against the last (under 3 minutes: the middle third against the last)."""
    total = minutes * 60
    a, b = (60, 120) if minutes >= 3 else (total / 3, 2 * total / 3)

    def mean(lo: float, hi: float) -> float | None:
        xs = [mb for t, mb in rss if lo <= t < hi]
        return round(statistics.fmean(xs), 1) if xs else None

    second, last = mean(a, b), mean(total - (b - a), total + 1)
    per_minute = [mean(60 * i, 60 * (i + 1)) for i in range(int(-(-total // 60)))]
    change = round(last / second - 1, 4) if second and last else None
    return {"per_minute": per_minute, "second_minute": second, "last_minute": last, "change": change,
            "peak": round(max((mb for _, mb in rss), default=0.0), 1), "samples": len(rss)}


def segment_files(index: Path) -> dict:
    segs = [p for p in index.iterdir() if p.is_dir() and p.name.startswith("s-")]
    gens = [p for p in index.iterdir() if p.is_dir() and p.name.startswith("g-")]
    gen = (index / "CURRENT").read_text().split()[0]
    live = json.loads((index / gen / "manifest.json").read_text())["segments"]
    return {"live_segments": len(live), "segment_folders": len(segs), "generation_folders": len(gens),
            "segment_files": sum(1 for s in segs for f in s.iterdir() if f.is_file())}


def final_check(page: Page, corpus: Path, timeout: float = 120) -> dict:
    """The index against the folder once the page has caught up: the same articles, none more, none fewer."""
    end = time.monotonic() + timeout
    while True:
        files = {f.relative_to(corpus).as_posix() for f in corpus.rglob("*.md")
                 if not any(p.startswith(".") for p in f.relative_to(corpus).parts)}
        with page.lock:
            files -= set(page.skipped)
        try:
            held = {a["path"] for a in call(page.base, "info", [], timeout=30)["articles"]}
        except (OSError, RuntimeError, ValueError):
            held = set()
        if held == files or time.monotonic() > end:
            return {"files": len(files), "in_index": len(held & files), "missing": sorted(files - held)[:10],
                    "extra": sorted(held - files)[:10], "matches": held == files, "skipped": dict(page.skipped)}
        time.sleep(0.5)


def answers(soak: Soak) -> dict:
    """Requests by when they were sent: while the page was up, in flight at the kill, sent while it was down."""
    kill, back = soak.kills[0], soak.ready_at[-1]
    groups: dict[str, list[Request]] = {"up": [], "in_flight_at_kill": [], "while_down": []}
    for r in soak.requests:
        if r.sent < kill <= r.done:
            groups["in_flight_at_kill"].append(r)
        elif kill <= r.sent < back:
            groups["while_down"].append(r)
        else:
            groups["up"].append(r)
    out = {}
    for name, rs in groups.items():
        ok = [r for r in rs if r.ok]
        lat = sorted((r.done - r.sent) * 1e3 for r in ok if r.kind == "user")
        out[name] = {"given": len(ok), "failed": len(rs) - len(ok),
                     "failures": sorted({r.error for r in rs if not r.ok})[:3]}
        if name == "up" and lat:
            out[name].update(user_p50_ms=round(lat[len(lat) // 2]), user_p95_ms=round(lat[int(len(lat) * .95)]),
                             user_max_ms=round(lat[-1]), probes=sum(r.kind == "probe" for r in rs))
    return out


def arrival_times(soak: Soak, published: int) -> dict:
    """Landed-to-answerable (and to the page's "added" line) per kind of arrival, in seconds."""
    out: dict = {"feed_published": published}
    for how in ("copy", "feed", "killed batch", "while down"):
        xs = [a for a in soak.arrivals.values() if a.how == how]
        got = sorted(a.answerable - a.landed for a in xs if a.answerable)
        idx = sorted(soak.page.written[a.path] - a.landed for a in xs if a.path in soak.page.written)
        out[how] = {"landed": len(xs), "answerable": len(got),
                    "never": sum(a.answerable is None and a.path not in soak.deleted
                                 and a.path not in soak.page.skipped for a in xs),
                    "p50_s": round(got[len(got) // 2], 2) if got else None, "max_s": round(got[-1], 2) if got else None,
                    "indexed_max_s": round(idx[-1], 2) if idx else None}
    feed = sorted(a.answerable - max(soak.site.published[a.story.key], soak.ready_at[0])  # the first: before the page
                  for a in soak.arrivals.values() if a.how == "feed" and a.answerable and not a.restarted)
    out["feed"]["published_to_answerable_max_s"] = round(feed[-1], 2) if feed else None  # with the 5-s poll
    up = [a.answerable - a.landed for a in soak.arrivals.values() if a.answerable and not a.restarted]
    out["worst_landed_to_answerable_s"] = round(max(up), 2) if up else None
    return out


def verdict(r: dict) -> dict:
    h0, h1 = r["handles"]["after_first_minute"] or {}, r["handles"]["end"]
    change = r["memory_mb"]["change"]
    checks = {
        "no_failed_answer_while_up": r["answers"]["up"]["failed"] == 0,
        "nothing_lost_at_the_kill": r["durability"]["index_loads"] and not r["durability"]["lost"],
        "index_matches_folder_at_the_end": r["final"]["matches"],
        "every_new_article_answerable": all(v["never"] == 0 for v in r["arrivals"].values() if isinstance(v, dict))
        and r["arrivals"]["feed"]["landed"] == r["arrivals"]["feed_published"],
        "memory_within_10_percent": change is not None and abs(change) <= MEMORY_SLACK,
        "handles_flat": bool(h0) and h1["total"] - h1["index"] <= h0.get("total", 0) - h0.get("index", 0) + HANDLE_SLACK
        and h1["stale"] == 0,
    }
    return {**checks, "all": all(checks.values())}


def table(r: dict) -> str:
    a, ar, m, h, d, k = r["answers"], r["arrivals"], r["memory_mb"], r["handles"], r["durability"], r["kill"]
    rows = [
        ("start", f"{r['start']['articles']} articles, {r['start']['chunks']} chunks, served after "
                  f"{r['start']['ready_s']} s; reader {r['reader']}"),
        ("answers while up", f"{a['up']['given']} given, {a['up']['failed']} failed (user p50 "
                             f"{a['up'].get('user_p50_ms')} ms, p95 {a['up'].get('user_p95_ms')} ms)"),
        ("in flight at the kill", f"{a['in_flight_at_kill']['given']} given, "
                                  f"{a['in_flight_at_kill']['failed']} failed"),
        ("sent while down", f"{a['while_down']['given']} given, {a['while_down']['failed']} failed "
                            f"(down {k.get('down_s')} s, restart to ready {k.get('restart_to_ready_s')} s)"),
        ("landed -> answerable", f"worst {ar['worst_landed_to_answerable_s']} s; copies p50 {ar['copy']['p50_s']} s "
                                 f"max {ar['copy']['max_s']} s ({ar['copy']['answerable']}/{ar['copy']['landed']}); "
                                 f"feed p50 {ar['feed']['p50_s']} s max {ar['feed']['max_s']} s "
                                 f"({ar['feed']['answerable']}/{ar['feed']['landed']})"),
        ("across the kill", f"killed batch max {ar['killed batch']['max_s']} s "
                            f"({ar['killed batch']['answerable']}/{ar['killed batch']['landed']}), "
                            f"copied while down {ar['while down']['max_s']} s"),
        ("memory (RSS)", f"per minute {m['per_minute']} MB; second {m['second_minute']}, last {m['last_minute']}: "
                         f"{100 * m['change']:+.1f}%" if m["change"] is not None else f"{m}"),
        ("handles (idle)", f"after minute 1: {h['after_first_minute']['total']} "
                           f"({h['after_first_minute']['index']} index); end: {h['end']['total']} "
                           f"({h['end']['index']} index, {h['end']['stale']} stale)"),
        ("segments at the end", f"{r['segments']['live_segments']} live; {r['segments']['segment_folders']} folders, "
                                f"{r['segments']['segment_files']} files"),
        ("merges", f"{r['merges']['automatic']} automatic; optimize: {r['optimize'].get('said')}"),
        ("the kill", f"mid-write {k['mid_write']} ({k.get('into_write_s')} s into it, try {k['tries']}); "
                     f"{d['in_index']}/{d['reported']} reported articles in the index after it, lost {d['lost'][:5]}"),
        ("the end", f"index matches folder: {r['final']['matches']} ({r['final']['in_index']}/{r['final']['files']})"),
        ("pass", ", ".join(f"{k}={v}" for k, v in r["pass"].items())),
    ]
    return "\n".join(f"{name:>22}  {text}" for name, text in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0, help="length of phase A (memory, handles); default 3")
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--think", type=float, default=1.0, help="mean seconds a user waits between questions")
    ap.add_argument("--copy-every", type=float, default=8.0)
    ap.add_argument("--delete-every", type=float, default=20.0)
    ap.add_argument("--publish-every", type=float, default=15.0)
    ap.add_argument("--after", type=float, default=30.0, help="seconds of load after the restart")
    ap.add_argument("--articles", type=int, default=100, help="SQuAD paragraphs in the folder at start")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--out", type=Path, help="also write the JSON report here")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (corpus, index, page.log)")
    args = ap.parse_args(argv)
    tmp = None
    if args.keep:
        shutil.rmtree(args.keep, ignore_errors=True)
        args.keep.mkdir(parents=True)
        work = args.keep
    else:
        tmp = tempfile.TemporaryDirectory(prefix="askdesk-soak-")
        work = Path(tmp.name)
    try:
        r = run(args.minutes, work, users=args.users, think=args.think, copy_every=args.copy_every,
                delete_every=args.delete_every, publish_every=args.publish_every, after=args.after,
                n_initial=args.articles, seed=args.seed)
        if not r["pass"]["all"]:
            log = (work / "page.log").read_text(errors="replace").splitlines()
            r["page_log_tail"] = [line for line in log if " DEBUG " not in f" {line}"][-40:]
    finally:
        if tmp is not None:
            tmp.cleanup()
    if args.out:
        args.out.write_text(json.dumps(r, indent=2))
    print(json.dumps(r, indent=2) if args.json else table(r))
    return 0 if r["pass"]["all"] else 1


if __name__ == "__main__":
    sys.exit(main())
