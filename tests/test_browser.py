"""The real chat page in headless Chromium: `python app.py` in a subprocess, driven by Playwright.

Slow tier (`pytest -m slow tests/test_browser.py`). Needs /usr/bin/chromium (`apt-get install
chromium`) and the `playwright` package; never `playwright install`. Without them these tests are
skipped, unless ASKDESK_REQUIRE_BROWSER=1 (CI), where a missing browser fails them.
Set ASKDESK_SCREENSHOT=docs/screenshot.png to refresh the README's screenshot.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
START_TIMEOUT_S = 240  # cold start builds the index with the real model: ~15 s here, slower on CI
ANSWER_TIMEOUT_MS = 60_000
ADD_TIMEOUT_MS = 120_000
# Read at import: conftest clears every ASKDESK_* variable before each test runs.
REQUIRE_BROWSER = os.environ.get("ASKDESK_REQUIRE_BROWSER") == "1"
SCREENSHOT = os.environ.get("ASKDESK_SCREENSHOT")

HARBOUR = """Varsk harbour reopens after renovation

The harbour of Varsk, a fishing town on the northern coast, reopened on 3 March 2025 after an 18-month renovation.
The renovation of Varsk harbour cost 42 million euros and was paid for by the regional government.
Harbour master Ilse Brandt said the new breakwater would protect the fleet from winter storms.
"""
PAYLOAD = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">${window.__pwned=3}'
LIGHTHOUSE = f"""Quillon lighthouse vandalised {PAYLOAD}

Vandals struck the Quillon lighthouse on the island of Brask on 12 January 2025.
The vandals painted the words {PAYLOAD} on the lighthouse door in red letters.
Lighthouse keeper Tomas Vell said the door of the Quillon lighthouse would be repainted within a week.
"""


def _require_browser():
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "the playwright package is missing: pip install playwright (never `playwright install`)"
    if problem is None and not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing: apt-get install -y chromium"
    if problem:
        if REQUIRE_BROWSER:
            pytest.fail(f"ASKDESK_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class App:
    url: str
    corpus: Path
    proc: subprocess.Popen
    log: Path
    started: float  # time.monotonic() just before the process was spawned
    serving_s: float = 0.0
    first_answer_s: float | None = None
    timings: dict = field(default_factory=dict)

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def _launch(tmp_path_factory, request, *args: str):
    """`python app.py ARGS` on a free port over a private copy of the bundled corpus."""
    _require_browser()
    d = tmp_path_factory.mktemp("page")
    shutil.copytree(ROOT / "corpus", d / "corpus")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASKDESK_")}  # no developer settings
    env = {**env, "ASKDESK_INDEX": str(d / "index"), "ASKDESK_CORPUS": str(d / "corpus"),
           "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log = d / "app.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), *args], cwd=d, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    a = App(f"http://127.0.0.1:{port}/", d / "corpus", proc, log, started)
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode} before serving:\n{a.log_tail()}")
            if time.monotonic() - started > START_TIMEOUT_S:
                pytest.fail(f"app.py did not serve {a.url} within {START_TIMEOUT_S} s:\n{a.log_tail()}")
            try:
                with urllib.request.urlopen(a.url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.25)
        a.serving_s = time.monotonic() - started
        yield a
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if a.first_answer_s is not None:  # printed past pytest's capture: CI logs should show it
            capture = request.config.pluginmanager.get_plugin("capturemanager")
            with capture.global_and_fixture_disabled():
                print(f"\naskdesk page: serving {a.serving_s:.1f} s after launch, first answer shown "
                      f"{a.first_answer_s:.1f} s after launch; {a.timings}")


@pytest.fixture(scope="module")
def app(tmp_path_factory, request):
    """`python app.py` on a free port over a private copy of the bundled corpus."""
    yield from _launch(tmp_path_factory, request)


@pytest.fixture(scope="module")
def watched_app(tmp_path_factory, request):
    """`python app.py --watch`: the page keeps its index in step with its corpus folder."""
    yield from _launch(tmp_path_factory, request, "--watch")


@pytest.fixture(scope="module")
def browser(app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser, app):
    """A fresh tab on the page; records every request that leaves 127.0.0.1."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.outside = []
    pg.on("request", lambda r: pg.outside.append(r.url) if not r.url.startswith((app.url, "data:", "blob:")) else None)
    pg.goto(app.url)
    pg.wait_for_selector("#question textarea")
    yield pg
    context.close()


