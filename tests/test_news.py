"""News features on small purpose-written articles: relative dates, datelines, quotations and
their speakers, disagreeing figures, "as of" answers. Fast tier (fake embedder) except the last
test, which runs the real model end to end."""

from __future__ import annotations

import json

import pytest
from conftest import write

from askdesk import Config, Desk
from askdesk.answering import news
from askdesk.answering.news import disagree, find_figures
from askdesk.answering.respond import AGE_NOTE, age_words
from askdesk.answering.retrieve import PERIOD_FALLBACK_NOTE
from askdesk.articles.quotes import asked_speaker, find_quotes, same_person
from askdesk.text import RECENT_DAYS, pretty_date, recent_period, resolve_period, without_period
from askdesk.types import Period

# ---- relative dates ---------------------------------------------------------------------------------

AS_OF = "2025-03-12"  # a Wednesday


@pytest.mark.parametrize("question,since,until,relative", [
    ("What happened today?", "2025-03-12", "2025-03-12", True),
    ("What did he say yesterday?", "2025-03-11", "2025-03-11", True),
    ("What changed this week?", "2025-03-10", "2025-03-12", True),
    ("What changed last week?", "2025-03-03", "2025-03-09", True),
    ("Any news from the past week?", "2025-03-06", "2025-03-12", True),
    ("What happened this month?", "2025-03-01", "2025-03-12", True),
    ("What happened last month?", "2025-02-01", "2025-02-28", True),
    ("What was decided last year?", "2024-01-01", "2024-12-31", True),
    ("What happened in the past 3 days?", "2025-03-10", "2025-03-12", True),
    ("What did the council decide on Monday?", "2025-03-10", "2025-03-10", True),
    ("What did the council decide last Wednesday?", "2025-03-05", "2025-03-05", True),
    ("What happened in February?", "2025-02-01", "2025-02-28", False),
    ("What happened in May?", "2024-05-01", "2024-05-31", False),  # the latest May up to as_of
    ("What happened in March?", "2025-03-01", "2025-03-12", False),  # never past as_of
    ("Port traffic in March 2024?", "2024-03-01", "2024-03-31", False),
    ("Who won the election in 2023?", "2023-01-01", "2023-12-31", False),
])
def test_relative_dates_resolve_against_as_of(question, since, until, relative):
    p = resolve_period(question, AS_OF)
    assert (p.since, p.until, p.relative) == (since, until, relative)
    assert question[p.span[0]:p.span[1]] == p.phrase


@pytest.mark.parametrize("question", ["Who may win the vote?", "Who won the 2021 Tour de France?",
                                      "What did Trump say?", "How big was the bid?"])
def test_no_date_phrase_no_period(question):
    assert resolve_period(question, AS_OF) is None


def test_relative_phrases_leave_the_retrieval_text_but_years_stay():
    q = "What did the mayor announce last week about the bridge?"
    assert without_period(q, resolve_period(q, AS_OF)) == "What did the mayor announce about the bridge?"
    q = "Who won Wimbledon in 2019?"
    assert without_period(q, resolve_period(q, AS_OF)) == q


# ---- quotations -------------------------------------------------------------------------------------

QUOTES = """Harbour master Ilse Brandt spoke after the ceremony in Varsk.
"The breakwater will protect the fleet from winter storms."
"It was a very good meeting for both of us," Trump said.
“We will keep the tariffs in place for now,” said Prime Minister Shigeru Ishiba.
Ishiba said: "Japan will invest more in America than ever before."
"But when I met with him he was very sincere and very powerful." – Ishiba
Mayor Jan Kow opened the bridge. "We waited ten long years for this," he said.
Trump met Ishiba on Friday. "It was a very productive day for us," he said.
Prices rose in Tokyo. "It is a hard time for many families," she said.
The company said: "We do not comment on market rumours."
Trump praised Ishiba as "good looking," and visited Japan "in the near future."
"""


def _speakers(text):
    return {q.text.rstrip(",. "): q.speaker for q in find_quotes(text)}


