"""Cancelling a written answer: every request to the LLM streams, and askdesk hangs up (closes the
connection) while the model is still writing, so that the server stops: when the timeout passes,
on Ctrl-C, and when the reader of a streamed answer stops reading. Against a local server that
writes one word at a time and watches its client; the real llama.cpp server: test_llm_server.py."""

from __future__ import annotations

import _thread
import io
import json
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import write

from askdesk import Answer, Desk
from askdesk.answering import generate
from askdesk.surface import terminal

QUESTION = "How big was Nippon Steel's bid for US Steel?"
WORDS = 500  # a reply far longer than any test waits for: 500 x TICK = 10 s at least
TICK = 0.02  # seconds between two words, the model's speed


class SlowLLM:
    """An OpenAI-compatible /v1/chat/completions server writing ``words`` words ("w1 w2 ..."), one
    every ``tick`` seconds, and watching its client between two of them.

    ``hung_up`` is set when the client has closed the connection, ``finished`` when the reply was
    written to its end; ``sent`` counts the words sent; ``after(n)``, when set, runs after the n-th.
    A request without "stream" is computed whole before a byte is sent, its client unwatched: a
    client that gives up on it cannot stop the model (llama.cpp's server behaves so).
    """

    def __init__(self, words: int = WORDS, tick: float = TICK):
        self.words, self.tick, self.sent, self.after = words, tick, 0, None
        self.requests: list[dict] = []
        self.hung_up, self.finished, self.stop = threading.Event(), threading.Event(), threading.Event()
        llm = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                llm.requests.append(body)
                text = [f"w{i} " for i in range(1, llm.words + 1)]
                if not body.get("stream"):
                    llm.stop.wait(llm.words * llm.tick)  # the model writes the whole reply first
                    reply = {"choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": "".join(text)}}]}
                    self._send("application/json", json.dumps(reply).encode())
                    llm.finished.set()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                try:
                    for i, word in enumerate(text, 1):
                        self.wfile.write(event({"delta": {"content": word}}))
                        llm.sent = i
                        if llm.after:
                            llm.after(i)
                        if self._client_left(llm.tick):
                            llm.hung_up.set()
                            return
                        if llm.stop.is_set():
                            return
                    self.wfile.write(event({"delta": {}, "finish_reason": "stop"}) + b"data: [DONE]\n\n")
                    llm.finished.set()
                except OSError:  # a write the client's reset refused
                    llm.hung_up.set()

            def _client_left(self, wait: float) -> bool:
                """Whether the client closed the connection, waiting up to ``wait`` s for it to."""
                readable, _, _ = select.select([self.connection], [], [], wait)
                return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""  # EOF: the client's FIN

            def _send(self, kind: str, data: bytes):
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda *a: None
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def assert_hung_up_while_writing(self):
        assert self.hung_up.wait(5), "the client never closed the connection"
        assert not self.finished.is_set() and self.sent < self.words


def event(choice: dict) -> bytes:
    return f"data: {json.dumps({'choices': [{'index': 0, **choice}]})}\n\n".encode()


@pytest.fixture
def slow(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):  # 127.0.0.1 must be reached directly
        monkeypatch.delenv(var, raising=False)
    llm = SlowLLM()
    yield llm
    llm.stop.set()
    llm.server.shutdown()
    llm.server.server_close()


@pytest.fixture
def built(corpus, fake, fake_config):
    write(corpus / "harbour.txt", "---\ntitle: Harbour reopens\ndate: 2024-03-01\n---\n"
          "The harbour reopened on Friday after a year of repairs. The repairs cost $3 million.\n")
    Desk.build(corpus, fake_config.index, config=fake_config, embedder=fake)
    return fake_config


def desk_for(built, fake, llm, timeout=30.0):
    return Desk.open(built.index, config=built, embedder=fake,
                     generator=generate.OpenAIGenerator(llm.url, "slow", timeout=timeout))


MESSAGES = [{"role": "user", "content": "Write."}]


@pytest.mark.parametrize("stream", [False, True])
def test_the_whole_reply_is_gathered_from_a_stream(slow, stream):
    slow.words, slow.tick = 40, 0
    reply = generate.OpenAIGenerator(slow.url, "slow").complete(MESSAGES, stream=stream)
    pieces = [reply] if not stream else list(reply)
    assert "".join(pieces) == "".join(f"w{i} " for i in range(1, 41)) and pieces[-1].finish_reason == "stop"
    assert slow.requests[0]["stream"] is True and slow.finished.wait(5) and not slow.hung_up.is_set()


