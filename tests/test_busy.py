"""A saturated page: a question past the cap on waiting ones is told when to retry, never a bare 503.

Fast tier: the admission on a fake clock and a fake queue, the gate, the chat's handlers, and the
served page over HTTP with answers held by an event the test controls. Slow tier: the chat in
headless Chromium over the same held page, the line shown as the reply.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from types import SimpleNamespace

import pytest
from test_public import Clock, call_gate, http_ask
from test_ui import BID_ARTICLE, FakeDesk

from askdesk.config import Config
from askdesk.errors import BadInputError
from askdesk.surface import cli, ui
from askdesk.surface.busy import BUSY, FIRST_GUESS_S, Busy, busy_line
from askdesk.surface.gate import Gate, gate_middleware

BID_QUESTION = "How big was Nippon Steel's bid?"


class Queue:
    """A stand-in for gradio's queue: the number of questions waiting, set by the test."""

    def __init__(self, n: int = 0):
        self.n = n

    def __call__(self) -> int:
        return self.n


# ---- the admission ----

def test_admits_under_the_cap_and_counts_joins_until_queued():
    queue = Queue(1)
    busy = Busy(3, workers=2, waiting=queue, clock=Clock())
    assert busy.admit() is None and busy.admit() is None  # 1 queued + 2 on their way in: 3
    assert busy.ahead() == 3 and busy.refusal() == busy.line()
    assert busy.admit() == ("busy: 3 questions are waiting; try again in 1 s", 1)
    busy.joined()  # one is in gradio's queue now
    queue.n = 2
    assert busy.ahead() == 3 and busy.admit() is not None
    queue.n = 0  # two answered
    assert busy.refusal() is None and busy.admit() is None and busy.ahead() == 2


def test_the_wait_is_answer_time_times_queue_over_workers_until_the_queue_filled():
    clock = Clock()
    busy = Busy(10, workers=2, waiting=Queue(0), clock=clock, recent=3)
    assert busy.wait_s(10) == pytest.approx(FIRST_GUESS_S * 10 / 2)  # nothing timed yet: the first guess
    for took in (9.0, 0.4, 0.6, 0.5):  # the 9 s answer is older than the 3 recent ones
        with busy.answering():
            clock.now += took
    assert busy.wait_s(10) == pytest.approx(0.5 * 10 / 2)
    busy.waiting = Queue(10)
    assert busy.admit() == ("busy: 10 questions are waiting; try again in 3 s", 3)  # 2.5 s, in whole seconds
    with pytest.raises(RuntimeError), busy.answering():  # an answer that failed took time too
        clock.now += 3.5
        raise RuntimeError
    assert busy.wait_s(10) == pytest.approx((0.6 + 0.5 + 3.5) / 3 * 10 / 2)


def test_at_saturation_the_wait_is_the_pace_between_answers_times_queue():
    """With others waiting, the time between two answers finishing is the whole cycle of a slot over
    the slots (gradio's work around the answer included), so it replaces answer time / workers."""
    clock, queue = Clock(), Queue(5)
    busy = Busy(10, workers=2, waiting=queue, clock=clock)
    with busy.answering():
        clock.now += 0.1  # finishes with 5 waiting: the pace starts here
    assert busy.wait_s(10) == pytest.approx(0.1 * 10 / 2)
    for gap in (0.3, 0.2, 0.4):  # each answer took 0.1 s, but they finish every 0.3, 0.2, 0.4 s
        clock.now += gap - 0.1
        with busy.answering():
            clock.now += 0.1
    assert busy.wait_s(10) == pytest.approx(0.3 * 10)
    queue.n = 0
    clock.now += 60
    with busy.answering():  # finishes with none waiting: the next pace starts afresh, not 60 s later
        clock.now += 0.1
    queue.n = 5
    clock.now += 600
    with busy.answering():
        clock.now += 0.1
    assert busy.wait_s(10) == pytest.approx(0.3 * 10)