def test_quote_styles_and_their_speakers():
    s = _speakers(QUOTES)
    assert s["The breakwater will protect the fleet from winter storms"] == "Ilse Brandt"  # sentence before
    assert s["It was a very good meeting for both of us"] == "Trump"  # "...," Trump said.
    assert s["We will keep the tariffs in place for now"] == "Shigeru Ishiba"  # said Title Name; curly quotes
    assert s["Japan will invest more in America than ever before"] == "Shigeru Ishiba"  # Name said: "...", written out
    assert s["But when I met with him he was very sincere and very powerful"] == "Shigeru Ishiba"  # "..." – Name
    assert s["We waited ten long years for this"] == "Jan Kow"  # he said, one person in the sentence before


def test_quotes_are_never_given_a_speaker_the_article_does_not_name():
    s = _speakers(QUOTES)
    assert s["It was a very productive day for us"] is None  # "he": Trump or Ishiba? ambiguous
    assert s["It is a hard time for many families"] is None  # "she": nobody named, Tokyo is a place
    assert s["We do not comment on market rumours"] is None  # "The company": not a name
    assert "good looking" not in s  # two words: the writer's scare quotes, not a statement
    assert s["in the near future"] == "Trump"  # words inside "Trump praised ...": his, the sentence the statement


WIRE = """“The harbour will reopen within a week,'' Varsk port chief Ola Berg said on Monday.
“Do not wait until the last minute – the window is closing,“ warned Minister Tove Lind. "Leave now.”
“This is the worst flood in recorded history,” Erin O’Hara, lead officer for the coast guard, said Friday.
“We played the best team in the world,” Norway coach Per Lund said.
Floods near Varsk are not unusual, Lind said. “It happens every decade or so,” she said.
Mayor Kow thanked the crews that worked through the night.
“I know you have had no rest in a very long time,” he said to the mayor of Dalby, Ann Fors.
"""


def test_wire_copy_quotes_and_their_speakers():
    s = _speakers(WIRE)
    assert s["The harbour will reopen within a week"] == "Ola Berg"  # “...'' and a role before the name
    assert s["Do not wait until the last minute – the window is closing"] == "Tove Lind"  # “...“ typo
    assert s["This is the worst flood in recorded history"] == "Erin O’Hara"  # name, apposition, said
    assert s["We played the best team in the world"] == "Per Lund"  # "Norway coach Per Lund said"
    assert s["It happens every decade or so"] == "Tove Lind"  # she: the one who speaks in the sentence before
    assert s["I know you have had no rest in a very long time"] == "Kow"  # he: the one who thanked
    assert "Leave now" not in s  # two words


def test_quote_spans_are_exact():
    for q in find_quotes(QUOTES):
        assert QUOTES[q.start + 1:q.end - 1] == q.text
        assert q.passage[0] <= q.start and q.end <= q.passage[1]


@pytest.mark.parametrize("question,name", [
    ("What did Ishiba say about Trump?", "Ishiba"), ("What did Prime Minister Shigeru Ishiba say?", "Shigeru Ishiba"),
    ("How did Ishiba describe Japan's investment?", "Ishiba"), ("What Trump said about tariffs", "Trump"),
    ("What did the prime minister say?", None), ("How big was the bid?", None),
])
def test_asked_speaker(question, name):
    assert asked_speaker(question) == name


def test_same_person():
    assert same_person("Shigeru Ishiba", "Ishiba") and same_person("Ishiba", "Prime Minister Ishiba")
    assert same_person("Lionel Scaloni", "Scaloni") and same_person("Scaloni", "Scaloni's")  # a name starting "S"
    assert same_person("Erin O’Connor", "Erin O'Connor")  # curly and straight apostrophes
    assert not same_person("Donald Trump", "Ishiba") and not same_person(None, "Ishiba")


# ---- figures ----------------------------------------------------------------------------------------

def _figure(sentence):
    return find_figures(sentence)[0]


