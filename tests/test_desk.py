import json
import os
import re
import subprocess
import sys

import pytest
from conftest import write

from askdesk import AskdeskError, Config, Desk
from askdesk.answering import dialog
from askdesk.answering.answer import REFUSAL
from askdesk.errors import BadInputError, BadQuestionError, EmptyCorpusError


@pytest.fixture
def desk(corpus, fake, fake_config):
    return Desk.build(corpus, fake_config.index, config=fake_config, embedder=fake)


def test_answer_cites_the_sentence_with_its_source(desk):
    a = desk.ask("How big was Nippon Steel's bid to take over US Steel?")
    assert not a.refused and a.citations
    c = a.citations[0]
    assert "$14.9 billion" in c.sentence and "[1]" in a.text
    art = desk.article(c.article_id)
    assert art.text[c.start:c.end] == c.sentence
    assert art.text[c.snippet_start:c.snippet_start + len(c.snippet)] == c.snippet and c.sentence in c.snippet
    assert (c.title, c.date, c.path) == (art.title, "2025-02-07", "000_6b727eb0139704a7.txt")


def test_to_dict_has_the_documented_shape(desk):
    d = desk.ask("What was Japan's 2024 goods trade surplus?").to_dict()
    assert set(d) >= {"question", "answer", "refused", "citations", "related", "timings_ms"}
    assert set(d["timings_ms"]) == {"retrieve", "answer"}
    assert set(d["citations"][0]) >= {"n", "article_id", "title", "date", "source", "url", "sentence", "snippet",
                                     "start", "end", "score"}
    json.dumps(d)


def test_refusal_below_the_threshold_lists_related_passages(corpus, fake, fake_config):
    strict = Desk.build(corpus, fake_config.index, config=fake_config.replace(refuse_below=0.99), embedder=fake)
    a = strict.ask("Which team won the 1998 football World Cup final?")
    assert a.refused and a.text == REFUSAL and not a.citations
    assert a.related and a.related[0].sentence and a.confidence < 0.99
    unrelated = strict.ask("Which team won the 1998 football World Cup final?").confidence
    assert strict.ask("What was Japan's 2024 goods trade surplus?").confidence > unrelated


@pytest.mark.parametrize("q,exc,msg", [
    ("", BadQuestionError, "empty"),
    ("   \n ", BadQuestionError, "empty"),
    ("x" * 100_000, BadQuestionError, "100,000 characters"),
])
def test_bad_questions(desk, q, exc, msg):
    with pytest.raises(exc, match=msg):
        desk.ask(q)


def test_empty_corpus_is_an_error(tmp_path, fake, fake_config):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyCorpusError, match="no readable article"):
        Desk.build(tmp_path / "empty", config=fake_config, embedder=fake)
    with pytest.raises(BadInputError, match="does not exist"):
        Desk.build(tmp_path / "missing", config=fake_config, embedder=fake)
    assert issubclass(EmptyCorpusError, AskdeskError)


def test_sync_reports_changes_and_embeds_only_new_text(desk, corpus, fake):
    write(corpus / "b.txt", "Shipyard order\n\nThe shipyard won an order for six ferries worth 900 million euros.")
    before = fake.embedded
    stats = desk.sync(corpus)
    assert (stats["added"], stats["updated"], stats["removed"], stats["unchanged"]) == (1, 0, 0, 1)
    assert fake.embedded - before == stats["embedded"] <= 3  # one chunk and its one sentence
    again = desk.sync(corpus)
    assert (again["added"], again["unchanged"]) == (0, 2) and again["embedded"] == 0
    (corpus / "b.txt").unlink()
    assert desk.sync(corpus)["removed"] == 1 and desk.info()["n_articles"] == 1


def test_new_chunk_settings_rebuild_an_unchanged_corpus(desk, corpus, fake, fake_config):
    """Same articles, other settings: every chunk is embedded again and the manifest says so."""
    smaller = Desk(fake_config.index, config=fake_config.replace(chunk_tokens=40, chunk_overlap=8), embedder=fake)
    before, n_chunks = fake.embedded, desk.info()["n_chunks"]
    stats = smaller.sync(corpus)
    assert stats["added"] == stats["updated"] == stats["removed"] == 0 and stats["embedded"] > 0
    assert fake.embedded > before and smaller.info()["chunk_tokens"] == 40
    assert smaller.info()["n_chunks"] > n_chunks
    assert smaller.sync(corpus)["embedded"] == 0  # and then it is up to date


