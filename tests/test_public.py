"""A page for the public: `askdesk serve --read-only` and the per-client question limit.

Fast tier: the limiter on a fake clock, the gate's routing, and the page over HTTP with a FakeDesk.
Slow tier: `python app.py --read-only` in a subprocess, asked over HTTP and in headless Chromium.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from types import SimpleNamespace

import pytest
from test_ui import BID_ARTICLE, FakeDesk

from askdesk.config import Config
from askdesk.errors import BadInputError
from askdesk.surface import cli, ui
from askdesk.surface.gate import READ_ONLY, READ_ONLY_EMPTY, Gate
from askdesk.surface.limits import READ_ONLY_PER_MINUTE, QuestionLimit, per_minute, retry_after, too_many

BID_QUESTION = "How big was Nippon Steel's bid?"


class Clock:
    """A clock that moves only when a test moves it."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- the limit ----

def test_limit_allows_n_questions_in_any_minute_per_client():
    clock = Clock()
    limit = QuestionLimit(3, clock=clock)
    for t in (0, 10, 20):
        clock.now = 1000 + t
        assert limit.take("10.0.0.1") == 0
    clock.now = 1030
    assert limit.take("10.0.0.1") == 30  # the question at 0 leaves the window at 60
    assert limit.wait("10.0.0.1") == 30 and limit.take("10.0.0.2") == 0  # another address has its own count
    clock.now = 1060
    assert limit.wait("10.0.0.1") == 0  # only looks ...
    assert limit.wait("10.0.0.1") == 0 and limit.take("10.0.0.1") == 0  # ... until one is taken
    assert limit.take("10.0.0.1") == 10  # the questions at 10, 20 and 60 are in the window: 10 s to wait


def test_refusal_says_whole_seconds_to_wait():
    assert (retry_after(0.2), retry_after(29.01), retry_after(30)) == (1, 30, 30)
    assert too_many(29.01) == "too many questions; try again in 30 s"


def test_limit_counts_exactly_under_threads():
    limit = QuestionLimit(50, clock=Clock())
    allowed = []

    def ask():
        allowed.append(sum(limit.take("10.0.0.1") == 0 for _ in range(100)))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 50


def test_limit_forgets_clients_idle_for_a_minute(monkeypatch):
    monkeypatch.setattr(QuestionLimit, "SWEEP_AT", 4)
    clock = Clock()
    limit = QuestionLimit(2, clock=clock)
    for i in range(5):
        limit.take(f"old{i}")
    clock.now += 61
    for i in range(6):
        limit.take(f"new{i}")
    assert set(limit._asked) == {f"new{i}" for i in range(6)}
    assert limit.take("old0") == 0  # forgotten, not refused


def test_limit_defaults_and_settings():
    assert per_minute(Config()) == 0  # a page on localhost: no limit
    assert per_minute(Config(read_only=True)) == READ_ONLY_PER_MINUTE == 30
    assert per_minute(Config(read_only=True, max_questions_per_minute=0)) == 0
    cfg = Config.from_env({"ASKDESK_READ_ONLY": "1", "ASKDESK_MAX_QUESTIONS_PER_MINUTE": "12"})
    assert cfg.read_only and per_minute(cfg) == 12
    with pytest.raises(BadInputError, match="max_questions_per_minute=-1"):
        Config(max_questions_per_minute=-1)


def test_serve_flags_and_their_environment(monkeypatch):
    served = []
    monkeypatch.setattr(ui, "launch", lambda cfg, **kw: served.append((cfg, kw)))
    assert cli.main(["serve", "--read-only", "--max-questions-per-minute", "5"]) == 0
    assert served[-1][0].read_only and served[-1][0].max_questions_per_minute == 5
    monkeypatch.setenv("ASKDESK_READ_ONLY", "1")  # no flag: the environment's setting stands
    monkeypatch.setenv("ASKDESK_MAX_QUESTIONS_PER_MINUTE", "7")
    assert cli.main(["serve"]) == 0
    assert served[-1][0].read_only and served[-1][0].max_questions_per_minute == 7
    assert cli.main(["serve", "--max-questions-per-minute", "0"]) == 0 and per_minute(served[-1][0]) == 0
    monkeypatch.delenv("ASKDESK_READ_ONLY")
    assert cli.main(["serve"]) == 0 and not served[-1][0].read_only
    assert served[-1][1]["host"] is None  # localhost unless --host says otherwise


# ---- the page's handlers, with a fake desk ----

def build(tmp_path, **cfg):
    pytest.importorskip("gradio")
    desk = FakeDesk([BID_ARTICLE])
    limit = cfg.pop("limit", None)
    demo = ui.build_ui(desk, Config(corpus=tmp_path / "corpus", index=tmp_path / "index", **cfg), limit=limit)
    return desk, demo, {f.name: f.fn for f in demo.fns.values()}