def test_figures_with_units_and_dates():
    f = find_figures("Tesla's revenue in Q1 2021 was $10.4 billion, up 74%, and it sold 184,800 cars.")
    assert [(x.text, x.value, x.unit) for x in f] == [("$10.4 billion", 10.4e9, "$"), ("74%", 74.0, "%"),
                                                      ("184,800 cars", 184800.0, "car")]
    assert f[0].periods == {"q1", "2021"}
    d = _figure("The harbour reopened on 3 March 2025 after an 18-month renovation.")
    assert (d.unit, d.value) == ("date", "2025-03-03")
    assert find_figures("In 2019 the 90th meeting of the 18-member board took place.") == []


@pytest.mark.parametrize("a,b,conflict", [
    ("The port handled 12.1 million tonnes of cargo last year.", "The port handled 12.4 million tonnes of cargo last year.", True),
    ("The port handled 12.1 million tonnes of cargo.", "The port handled 12,100,000 tons of cargo.", False),  # same value
    ("The port handled 12.1 million tonnes of cargo in 2023.", "The port handled 12.4 million tonnes of cargo in 2024.", False),
    ("The port handled 12.1 million tonnes of cargo.", "The port handled about 12 million tonnes of cargo.", False),
    ("The port handled 12.1 million tonnes of cargo.", "The mine produced 12.4 million tonnes of coal.", False),
    ("The port handled 12.1 million tonnes of cargo.", "The port handled 12.4 million euros of cargo.", False),
    ("The harbour reopened on 3 March after the renovation.", "The harbour reopened on 5 March after the renovation.", True),
    ("The harbour reopened on 3 March after the renovation.", "The harbour reopened on 3 March 2025 after the renovation.", False),
])
def test_disagreeing_figures(a, b, conflict):
    assert disagree(_figure(a), _figure(b)) is conflict


# ---- the desk, end to end with the fake embedder ----------------------------------------------------

@pytest.fixture
def news_desk(tmp_path, fake):
    c = tmp_path / "news"
    write(c / "harbor.md", "---\ntitle: Varsk port has record year\ndate: 2024-03-01\nsource: Harbor Times\n---\n"
          "The port of Varsk handled 12.1 million tonnes of cargo last year, the port authority said. "
          "Harbour master Ilse Brandt spoke after the announcement.\n\n"
          "\"The new breakwater made the difference for the fleet,\" Brandt said.\n")
    write(c / "ledger.md", "---\ntitle: Cargo boom at Varsk\ndate: 2024-03-05\nsource: Daily Ledger\n---\n"
          "The port of Varsk handled 12.4 million tonnes of cargo last year, according to the port authority.\n\n"
          "Mayor Jan Kow welcomed the figures. \"Varsk is open for business again,\" he said.\n")
    write(c / "history.md", "---\ntitle: Varsk port history\ndate: 2023-01-10\nsource: Harbor Times\n---\n"
          "The port of Varsk handled 11.2 million tonnes of cargo in 2022, up from 10.9 million tonnes in 2021.\n")
    write(c / "bridge.txt", "Varsk bridge closes\n\nVARSK, March 4, 2024 (Harbor Wire) - The Varsk bridge closed for repairs to its "
          "old deck.\n\nDrivers must use the ferry until May, the council said.\n")
    cfg = Config.from_env({}, model="fake", reader=False, corpus=c, index=tmp_path / "index", refuse_below=0.0)
    return Desk.build(c, cfg.index, config=cfg, embedder=fake)


def test_conflicting_figures_are_shown_with_source_and_date(news_desk):
    a = news_desk.ask("How much cargo did the port of Varsk handle?")
    d = a.to_dict()
    assert len(d["conflicts"]) == 1
    values = {v["value"]: v["citation"] for v in d["conflicts"][0]["values"]}
    assert set(values) == {"12.1 million tonnes", "12.4 million tonnes"}
    by_n = {c["n"]: c for c in d["citations"]}
    assert by_n[values["12.1 million tonnes"]]["source"] == "Harbor Times"
    assert by_n[values["12.4 million tonnes"]]["date"] == "2024-03-05"
    assert "Reports differ on the port of Varsk handled … of cargo last year:" in a.text
    assert "12.1 million tonnes (Harbor Times, 1 March 2024)" in a.text
    assert "12.4 million tonnes (Daily Ledger, 5 March 2024)" in a.text
    json.dumps(d)