def answer_serial(page) -> int:
    """The number the page gave the answer now in the sources panel (0: none yet)."""
    return int(page.evaluate("() => document.querySelector('#sources .ad-sources')?.dataset.answer || 0"))


def ask(page, app: App, question: str, *, via=None) -> None:
    """Ask `question` (typed and sent with Enter, or by calling `via`), and wait until the sources
    panel holds the answer to *this* asking: a newer answer number than before, for this question.

    The number matters when a question is asked twice: its text alone would match the panel at once.
    """
    before = answer_serial(page)
    if via is None:
        page.fill("#question textarea", question)
        page.press("#question textarea", "Enter")
    else:
        via()
    page.wait_for_function(
        "([q, before]) => { const p = document.querySelector('#sources .ad-sources');"
        " return p && Number(p.dataset.answer) > before && p.innerText.includes('for: ' + q); }",
        arg=[question, before], timeout=ANSWER_TIMEOUT_MS)
    if app.first_answer_s is None:
        app.first_answer_s = time.monotonic() - app.started


def last_reply(page) -> str:
    return page.locator("#chat .message.bot").last.inner_text()


def upload(page, path_or_payload) -> str:
    """Drop files on the file input and wait for *this* add to finish; returns its report.

    Each upload's report carries its own number and a state ("adding", then "done"): the last
    upload's report, or this one's while it runs, never passes for the finished add.
    """
    last = "() => Number(document.querySelector('#add-status .ad-add')?.dataset.upload || 0)"
    before = page.evaluate(last)
    page.set_input_files("#upload input[type=file]", path_or_payload)
    page.wait_for_function(
        "before => { const r = document.querySelector('#add-status .ad-add');"
        " return r && Number(r.dataset.upload) > before && r.dataset.state === 'done'; }", arg=before,
        timeout=ADD_TIMEOUT_MS)
    return page.inner_text("#add-status")


def n_articles(page) -> int:
    """The article count in the index panel (opened first: a closed accordion renders nothing)."""
    if not page.locator("#n-articles").is_visible():
        page.click("#index-panel > button")
    return int(page.locator("#n-articles").inner_text().replace(",", ""))


def test_question_gets_the_cited_answer(page, app, tmp_path):
    t0 = time.monotonic()
    ask(page, app, "How big was Nippon Steel's bid for US Steel?")
    app.timings["ask_s"] = round(time.monotonic() - t0, 2)
    assert "14.9 billion" in last_reply(page)
    sources = page.locator("#sources")
    assert "Trump and Ishiba Forge Ties" in sources.inner_text()
    assert "14.9 billion" in sources.locator(".ad-cite mark").first.inner_text()
    assert page.outside == [], "the page fetched something from outside the machine"
    shot = tmp_path / "screenshot.png"
    page.screenshot(path=str(shot), full_page=True)
    if SCREENSHOT:
        shutil.copyfile(shot, SCREENSHOT)
    sources.locator("details summary").first.click()  # "More of the article" opens
    assert "Ishiba" in sources.locator("details .ad-more").first.inner_text()


def test_example_button_asks_it(page, app):
    ask(page, app, "What is the US trade deficit with Japan?", via=lambda: page.click("#example-1"))
    reply = last_reply(page)
    assert "Not answered" not in reply and "[1]" in reply and "trade" in reply
    assert "Trump and Ishiba Forge Ties" in page.inner_text("#sources")


def test_unrelated_question_is_refused_with_related_passages(page, app):
    ask(page, app, "Who won the 1998 football World Cup?")
    assert "Not answered" in last_reply(page)
    sources = page.locator("#sources")
    assert sources.locator("h3").inner_text() == "Related passages"
    assert sources.locator(".ad-cite").count() >= 1


def test_uploaded_article_is_indexed_and_answers(page, app, tmp_path):
    before = n_articles(page)
    f = tmp_path / "varsk harbour.txt"
    f.write_text(HARBOUR, encoding="utf-8")
    t0 = time.monotonic()
    status = upload(page, str(f))
    app.timings["add_s"] = round(time.monotonic() - t0, 2)
    assert "Added **" not in status and "Added 1 new" in status, status
    assert "Varsk harbour reopens after renovation" in status
    assert n_articles(page) == before + 1
    assert (app.corpus / "varsk_harbour.txt").read_text(encoding="utf-8") == HARBOUR
    ask(page, app, "How much did the renovation of Varsk harbour cost?")
    assert "42 million euros" in last_reply(page)
    assert "Varsk harbour reopens after renovation" in page.inner_text("#sources")


