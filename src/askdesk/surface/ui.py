"""The chat page: ask, read the cited sources, add articles. Gradio Blocks over the Desk API.

The page holds no retrieval logic: every answer, count and article comes from `Desk`.
Article text is untrusted: what the page shows of it is rendered and escaped by render.py.
Uploaded files are stored by uploads.py; arrivals.py tracks what arrived while the page runs.
A page for the public (`--read-only`, a question limit) is kept so by gate.py and limits.py;
busy.py tells a question that finds the answer queue full when to try again.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..articles.watch import changes_lines
from ..errors import AskdeskError, EmptyCorpusError, IndexMissingError
from .arrivals import Arrivals
from .busy import Busy, queued
from .gate import READ_ONLY, READ_ONLY_EMPTY, auth_from_env, client_of, gate_middleware
from .limits import QuestionLimit, per_minute, too_many
from .render import (
    SOURCES_EMPTY,
    add_html,
    answer_markdown,
    index_html,
    live_html,
    md_text,
    questions_in,
    sources_empty,
    sources_html,
)
from .uploads import UPLOAD_SUFFIXES, store_uploads

if TYPE_CHECKING:
    import gradio as gr

    from ..config import Config

logger = logging.getLogger(__name__)

EXAMPLES = (  # all three are answered by the bundled article (Trump meets Ishiba, 7 Feb 2025)
    "How big was Nippon Steel's bid for US Steel?",
    "What is the US trade deficit with Japan?",
    "What did Ishiba say about meeting Trump?",
)
# Answers in flight at once, chat and API together; 2 on the 2-core target. bench/load.py, 20 users,
# 3 rounds interleaved per run: 4 beat 2 in one run (chat p95 0.88 vs 1.01 s; 1 was worst, 1.12 s)
# and lost in the next (1.65 vs 1.37 s, 50 vs 40 ms server CPU per answer). An answer holds the GIL for
# most of its ~35-45 ms of server CPU (only the one-thread onnxruntime encode releases it), so more
# slots mostly add contention; the queue, not the slots, absorbs a burst.
ASK_CONCURRENCY = 2
# Questions waiting beyond cfg.max_waiting are told when to retry (busy.py, gate.py), never a bare
# 503: gradio's own queue limit (max_size) is off while that cap is on.
THINKING = "_Searching the articles…_"
EMPTY_INDEX_NOTE = "No articles yet: add some with the upload box (.txt, .md or .html), then ask."
STREAM_EVERY_S = 0.1  # a streamed answer refreshes the chat at most this often
LIVE_EVERY_S = 2.0  # the page asks this often whether articles arrived (a cheap call while none did)
# Sessions whose state the page keeps, least recently used dropped first (gradio's default: 10,000).
# Every plain-HTTP call of /ask is a session of its own, and gradio keeps each one's copy of the
# page's config and its last reply (~55-60 KB here): in a 60-minute soak 10,000 grew the page by
# 800 MB, and 1,000 still added ~55 MB in its first minutes. Nothing a conversation needs is lost
# with its session: the follow-up context is read again from the chat the browser sends, and the
# live note counts from the next poll. An open tab polls every LIVE_EVERY_S, so it stays among the kept.
SESSIONS_KEPT = 250
DATES_HELP = ("Only articles published in this range (YYYY-MM-DD; either end may stay empty). \"As of\" answers as "
              "of that day: nothing later is used, and \"last week\" or \"yesterday\" in a question count from it.")
CSS = """
.ad-sources h3 { margin: 0 0 .3em; }
.ad-cite { border-left: 3px solid var(--color-accent); padding: .2em .8em; margin: .8em 0; }
.ad-head { font-weight: 600; }
.ad-meta, .ad-muted { color: var(--body-text-color-subdued); font-size: .9em; }
#sources .ad-snippet, #sources .ad-more { white-space: pre-wrap; margin: .4em 0; }  /* ids outrank .prose */
#sources .ad-more { max-height: 24em; overflow-y: auto; }
.ad-cite mark { background: #fde68a; color: #111; padding: 0 .1em; }
.ad-refused { font-weight: 600; }
.ad-index td, .ad-index th { padding: .15em .6em; text-align: left; }
.ad-quote { margin: .3em 0; font-style: italic; }
.ad-speaker { font-style: normal; font-weight: 600; }
.ad-conflicts { border: 1px solid #f59e0b; border-radius: 4px; padding: .3em .8em; margin: .6em 0; }
.ad-live:not(:empty) { border-left: 3px solid #10b981; padding: .2em .8em; margin: .4em 0; }
"""


# ---- the page ----

def build_ui(desk: Any, cfg: Config, *, limit: QuestionLimit | None = None, busy: Busy | None = None) -> gr.Blocks:
    """The Blocks app over an open `desk`; `launch` adds the queue, theme and server options.

    Uploads are stored in ``cfg.corpus`` (./corpus when unset) and added to the index. A read-only
    page (``cfg.read_only``) has no upload box, and its `/add` refuses. ``limit`` counts each
    question of the chat and of `/ask` by client address (default: ``cfg``'s limit, if any).
    ``busy`` caps the questions waiting for an answer and times the answers (default: ``cfg.max_waiting``'s
    cap, if any); a chat question over the cap is answered with its line.
    """
    import gradio as gr
    from gradio import FileData

    corpus = cfg.corpus or Path("corpus")
    read_only = cfg.read_only
    limit = limit or (QuestionLimit(per_minute(cfg)) if per_minute(cfg) else None)
    busy = busy or (Busy(cfg.max_waiting, workers=ASK_CONCURRENCY) if cfg.max_waiting else None)
    timed = busy.answering if busy else contextlib.nullcontext
    empty_note = READ_ONLY_EMPTY if read_only else EMPTY_INDEX_NOTE
    # Each answer and each upload report carries a number of its own (data-answer, data-upload),
    # so a reader of the page (a test, a screen reader's "changed" event) can tell a new one
    # from the one before, even when the question or the report reads the same.
    answers, uploads = itertools.count(1), itertools.count(1)
    arrivals = Arrivals(desk)

    def article_text(article_id: str) -> str | None:
        try:
            return desk.article(article_id).text
        except (AskdeskError, LookupError):
            return None

    def respond_steps(question: str, chat: list, asked: list[str], since: str | None = None,
                      until: str | None = None, as_of: str | None = None, request: Any = None):
        q = (question or "").strip()
        if not q:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        dates = {k: v.strip() for k, v in (("since", since), ("until", until), ("as_of", as_of))
                 if isinstance(v, str) and v.strip()}  # passed only when set: older desks take none
        # The session's list, else the questions of the chat the browser sent: gradio drops the state of
        # the least recently used sessions (SESSIONS_KEPT), and the conversation must not go with it.
        asked = list(asked or ()) or questions_in(chat)
        chat = list(chat or []) + [{"role": "user", "content": md_text(q)}]
        if limit is not None and (wait := limit.take(client_of(request))):  # said as the reply; the box keeps it
            yield gr.skip(), chat + [{"role": "assistant", "content": too_many(wait)}], sources_empty(next(answers)), \
                asked
            return
        yield "", chat + [{"role": "assistant", "content": THINKING}], gr.skip(), asked
        try:
            with timed():  # the recent answer times say how long a refused question should wait (busy.py)
                if getattr(desk, "generator", None) is None:
                    answer = desk.ask(q, history=list(asked) or None, **dates)
                else:  # the LLM's words stream in; the verified answer replaces them at the end
                    answer, partial, shown = None, "", 0.0
                    for item in desk.ask_stream(q, list(asked) or None, **dates):
                        if not isinstance(item, str):
                            answer = item
                        elif (partial := partial + item) and time.monotonic() - shown >= STREAM_EVERY_S:
                            shown = time.monotonic()
                            yield "", chat + [{"role": "assistant", "content": md_text(partial) + " ▍"}], \
                                gr.skip(), asked
        except Exception as e:  # noqa: BLE001 - said in the chat; the page stays usable
            if isinstance(e, IndexMissingError):  # started on an empty corpus: nothing to answer from yet
                said = empty_note
            elif isinstance(e, AskdeskError):  # a bad question or index trouble
                said = f"⚠️ {md_text(e)}"
            else:  # the traceback goes to the log
                logger.exception("ask failed for %r", q)
                said = f"⚠️ {_internal(e)}"
            # The panel still showed the previous answer's sources: they are not this reply's.
            yield "", chat + [{"role": "assistant", "content": said}], sources_empty(next(answers)), asked
            return
        reply = {"role": "assistant", "content": answer_markdown(answer)}
        yield "", chat + [reply], sources_html(answer, article_text, serial=next(answers)), [*asked, q]

    if getattr(desk, "generator", None) is None:
        # Extractive answers take ~15 ms: one update, not a placeholder and then the answer.
        # Each step of a generator event is another hop to a worker thread, another
        # postprocess and another SSE message: ~10% of the page's CPU per answer under the
        # 20-user load (docs/benchmarks.md). Gradio shows its own progress while it waits.
        def respond(question: str, chat: list, asked: list[str], since: str | None = None,
                    until: str | None = None, as_of: str | None = None, request: Any = None):
            *_, final = respond_steps(question, chat, asked, since, until, as_of, request)
            return final
    else:  # an LLM writes for seconds: the question shows at once, its words stream in
        def respond(question: str, chat: list, asked: list[str], since: str | None = None,
                    until: str | None = None, as_of: str | None = None, request: Any = None):
            yield from respond_steps(question, chat, asked, since, until, as_of, request)
    # gradio passes the asker's gr.Request (its address: the limit's key) to a parameter of that real type.
    respond.__annotations__["request"] = gr.Request

    async def admit(question: str) -> None:
        """A chat question joins the answer queue under the cap; over it, `busy_reply` says when to retry."""
        if busy is not None and (question or "").strip() and busy.refusal():
            raise gr.Error("busy", visible=False, print_exception=False)  # no toast: the chat says it

    def busy_reply(question: str, chat: list):  # the question stays in the box, to send again
        said = [{"role": "user", "content": md_text((question or "").strip())},
                {"role": "assistant", "content": busy.line()}]
        return list(chat or []) + said, sources_empty(next(answers))

    def add_articles(files: Sequence[str], progress: Callable | None = None) -> dict:
        """Store uploaded files in the corpus folder and add them: what `add_files` and `/add` share.

        Returns `Desk.add`'s counts plus "new" (titles now in the index) and "rejected"
        [(file name, reason)]; raises what `Desk.add` raises, after removing the files it stored.
        """
        stored, created, rejected = store_uploads(files, corpus, max_bytes=cfg.max_file_bytes)
        if not stored:
            return {"added": 0, "updated": 0, "stored": 0, "skipped": [], "new": [], "rejected": rejected,
                    **_counts(desk, cfg)}
        before = {a["id"] for a in _info(desk, cfg).get("articles", [])}
        try:
            result = desk.add(stored, progress=progress)
        except Exception:
            for p in created:  # the failed files would otherwise be retried at every start
                p.unlink(missing_ok=True)
            raise
        skipped = {Path(p).resolve() for p, _ in result.get("skipped", [])}
        for p in created:
            if p in skipped:
                p.unlink(missing_ok=True)  # unreadable: don't leave it lying in the corpus
        info = _info(desk, cfg)
        new = [a["title"] for a in info.get("articles", []) if a["id"] not in before]
        return {**result, "stored": len(stored), "new": new, "rejected": rejected}

    def add_files(files: list[str] | None, progress=gr.Progress()):  # noqa: B008 - Gradio's documented way
        if not files:
            yield gr.skip(), gr.skip(), gr.skip()
            return
        serial = next(uploads)
        # The last upload's report goes at once: while this one runs, nothing on the page says "added".
        yield add_html(None, serial=serial, adding=[Path(f).name for f in files]), gr.skip(), gr.skip()
        progress(0, desc="Reading articles")
        try:
            result = add_articles(files, lambda done, total, desc: progress((done, total) if total else None,
                                                                            desc=desc))
        except Exception as e:  # noqa: BLE001 - reported on the page; unexpected ones also in the log
            if not isinstance(e, AskdeskError):
                logger.exception("adding %s failed", files)
            yield add_html(None, serial=serial, error=md_text(e) if isinstance(e, AskdeskError) else _internal(e)), \
                gr.skip(), None
            return
        yield add_html(result, serial=serial), index_html(_info(desk, cfg)), None  # emptied for the next drop

    with gr.Blocks(title="askdesk", analytics_enabled=False) as demo:
        gr.Markdown("# askdesk\nAsk about the news articles in the index. Every answer cites the sentences it "
                    "rests on; when the articles do not say, it says so.")
        with gr.Row():
            with gr.Column(scale=3):
                # No LaTeX and no share button: article text is not maths, and nothing leaves the machine.
                chatbot = gr.Chatbot(elem_id="chat", label="Conversation", height=460, latex_delimiters=[],
                                     feedback_options=None, buttons=["copy", "copy_all"],
                                     placeholder="Ask a question, or pick an example below.")
                question = gr.Textbox(elem_id="question", show_label=False, submit_btn="Ask",
                                      max_length=cfg.max_question_chars,
                                      placeholder="Ask about the articles and press Enter")
                with gr.Row():
                    example_buttons = [gr.Button(q, size="sm", elem_id=f"example-{i}") for i, q in enumerate(EXAMPLES)]
                new_chat = gr.Button("New conversation", size="sm", elem_id="new-chat")
                with gr.Accordion("Dates", open=False, elem_id="dates-panel"):
                    with gr.Row():
                        # Strings, not timestamps: the desk reads ISO dates and names a bad one in the chat.
                        since = gr.DateTime(label="Published from", include_time=False, type="string",
                                            elem_id="since")
                        until = gr.DateTime(label="Published until", include_time=False, type="string",
                                            elem_id="until")
                        as_of = gr.DateTime(label="As of", include_time=False, type="string", elem_id="as-of")
                    gr.Markdown(DATES_HELP, elem_classes=["ad-muted"])
            with gr.Column(scale=2):
                sources = gr.HTML(SOURCES_EMPTY, elem_id="sources", js_on_load=None)
        if not read_only:  # a read-only page has no upload box at all, not a disabled one
            with gr.Accordion("Add articles", open=True, elem_id="add-panel"):
                files = gr.File(elem_id="upload", file_count="multiple", file_types=list(UPLOAD_SUFFIXES), height=140,
                                label=f"Drop .txt, .md or .html files (up to {cfg.max_file_bytes / 1e6:g} MB each); "
                                      "they are added to the index at once")
                add_status = gr.HTML(elem_id="add-status", js_on_load=None)
        live = gr.HTML(live_html([]), elem_id="live-news", js_on_load=None)
        with gr.Accordion("Index", open=False, elem_id="index-panel"):
            index_panel = gr.HTML(index_html(_info(desk, cfg)), elem_id="index-info", js_on_load=None)
        asked = gr.State([])  # this conversation's questions, oldest first: the desk's follow-up context
        opened = gr.State(None)  # the number of the last arrival when this page was opened (None: not known)
        shown = gr.State(None)  # ... and when its live note was last drawn
        timer = gr.Timer(LIVE_EVERY_S)

        # The page's own events are private: programs use the endpoints below (docs/api.md, "The page's API").
        ask_io = dict(fn=respond, inputs=[question, chatbot, asked, since, until, as_of],
                      outputs=[question, chatbot, sources, asked],
                      concurrency_id="ask", concurrency_limit=ASK_CONCURRENCY, api_visibility="private")

        def ask(question: str, history: list[str] | None = None, since: str | None = None,
                until: str | None = None, as_of: str | None = None, request: Any = None) -> str:
            """The answer as JSON text, the shape of `askdesk ask --json`; history: earlier questions, oldest first.

            Text, not a dict: gradio_client downloads any dict with a "path" key as a file, and citations have one.
            """
            if limit is not None and (wait := limit.take(client_of(request))):
                raise gr.Error(too_many(wait))
            dates = {k: v.strip() for k, v in (("since", since), ("until", until), ("as_of", as_of))
                     if isinstance(v, str) and v.strip()}
            try:
                with timed():
                    return json.dumps(desk.ask(question, history=list(history or ()) or None, **dates).to_dict())
            except IndexMissingError:
                raise gr.Error(empty_note) from None
            except AskdeskError as e:  # a bad question or date: the caller sees the message
                raise gr.Error(str(e)) from None
            except Exception as e:  # noqa: BLE001 - the traceback goes to the log
                logger.exception("ask failed for %r", question)
                raise gr.Error(_internal(e)) from None

        ask.__annotations__["request"] = gr.Request  # as respond's

        def add(files: list[FileData]) -> str:
            """Add article files (.txt, .md, .html) to the index: what changed, as JSON text (`askdesk add --json`)."""
            if read_only:  # the gate answers 403 first; this holds for any route it does not know
                raise gr.Error(READ_ONLY)
            try:
                return json.dumps(add_articles([f["path"] if isinstance(f, dict) else f.path for f in files or ()]))
            except AskdeskError as e:
                raise gr.Error(str(e)) from None
            except Exception as e:  # noqa: BLE001 - the traceback goes to the log
                logger.exception("adding %s failed", files)
                raise gr.Error(_internal(e)) from None

        # Real types, not this module's postponed strings: gradio reads them to describe the endpoint,
        # and FileData is imported here, out of the module's namespace.
        add.__annotations__ = {"files": list[FileData], "return": str}

        def info() -> str:
            """What the index holds (`askdesk info --json`) and whether the page is read-only, as JSON text."""
            return json.dumps({**_info(desk, cfg), "read_only": read_only,
                               "questions_per_minute": limit.per_minute if limit else None})

        # For programs (gradio_client): no chat history or sources panel to render and send back,
        # so ~0.8x the chat event's server CPU per answer (docs/benchmarks.md, "20 users").
        # The same queue as the page's asks: together they never run more than ASK_CONCURRENCY.
        gr.api(ask, api_name="ask", concurrency_id="ask", concurrency_limit=ASK_CONCURRENCY)
        gr.api(add, api_name="add", concurrency_id="add", concurrency_limit=1)  # the page's upload queue
        gr.api(info, api_name="info", queue=False)
        # With a cap, a chat question is first checked (a cheap event outside the queue), then queued or told.
        admit_io = dict(fn=admit, inputs=question, outputs=None, queue=False, show_progress="hidden",
                        api_visibility="private")
        asking = [question.submit(**admit_io if busy else ask_io)]
        for button, q in zip(example_buttons, EXAMPLES):
            asking.append(button.click(lambda q=q: q, None, question, queue=False, api_visibility="private")
                          .then(**admit_io if busy else ask_io))
        for checked in asking if busy else ():
            checked.success(**ask_io)
            checked.failure(busy_reply, [question, chatbot], [chatbot, sources], queue=False, api_visibility="private")
        reset = dict(fn=lambda: ([], [], SOURCES_EMPTY, ""), outputs=[chatbot, asked, sources, question], queue=False,
                     api_visibility="private")
        new_chat.click(**reset)
        chatbot.clear(**reset)
        if not read_only:  # one writer at a time; asks run on their own queue, so they go on during an add
            files.upload(add_files, files, [add_status, index_panel, files], concurrency_id="add", concurrency_limit=1,
                         api_visibility="private")
        def page_opened():
            seq = arrivals.poll()
            return index_html(_info(desk, cfg)), seq, seq

        def live_tick(since: int | None, drawn: int | None):
            """Articles arrived since the page was opened: the note and the index panel, redrawn only on news."""
            seq = arrivals.poll()
            if since is None:  # a session whose state gradio dropped (SESSIONS_KEPT): count from now on
                return gr.skip(), gr.skip(), seq, seq
            if seq == drawn:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return live_html(arrivals.since(since), serial=seq), index_html(_info(desk, cfg)), gr.skip(), seq

        demo.load(page_opened, None, [index_panel, opened, shown], queue=False,  # fresh counts on reload
                  api_visibility="private")
        timer.tick(live_tick, [opened, shown], [live, index_panel, opened, shown], queue=False,
                   api_visibility="private")
    if busy is not None and busy.waiting is None:
        busy.waiting = queued(demo)  # the chat's and /ask's questions waiting in gradio's "ask" queue
    return demo


def _internal(e: Exception) -> str:
    return f"Internal error ({md_text(type(e).__name__)}); the server log has the details."


def launch(cfg: Config | None = None, *, host: str | None = None, port: int | None = None, share: bool = False,
           desk: Any = None, prevent_thread_lock: bool = False, watch: bool = False,
           limit: QuestionLimit | None = None, busy: Busy | None = None):
    """Open (building if needed) the index and serve the page.

    ``cfg.read_only`` serves asking and reading only; ``cfg.max_questions_per_minute`` limits each
    client address (limits.py); ``cfg.max_waiting`` caps the questions waiting for an answer (busy.py);
    gate.py answers their refusals with 403, 429 and 503.

    Args:
        cfg: defaults to ``Config.from_env()``.
        host: bind address; None honours GRADIO_SERVER_NAME, else 127.0.0.1.
        port: None honours GRADIO_SERVER_PORT, else 7860.
        share: a public gradio.live link; off unless asked for.
        desk: an already open Desk (tests); by default `open_desk(cfg)`.
        watch: keep the index in step with the corpus folder and its feeds while serving (`askdesk watch`).
        limit: the question limit (tests pass one on a fake clock); by default from ``cfg``.
        busy: the cap on waiting questions (tests pass one on a fake clock); by default from ``cfg``.

    Raises:
        AskdeskError: the index cannot be opened or built, or ASKDESK_AUTH is malformed.
    """
    import gradio as gr

    from .. import Config
    from .. import desk as desk_module

    # Before any thread starts: gradio's worker pool would otherwise take a malloc heap per thread.
    desk_module.limit_malloc_arenas(2)
    cfg = cfg or Config.from_env()
    auth = auth_from_env()
    if desk is None:
        desk = open_desk(cfg)
        cfg = desk.config
    getattr(desk.embedder, "fast", None)  # load the question encoder now (~0.5 s), not on the first question
    if watch:
        from ..articles.feeds import Feeds
        from ..articles.watch import watch_in_background

        folder = cfg.corpus or Path("corpus")
        folder.mkdir(parents=True, exist_ok=True)
        desk.merge_in_background = True

        def say(line: str) -> None:
            print(f"askdesk: {line}", file=sys.stderr, flush=True)

        feeds = Feeds(folder, max_bytes=cfg.max_file_bytes, host_delay=cfg.feed_host_delay, log=say)
        watch_in_background(desk, folder, feeds=feeds, feed_every=cfg.feed_every, log=say)
    limit = limit or (QuestionLimit(per_minute(cfg)) if per_minute(cfg) else None)
    busy = busy or (Busy(cfg.max_waiting, workers=ASK_CONCURRENCY) if cfg.max_waiting else None)
    demo = build_ui(desk, cfg, limit=limit, busy=busy)
    demo.queue(default_concurrency_limit=ASK_CONCURRENCY, max_size=None)  # the cap is busy's, said with Retry-After
    if cfg.read_only or limit:
        print(f"askdesk: {'read-only page: asking and reading only; ' if cfg.read_only else ''}"
              + (f"at most {limit.per_minute} questions a minute per client address" if limit else "no question limit"),
              file=sys.stderr, flush=True)
    # System fonts: the default theme pulls Google Fonts, which an offline machine cannot reach.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace"])
    return demo.launch(server_name=host, server_port=port, share=share, auth=auth, max_file_size=cfg.max_file_bytes,
                       theme=theme, css=CSS, prevent_thread_lock=prevent_thread_lock, footer_links=["gradio"],
                       state_session_capacity=SESSIONS_KEPT,
                       app_kwargs={"middleware": gate_middleware(demo, read_only=cfg.read_only, limit=limit,
                                                                 busy=busy)})


def _counts(desk: Any, cfg: Config) -> dict:
    info = _info(desk, cfg)
    return {"n_articles": info.get("n_articles", 0), "n_chunks": info.get("n_chunks", 0)}


def _info(desk: Any, cfg: Config) -> dict:
    """``desk.info()``, or an empty index's info before the first article is added."""
    try:
        return desk.info()
    except IndexMissingError:
        return {"model": cfg.model, "n_articles": 0, "n_chunks": 0, "created": None, "articles": []}


def _log_progress(every_s: float = 2.0) -> Callable[[int, int, str], None]:
    """A Desk progress callback that logs at most every `every_s` seconds (and at the end)."""
    last = [0.0]

    def report(done: int, total: int, desc: str) -> None:
        if time.monotonic() - last[0] >= every_s or done == total:
            last[0] = time.monotonic()
            print(f"askdesk: {desc} {done}/{total}", file=sys.stderr, flush=True)

    return report


def open_desk(cfg: Config) -> Any:
    """The page's Desk: the index synced with its article folder first, every change printed.

    The folder is ``cfg.corpus`` when given, else the one the index was built from. An index
    whose folder is gone is served as it is (nothing is removed); with no index and no articles
    yet, the page starts empty and its upload box adds the first ones.
    """
    from .. import Desk

    desk = Desk(cfg.index, config=cfg)
    corpus = desk.corpus
    has_index = desk.indexed
    where = cfg.store or cfg.index  # the index folder, or the Milvus store (ASKDESK_STORE)
    if corpus is None and has_index:
        print(f"askdesk: serving {where} as it is: it records no article folder that still exists; "
              "give --corpus DIR to sync it with one", file=sys.stderr)
        return Desk(cfg.index, config=cfg.replace(corpus=Path("corpus")), embedder=desk.embedder)
    corpus = corpus or Path("corpus")
    desk = Desk(cfg.index, config=cfg.replace(corpus=corpus), embedder=desk.embedder)
    t0 = time.perf_counter()
    try:
        if not corpus.is_dir() and not has_index:
            raise EmptyCorpusError(f"no folder {str(corpus)!r}")
        stats = desk.sync(corpus, progress=_log_progress())
    except EmptyCorpusError:  # the page is how a first article gets added: start it anyway
        logger.warning("no articles in %s yet; the page starts empty, add articles with its upload box", corpus)
        return desk
    notes, lines = changes_lines(stats, corpus)
    print("\n".join([*notes, f"askdesk: {where} synced with {corpus} in {time.perf_counter() - t0:.1f} s: "
                               + "\n".join(lines)]), file=sys.stderr)
    return desk