def test_no_conflict_key_is_still_present(news_desk):
    d = news_desk.ask("Why did the Varsk bridge close?").to_dict()
    assert d["conflicts"] == [] and d["as_of"] is None


def test_quote_question_returns_the_quotation_and_its_speaker(news_desk):
    a = news_desk.ask("What did Kow say about Varsk?")
    c = a.citations[0]
    assert (c.quote, c.speaker) == ("Varsk is open for business again,", "Jan Kow")
    assert a.text == "Jan Kow: “Varsk is open for business again” [1]"
    art = news_desk.article(c.article_id)
    assert art.text[c.start:c.end] == c.sentence and c.quote in c.sentence and art.title == "Cargo boom at Varsk"
    assert a.to_dict()["citations"][0]["speaker"] == "Jan Kow"


def test_quote_question_about_someone_never_quoted_says_so(news_desk):
    a = news_desk.ask("What did Ishiba say about the Varsk bridge?")
    assert a.refused and not a.citations and not any(c.speaker for c in a.related)
    assert a.note == news.NOT_QUOTED_NOTE.format(speaker="Ishiba", on=" on the Varsk bridge")


def test_time_dependent_answer_says_as_of_the_cited_date(news_desk):
    a = news_desk.ask("How much cargo does the port of Varsk handle so far?")
    assert a.as_of == a.citations[0].date
    assert a.text.startswith(f"As of {pretty_date(a.as_of)}: ")
    b = news_desk.ask("Why did the Varsk bridge close?")
    assert not b.text.startswith("As of")


def test_dateline_dates_an_article_without_front_matter(news_desk):
    bridge = next(x for x in news_desk.info()["articles"] if x["path"] == "bridge.txt")
    assert bridge["date"] == "2024-03-04"


def test_relative_period_is_preferred_then_falls_back(news_desk):
    q = "How much cargo did the port of Varsk handle last week?"
    a = news_desk.ask(q, as_of="2024-03-08")  # last week = 26 Feb - 3 Mar: the Harbor Times piece
    assert {c.date for c in a.citations} >= {"2024-03-01"} and a.period.used is True
    assert a.period == Period("last week", "2024-02-26", "2024-03-03", True)
    assert a.to_dict()["period"] == {"phrase": "last week", "since": "2024-02-26", "until": "2024-03-03", "used": True}
    b = news_desk.ask("How much cargo did the port of Varsk handle yesterday?", as_of="2024-08-01")
    assert not b.refused and b.period.used is False  # nothing published on 31 July: all dates, with a note
    assert b.note.startswith(PERIOD_FALLBACK_NOTE.format(phrase="yesterday", since="31 July 2024", until="31 July 2024"))
    first = b.citations[0]  # ... and how old the report it had to use is
    assert b.note.endswith(AGE_NOTE.format(n=1, date=pretty_date(first.date), age=age_words(first.date, "2024-07-31"),
                                           day="31 July 2024"))


@pytest.mark.parametrize("question,phrase,cut", [
    ("Who has recently taken over the port?", "recently", "Who has taken over the port?"),
    ("What is the port's latest cargo figure?", "latest", "What is the port's cargo figure?"),
    ("Who currently runs the ferry?", "currently", "Who runs the ferry?"),
    ("How many drivers signed up so far?", "so far", "How many drivers signed up?"),
])
def test_recency_words_ask_for_the_newest_reports(question, phrase, cut):
    p = recent_period(question, AS_OF)
    assert (p.phrase, p.recent, p.until) == (phrase, True, AS_OF)
    assert p.since == "2025-02-27" and RECENT_DAYS == 14  # the 14 days up to as_of, both ends counted
    assert without_period(question, p) == cut


def test_a_question_without_a_date_word_still_prefers_the_newest_reports_silently():
    p = recent_period("Who runs the ferry to Varsk?", AS_OF)
    assert (p.phrase, p.recent, p.since, p.until) == ("", True, "2025-02-27", AS_OF)
    assert without_period("Who runs the ferry to Varsk?", p) == "Who runs the ferry to Varsk?"