@pytest.mark.parametrize("stream", [False, True])
def test_a_timeout_hangs_up_while_the_model_is_still_writing(built, fake, slow, stream):
    """The timeout bounds the whole reply, not each read: a word every 20 ms never trips a read's."""
    desk = desk_for(built, fake, slow, timeout=1.0)
    a = list(desk.ask_stream(QUESTION))[-1] if stream else desk.ask(QUESTION)
    slow.assert_hung_up_while_writing()
    # The extractive answer with the note, as for any failure of the LLM.
    assert a.generator == "extractive" and "$14.9 billion" in a.citations[0].sentence
    assert a.note.startswith(generate.FALLBACK_NOTE.format(model="slow", reason="").split("(")[0])
    assert "within 1 s" in a.note and slow.url in a.note


def test_a_reader_who_stops_reading_hangs_up(built, fake, slow):
    """The page's reader left: gradio closes the answer's generator, and the server hears of it."""
    answer = desk_for(built, fake, slow).ask_stream(QUESTION)
    assert next(answer) == "w1 "
    answer.close()
    slow.assert_hung_up_while_writing()


def test_a_page_whose_reader_left_hangs_up(built, fake, slow):
    pytest.importorskip("gradio")
    from askdesk.surface import ui

    respond = next(f.fn for f in ui.build_ui(desk_for(built, fake, slow), built).fns.values() if f.name == "respond")
    steps = respond(QUESTION, [], [])
    next(steps)  # the question, "thinking"
    assert next(steps)[1][-1]["content"].startswith("w1")  # the first words
    steps.close()  # what gradio's queue does to an event's iterator when its page is closed
    slow.assert_hung_up_while_writing()


@pytest.mark.parametrize("stream", [False, True])
def test_closing_or_interrupting_the_client_hangs_up(slow, stream):
    gen = generate.OpenAIGenerator(slow.url, "slow")
    if stream:
        pieces = gen.complete(MESSAGES, stream=True)
        assert next(pieces) == "w1 "
        pieces.close()
    else:  # Ctrl-C while the whole reply is being gathered
        slow.after = lambda n: n == 3 and _thread.interrupt_main()
        with pytest.raises(KeyboardInterrupt):
            gen.complete(MESSAGES)
    slow.assert_hung_up_while_writing()


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_in_askdesk_ask_hangs_up(built, fake, slow, monkeypatch, capsys, as_json):
    from askdesk import desk as desk_mod
    from askdesk.surface import cli

    monkeypatch.setattr(desk_mod, "SentenceTransformerEmbedder", lambda *a, **k: fake)
    monkeypatch.setenv("ASKDESK_REFUSE_BELOW", "0")  # as fake_config: the fake embedder's scores are not MiniLM's
    slow.after = lambda n: n == 3 and _thread.interrupt_main()
    code = cli.main(["--index", str(built.index), "--model", "fake", "ask", *(["--json"] * as_json),
                     "--llm-url", slow.url, "--llm-model", "slow", QUESTION])
    assert code == 130 and "interrupted" in capsys.readouterr().err
    slow.assert_hung_up_while_writing()


# ---- the words on the terminal ----

class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_streamed_words_are_shown_on_a_terminal_then_erased(monkeypatch):
    monkeypatch.setenv("COLUMNS", "20")
    answer = Answer(QUESTION, "The bid was $14.9 billion [1].", False)
    items = ["The bid was ", "$14.9 billion [1].", "\n", "\x1b]0;title\x07More\ttext", answer]
    tty, pipe = Terminal(), io.StringIO()
    assert terminal.streamed(iter(items), tty) is answer and terminal.streamed(iter(items), pipe) is answer
    # 30 characters wrap onto 2 rows of 20, then one more row: back up 2 rows, clear to the end of the screen.
    assert tty.getvalue() == "The bid was $14.9 billion [1].\n]0;titleMore text" + "\r\033[2A\033[J"
    assert pipe.getvalue() == ""  # piped: nothing but the answer, which the caller prints
