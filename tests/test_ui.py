"""Fast tests of the chat page's pure helpers: escaping, citation rendering, upload names, auth.

No model and no browser: a FakeDesk stands in for `Desk` where the page needs one.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from askdesk.errors import AskdeskError, BadInputError, BadQuestionError
from askdesk.surface import render, ui, uploads
from askdesk.types import Answer, Article, Citation, Claim, Conflict, Period

PAYLOAD = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


def cite(n=1, *, sentence="Nippon Steel bid $14.9 billion.", before="Earlier text. ", after=" Later text.",
         url="https://example.com/a", title="Trump meets Ishiba", **kw) -> Citation:
    snippet = before + sentence + after
    values = dict(n=n, article_id="a1", title=title, date="2025-02-07", source="Reuters", url=url,
                  path="000.txt", sentence=sentence, snippet=snippet, start=100 + len(before),
                  end=100 + len(before) + len(sentence), score=0.9, snippet_start=100)
    return Citation(**{**values, **kw})


class FakeDesk:
    """The Desk methods the page calls; answers by word overlap so tests can steer it."""

    def __init__(self, articles=()):
        self.articles = {a.id: a for a in articles}
        self.asked: list[tuple[str, list[str] | None]] = []
        self.added: list[list[Path]] = []

    def ask(self, question, *, history=None, since=None, until=None, as_of=None):
        self.asked.append((question, history))
        self.dates = {"since": since, "until": until, "as_of": as_of}
        if not question.strip():
            raise BadQuestionError("empty question; type a question")
        words = set(re.findall(r"\w+", question.lower()))
        for a in self.articles.values():
            if a.date and (since and a.date < since or until and a.date > until):
                continue
            for m in re.finditer(r"\S.*?\.(?=\s|$)", a.text):
                if len(words & set(re.findall(r"\w+", m.group().lower()))) >= 2:
                    c = Citation(1, a.id, a.title, a.date, a.source, a.url, a.path, m.group().strip(), m.group(),
                                 m.start(), m.end(), 1.0, m.start())
                    return Answer(question, f"{c.sentence} [1]", False, (c,))
        c = cite(sentence="Nothing close.")
        return Answer(question, "The articles do not say.", True, (), (c,))

    def add(self, paths, *, progress=None):
        self.added.append([Path(p) for p in paths])
        for i, p in enumerate(paths, 1):
            text = Path(p).read_text()
            art = Article(id=f"id-{Path(p).name}", title=text.splitlines()[0], text=text, path=Path(p).name)
            self.articles[art.id] = art
            if progress:
                progress(i, len(paths), "embedding")
        return {"added": len(paths), "updated": 0, "unchanged": 0, "skipped": [],
                "n_articles": len(self.articles), "n_chunks": 3 * len(self.articles)}

    def info(self):
        return {"model": "fake", "n_articles": len(self.articles), "n_chunks": 3 * len(self.articles),
                "created": "2025-02-08T10:00:00", "articles": [
                    {"id": a.id, "title": a.title, "date": a.date, "source": a.source, "path": a.path}
                    for a in self.articles.values()]}

    def article(self, article_id):
        if article_id not in self.articles:
            raise KeyError(article_id)
        return self.articles[article_id]


# ---- escaping ----

def test_esc_turns_markup_into_text():
    out = render.esc(PAYLOAD)
    assert "<" not in out and ">" not in out and '"' not in out
    assert "&lt;script&gt;" in out


@pytest.mark.parametrize("text", [PAYLOAD, "![t](http://evil/x.png)", "[click](javascript:alert(1))",
                                  "<a href=javascript:alert(1)>x</a>", "$$x$$", "# heading", "`code`"])
def test_md_text_leaves_no_markup(text):
    out = render.md_text(text)
    assert "<" not in out and ">" not in out
    # link, image, code and heading syntax is backslashed, so nothing becomes a link, image or heading
    assert not re.search(r"(?<!\\)[\[\]#`*_]", out)


def test_md_text_keeps_entities_intact():
    assert render.md_text("AT&T <b>") == "AT&amp;T &lt;b&gt;"


@pytest.mark.parametrize("url,ok", [
    ("https://example.com/a?b=1", True), ("HTTP://example.com", True),
    ("javascript:alert(1)", False), ("JavaScript:alert(1)", False), (" javascript:alert(1)", False),
    ("java\tscript:alert(1)", False), ("data:text/html,<script>1</script>", False),
    ("//evil.example", False), ("https:/x", False), ("https://a b", False), ("", False), (None, False),
])
def test_safe_url_allows_only_http_links(url, ok):
    assert render.safe_url(url) == (url if ok else None)


# ---- citations ----

def test_snippet_marks_the_cited_sentence():
    c = cite()
    assert render.snippet_html(c) == "Earlier text. <mark>Nippon Steel bid $14.9 billion.</mark> Later text."


def test_snippet_falls_back_to_text_search_when_offsets_disagree():
    c = cite(start=0, end=5)
    assert "<mark>Nippon Steel bid $14.9 billion.</mark>" in render.snippet_html(c)
    c = cite(start=0, end=5, sentence="Not in the snippet.", before="", after="x")
    assert "<mark>Not in the snippet.</mark>" in render.snippet_html(c)


def test_citation_payload_is_text_everywhere():
    c = cite(sentence=f"Bad {PAYLOAD} here.", title=PAYLOAD, source=PAYLOAD, before=PAYLOAD)
    out = render.citation_html(c, article_text=PAYLOAD * 3)
    assert "<script" not in out and "<img" not in out and "onerror=\"" not in out
    assert out.count("&lt;script&gt;") >= 5
    assert "<mark>Bad &lt;script&gt;" in out


def test_citation_links_only_http_urls():
    link = '<a href="https://example.com/a" target="_blank" rel="noopener noreferrer nofollow">'
    assert link in render.citation_html(cite())
    bad = render.citation_html(cite(url="javascript:alert(1)"))
    assert "<a " not in bad and "javascript" not in bad
    quoted = render.citation_html(cite(url='https://e.com/"onmouseover="alert(1)'))
    assert 'href="https://e.com/&quot;onmouseover=&quot;alert(1)"' in quoted


def test_more_of_the_article_marks_sentence_and_trims():
    text = "word " * 1000 + "The cited sentence." + " tail" * 1000
    start = text.index("The cited")
    out = render.excerpt_html(text, start, start + len("The cited sentence."), chars=100)
    assert out.startswith("… ") and out.endswith(" …")
    assert "<mark>The cited sentence.</mark>" in out
    assert len(out) < 300


def test_sources_panel_shows_each_citation_with_more_of_the_article():
    a = Answer("q?", "A [1] B [2].", False, (cite(1), cite(2, sentence="Second.")))
    out = render.sources_html(a, article_text=lambda _id: "Full article text.")
    assert out.count('class="ad-cite"') == 2 and "<h3>Sources</h3>" in out
    assert out.count("<details><summary>More of the article</summary>") == 2


def test_refusal_shows_related_passages():
    a = Answer("Who won the 1998 World Cup?", "I could not find this.", True, (), (cite(3),))
    out = render.sources_html(a)
    assert "<h3>Related passages</h3>" in out and "Not answered" in out and 'data-n="3"' in out
    md = render.answer_markdown(a)
    assert md.startswith("**Not answered.**") and "Related passages" in md


def test_answer_markdown_keeps_markers_and_lists_sources():
    a = Answer("q", "Nippon Steel bid $14.9 billion [1].", False, (cite(1, title=PAYLOAD),))
    md = render.answer_markdown(a)
    assert "\\[1\\]" in md and "$14.9 billion" in md
    assert "<script" not in md and "*Sources:*" in md


def test_answer_markdown_leads_with_the_short_answer_escaped():
    import dataclasses

    a = Answer("How big was the bid?", "Nippon Steel bid $14.9 billion [1].", False, (cite(1),), short="$14.9 billion")
    md = render.answer_markdown(a)
    assert md.startswith(f"**{render.SHORT_HEAD}** **$14.9 billion**") and "\\[1\\]" in md
    hostile = render.answer_markdown(dataclasses.replace(a, short=PAYLOAD))
    assert "<script" not in hostile
    written = render.answer_markdown(dataclasses.replace(a, generator="llm"))
    assert render.SHORT_HEAD not in written  # an LLM's text may not hold the span


def test_index_panel_counts_and_escapes():
    info = {"model": "m", "n_articles": 2, "n_chunks": 9, "created": "2025-02-08",
            "articles": [{"id": "1", "title": PAYLOAD, "date": "2025-02-07"}, {"id": "2", "title": "B", "date": None}]}
    out = render.index_html(info)
    assert '<span id="n-articles">2</span>' in out and '<span id="n-chunks">9</span>' in out
    assert "<script" not in out


def test_index_panel_caps_long_lists(monkeypatch):
    monkeypatch.setattr(render, "MAX_LISTED", 3)
    info = {"articles": [{"id": str(i), "title": f"T{i}"} for i in range(10)], "n_articles": 10}
    out = render.index_html(info)
    assert out.count("<tr>") == 1 + 3 and "and 7 more" in out


def test_add_report_counts_reasons_and_its_number():
    result = {"added": 1, "updated": 0, "unchanged": 0, "skipped": [("/c/bad.txt", "looks binary")],
              "n_articles": 2, "n_chunks": 7, "new": ["New <b>one</b>"], "rejected": [("x.pdf", "not a .txt file")]}
    out = render.add_html(result, serial=4)
    assert out.startswith('<div class="ad-add" data-upload="4" data-state="done">')
    assert "<b>2</b> articles in <b>7</b> chunks" in out and "new: New &lt;b&gt;one&lt;/b&gt;" in out
    assert "bad.txt: looks binary" in out and "x.pdf" in out
    # while an upload runs, the report says so and nothing of the last one's "Added"
    running = render.add_html(None, serial=5, adding=["<b>a</b>.txt"])
    assert 'data-upload="5" data-state="adding"' in running and "&lt;b&gt;a&lt;/b&gt;.txt" in running
    assert "Added" not in running
    # nothing stored (every file refused): no "already in the index", only the reasons
    refused = render.add_html({"added": 0, "stored": 0, "new": [], "rejected": [("x.pdf", "not a .txt file")]})
    assert "already" not in refused and "not added: x.pdf: not a .txt file" in refused


# ---- uploads ----

@pytest.mark.parametrize("name,expected", [
    ("article.txt", "article.txt"), ("../../x.txt", "x.txt"), ("..\\..\\x.txt", "x.txt"),
    ("/etc/passwd.md", "passwd.md"), (".hidden.txt", "hidden.txt"), ("．．／x.txt", "x.txt"),
    ("a b<c>.TXT", "a_b_c.txt"), ("...txt", "article.txt"), ("report.v2.html", "report_v2.html"),
    ("Élysée.md", "Élysée.md"), ("x" * 300 + ".htm", "x" * 80 + ".htm"),
])
def test_safe_filename(name, expected):
    assert uploads.safe_filename(name) == expected


@pytest.mark.parametrize("name", ["x.exe", "noext", "x.txt/", "x.txt.sh", "x.pdf"])
def test_safe_filename_refuses_other_types(name):
    with pytest.raises(BadInputError, match="save it as one"):
        uploads.safe_filename(name)


def test_store_uploads_stays_inside_corpus(tmp_path):
    up, corpus = tmp_path / "up", tmp_path / "corpus"
    up.mkdir()
    evil = up / "..\\..\\evil.txt"  # a legal file name on POSIX
    evil.write_text("Evil\n\nbody")
    stored, created, rejected = uploads.store_uploads([evil], corpus, max_bytes=1000)
    assert stored == created == [corpus.resolve() / "evil.txt"] and not rejected
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["..\\..\\evil.txt", "evil.txt"]


def test_store_uploads_reuses_identical_and_never_overwrites(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("old")
    same, other = tmp_path / "u1" / "a.txt", tmp_path / "u2" / "a.txt"
    for p, text in ((same, "old"), (other, "new")):
        p.parent.mkdir()
        p.write_text(text)
    stored, created, _ = uploads.store_uploads([same, other], corpus, max_bytes=1000)
    assert [p.name for p in stored] == ["a.txt", "a-2.txt"] and [p.name for p in created] == ["a-2.txt"]
    assert (corpus / "a.txt").read_text() == "old" and (corpus / "a-2.txt").read_text() == "new"
    assert not list(corpus.glob(".*"))  # no temporary files left behind


def test_store_uploads_refuses_big_and_foreign_files(tmp_path):
    big, exe = tmp_path / "big.txt", tmp_path / "x.exe"
    big.write_text("x" * 2000)
    exe.write_text("x")
    stored, _, rejected = uploads.store_uploads([big, exe], tmp_path / "corpus", max_bytes=1000)
    assert stored == []
    assert "2,000 bytes, over the 1,000-byte limit" in rejected[0][1] and "ASKDESK_MAX_FILE_BYTES" in rejected[0][1]
    assert rejected[1][0] == "x.exe"


# ---- auth ----

def test_auth_from_env():
    assert ui.auth_from_env({}) is None
    assert ui.auth_from_env({"ASKDESK_AUTH": "ann:s3:cret"}) == ("ann", "s3:cret")
    for bad in ("ann", "ann:", ":pw"):
        with pytest.raises(BadInputError) as e:
            ui.auth_from_env({"ASKDESK_AUTH": bad})
        assert "user:password" in str(e.value) and (bad.strip(":") not in str(e.value) or bad == "ann")


# ---- the page's handlers, with a fake desk ----

BID_ARTICLE = Article("a1", "Trump meets Ishiba", "Nippon Steel offered $14.9 billion for US Steel. Other text.",
                      "2025-02-07", "Reuters", "https://example.com/a", "000.txt")

@pytest.fixture()
def page(tmp_path):
    pytest.importorskip("gradio")
    from askdesk.config import Config

    desk = FakeDesk([BID_ARTICLE])
    demo = ui.build_ui(desk, Config(corpus=tmp_path / "corpus", index=tmp_path / "index"))
    fns = {f.name: f.fn for f in demo.fns.values()}
    return desk, fns, tmp_path


def test_page_answers_and_passes_history(page):
    desk, fns, _ = page
    # Extractive: one update with the answer (no placeholder step; test_generate streams an LLM's).
    _, chat, sources, asked = fns["respond"]("How big was Nippon Steel's bid?", [], [])
    assert [m["role"] for m in chat] == ["user", "assistant"] and ui.THINKING not in str(chat)
    assert "14.9 billion" in chat[-1]["content"] and "<mark>Nippon Steel offered" in sources
    assert asked == ["How big was Nippon Steel's bid?"]
    fns["respond"]("And US Steel?", chat, asked)
    assert desk.asked[-1] == ("And US Steel?", ["How big was Nippon Steel's bid?"])


def test_a_conversation_outlives_its_dropped_session(page):
    # gradio keeps the state of SESSIONS_KEPT sessions; a tab whose state was dropped comes back
    # with the State's default, [], and the chat it shows: the follow-up context is read from that.
    desk, fns, _ = page
    first = "What did *Ishiba* say about [US] #tariffs & <steel>?"
    _, chat, _, asked = fns["respond"](first, [], [])
    assert chat[0]["content"] != first  # shown escaped ...
    import gradio as gr

    sent_back = gr.Chatbot().preprocess(gr.Chatbot().postprocess(chat))  # what the browser sends next
    _, chat, _, asked = fns["respond"]("And US Steel?", sent_back, [])
    assert desk.asked[-1] == ("And US Steel?", [first])  # ... and read back as typed
    assert asked == [first, "And US Steel?"]  # kept in the new session from here on
    fns["respond"]("And Japan?", chat, ["Only this"])  # a live session's list is the one used
    assert desk.asked[-1] == ("And Japan?", ["Only this"])


def test_md_plain_reads_back_what_md_text_escaped():
    from askdesk.surface.render import md_plain, md_text

    for s in ["a *b* _c_ [d](e) #f |g| ~h~ `i`", r"back\\slash \\* star", "AT&amp;T <b>&</b>", "plain"]:
        assert md_plain(md_text(s)) == s


def test_live_note_of_a_dropped_session_counts_from_now(page):
    # A session gradio dropped polls with opened=None: no note of everything since the server started.
    _desk, fns, _ = page
    note, panel, opened, shown = fns["live_tick"](None, None)
    assert opened == shown and isinstance(opened, int)
    import gradio as gr

    assert note == gr.skip() and panel == gr.skip()


def test_page_reports_desk_errors_in_the_chat(page):
    desk, fns, _ = page
    desk.ask = lambda q, history=None: (_ for _ in ()).throw(AskdeskError("index is locked; wait and retry"))
    box, chat, _sources, asked = fns["respond"]("anything", [], [])
    assert "index is locked" in chat[-1]["content"] and asked == []


def test_page_adds_uploaded_files(page, tmp_path):
    desk, fns, _ = page
    up = tmp_path / "up" / "new.txt"
    up.parent.mkdir()
    up.write_text("Fresh article\n\nThe harbour opened in 1901.")
    steps = list(fns["add_files"]([str(up)], progress=lambda *a, **k: None))
    (running, *_), (status, index, _files) = steps[0], steps[-1]
    assert 'data-state="adding"' in running and "new.txt" in running
    assert desk.added == [[(tmp_path / "corpus" / "new.txt").resolve()]]
    assert "new: Fresh article" in status and 'data-state="done"' in status and '<span id="n-articles">2</span>' in index


# ---- news: quotes, conflicts, dates ----

def test_quote_is_marked_with_its_speaker_and_escaped():
    c = cite(quote=f"We will {PAYLOAD} rebuild,", speaker=f"Ilse {PAYLOAD}")
    out = render.citation_html(c)
    assert '<div class="ad-quote"><q>We will &lt;script&gt;' in out and "rebuild</q>" in out
    assert '<span class="ad-speaker">Ilse &lt;script&gt;' in out
    assert "<script" not in out and "<img" not in out
    assert "ad-quote" not in render.citation_html(cite(quote="Words without a named speaker here", speaker=None))


def test_conflicts_show_each_value_with_source_and_date_escaped():
    a = Answer("q", "x", False, (cite(1, source="Harbor Times", date="2024-03-01"),
                                 cite(2, source=PAYLOAD, date="2024-03-05")),
               conflicts=(Conflict(f"the port handled … {PAYLOAD}", (("12.1 million tonnes", 1), (f"12.4 {PAYLOAD}", 2))),))
    out = render.sources_html(a)
    assert "Reports differ" in out
    assert "<b>12.1 million tonnes</b> [1] (Harbor Times, 1 March 2024) vs <b>12.4 &lt;script&gt;" in out
    assert "<script" not in out and "<img" not in out
    written = render.answer_markdown(dataclasses.replace(a, generator="llm", sentences=(
        Claim("Figures differ.", (1, 2), True, None),)))
    assert "**Reports differ** on" in written and "<script" not in written


def test_period_used_is_said_in_the_sources_panel():
    a = Answer("What happened last week?", "x [1]", False, (cite(1),),
               period=Period("last week", "2025-03-03", "2025-03-09", True))
    assert "Preferring articles published last week: 3 March 2025 to 9 March 2025." in render.sources_html(a)


def test_page_passes_the_date_range(page):
    desk, fns, _ = page
    _, chat, sources, _ = fns["respond"]("How big was Nippon Steel's bid?", [], [], "2025-01-01", "", None)
    assert desk.dates == {"since": "2025-01-01", "until": None, "as_of": None}
    assert "14.9 billion" in chat[-1]["content"]
    _, chat, sources, _ = fns["respond"]("How big was Nippon Steel's bid?", [], [], "2025-03-01", None, None)
    assert "Not answered" in chat[-1]["content"]  # the only article is from 7 February


def test_page_starts_on_an_empty_index_and_answers_after_the_first_upload(tmp_path, fake, fake_config):
    """A real Desk (fake embedder) with no index yet: the page says how to start, an upload builds
    the index, and the next question is answered from it."""
    pytest.importorskip("gradio")
    from askdesk import Desk

    fake_config.corpus.mkdir()
    desk = Desk(fake_config.index, config=fake_config, embedder=fake)
    demo = ui.build_ui(desk, fake_config)
    fns = {f.name: f.fn for f in demo.fns.values()}
    _box, chat, _sources, asked = fns["respond"]("When did the harbour open?", [], [])
    assert chat[-1]["content"] == ui.EMPTY_INDEX_NOTE and asked == []
    up = tmp_path / "up" / "harbour.txt"
    up.parent.mkdir()
    up.write_text("Harbour news\n\nThe harbour of Varsk opened in 1901 after six years of work.")
    *_, (status, index, _files) = fns["add_files"]([str(up)], progress=lambda *a, **k: None)
    assert "Added <b>1</b> new" in status and '<span id="n-articles">1</span>' in index
    _box, chat, sources, asked = fns["respond"]("When did the harbour of Varsk open?", [], [])
    assert "1901" in chat[-1]["content"] and "Harbour news" in sources


# ---- the served page, asked over HTTP with gradio_client as a program would ----

@pytest.fixture()
def served(tmp_path):
    """The page over a FakeDesk, served on a free loopback port by `ui.launch`."""
    pytest.importorskip("gradio")
    import socket

    import gradio as gr
    from gradio_client import Client

    from askdesk.config import Config

    desk = FakeDesk([BID_ARTICLE])
    desk.embedder = None  # launch warms the desk's question encoder; the fake has none
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = ui.launch(Config(corpus=tmp_path / "corpus", index=tmp_path / "index"), host="127.0.0.1",
                          port=port, desk=desk, prevent_thread_lock=True)
    client = Client(url, verbose=False)
    yield desk, client
    client.close()
    gr.close_all()


def test_api_ask_answers_as_json_with_history_and_dates(served):
    import json

    desk, client = served
    reply = json.loads(client.predict("How big was Nippon Steel's bid?", [], api_name="/ask"))
    assert "14.9 billion" in reply["answer"] and not reply["refused"]
    assert reply["citations"][0]["sentence"].startswith("Nippon Steel offered") and reply["citations"][0]["path"]
    client.predict("And US Steel?", ["How big was Nippon Steel's bid?"], "2025-01-01", api_name="/ask")
    assert desk.asked[-1] == ("And US Steel?", ["How big was Nippon Steel's bid?"])
    assert desk.dates == {"since": "2025-01-01", "until": None, "as_of": None}


def test_api_ask_reports_desk_errors_by_message(served):
    from gradio_client.exceptions import AppError

    desk, client = served
    desk.ask = lambda q, history=None: (_ for _ in ()).throw(AskdeskError("index is locked; wait and retry"))
    with pytest.raises(AppError, match="index is locked"):
        client.predict("anything", api_name="/ask")


def test_api_lists_only_the_public_endpoints(served):
    """The page's own events (the chat, examples, uploads, resets) are private: a program sees /ask,
    /add and /info, the endpoints docs/api.md documents."""
    _desk, client = served
    api = client.view_api(print_info=False, return_format="dict")
    assert sorted(api["named_endpoints"]) == ["/add", "/ask", "/info"]
    assert api["unnamed_endpoints"] == {}


def test_api_add_and_info(served, tmp_path):
    import json

    from gradio_client import handle_file

    desk, client = served
    up = tmp_path / "harbour.txt"
    up.write_text("Harbour news\n\nThe harbour of Varsk opened in 1901.")
    reply = json.loads(client.predict([handle_file(str(up))], api_name="/add"))
    assert reply["added"] == 1 and reply["new"] == ["Harbour news"] and reply["n_articles"] == 2
    assert (tmp_path / "corpus" / "harbour.txt").read_text() == up.read_text()
    info = json.loads(client.predict(api_name="/info"))
    assert info["n_articles"] == 2 and "Harbour news" in [a["title"] for a in info["articles"]]


def test_live_note_counts_and_escapes_the_arrived_titles():
    from askdesk.surface.render import live_html

    assert 'data-count="0"' in live_html([]) and "new article" not in live_html([])
    html = live_html([("Old <b>one</b>", "2025-03-01"), ("Newest", None)], serial=7)
    assert 'data-live="7"' in html and 'data-count="2"' in html and "2 new articles since you opened the page" in html
    assert html.index("Newest") < html.index("Old &lt;b&gt;one&lt;/b&gt;") and "<b>one</b>" not in html
    assert "1 new article since you opened the page" in live_html([("One", None)])


def test_arrivals_are_the_articles_written_since_the_page_opened(tmp_path, fake, fake_config):
    from conftest import write

    from askdesk import Desk
    from askdesk.surface.arrivals import Arrivals

    write(tmp_path / "corpus" / "a.txt", "First\n\nThe first story, about the harbour.")
    desk = Desk.build(tmp_path / "corpus", fake_config.index, config=fake_config, embedder=fake)
    arrivals = Arrivals(desk)
    opened = arrivals.poll()
    assert arrivals.since(opened) == []  # what was there at start is not news
    other = Desk.open(fake_config.index, config=fake_config, embedder=fake)  # another writer (a CLI add, a watcher)
    other.add([write(tmp_path / "corpus" / "b.txt", "Second\n\nThe second story, about the ferry.")])
    other.add([write(tmp_path / "corpus" / "c.txt", "Third\n\nThe third story, about the mill.")])
    assert arrivals.poll() == opened + 2 and arrivals.since(opened) == [("Second", None), ("Third", None)]
    other.optimize()  # a merge moves articles into a new segment: nothing new arrived
    assert arrivals.poll() == opened + 2
    other.remove(["b.txt"])
    arrivals.poll()
    assert arrivals.since(opened) == [("Third", None)]  # a removed arrival is not listed
    assert arrivals.since(arrivals.poll()) == []


def test_arrivals_before_the_first_article_count_everything_that_comes(tmp_path, fake, fake_config):
    from conftest import write

    from askdesk import Desk
    from askdesk.surface.arrivals import Arrivals

    desk = Desk(fake_config.index, config=fake_config, embedder=fake)
    arrivals = Arrivals(desk)  # no index yet
    assert arrivals.poll() == 0
    desk.add([write(tmp_path / "corpus" / "a.txt", "First\n\nThe first story, about the harbour.")])
    assert arrivals.poll() == 1 and arrivals.since(0) == [("First", None)]


def test_arrivals_never_keep_a_merged_away_index_open(tmp_path, fake, fake_config):
    """A page that only API clients use never polls: it must not pin the generation it opened on
    (its memory maps would hold files merged away and deleted for the life of the server)."""
    import gc

    from conftest import write

    from askdesk import Desk
    from askdesk.surface.arrivals import Arrivals

    def deleted_files_open() -> list[str]:
        fds = "/proc/self/fd"
        index = str(fake_config.index.resolve())
        return [t for fd in os.listdir(fds)
                if "(deleted)" in (t := _readlink(os.path.join(fds, fd))) and t.startswith(index)]

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc (Linux)")
    for i in range(3):
        write(tmp_path / "corpus" / f"{i}.txt", f"Story {i}\n\nThe council approved plan number {i} for the harbour.")
    desk = Desk.build(tmp_path / "corpus", fake_config.index, config=fake_config, embedder=fake)
    desk.ask("What did the council approve?")  # the generation's files are open (memory maps)
    arrivals = Arrivals(desk)
    desk.add([write(tmp_path / "corpus" / "new.txt", "New\n\nThe mill reported its output.")])
    desk.optimize()  # every segment of the first generation merged away ...
    desk.add([write(tmp_path / "corpus" / "late.txt", "Late\n\nThe ferry sailed late.")])
    desk.add([write(tmp_path / "corpus" / "later.txt", "Later\n\nThe bridge opened.")])  # ... and collected
    desk.ask("When did the ferry sail?")
    gc.collect()
    assert deleted_files_open() == []
    assert arrivals.poll() == 3  # and it still sees what arrived


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:  # closed between listing and reading
        return ""