@pytest.mark.parametrize("then,now,words", [("2025-03-10", "2025-03-12", "2 days"), ("2025-03-11", "2025-03-12", "1 day"),
                                            ("2025-01-01", "2025-03-12", "2 months"), ("2025-02-01", "2025-03-12", "5 weeks"),
                                            ("2013-11-04", "2026-04-02", "12 years")])
def test_age_words(then, now, words):
    assert age_words(then, now) == words


@pytest.fixture
def fares(tmp_path, fake):
    return _fares(tmp_path, fake)


def _fares(tmp_path, fake, **settings):
    c = tmp_path / "fares"
    # The old report repeats the question's words; the new one says it in fewer: only its date puts it first.
    write(c / "old.md", "---\ntitle: Ferry fares\ndate: 2023-11-04\n---\n"
          "The Varsk ferry fare is 12 euros, the Varsk ferry company said of the ferry fare.\n")
    write(c / "new.md", "---\ntitle: Crossing costs more\ndate: 2024-03-04\n---\n"
          "Since Monday a Varsk crossing costs 15 euros, the ferry fare having risen.\n")
    write(c / "undated.md", "---\ntitle: Fares\n---\nThe Varsk ferry fare was 9 euros, the Varsk ferry company said.\n")
    cfg = Config.from_env({}, model="fake", reader=False, corpus=c, index=tmp_path / "index", refuse_below=0.0,
                          **settings)
    return Desk.build(c, cfg.index, config=cfg, embedder=fake)


def test_recent_days_0_ranks_reports_by_their_words_alone(tmp_path, fake):
    desk = _fares(tmp_path, fake, recent_days=0)
    assert desk.ask("What is the Varsk ferry fare?", as_of="2024-03-10").citations[0].date != "2024-03-04"


def test_the_newest_report_answers_first_then_older_ones_with_their_age(fares):
    a = fares.ask("What is the Varsk ferry fare?", as_of="2024-03-10")
    assert a.citations[0].date == "2024-03-04" and "15 euros" in a.text
    assert a.period is None and not (a.note or "").count(" before ")  # asked with no date word: nothing to explain
    old = fares.ask("What is the Varsk ferry fare?", as_of="2024-02-01")  # the new report is not out yet
    assert all(c.date != "2024-03-04" for c in old.citations)
    b = fares.ask("What is the Varsk ferry fare currently?", as_of="2024-09-01")  # nothing from the last 14 days
    assert b.period == Period("currently", "2024-08-19", "2024-09-01", False)
    assert not b.refused and b.citations[0].date
    assert AGE_NOTE.format(n=1, date=pretty_date(b.citations[0].date), age=age_words(b.citations[0].date, "2024-09-01"),
                           day="1 September 2024") in b.note


def test_period_and_as_of_work_together(news_desk):
    a = news_desk.ask("How much cargo did the port of Varsk handle in 2023?", as_of="2024-03-08")
    assert [c.date for c in a.citations][:1] == ["2023-01-10"]
    c = news_desk.ask("How much cargo did the port of Varsk handle last month?", as_of="2024-03-02")
    assert all(x.date <= "2024-03-02" for x in c.citations)  # as_of still caps everything


def test_news_enrich_leaves_refusals_alone():
    from askdesk.types import Answer

    a = Answer("q?", "no", True)
    assert news.enrich(a, None, []) is a


# ---- the real model, end to end ---------------------------------------------------------------------

@pytest.mark.slow
def test_real_model_quote_and_conflict(tmp_path):
    c = tmp_path / "news"
    write(c / "a.md", "---\ntitle: Varsk port has record year\ndate: 2024-03-01\nsource: Harbor Times\n---\n"
          "The port of Varsk handled 12.1 million tonnes of cargo last year, the port authority said.\n\n"
          "Harbour master Ilse Brandt was pleased with the result. \"The new breakwater made all the difference "
          "for our fishing fleet,\" she said.\n")
    write(c / "b.md", "---\ntitle: Cargo boom at Varsk\ndate: 2024-03-05\nsource: Daily Ledger\n---\n"
          "The port of Varsk handled 12.4 million tonnes of cargo last year, according to the port authority.\n\n"
          "Mayor Jan Kow welcomed the figures at the town hall.\n")
    cfg = Config.from_env({}, corpus=c, index=tmp_path / "index")
    desk = Desk.build(c, cfg.index, config=cfg)
    a = desk.ask("How much cargo did the port of Varsk handle?")
    assert not a.refused and len(a.conflicts) == 1
    assert {v for v, _ in a.conflicts[0].values} == {"12.1 million tonnes", "12.4 million tonnes"}
    q = desk.ask("What did Brandt say about the breakwater?")
    assert not q.refused and q.citations[0].speaker == "Ilse Brandt"
    assert "The new breakwater made all the difference for our fishing fleet" in q.text