def elem_ids(demo) -> set:
    return {getattr(b, "elem_id", None) for b in demo.blocks.values()}


def test_read_only_page_has_no_upload_box_and_add_refuses(tmp_path):
    import gradio as gr

    desk, demo, fns = build(tmp_path, read_only=True)
    assert not {"upload", "add-panel", "add-status"} & elem_ids(demo)
    assert not [b for b in demo.blocks.values() if isinstance(b, gr.File)] and "add_files" not in fns
    up = tmp_path / "harbour.txt"
    up.write_text("Harbour news\n\nThe harbour opened in 1901.")
    with pytest.raises(gr.Error, match="read-only.*askdesk add FILE"):
        fns["add"]([str(up)])
    assert desk.added == [] and not (tmp_path / "corpus").exists()
    _, chat, _, _ = fns["respond"](BID_QUESTION, [], [])
    assert "14.9 billion" in chat[-1]["content"]  # asking still works
    assert json.loads(fns["info"]())["read_only"] is True and json.loads(fns["info"]())["questions_per_minute"] == 30
    _, writable, fns = build(tmp_path)  # the default page keeps its upload box
    assert {"upload", "add-panel"} <= elem_ids(writable) and json.loads(fns["info"]())["read_only"] is False


def test_read_only_page_on_an_empty_index_says_editors_add(tmp_path, fake, fake_config):
    pytest.importorskip("gradio")
    from askdesk import Desk

    cfg = fake_config.replace(read_only=True)
    fns = {f.name: f.fn for f in ui.build_ui(Desk(cfg.index, config=cfg, embedder=fake), cfg).fns.values()}
    assert fns["respond"]("When did the harbour open?", [], [])[1][-1]["content"] == READ_ONLY_EMPTY


def test_chat_over_the_limit_says_so_as_the_reply(tmp_path):
    import gradio as gr
    from gradio.utils import get_type_hints, is_special_typed_parameter

    clock = Clock()
    desk, _, fns = build(tmp_path, limit=QuestionLimit(1, clock=clock))
    for fn in (fns["respond"], fns["ask"]):  # gradio passes them the asker's request: its address is the key
        assert is_special_typed_parameter("request", get_type_hints(fn))
    me, other = (SimpleNamespace(client=SimpleNamespace(host=h)) for h in ("10.0.0.1", "10.0.0.2"))
    _, chat, _, asked = fns["respond"](BID_QUESTION, [], [], request=me)
    assert "14.9 billion" in chat[-1]["content"]
    clock.now += 20
    box, chat, sources, asked = fns["respond"]("And US Steel?", chat, asked, request=me)
    assert chat[-2] == {"role": "user", "content": "And US Steel?"}
    assert chat[-1] == {"role": "assistant", "content": "too many questions; try again in 40 s"}
    assert asked == [BID_QUESTION] and len(desk.asked) == 1 and "Sources for each answer" in sources
    assert "14.9 billion" in fns["respond"](BID_QUESTION, [], [], request=other)[1][-1]["content"]
    with pytest.raises(gr.Error, match="too many questions; try again in 40 s"):
        fns["ask"](BID_QUESTION, request=me)
    clock.now += 40
    assert "14.9 billion" in json.loads(fns["ask"](BID_QUESTION, request=me))["answer"]


# ---- the gate, as ASGI ----