def test_script_payload_in_an_article_never_runs(page, app):
    # The browser sends the bare name, but the server must cope with the traversal attempt either way.
    status = upload(page, {"name": "../../quillon.txt", "mimeType": "text/plain", "buffer": LIGHTHOUSE.encode()})
    assert "Added 1 new" in status or "already in the index" in status, status
    assert (app.corpus / "quillon.txt").exists() and not (app.corpus.parent.parent / "quillon.txt").exists()
    ask(page, app, "What did the vandals paint on the Quillon lighthouse door?")
    page.locator("#sources details summary").first.click()
    n_articles(page)  # opens the index panel, which lists the title
    # No element the payload could have made exists (so no handler of it can still fire), and none ran.
    for where in ("#sources", "#chat", "#index-info", "#add-status"):
        assert page.locator(f"{where} script, {where} img[src='x']").count() == 0
    assert page.evaluate("window.__pwned") is None
    sources = page.inner_text("#sources")
    assert "<script>window.__pwned=1</script>" in sources and 'onerror="window.__pwned=2"' in sources
    assert "${window.__pwned=3}" in sources
    assert "<script>window.__pwned=1</script>" in last_reply(page) or "Quillon" in last_reply(page)
    assert "Quillon lighthouse vandalised <script>" in page.inner_text("#index-info")


def test_questions_keep_working_while_articles_are_added(page, app, tmp_path):
    big = tmp_path / "orm almanac.txt"  # ~350 texts to embed: about 10 s on 2 cores
    big.write_text("Harvest almanac of Orm\n\n" + "\n".join(
        f"In {1600 + i} the harvest in the valley of Orm yielded {i * 7} tonnes of barley." for i in range(300)))
    page.set_input_files("#upload input[type=file]", str(big))
    page.wait_for_function("() => /embedding/.test(document.querySelector('#add-panel')?.innerText || '')",
                           timeout=ADD_TIMEOUT_MS)
    ask(page, app, "What did Ishiba say about meeting Trump?")
    assert "Ishiba" in last_reply(page)
    assert "articles in" not in page.inner_text("#add-status"), "the add finished first: nothing was shown"
    page.wait_for_function("() => document.querySelector('#add-status .ad-add')?.dataset.state === 'done'",
                           timeout=ADD_TIMEOUT_MS)
    assert "Harvest almanac of Orm" in page.inner_text("#add-status")


@pytest.mark.parametrize("name,size,message", [
    ("huge.txt", 6_000_000, "exceed the maximum allowed size"),
    ("report.pdf", 100, "Invalid file type"),
])
def test_upload_limits_show_a_clear_message(page, app, name, size, message):
    page.set_input_files("#upload input[type=file]", {"name": name, "mimeType": "text/plain", "buffer": b"x" * size})
    page.get_by_text(message).first.wait_for(timeout=ADD_TIMEOUT_MS)
    assert name in page.get_by_text(message).first.inner_text()
    assert not (app.corpus / name).exists()


SNEAKY = "<img src=x onerror=window.__pwned=5>"  # no double quotes: it sits inside a quotation
PORT_A = f"""---
title: Varsk port has record year
date: 2024-03-01
source: Harbor Times
---
The port of Varsk handled 12.1 million tonnes of cargo last year, the port authority said.

Harbour master Ilse Brandt was pleased with the result. "The new breakwater {SNEAKY} made all the difference for our fishing fleet," she said.
"""
PORT_B = """---
title: Cargo boom at Varsk
date: 2024-03-05
source: Daily Ledger
---
The port of Varsk handled 12.4 million tonnes of cargo last year, according to the port authority.
"""


def set_dates(page, since: str = "", until: str = "") -> None:
    """Fill the Dates panel's range (opened first) and commit each field with Enter."""
    if not page.locator("#since input").first.is_visible():
        page.click("#dates-panel > button")
    for sel, value in (("#since input", since), ("#until input", until)):
        box = page.locator(sel).first
        box.fill(value)
        box.press("Enter")