@pytest.fixture
def statements_desk(tmp_path, fake):
    c = tmp_path / "said"
    write(c / "raisi.md", "---\ntitle: Reactions\ndate: 2024-05-20\n---\n"
          "Senator Marco Rubio did not hold back about Raisi.\n\n"
          "“The regime in Tehran has lost one of its bloodiest hard-liners,” Rubio said in a statement. "
          "“Since before his sham election, President Raisi subjugated the Iranian people.”\n\n"
          "Minister Michael Weeks warned residents of Bermuda to prepare for Hurricane Ernesto.\n\n"
          "The National Hurricane Center says Ernesto will be large when it nears Bermuda.\n\n"
          "“The window to prepare for Ernesto is closing rapidly,” he said.\n")
    cfg = Config.from_env({}, model="fake", reader=False, corpus=c, index=tmp_path / "index", refuse_below=0.0)
    return Desk.build(c, cfg.index, config=cfg, embedder=fake)


def test_a_quotation_split_into_sentences_is_quoted_whole(statements_desk):
    a = statements_desk.ask("What did Rubio say about Raisi?")
    quotes = [c.quote for c in a.citations]
    assert any("bloodiest hard-liners" in (q or "") for q in quotes)
    assert any("subjugated the Iranian people" in (q or "") for q in quotes)
    assert all(c.speaker == "Marco Rubio" for c in a.citations)


def test_reported_speech_comes_with_the_speakers_own_words(statements_desk):
    a = statements_desk.ask("What did Weeks say about Ernesto?")
    assert not a.refused and all(c.speaker == "Michael Weeks" for c in a.citations)
    assert any(c.quote and "window to prepare" in c.quote for c in a.citations)  # "he": Weeks, not the storm


def test_only_reported_speech_chosen_brings_the_best_quotation_on_the_topic():
    from askdesk.articles.quotes import Statement
    from askdesk.types import Article

    text = ("Weeks warned residents to prepare for Ernesto. The airport will close, Weeks added.\n\n"
            "Officials met on Thursday.\n\n“Do not wait until the last minute,” Weeks said.\n\n“Storms pass,” Weeks said.")
    art = Article(id="a1", title="t", text=text)
    said = [Statement("Michael Weeks", text.index(x), text.index(x) + len(x), q or None)
            for x, q in (("Weeks warned residents to prepare for Ernesto.", ""), ("The airport will close, Weeks added.", ""),
                         ("“Do not wait until the last minute,” Weeks said.", "Do not wait until the last minute,"),
                         ("“Storms pass,” Weeks said.", "Storms pass,"))]
    warned, added, wait, storms = ((1.0 - k / 10, m, st, art) for k, (st, m) in enumerate(zip(said, (0.9, 0.8, 0.5, 0.2))))
    out = news._own_words([warned], [warned, added, wait, storms], "Weeks", lambda a: said, True, 3)
    assert [x[2].quote for x in out] == [None, "Do not wait until the last minute,"]  # on the topic (0.5 >= ABOUT_MIN)
    out = news._own_words([warned, added], [warned, added, wait, storms], "Weeks", lambda a: said, True, 2)
    assert [x[2] for x in out] == [said[0], said[2]]  # the quotation takes the last place
    off = [(r, 0.1 if st.quote else m, st, a) for r, m, st, a in (warned, added, wait, storms)]
    assert [x[2] for x in news._own_words(off[:1], off, "Weeks", lambda a: said, True, 3)] == [said[0]]  # none on Y