def test_add_update_remove(desk, tmp_path, fake):
    f = write(tmp_path / "corpus" / "ferry.txt", "Ferry order\n\nThe shipyard won an order for six ferries.")
    assert desk.add([f])["added"] == 1
    assert "six ferries" in desk.ask("How many ferries did the shipyard order?").citations[0].sentence
    write(f, "Ferry order\n\nThe shipyard won an order for eight ferries.")
    stats = desk.add([f])
    assert (stats["updated"], stats["n_articles"]) == (1, 2)
    assert "eight ferries" in desk.ask("How many ferries did the shipyard order?").citations[0].sentence
    assert desk.add([f])["unchanged"] == 2
    desk.remove(["ferry.txt"])
    assert desk.info()["n_articles"] == 1
    with pytest.raises(BadInputError, match="no article"):
        desk.remove(["ferry.txt"])


def test_every_write_hands_the_memory_it_freed_back(desk, tmp_path, monkeypatch):
    # A server adding one article at a time otherwise keeps every write's freed arrays in malloc's
    # heaps (the soak's page grew by hundreds of MB): each write ends with malloc_trim.
    import askdesk.desk as desk_mod

    calls = []
    monkeypatch.setattr(desk_mod, "release_memory", lambda: calls.append(1))
    f = write(tmp_path / "corpus" / "ferry.txt", "Ferry order\n\nThe shipyard won an order for six ferries.")
    desk.add([f])
    desk.remove(["ferry.txt"])
    assert len(calls) >= 2  # and once more after a merge, when one runs
    monkeypatch.undo()
    desk_mod.release_memory()  # the real one: glibc's malloc_trim here, nothing where there is none