def test_news_conflict_quote_and_date_range(page, app, tmp_path):
    # The undated harbour article too, whichever test ran first: the last question's candidates
    # are the same in any order.
    for name, text in (("varsk_port_a.md", PORT_A), ("varsk_port_b.md", PORT_B), ("varsk_harbour.txt", HARBOUR)):
        status = upload(page, {"name": name, "mimeType": "text/markdown", "buffer": text.encode()})
        assert "Added 1 new" in status or "already in the index" in status, status
    ask(page, app, "How much cargo did the port of Varsk handle?")
    box = page.locator("#sources .ad-conflicts")
    assert "Reports differ" in box.inner_text()
    assert "12.1 million tonnes [" in box.inner_text() and "12.4 million tonnes [" in box.inner_text()
    assert "Harbor Times, 1 March 2024" in box.inner_text() and "Daily Ledger, 5 March 2024" in box.inner_text()

    ask(page, app, "What did Brandt say about the breakwater?")
    quote = page.locator("#sources .ad-quote").first
    assert SNEAKY in quote.inner_text() and quote.locator(".ad-speaker").inner_text() == "Ilse Brandt"
    assert "Ilse Brandt:" in last_reply(page) and SNEAKY in last_reply(page)
    assert page.locator("#sources img[src='x'], #chat img[src='x']").count() == 0
    assert page.evaluate("window.__pwned") is None

    set_dates(page, since="2024-03-03")  # only the Daily Ledger's report is in range: no disagreement left
    ask(page, app, "How much cargo did the port of Varsk handle?")
    sources = page.inner_text("#sources")
    assert "Daily Ledger" in sources and "Harbor Times" not in sources and "Reports differ" not in sources
    set_dates(page, since="2030-01-01")  # nothing published then (a new wording: the panel must change)
    ask(page, app, "How much cargo went through the port of Varsk?")
    # No dated report is used. The undated harbour article may be (Config.undated): then the
    # reply says it has no date; whether its sentence answers is the refusal model's call.
    reply, sources = last_reply(page), page.inner_text("#sources")
    assert "Daily Ledger" not in sources and "Harbor Times" not in sources and "12.4 million" not in reply
    assert "Not answered" in reply or "has no date" in reply


def test_page_api_lists_only_its_public_endpoints(app):
    """A program sees /ask, /add and /info (docs/api.md, "The page's API"), none of the page's own events."""
    import json

    from gradio_client import Client

    client = Client(app.url, verbose=False)
    try:
        api = client.view_api(print_info=False, return_format="dict")
        assert sorted(api["named_endpoints"]) == ["/add", "/ask", "/info"] and api["unnamed_endpoints"] == {}
        reply = json.loads(client.predict("How big was Nippon Steel's bid for US Steel?", [], api_name="/ask"))
        assert "$14.9 billion" in reply["citations"][0]["sentence"]
    finally:
        client.close()


TUNNEL = """Brask tunnel opens to traffic

The tunnel under the Brask strait opened to traffic on 14 April 2025, cutting the crossing to six minutes.
Transport minister Aino Lehto said the tunnel cost 310 million euros and took five years to build.
"""


def test_the_live_note_shows_articles_that_land_in_the_watched_folder(browser, watched_app):
    """A file written into the folder (as a wire feed or `askdesk feed` would) is indexed by the page's
    watcher; an open page says so without a reload, with its title, and answers from it."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(watched_app.url)
        page.wait_for_selector("#question textarea")
        before = n_articles(page)
        assert page.locator("#live-news .ad-live").get_attribute("data-count") == "0"
        t0 = time.monotonic()
        (watched_app.corpus / "wire").mkdir(exist_ok=True)
        tmp = watched_app.corpus / "wire" / ".tunnel.txt.part"  # written whole, then renamed in, as feeds do
        tmp.write_text(TUNNEL, encoding="utf-8")
        tmp.rename(watched_app.corpus / "wire" / "tunnel.txt")
        page.wait_for_function("() => document.querySelector('#live-news .ad-live')?.dataset.count === '1'",
                               timeout=ADD_TIMEOUT_MS)
        watched_app.timings["landed_to_shown_s"] = round(time.monotonic() - t0, 2)
        note = page.inner_text("#live-news")
        assert "1 new article since you opened the page" in note and "Brask tunnel opens to traffic" in note
        assert n_articles(page) == before + 1  # the index panel was redrawn too
        ask(page, watched_app, "How much did the tunnel under the Brask strait cost?")
        assert "310 million euros" in last_reply(page)
        assert "Brask tunnel opens to traffic" in page.inner_text("#sources")
    finally:
        context.close()