def call_gate(gate_app, path, body=b"", method="POST", client=("10.0.0.1", 5000)):
    """One request through the gate: (status, headers, body) and what reached the app behind it."""
    reached, sent = [], []
    chunks = [body[:5], body[5:]]  # in two messages, as a client may send it

    async def receive():
        part = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": part, "more_body": bool(chunks)}

    async def app(scope, receive, send):
        got = b""
        while True:
            m = await receive()
            got += m.get("body", b"")
            if not m.get("more_body"):
                break
        reached.append((scope["path"], got))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message):
        sent.append(message)

    gate = gate_app(app)
    asyncio.run(gate({"type": "http", "method": method, "path": path, "client": client}, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"], reached


def test_gate_refuses_every_route_into_add_and_file_uploads():
    names = {3: "respond", 7: "add", 9: "info"}

    def gate(app):
        return Gate(app, names=names, read_only=True, limit=None)

    refused = [("/gradio_api/call/add", b'{"data": [[]]}'), ("/gradio_api/call/v2/add/", b"{}"),
               ("/gradio_api/queue/join", b'{"fn_index": 7, "session_hash": "s", "data": [[]]}'),
               ("/gradio_api/run/info", b'{"fn_index": "7", "data": [[]]}'),  # the body's index is what gradio runs
               ("/gradio_api/upload", b"--x"), ("/gradio_api/process_recording", b"--x")]
    for path, body in refused:
        status, headers, text, reached = call_gate(gate, path, body)
        assert (status, reached) == (403, []), path
        assert json.loads(text) == {"error": READ_ONLY} and headers[b"content-type"] == b"application/json"
    body = b'{"fn_index": 3, "session_hash": "s", "data": ["q", [], []]}'
    assert call_gate(gate, "/gradio_api/queue/join", body)[3] == [("/gradio_api/queue/join", body)]  # passed whole
    assert call_gate(gate, "/gradio_api/call/info", b'{"data": []}')[0] == 200
    assert call_gate(lambda app: Gate(app, names=names, read_only=False, limit=None), "/gradio_api/upload")[0] == 200


def test_gate_answers_429_to_a_client_over_the_limit():
    clock = Clock()
    limit = QuestionLimit(1, clock=clock)
    names = {3: "respond", 4: "ask"}

    def gate(app):
        return Gate(app, names=names, read_only=False, limit=limit)

    assert call_gate(gate, "/gradio_api/call/ask", b'{"data": ["q"]}')[0] == 200  # the gate only looks: ui.py counts
    limit.take("10.0.0.1")
    clock.now += 15
    for path, body in (("/gradio_api/call/ask", b'{"data": ["q"]}'), ("/gradio_api/queue/join", b'{"fn_index": 4}')):
        status, headers, text, reached = call_gate(gate, path, body)
        assert (status, headers[b"retry-after"], reached) == (429, b"45", [])
        assert json.loads(text) == {"error": "too many questions; try again in 45 s"}
    assert call_gate(gate, "/gradio_api/call/ask", b'{"data": ["q"]}', client=("10.0.0.2", 1))[0] == 200
    # The chat's own event passes: the page says it in the conversation instead.
    assert call_gate(gate, "/gradio_api/queue/join", b'{"fn_index": 3}')[0] == 200


# ---- the served page over HTTP, as a program would ask it ----

@pytest.fixture()
def public(tmp_path):
    """A read-only page over a FakeDesk, 2 questions a minute on a fake clock, on a free loopback port."""
    pytest.importorskip("gradio")
    import gradio as gr
    import httpx

    desk = FakeDesk([BID_ARTICLE])
    desk.embedder = None
    clock = Clock()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = Config(corpus=tmp_path / "corpus", index=tmp_path / "index", read_only=True)
    _, url, _ = ui.launch(cfg, host="127.0.0.1", port=port, desk=desk, prevent_thread_lock=True,
                          limit=QuestionLimit(2, clock=clock))
    with httpx.Client(base_url=url, timeout=30) as http:
        yield SimpleNamespace(desk=desk, url=url, http=http, clock=clock, corpus=tmp_path / "corpus")
    gr.close_all()


def http_ask(http, question: str):
    """POST /gradio_api/call/ask (curl's way in): the response, and the answer when there is one."""
    r = http.post("/gradio_api/call/ask", json={"data": [question, [], None, None, None]})
    if r.status_code != 200:
        return r, None
    stream = http.get(f"/gradio_api/call/ask/{r.json()['event_id']}").text
    data = re.search(r"^event: complete\ndata: (.*)$", stream, re.M)
    assert data, stream
    return r, json.loads(json.loads(data.group(1))[0])


def test_served_read_only_page_refuses_adds_and_answers(public, tmp_path):
    from gradio_client import Client

    r = public.http.post("/gradio_api/call/add", json={"data": [[]]})
    assert r.status_code == 403 and r.json() == {"error": READ_ONLY}
    r = public.http.post("/gradio_api/upload", files=[("files", ("harbour.txt", b"Harbour news\n\nIt opened."))])
    assert r.status_code == 403 and r.json() == {"error": READ_ONLY}
    assert public.desk.added == [] and not public.corpus.exists()
    _, answer = http_ask(public.http, BID_QUESTION)
    assert answer["citations"][0]["sentence"] == "Nippon Steel offered $14.9 billion for US Steel."
    client = Client(public.url, verbose=False)
    try:
        info = json.loads(client.predict(api_name="/info"))
        assert info["read_only"] is True and info["questions_per_minute"] == 2 and info["n_articles"] == 1
    finally:
        client.close()


def test_served_page_answers_429_with_retry_after_over_the_limit(public):
    import httpx
    from gradio_client import Client

    for _ in range(2):
        r, answer = http_ask(public.http, BID_QUESTION)
        assert r.status_code == 200 and "14.9 billion" in answer["answer"]
    public.clock.now += 25
    r, _ = http_ask(public.http, BID_QUESTION)
    assert (r.status_code, r.headers["retry-after"]) == (429, "35")
    assert r.json() == {"error": "too many questions; try again in 35 s"} and len(public.desk.asked) == 2
    client = Client(public.url, verbose=False)  # gradio_client raises the status; the reason is in its body
    try:
        with pytest.raises(httpx.HTTPStatusError) as e:
            client.predict(BID_QUESTION, [], api_name="/ask")
        assert e.value.response.status_code == 429 and "try again in 35 s" in e.value.response.json()["error"]
        public.clock.now += 35
        assert "14.9 billion" in json.loads(client.predict(BID_QUESTION, [], api_name="/ask"))["answer"]
    finally:
        client.close()


# ---- slow: the real page in a subprocess, over HTTP and in Chromium ----

@pytest.fixture(scope="module")
def read_only_app(tmp_path_factory, request):
    """`python app.py --read-only` on a free port (the default limit: 30 questions a minute)."""
    from test_browser import _launch

    yield from _launch(tmp_path_factory, request, "--read-only")


@pytest.fixture(scope="module")
def limited_app(tmp_path_factory, request):
    """`python app.py --read-only --max-questions-per-minute 1`."""
    from test_browser import _launch

    yield from _launch(tmp_path_factory, request, "--read-only", "--max-questions-per-minute", "1")


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright
    from test_browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(chromium, app):
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(app.url)
    page.wait_for_selector("#question textarea")
    return context, page


@pytest.mark.slow
def test_real_read_only_page_over_http(read_only_app):
    import httpx
    from gradio_client import Client

    files = sorted(p.name for p in read_only_app.corpus.rglob("*"))
    with httpx.Client(base_url=read_only_app.url, timeout=60) as http:
        r = http.post("/gradio_api/call/add", json={"data": [[]]})
        assert r.status_code == 403 and r.json() == {"error": READ_ONLY}
        r = http.post("/gradio_api/upload", files=[("files", ("harbour.txt", b"Harbour news\n\nIt opened."))])
        assert r.status_code == 403 and r.json() == {"error": READ_ONLY}
    client = Client(read_only_app.url, verbose=False)
    try:
        reply = json.loads(client.predict("How big was Nippon Steel's bid for US Steel?", [], api_name="/ask"))
        assert not reply["refused"] and "$14.9 billion" in reply["citations"][0]["sentence"]
        info = json.loads(client.predict(api_name="/info"))
        assert info["read_only"] is True and info["questions_per_minute"] == 30 and info["n_articles"] == 1
    finally:
        client.close()
    assert sorted(p.name for p in read_only_app.corpus.rglob("*")) == files
    assert "read-only page" in read_only_app.log.read_text()


@pytest.mark.slow
def test_real_read_only_page_in_the_browser_has_no_upload_and_answers(chromium, read_only_app):
    from test_browser import ask, last_reply

    context, page = open_page(chromium, read_only_app)
    try:
        assert page.locator("#upload, #add-panel, #add-status, input[type=file]").count() == 0
        assert "Add articles" not in page.inner_text("body")
        ask(page, read_only_app, "How big was Nippon Steel's bid for US Steel?")
        assert "14.9 billion" in last_reply(page)
        assert "14.9 billion" in page.locator("#sources .ad-cite mark").first.inner_text()
    finally:
        context.close()


@pytest.mark.slow
def test_real_page_over_the_limit_says_so_in_the_chat_and_429_over_http(chromium, limited_app):
    """One question a minute: the second, in the chat, is answered with the limit's message; `/ask`
    over HTTP then gets 429 with Retry-After, the same seconds in its message."""
    import httpx
    from test_browser import answer_serial, ask, last_reply

    context, page = open_page(chromium, limited_app)
    try:
        ask(page, limited_app, "How big was Nippon Steel's bid for US Steel?")
        assert "14.9 billion" in last_reply(page)
        before = answer_serial(page)
        page.fill("#question textarea", "What did Ishiba say about meeting Trump?")
        page.press("#question textarea", "Enter")
        page.wait_for_function("before => Number(document.querySelector('#sources .ad-sources')?.dataset.answer)"
                               " > before", arg=before, timeout=60_000)
        assert re.fullmatch(r"too many questions; try again in \d+ s", last_reply(page).strip()), last_reply(page)
        assert page.input_value("#question textarea") == "What did Ishiba say about meeting Trump?"  # to send again
    finally:
        context.close()
    with httpx.Client(base_url=limited_app.url, timeout=60) as http:
        r = http.post("/gradio_api/call/ask", json={"data": ["How big was Nippon Steel's bid?", [], None, None, None]})
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
    assert r.json() == {"error": f"too many questions; try again in {r.headers['retry-after']} s"}