def test_busy_line_says_whole_seconds_and_at_least_one():
    assert busy_line(70, 0.2) == BUSY.format(n=70, s=1) == "busy: 70 questions are waiting; try again in 1 s"
    assert busy_line(70, 2.01) == "busy: 70 questions are waiting; try again in 3 s"
    assert busy_line(1, 0.0) == "busy: 1 question is waiting; try again in 1 s"


def test_admits_exactly_the_cap_under_threads():
    busy = Busy(50, workers=2, waiting=Queue(0), clock=Clock())
    admitted = []

    def join():
        admitted.append(sum(busy.admit() is None for _ in range(100)))

    threads = [threading.Thread(target=join) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 50


def test_cap_setting_flag_and_environment(monkeypatch):
    assert Config().max_waiting == 64
    assert Config.from_env({"ASKDESK_MAX_WAITING": "5"}).max_waiting == 5
    with pytest.raises(BadInputError, match="max_waiting=-1"):
        Config(max_waiting=-1)
    served = []
    monkeypatch.setattr(ui, "launch", lambda cfg, **kw: served.append(cfg))
    assert cli.main(["serve", "--max-waiting", "8"]) == 0 and served[-1].max_waiting == 8
    monkeypatch.setenv("ASKDESK_MAX_WAITING", "0")
    assert cli.main(["serve"]) == 0 and served[-1].max_waiting == 0


# ---- the gate ----

def test_gate_answers_503_with_retry_after_past_the_cap():
    queue = Queue(2)
    busy = Busy(2, workers=2, waiting=queue, clock=Clock())
    busy.took(1.5)
    names = {3: "respond", 4: "ask", 5: "respond_1", 9: "info"}

    def gate(app):
        return Gate(app, names=names, read_only=False, limit=None, busy=busy, chat={"respond", "respond_1"})

    for path, body in (("/gradio_api/call/ask", b'{"data": ["q"]}'), ("/gradio_api/call/v2/ask", b"{}"),
                       ("/gradio_api/queue/join", b'{"fn_index": 4, "session_hash": "s"}')):
        status, headers, text, reached = call_gate(gate, path, body)
        assert (status, headers[b"retry-after"], reached) == (503, b"2", []), path  # 1.5 s x 2 / 2 workers
        assert json.loads(text) == {"error": "busy: 2 questions are waiting; try again in 2 s"}
        assert headers[b"content-type"] == b"application/json"
    assert call_gate(gate, "/gradio_api/call/info", b'{"data": []}')[0] == 200  # only questions are capped
    # The chat checks the cap before it joins (ui.py): its events are refused only past twice the cap.
    assert call_gate(gate, "/gradio_api/queue/join", b'{"fn_index": 5, "session_hash": "s"}')[0] == 200
    queue.n = 4
    status, headers, text, _ = call_gate(gate, "/gradio_api/queue/join", b'{"fn_index": 3, "session_hash": "s"}')
    assert status == 503 and json.loads(text)["error"].startswith("busy: 4 questions are waiting")
    queue.n = 1
    assert call_gate(gate, "/gradio_api/call/ask", b'{"data": ["q"]}')[0] == 200
    assert busy.ahead() == 1  # counted while gradio took it in, not after its reply


def test_gate_counts_a_question_as_waiting_until_gradio_replies_to_its_join():
    import asyncio

    busy = Busy(1, workers=2, waiting=Queue(0), clock=Clock())
    seen = []

    async def app(scope, receive, send):
        seen.append(busy.ahead())  # on its way into the queue: it counts against the cap
        await send({"type": "http.response.start", "status": 200, "headers": []})
        seen.append(busy.ahead())
        await send({"type": "http.response.body", "body": b"{}"})

    async def broken(scope, receive, send):
        raise RuntimeError("gradio failed")

    async def receive():
        return {"type": "http.request", "body": b'{"data": ["q"]}', "more_body": False}

    async def send(message):
        pass

    scope = {"type": "http", "method": "POST", "path": "/gradio_api/call/ask", "client": ("10.0.0.1", 1)}
    asyncio.run(Gate(app, names={}, read_only=False, limit=None, busy=busy)(scope, receive, send))
    assert seen == [1, 0] and busy.ahead() == 0
    with pytest.raises(RuntimeError):
        asyncio.run(Gate(broken, names={}, read_only=False, limit=None, busy=busy)(scope, receive, send))
    assert busy.ahead() == 0  # a failed join is not counted forever


def test_gate_is_installed_for_the_cap_alone(tmp_path):
    pytest.importorskip("gradio")
    busy = Busy(5, workers=2)
    demo = ui.build_ui(FakeDesk([BID_ARTICLE]), Config(corpus=tmp_path / "c", index=tmp_path / "i"), busy=busy)
    (mw,) = gate_middleware(demo, read_only=False, limit=None, busy=busy)
    assert mw.kwargs["busy"] is busy and {"respond", "respond_1"} <= mw.kwargs["chat"] and "ask" not in mw.kwargs["chat"]
    assert gate_middleware(demo, read_only=False, limit=None, busy=None) == []


# ---- the chat's handlers ----

def build(tmp_path, busy):
    pytest.importorskip("gradio")
    desk = FakeDesk([BID_ARTICLE])
    demo = ui.build_ui(desk, Config(corpus=tmp_path / "corpus", index=tmp_path / "index"), busy=busy)
    return desk, demo, {f.name: f.fn for f in demo.fns.values()}


def test_chat_over_the_cap_is_told_when_to_retry_as_the_reply(tmp_path):
    import asyncio

    import gradio as gr

    queue = Queue(0)
    _, demo, fns = build(tmp_path, Busy(3, workers=2, waiting=queue, clock=Clock()))
    assert asyncio.run(fns["admit"](BID_QUESTION)) is None  # under the cap: the question joins the queue
    queue.n = 3
    with pytest.raises(gr.Error) as e:
        asyncio.run(fns["admit"](BID_QUESTION))
    assert e.value.visible is False  # no toast: the chat says it
    assert asyncio.run(fns["admit"]("  ")) is None  # an empty question is skipped by respond, as before
    chat, sources = fns["busy_reply"](BID_QUESTION, [{"role": "user", "content": "earlier"}])
    assert chat[-2:] == [{"role": "user", "content": BID_QUESTION},
                         {"role": "assistant", "content": "busy: 3 questions are waiting; try again in 1 s"}]
    assert "Sources for each answer" in sources and len(chat) == 3
    # Each way to ask in the chat is checked first: on success it is answered, on failure told.
    deps = demo.config["dependencies"]
    admits = [d for d in deps if demo.fns[d["id"]].name == "admit"]
    assert len(admits) == 1 + len(ui.EXAMPLES)
    for a in admits:
        after = {demo.fns[d["id"]].name: d for d in deps if d["trigger_after"] == a["id"]}
        assert after["respond"]["trigger_only_on_success"] and after["busy_reply"]["trigger_only_on_failure"]
        assert a["queue"] is False and after["busy_reply"]["queue"] is False


def test_answers_are_timed_for_the_estimate(tmp_path):
    clock = Clock()
    busy = Busy(3, workers=2, waiting=Queue(0), clock=clock)
    desk, _, fns = build(tmp_path, busy)
    answer = desk.ask

    def taking(seconds):
        def ask(*a, **kw):
            clock.now += seconds
            return answer(*a, **kw)
        return ask

    desk.ask = taking(0.8)  # the chat's answer
    assert "14.9 billion" in fns["respond"](BID_QUESTION, [], [])[1][-1]["content"]
    assert busy.wait_s(4) == pytest.approx(0.8 * 4 / 2)
    desk.ask = taking(2.4)  # /ask's
    assert "14.9 billion" in json.loads(fns["ask"](BID_QUESTION))["answer"]
    assert busy.wait_s(4) == pytest.approx((0.8 + 2.4) / 2 * 4 / 2)


def test_no_cap_means_no_check_before_the_chat(tmp_path):
    pytest.importorskip("gradio")
    demo = ui.build_ui(FakeDesk([BID_ARTICLE]), Config(corpus=tmp_path / "c", index=tmp_path / "i", max_waiting=0))
    assert "admit" not in {f.name for f in demo.fns.values()}


# ---- the served page, saturated ----

class HeldDesk(FakeDesk):
    """A FakeDesk whose answers wait for `release` (set: they go through) and take `takes` seconds of `clock`."""

    def __init__(self, clock: Clock):
        super().__init__([BID_ARTICLE])
        self.embedder, self.clock, self.takes = None, clock, 0.0
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Semaphore(0)  # one per answer begun

    def ask(self, question, **kw):
        self.entered.release()
        assert self.release.wait(60), "the test never released the answers"
        self.clock.now += self.takes
        return super().ask(question, **kw)

    def started(self, n: int) -> None:
        for _ in range(n):
            assert self.entered.acquire(timeout=30), "an answer never began"


def serve(tmp_path, busy: Busy, desk: FakeDesk):
    """The page over ``desk`` on a free loopback port (its url)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = Config(corpus=tmp_path / "corpus", index=tmp_path / "index")
    return ui.launch(cfg, host="127.0.0.1", port=port, desk=desk, prevent_thread_lock=True, busy=busy)[1]


@pytest.fixture()
def held(tmp_path):
    """A page with 2 answers in flight (ui.ASK_CONCURRENCY) and at most 2 waiting, its answers held."""
    pytest.importorskip("gradio")
    import gradio as gr
    import httpx

    assert ui.ASK_CONCURRENCY == 2
    clock = Clock()
    desk = HeldDesk(clock)
    busy = Busy(2, workers=ui.ASK_CONCURRENCY, clock=clock)
    url = serve(tmp_path, busy, desk)
    with httpx.Client(base_url=url, timeout=30) as http:
        yield SimpleNamespace(desk=desk, busy=busy, url=url, http=http, clock=clock)
        desk.release.set()
    gr.close_all()


def post_ask(http, question: str = BID_QUESTION):
    return http.post("/gradio_api/call/ask", json={"data": [question, [], None, None, None]})


def answer_of(http, event_id: str) -> dict:
    stream = http.get(f"/gradio_api/call/ask/{event_id}").text
    data = re.search(r"^event: complete\ndata: (.*)$", stream, re.M)
    assert data, stream
    return json.loads(json.loads(data.group(1))[0])


def test_saturated_page_answers_503_with_retry_after_and_serves_the_queued(held):
    from gradio_client import Client
    from gradio_client.utils import QueueError

    held.desk.takes = 3.0  # one answer timed at 3 s: the estimate's pace
    assert "14.9 billion" in http_ask(held.http, BID_QUESTION)[1]["answer"]
    held.desk.started(1)
    held.desk.takes = 0.0
    held.desk.release.clear()
    events = []
    for _ in range(2):  # each answer waited for: gradio's queue picks an event up a moment after its join
        events.append(post_ask(held.http))
        held.desk.started(1)
    # Both slots busy: what comes next waits in the queue.
    events += [post_ask(held.http) for _ in range(2)]
    assert [r.status_code for r in events] == [200] * 4 and held.busy.ahead() == 2
    r = post_ask(held.http)
    assert (r.status_code, r.headers["retry-after"]) == (503, "3")  # 3 s x 2 waiting / 2 in flight
    assert r.json() == {"error": "busy: 2 questions are waiting; try again in 3 s"}
    client = Client(held.url, verbose=False)  # gradio_client says only that the queue is full
    try:
        with pytest.raises(QueueError):
            client.predict(BID_QUESTION, [], api_name="/ask")
    finally:
        client.close()
    held.desk.release.set()
    for r in events:  # every question let in is answered
        assert answer_of(held.http, r.json()["event_id"])["citations"][0]["sentence"] == \
            "Nippon Steel offered $14.9 billion for US Steel."
    assert held.busy.ahead() == 0 and len(held.desk.asked) == 5
    r, answer = http_ask(held.http, BID_QUESTION)
    assert r.status_code == 200 and "14.9 billion" in answer["answer"]


# ---- slow: the chat in Chromium ----

@pytest.mark.slow
def test_chat_on_a_saturated_page_says_busy_as_the_reply(tmp_path):
    pytest.importorskip("gradio")
    import gradio as gr
    import httpx
    from playwright.sync_api import sync_playwright
    from test_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser, ask, last_reply

    _require_browser()
    clock = Clock()
    desk = HeldDesk(clock)
    url = serve(tmp_path, Busy(1, workers=ui.ASK_CONCURRENCY, clock=clock), desk)
    desk.release.clear()
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            events = []
            for _ in range(2):  # both slots busy, each answer waited for
                events.append(post_ask(http))
                desk.started(1)
            events.append(post_ask(http))  # one waiting: the cap
            assert [r.status_code for r in events] == [200] * 3
        with httpx.Client(base_url=url, timeout=30) as http, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url)
            page.fill("#question textarea", "What did Ishiba say?")
            page.press("#question textarea", "Enter")
            page.wait_for_function("() => [...document.querySelectorAll('#chat .message.bot')]"
                                   ".some(m => m.innerText.includes('busy:'))", timeout=30_000)
            assert last_reply(page).strip() == "busy: 1 question is waiting; try again in 1 s"
            assert page.input_value("#question textarea") == "What did Ishiba say?"  # to send again
            assert page.locator('[data-testid="toast-body"]').count() == 0  # said in the chat, no error toast
            desk.release.set()
            assert all(answer_of(http, r.json()["event_id"])["answer"] for r in events)
            ask(page, SimpleNamespace(url=url, first_answer_s=0), BID_QUESTION)  # the queue drained: answered again
            assert "14.9 billion" in last_reply(page)
            browser.close()
    finally:
        desk.release.set()
        gr.close_all()


def test_programs_calling_ask_over_http_leave_at_most_the_kept_sessions(tmp_path, monkeypatch):
    """Each plain-HTTP call of /ask is a gradio session of its own, holding a copy of the page's
    config; the page keeps ui.SESSIONS_KEPT of them, not gradio's 10,000 (800 MB in an hour's soak)."""
    pytest.importorskip("gradio")
    import gradio as gr
    import httpx

    monkeypatch.setattr(ui, "SESSIONS_KEPT", 5)
    clock = Clock()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = Config(corpus=tmp_path / "corpus", index=tmp_path / "index")
    app, url, _ = ui.launch(cfg, host="127.0.0.1", port=port, desk=HeldDesk(clock), prevent_thread_lock=True,
                            busy=Busy(2, workers=ui.ASK_CONCURRENCY, clock=clock))
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            for _ in range(12):
                assert "14.9 billion" in http_ask(http, BID_QUESTION)[1]["answer"]
        held = app.state_holder.session_data  # gradio's own store of sessions (private: no public count)
        assert 1 <= len(held) <= 5
    finally:
        gr.close_all()


@pytest.mark.slow
def test_a_tab_whose_session_was_dropped_keeps_its_follow_up_context(tmp_path, monkeypatch):
    """gradio keeps ui.SESSIONS_KEPT sessions' state; programs calling /ask over plain HTTP make a
    session each, and can push an open tab's out. Its conversation goes on: the follow-up context
    is read from the chat the tab sends."""
    pytest.importorskip("gradio")
    import gradio as gr
    import httpx
    from playwright.sync_api import sync_playwright
    from test_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser, ask

    _require_browser()
    monkeypatch.setattr(ui, "SESSIONS_KEPT", 1)  # any other session drops the tab's
    desk = FakeDesk([BID_ARTICLE])
    desk.embedder = None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = ui.launch(Config(corpus=tmp_path / "corpus", index=tmp_path / "index"), host="127.0.0.1",
                          port=port, desk=desk, prevent_thread_lock=True)
    app = SimpleNamespace(url=url, first_answer_s=0)
    try:
        with httpx.Client(base_url=url, timeout=30) as http, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url)
            first = "How big was *Nippon Steel's* bid?"  # Markdown in it: shown escaped, read back as typed
            ask(page, app, first)
            assert desk.asked[-1] == (first, None)
            assert http_ask(http, "Anything new?")[1]["answer"]  # another session: the tab's state is dropped
            ask(page, app, "And US Steel?")
            assert desk.asked[-1] == ("And US Steel?", [first])
            browser.close()
    finally:
        gr.close_all()