ARENAS = """
import ctypes, sys, threading
from askdesk.desk import limit_malloc_arenas
if sys.argv[1] == "capped":
    assert limit_malloc_arenas(2)
def work():
    kept = [bytearray(50_000) for _ in range(20)]  # under the mmap threshold: from the thread's heap
    done.wait()
done = threading.Event()
threads = [threading.Thread(target=work) for _ in range(12)]
for t in threads:
    t.start()
done.set()
for t in threads:
    t.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" block per heap, on stderr
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
@pytest.mark.parametrize("mode", ["capped", "default"])
def test_a_server_keeps_two_malloc_heaps_for_all_its_threads(mode):
    # gradio answers on a pool of up to 40 threads; each new one got a heap of its own (up to 8 per
    # core), and each heap keeps the pages of its busiest moment: the soak's page grew for an hour.
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", ARENAS, mode], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    heaps = len(re.findall(r"^Arena \d+:", out.stderr, re.MULTILINE))
    if mode == "capped":
        assert 1 <= heaps <= 2
    else:  # the control: without the cap the same threads take more heaps (this test can fail)
        assert heaps > 2


def test_the_page_limits_malloc_heaps_before_it_serves(monkeypatch):
    import askdesk.desk as desk_mod
    from askdesk.surface import ui

    calls = []
    monkeypatch.setattr(desk_mod, "limit_malloc_arenas", lambda n=2: calls.append(n) or True)
    monkeypatch.setattr(ui, "open_desk", lambda cfg: (_ for _ in ()).throw(RuntimeError("stop here")))
    with pytest.raises(RuntimeError, match="stop here"):
        ui.launch(Config())
    assert calls == [2]  # before the index opens: the model's threads take their heaps then


def test_follow_up_uses_the_conversation(desk, corpus):
    write(corpus / "z.txt", "Zoo news\n\nThe zoo welcomed a baby panda named Lin on Tuesday.")
    desk.sync(corpus)
    a = desk.ask("What did he say about that?", history=["What did Ishiba say about Trump on television?"])
    # "he" is Ishiba and "that" Trump on television: his words are cited, or the refusal lists what
    # the articles quote him on (the fake embedder cannot tell how close they are), never another's
    said = a.citations or a.related
    assert said and {c.speaker for c in said} == {"Shigeru Ishiba"} and said[0].title.startswith("Trump and Ishiba")
    b = desk.ask("What is the name of the baby panda at the zoo?", history=["What did Ishiba say about Trump?"])
    assert "Lin" in b.citations[0].sentence


IRAN = ("Acting president named\n\nIran's President Ebrahim Raisi died in a helicopter crash at age 63. "
        "Mohammad Mokhber, the vice president, was appointed acting president by the supreme leader. "
        "Power passed to Mohammad Mokhber, 68, until an election within fifty days.")


def test_he_after_a_who_question_is_the_person_it_answered(desk, corpus):
    write(corpus / "iran.txt", IRAN)
    desk.sync(corpus)
    who = "Who was appointed acting president by the supreme leader?"
    assert "Mohammad Mokhber" in desk.ask(who).citations[0].sentence
    # Raisi's age is next to the words of the first question; "he" is Mokhber, the answer.
    a = desk.ask("How old is he?", history=[who])
    assert not a.refused and "68" in a.citations[0].sentence and "63" not in a.citations[0].sentence
    assert a.note == "“he” is read as Mohammad Mokhber, whom the previous answer named."
    # Without a "who" before it, "he" keeps its old reading (the previous question's person).
    b = desk.ask("What did he say about that?", history=["What did Ishiba say about Trump on television?"])
    assert "read as" not in (b.note or "")


@pytest.mark.parametrize("question,history,refers", [
    ("How old is he?", ["Who won the election?"], True),
    ("What did she say about it?", ["Who leads the party?"], True),
    ("What did Ishiba say?", ["Who won the election?"], False),  # names someone else
    ("How old is he?", ["What did Ishiba say about Trump?"], False),  # the previous asked no "who"
    ("How many people died?", ["Who won the election?"], False),  # no "he" or "she"
    ("How old is he?", [], False),
])
def test_which_follow_ups_mean_the_previous_answer(question, history, refers):
    assert dialog.refers_to_answer(question, history) is refers


def test_a_referent_replaces_he_in_what_is_searched():
    t = dialog.read("How old is he?", ["Who became acting president after Raisi died?"], "Mohammad Mokhber")
    assert t.query == "How old is Mohammad Mokhber?" and t.referent == "Mohammad Mokhber" and t.follows
    q = dialog.read("What did he say about his rivals?", ["Who won the vote?"], "Ann Lee")
    assert (q.kind, q.speaker, q.query) == ("quote", "Ann Lee", "What did Ann Lee say about Ann Lee's rivals?")
    # No referent found (the previous answer was refused): the old reading.
    assert dialog.read("How old is he?", ["Who became acting president after Raisi died?"]).referent is None


def test_open_sees_a_newer_generation_without_restart(desk, corpus, fake, fake_config):
    reader = Desk.open(fake_config.index, config=fake_config, embedder=fake)
    write(corpus / "z.txt", "Zoo news\n\nThe zoo welcomed a baby panda named Lin on Tuesday.")
    desk.sync(corpus)
    assert reader.info()["n_articles"] == 2


def test_wire_story_published_twice_is_stored_once(desk, corpus, tmp_path):
    body = (corpus / "000_6b727eb0139704a7.txt").read_text().split("---\n", 2)[2]
    lines = body.splitlines()
    copy = "Trump hosts Ishiba (Wire copy)\n\n" + "\n".join(lines[2:]).replace("Friday", "Friday,")
    write(corpus / "copy.txt", copy)
    stats = desk.sync(corpus)
    assert stats["n_articles"] == 1
    assert any("copy.txt" in p and "near-duplicate of 000_6b727eb0139704a7.txt" in r for p, r in stats["skipped"])
    write(corpus / "other.txt", "Other\n\n" + lines[2] + "\n\nA different story about fishing quotas in the north.")
    assert desk.sync(corpus)["n_articles"] == 2  # one shared sentence is not a copy


def test_the_same_sentence_is_never_cited_twice(fake, fake_config, tmp_path):
    text = "The port handled 12.1 million tonnes of cargo in 2023, a record."
    write(tmp_path / "c" / "a.txt", f"Port record\n\n{text}\n\nThe mayor praised the workers.")
    write(tmp_path / "c" / "b.txt", f"Record year at the port\n\n{text}\n\nUnions asked for a bonus.")
    desk = Desk.build(tmp_path / "c", config=fake_config, embedder=fake)
    a = desk.ask("How many tonnes of cargo did the port handle in 2023?")
    sentences = [c.sentence for c in a.citations]
    assert len(sentences) == len(set(sentences))


def test_date_range_and_as_of_restrict_the_articles_used(tmp_path, fake, fake_config):
    c = tmp_path / "dated"
    write(c / "a.md", "---\ntitle: Port, March\ndate: 2024-03-01\n---\nThe port handled 12.1 million tonnes of cargo.")
    write(c / "b.md", "---\ntitle: Port, June\ndate: 2024-06-05\n---\nThe port handled 12.4 million tonnes of cargo.")
    write(c / "c.txt", "Port, undated\n\nThe port handled 9.9 million tonnes of cargo.")
    desk = Desk.build(c, config=fake_config, embedder=fake)
    q = "How many tonnes of cargo did the port handle?"
    # By default an undated article stays usable under a window, ranked after the dated ones that
    # fit (its fused score less UNDATED_PENALTY), and the note says its date is unknown.
    a = desk.ask(q, as_of="2024-04-01")
    assert a.citations[0].date == "2024-03-01" and {x.date for x in a.citations} <= {"2024-03-01", None}
    assert "2024-06-05" not in {x.date for x in a.citations}
    if None in {x.date for x in a.citations}:
        assert "has no date, so whether it was published by 1 April 2024 is not known" in a.note
    assert {x.date for x in desk.ask(q, since="2024-05-01").citations} <= {"2024-06-05", None}
    assert {x.date for x in desk.ask(q, since="2024-01-01", until="2024-12-31").citations} <= {"2024-03-01", "2024-06-05", None}
    only_undated = desk.ask(q, until="2023-12-31")  # nothing dated then: the undated report, said so
    assert [x.date for x in only_undated.citations] == [None] and "9.9 million" in only_undated.text
    assert only_undated.note == "[1] has no date, so whether it was published by 31 December 2023 is not known."
    strict = Desk.open(fake_config.index, config=fake_config.replace(undated="exclude"), embedder=fake)
    assert {x.date for x in strict.ask(q, as_of="2024-04-01").citations} == {"2024-03-01"}
    empty = strict.ask(q, until="2023-12-31")
    assert empty.refused and empty.note == "No article in the index was published by 31 December 2023."
    with pytest.raises(BadInputError, match="not a date"):
        desk.ask(q, since="last Tuesday-ish")
    with pytest.raises(BadInputError, match="swap them"):
        desk.ask(q, since="2024-06-01", until="2024-01-01")
    with pytest.raises(AskdeskError, match="undated='sometimes' must be after, include or exclude"):
        fake_config.replace(undated="sometimes")


def test_documented_json_schema_lists_exactly_the_keys_to_dict_emits():
    """docs/api.md's `askdesk ask --json` block and `Answer.to_dict()` name the same keys, at every level."""
    import re

    from conftest import ROOT

    from askdesk.types import Answer, Citation, Claim, Conflict, Period

    api = (ROOT / "docs" / "api.md").read_text()
    block = api.split("`Answer.to_dict()` / `askdesk ask --json`:", 1)[1].split("```")[1]
    documented = set(re.findall(r'"(\w+)":', block))
    c = Citation(1, "a", "t", None, None, None, None, "s.", "s.", 0, 2, 1.0, quote="q", speaker="x")
    a = Answer("q", "s. [1]", False, (c,), (c,), 0.5, {"retrieve": 1.0, "answer": 1.0}, "extractive",
               (Claim("s.", (1,), True, "s."),), None, (Conflict("it", (("1", 1), ("2", 1))),), None,
               Period("last week", "2025-01-01", "2025-01-07", True), None)

    def keys(x) -> set[str]:
        if isinstance(x, dict):
            return set(x) | {k for v in x.values() for k in keys(v)}
        if isinstance(x, list):
            return {k for v in x for k in keys(v)}
        return set()

    assert documented == keys(a.to_dict()), documented ^ keys(a.to_dict())


def test_a_question_in_an_article_is_never_the_answer(fake, fake_config, tmp_path):
    # Live-update pages ask the reader's question as a heading; the fake embedder scores that
    # heading closest to the question (most shared words), so only the rule keeps it out.
    write(tmp_path / "c" / "fires.txt", "Panhandle fires\n\nHas anyone died in the Panhandle fires?\n\n"
          "Two people died in the Panhandle fires, Cindy Owen and Joyce Blankenship, officials said.")
    desk = Desk.build(tmp_path / "c", config=fake_config.replace(refuse_below=0.0), embedder=fake)
    a = desk.ask("Has anyone died in the Panhandle fires?")
    assert a.citations and all(not c.sentence.endswith("?") for c in a.citations)
    assert "Cindy Owen" in a.citations[0].sentence
