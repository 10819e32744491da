"""`askdesk eval`: metric math against hand-computed values, the data-set readers, and runs
on tiny purpose-written sets with a deterministic fake embedder (no model, no network).

The slow test runs the real CLI on 40 squad-dev paragraphs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from askdesk.config import Config
from askdesk.desk import Desk
from askdesk.errors import BadInputError
from askdesk.surface import eval as ev
from askdesk.types import Answer, Chunk, Citation, Hit

SQUAD_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad-dev"
if not SQUAD_DEV.is_dir():  # the work tree sits beside shared/ on every machine; CI clones elsewhere
    SQUAD_DEV = Path("/work/shared/data/squad-dev")


class FakeEmbedder:
    """Hashed bag of words: texts sharing words are close, and the same text always maps the same."""

    name = "fake-bow"
    dim = 256

    def fits(self, text: str) -> bool:
        return True

    def embed_documents(self, texts, progress=None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest()[:8], 16) % self.dim] += 1.0
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
        if progress:
            progress(len(texts))
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


DOCS = {
    "volcano": ("Mount Etna", "Mount Etna erupted on Tuesday, sending lava down the eastern slope of the volcano."),
    "bank": ("Central bank", "The central bank raised interest rates by half a point to fight inflation."),
    "football": ("Cup final", "Arsenal beat Chelsea two goals to one in the cup final at Wembley stadium."),
    "harvest": ("Wheat harvest", "Farmers in Kansas reported a record wheat harvest after a wet spring."),
}


def write_jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def beir_set(root: Path, *, qrels_at: str = "qrels.tsv") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "corpus.jsonl", [{"_id": k, "title": t, "text": x} for k, (t, x) in DOCS.items()])
    write_jsonl(root / "queries.jsonl", [
        {"_id": "q1", "text": "Which volcano erupted, sending lava down the slope?"},
        {"_id": "q2", "text": "Who did Arsenal beat in the cup final at Wembley?"},
        {"_id": "q3", "text": "A question nobody judged about the wheat harvest"},
        {"_id": "q4", "text": "Why did the central bank raise interest rates?"},
    ])
    (root / qrels_at).parent.mkdir(parents=True, exist_ok=True)
    (root / qrels_at).write_text("query-id\tcorpus-id\tscore\nq1\tvolcano\t1\nq2\tfootball\t1\nq4\tbank\t1\n")
    return root


@pytest.fixture
def cfg(tmp_path) -> Config:
    return Config.from_env({}, index=tmp_path / "unused-index")


# -- metric math ------------------------------------------------------------------------------
def test_metrics_match_hand_computed_values():
    ranked = ["a", "b", "c", "d"]
    rels = {"b": 1}
    assert ev.mrr_at_k(ranked, rels, 10) == 0.5
    assert ev.recall_at_k(ranked, rels, 1) == 0.0
    assert ev.recall_at_k(ranked, rels, 5) == 1.0
    assert ev.ndcg_at_k(ranked, rels, 10) == pytest.approx(1 / math.log2(3))  # 0.6309
    # Two relevant docs, one found at rank 3: recall 1/2, DCG 1/log2(4) = 0.5 over IDCG 1 + 1/log2(3).
    two = {"c": 1, "z": 1}
    assert ev.recall_at_k(ranked, two, 10) == 0.5
    assert ev.ndcg_at_k(ranked, two, 10) == pytest.approx(0.5 / (1 + 1 / math.log2(3)))
    assert ev.mrr_at_k(ranked, two, 2) == 0.0  # first relevant at rank 3, past the cut-off
    assert ev.ndcg_at_k(["a"], {"a": 0}, 10) == 0.0  # a zero score is a judgement, not a relevant doc


def test_normalize_answer_is_squads():
    assert ev.normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert ev.normalize_answer("An apple, a day") == "apple day"
    assert ev._contains("It rose to $12 in 1974.", ["12"])
    assert not ev._contains("It happened in 19735.", ["1973"])  # whole tokens only


def test_token_f1_is_squads():
    assert ev.token_f1("The Chelsea!", "chelsea") == 1.0
    assert ev.token_f1("interest rates", "raised interest rates") == pytest.approx(0.8)  # P 1, R 2/3
    assert ev.token_f1("rates rates", "rates") == pytest.approx(2 / 3)  # a repeated word counts once: P 1/2, R 1
    assert ev.token_f1("Tuesday", "Monday") == 0.0 and ev.token_f1("the", "a") == 0.0


def test_format_table_has_two_columns():
    table = ev.format_table({"recall@5": 0.9412, "n_queries": 4807, "citation_hit": None, "index_s": 12.5})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "value"]
    assert "recall@5      0.9412" in table and "4,807" in table and "citation_hit  -" in table


# -- reading data sets ------------------------------------------------------------------------
def test_qrels_header_tsv_and_trec_columns(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n\nq2\td3\t2\n")
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq9\td9\t1\n")
    assert ev.read_qrels(tmp_path) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}  # qrels/test.tsv wins
    (tmp_path / "qrels" / "test.tsv").write_text("q1 Q0 d1 1\n")
    assert ev.read_qrels(tmp_path) == {"q1": {"d1": 1}}
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\tyes\n")
    with pytest.raises(BadInputError, match="line 2"):
        ev.read_qrels(tmp_path)


def test_missing_files_and_bad_lines_name_the_fix(tmp_path, cfg):
    with pytest.raises(BadInputError, match="corpus.jsonl"):
        ev.eval_retrieval(tmp_path, config=cfg, embedder=FakeEmbedder())
    root = beir_set(tmp_path / "set")
    (root / "qrels.tsv").unlink()
    with pytest.raises(BadInputError, match="qrels"):
        ev.eval_retrieval(root, config=cfg, embedder=FakeEmbedder())
    with pytest.raises(BadInputError, match="not a folder"):
        ev.eval_retrieval(root / "nope", config=cfg, embedder=FakeEmbedder())
    with open(root / "corpus.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(BadInputError, match="line 5"):
        ev.read_corpus(root)
    with pytest.raises(BadInputError, match="qa.jsonl"):
        ev.eval_qa(beir_set(tmp_path / "set2"), config=cfg, embedder=FakeEmbedder())
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(BadInputError, match="SQuAD"):
        ev.eval_qa(bad, config=cfg, embedder=FakeEmbedder())


# -- retrieval --------------------------------------------------------------------------------
def test_eval_retrieval_end_to_end_skips_unjudged(tmp_path, cfg):
    r = ev.eval_retrieval(beir_set(tmp_path / "set", qrels_at="qrels/test.tsv"), config=cfg, embedder=FakeEmbedder())
    assert r["n_queries"] == 3 and r["n_skipped"] == 1 and r["n_docs"] == 4
    assert r["recall@1"] == r["mrr@10"] == r["ndcg@10"] == 1.0  # each query names its doc's rare words
    assert r["index_s"] >= 0 and r["query_p50_ms"] > 0
    limited = ev.eval_retrieval(tmp_path / "set", config=cfg, embedder=FakeEmbedder(), limit=2)
    assert limited["n_queries"] == 2 and limited["n_skipped"] == 0


def test_compare_ranks_by_dense_and_bm25_alone_on_the_same_index(tmp_path, cfg, monkeypatch):
    """--compare: each baseline is its retriever's own list, documents ranked by their best chunk."""
    root = beir_set(tmp_path / "set", qrels_at="qrels/test.tsv")
    r = ev.eval_retrieval(root, config=cfg, embedder=FakeEmbedder(), compare=True)
    assert {f"{s}{m}" for s in ("", "dense_", "bm25_") for m in ev.METRICS} <= set(r)
    assert r["bm25_recall@1"] == 1.0  # each query names its doc's rare words
    table = ev.format_table(r)
    assert table.splitlines()[0].split() == ["metric", "shipped", "dense", "bm25"] and "n_queries" in table

    # a known split: dense finds the relevant doc first, BM25 ranks it second
    from askdesk.answering.retrieve import Candidates

    def candidates(self, query, qvec, *, n=None, window=None):
        by_doc = {a.path: a.id for a in self.snap.all_articles()}
        chunks = [Chunk(f"{i:015x}", by_doc[d], 0, 1, "x") for i, d in enumerate(["volcano", "bank"], 1)]
        zero = np.zeros(2)
        return Candidates(np.array([1, 2]), chunks, zero, zero, zero, [(1, 0.9), (2, 0.5)], [(2, 9.0), (1, 4.0)])

    monkeypatch.setattr("askdesk.answering.retrieve.Retriever.candidates", candidates)
    monkeypatch.setattr(Desk, "retrieve", lambda self, q, k=None: [])
    write_jsonl(root / "queries.jsonl", [{"_id": "q1", "text": "lava"}])
    r = ev.eval_retrieval(root, config=cfg, embedder=FakeEmbedder(), compare=True)
    assert (r["dense_mrr@10"], r["bm25_mrr@10"], r["mrr@10"]) == (1.0, 0.5, 0.0)


def test_a_doc_scores_as_its_best_chunk(tmp_path, cfg, monkeypatch):
    """A known ranking: the relevant doc's chunks come 3rd and 4th, after two chunks of one other doc."""
    root = beir_set(tmp_path / "set")
    write_jsonl(root / "queries.jsonl", [{"_id": "q1", "text": "lava"}])
    seen = {}

    def fake_retrieve(self, question, *, k=None):
        seen["k"] = k
        by_doc = {a.path: a.id for a in self.snapshot.articles.values()}
        order = ["bank", "bank", "volcano", "volcano", "football"]
        return [Hit(Chunk(f"c{i}", by_doc[d], 0, 1, "x"), 1.0 - i / 10) for i, d in enumerate(order)]

    monkeypatch.setattr(Desk, "retrieve", fake_retrieve)
    r = ev.eval_retrieval(root, config=cfg, embedder=FakeEmbedder())
    assert seen["k"] >= 10
    assert r["mrr@10"] == 0.5 and r["recall@1"] == 0.0 and r["recall@5"] == 1.0  # volcano is doc 2, not chunk 3
    assert r["ndcg@10"] == round(1 / math.log2(3), 4)


# -- question answering -----------------------------------------------------------------------
def squad_file(path: Path) -> Path:
    data = {"version": "1.1", "data": [
        {"title": "Mount_Etna", "paragraphs": [{"context": DOCS["volcano"][1], "qas": [
            {"id": "e1", "question": "When did Mount Etna erupt?", "answers": [{"text": "Tuesday", "answer_start": 25},
                                                                             {"text": "on Tuesday", "answer_start": 22}]}]}]},
        {"title": "Football", "paragraphs": [
            {"context": "The season opened in August with new signings.", "qas": []},
            {"context": DOCS["football"][1], "qas": [
                {"id": "f1", "question": "Who did Arsenal beat in the cup final?", "answers": [{"text": "Chelsea", "answer_start": 12}]},
                {"id": "f2", "question": "Where was the cup final played?", "answers": [{"text": "Wembley stadium", "answer_start": 60}]}]}]},
    ]}
    path.write_text(json.dumps(data))
    return path


def test_read_squad_titles_and_gold_paragraphs(tmp_path):
    articles, doc_of, questions = ev.read_squad(squad_file(tmp_path / "s.json"))
    assert [a.title for a in articles] == ["Mount Etna", "Football", "Football"]
    assert sorted(doc_of.values()) == ["Football_0", "Football_1", "Mount_Etna_0"]
    assert questions[0]["answers"] == ["Tuesday", "on Tuesday"] and questions[0]["gold_docs"] == {"Mount_Etna_0"}
    assert [q["id"] for q in questions] == ["e1", "f1", "f2"] and questions[2]["gold_docs"] == {"Football_1"}


def test_eval_qa_squad_json_end_to_end(tmp_path, cfg, monkeypatch):
    import askdesk.answering.answer as answer_mod

    # The fitted refusal model expects MiniLM's cosines; the fake embedder's are not comparable.
    monkeypatch.setattr(answer_mod, "REFUSAL_MODEL",
                        {"bias": 0.0, "weights": dict.fromkeys(answer_mod.FEATURES, 0.0), "threshold": 0.0})
    r = ev.eval_qa(squad_file(tmp_path / "s.json"), config=cfg, embedder=FakeEmbedder())
    assert r["n"] == 3 and r["n_answerable"] == 3 and r["n_unanswerable"] == 0 and r["n_docs"] == 3
    assert r["answer_hit"] == r["first_sentence_hit"] == r["citation_hit"] == 1.0
    assert r["refused_answerable"] == 0.0 and r["refused_unanswerable"] is None
    assert 10 <= r["answer_words"] <= 40 and r["p95_ms"] >= r["p50_ms"] > 0
    assert ev.eval_qa(tmp_path / "s.json", config=cfg, embedder=FakeEmbedder(), limit=1)["n"] == 1


def cite(n: int, article_id: str, sentence: str) -> Citation:
    return Citation(n, article_id, "t", None, None, None, None, sentence, sentence, 0, len(sentence), 1.0)


def test_eval_qa_folder_counts_refusals_and_hits(tmp_path, cfg, monkeypatch):
    """Canned answers make every rate hand-computable."""
    root = tmp_path / "qa"
    root.mkdir()
    write_jsonl(root / "corpus.jsonl", [{"_id": k, "title": t, "text": x} for k, (t, x) in DOCS.items()])
    write_jsonl(root / "qa.jsonl", [
        {"id": "a", "question": "Who lost the cup final?", "answers": ["Chelsea"]},  # hit in 1st sentence, cited
        {"id": "b", "question": "When did Etna erupt?", "answers": ["Tuesday"]},  # hit only in 2nd sentence, wrong doc
        {"id": "c", "question": "What did the bank do?", "answers": ["raised interest rates"]},  # refused
        {"id": "d", "question": "Who won the 1966 World Cup?", "answers": []},  # refused: right
        {"id": "e", "question": "What is the capital of Peru?", "answers": []},  # answered: wrong
    ])
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\na\tfootball\t1\nb\tvolcano\t1\nc\tbank\t1\n")

    def fake_ask(self, question, *, history=None, as_of=None):
        ids = {a.path: a.id for a in self.snapshot.articles.values()}
        s1, s2 = "Arsenal beat Chelsea two goals to one.", "Etna erupted on Tuesday."
        canned = {
            "Who lost": Answer(question, f"{s1} [1]", False, (cite(1, ids["football"], s1),)),
            "When did": Answer(question, f"Lava flowed. [1] {s2} [2]", False,
                               (cite(1, ids["harvest"], "Lava flowed."), cite(2, ids["harvest"], s2))),
            "What is": Answer(question, "Lima is far. [1]", False, (cite(1, ids["harvest"], "Lima is far."),)),
        }
        return next((a for k, a in canned.items() if question.startswith(k)), Answer(question, "No.", True))

    monkeypatch.setattr(Desk, "ask", fake_ask)
    r = ev.eval_qa(root, config=cfg, embedder=FakeEmbedder())
    assert (r["n"], r["n_answerable"], r["n_unanswerable"]) == (5, 3, 2)
    assert r["answer_hit"] == round(2 / 3, 4) and r["first_sentence_hit"] == round(1 / 3, 4)
    assert r["citation_hit"] == round(1 / 3, 4)
    assert r["refused_answerable"] == round(1 / 3, 4) and r["refused_unanswerable"] == 0.5
    assert r["answer_words"] == round((7 + 6 + 3) / 3, 1)  # [n] markers are not words
    (root / "qrels.tsv").unlink()
    assert ev.eval_qa(root, config=cfg, embedder=FakeEmbedder())["citation_hit"] is None


def test_eval_qa_short_span_metrics(tmp_path, cfg, monkeypatch):
    """short_em / short_f1 over answered answerable questions that carry a span; coverage over answered ones."""
    root = tmp_path / "qa"
    root.mkdir()
    write_jsonl(root / "corpus.jsonl", [{"_id": k, "title": t, "text": x} for k, (t, x) in DOCS.items()])
    write_jsonl(root / "qa.jsonl", [
        {"id": "a", "question": "Who lost the cup final?", "answers": ["Chelsea"]},  # span "the Chelsea!": EM 1
        {"id": "b", "question": "What did the bank raise?", "answers": ["raised interest rates",
                                                                      "interest rates by half a point"]},  # F1 0.8
        {"id": "c", "question": "When did Etna erupt?", "answers": ["Tuesday"]},  # answered, no span
        {"id": "d", "question": "Where is the harvest?", "answers": ["Kansas"]},  # refused: left out
        {"id": "e", "question": "What is the capital of Peru?", "answers": []},  # unanswerable: left out
    ])
    s = "Arsenal beat Chelsea."

    def fake_ask(self, question, *, history=None, as_of=None):
        aid = next(iter(self.snapshot.articles))
        c = (cite(1, aid, s),)
        canned = {
            "Who lost": Answer(question, f"{s} [1]", False, c, short="the Chelsea!"),
            "What did": Answer(question, f"{s} [1]", False, c, short="interest rates"),
            "When did": Answer(question, f"{s} [1]", False, c),
            "Where is": Answer(question, "No.", True, short="Kansas"),
            "What is": Answer(question, f"{s} [1]", False, c, short="Lima"),
        }
        return next(a for k, a in canned.items() if question.startswith(k))

    monkeypatch.setattr(Desk, "ask", fake_ask)
    r = ev.eval_qa(root, config=cfg, embedder=FakeEmbedder())
    assert r["short_em"] == 0.5  # a right, b wrong
    # b: "interest rates" against its best gold: precision 2/2, recall 2/3 -> F1 0.8 (the other gold gives 0.57).
    assert r["short_f1"] == 0.9  # (1 + 0.8) / 2
    assert r["short_coverage"] == round(2 / 3, 4)  # a and b of the answered a, b, c
    assert list(r).index("short_em") < list(r).index("p50_ms")  # listed with the answer metrics
    assert "short_f1" in ev.format_table(r)


def test_eval_qa_without_short_spans_reports_none(tmp_path, cfg, monkeypatch):
    root = tmp_path / "qa"
    root.mkdir()
    write_jsonl(root / "corpus.jsonl", [{"_id": k, "title": t, "text": x} for k, (t, x) in DOCS.items()])
    write_jsonl(root / "qa.jsonl", [{"id": "a", "question": "Why did it rain?", "answers": ["clouds"]}])
    monkeypatch.setattr(Desk, "ask", lambda self, q, **kw: Answer(
        q, "Clouds. [1]", False, (cite(1, next(iter(self.snapshot.articles)), "Clouds."),)))
    r = ev.eval_qa(root, config=cfg, embedder=FakeEmbedder())
    assert r["short_em"] is None and r["short_f1"] is None and r["short_coverage"] == 0.0


def test_question_date_hides_later_articles(tmp_path, cfg, monkeypatch):
    import askdesk.answering.answer as answer_mod

    monkeypatch.setattr(answer_mod, "REFUSAL_MODEL",
                        {"bias": 0.0, "weights": dict.fromkeys(answer_mod.FEATURES, 0.0), "threshold": 0.0})
    root = tmp_path / "dated"
    root.mkdir()
    write_jsonl(root / "corpus.jsonl", [
        {"_id": "old", "title": "Town hall", "text": "The mayor of Springfield is Alice Moore.", "metadata": {"date": "2020-05-01"}},
        # The closer match to the question, but published after it was asked.
        {"_id": "new", "title": "Who is the mayor of Springfield", "text": "The mayor of Springfield is Bob Stone.",
         "metadata": {"date": "2024-05-01"}},
    ])
    question = {"id": "1", "question": "Who is the mayor of Springfield?", "answers": ["Alice Moore"]}
    write_jsonl(root / "qa.jsonl", [question])
    assert ev.eval_qa(root, config=cfg, embedder=FakeEmbedder())["first_sentence_hit"] == 0.0
    write_jsonl(root / "qa.jsonl", [{**question, "question_date": "2021-01-01"}])
    assert ev.eval_qa(root, config=cfg, embedder=FakeEmbedder())["first_sentence_hit"] == 1.0


# -- the real thing ---------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_eval_retrieval_on_squad_subset(tmp_path):
    if not (SQUAD_DEV / "corpus.jsonl").is_file():
        pytest.skip(f"squad-dev not found at {SQUAD_DEV}")
    docs = [json.loads(line) for line in (SQUAD_DEV / "corpus.jsonl").read_text().splitlines()[:40]]
    keep = {d["_id"] for d in docs}
    qrels = [line.split("\t") for line in (SQUAD_DEV / "qrels.tsv").read_text().splitlines()[1:]]
    wanted = {q for q, d, _ in qrels if d in keep}
    queries = [json.loads(line) for line in (SQUAD_DEV / "queries.jsonl").read_text().splitlines()]
    root = tmp_path / "squad40"
    root.mkdir()
    write_jsonl(root / "corpus.jsonl", docs)
    write_jsonl(root / "queries.jsonl", [q for q in queries if q["_id"] in wanted])
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q, d, _ in qrels if d in keep))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ASKDESK_INDEX": str(tmp_path / "index")}
    out = subprocess.run([sys.executable, "-m", "askdesk", "eval", "retrieval", str(root), "--json", "--limit", "20"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["n_queries"] == 20 and result["n_docs"] == 40
    assert result["recall@5"] > 0.7
    assert not (tmp_path / "index").exists()  # the evaluation never touches the user's index

    # --keep-index: the second run reuses the kept index and embeds nothing.
    kept = tmp_path / "kept"
    runs = [subprocess.run([sys.executable, "-m", "askdesk", "eval", "retrieval", str(root), "--json", "--limit",
                            "5", "--keep-index", str(kept)], capture_output=True, text=True, env=env, timeout=600)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr
    first, second = (json.loads(r.stdout) for r in runs)
    assert (kept / "CURRENT").is_file()
    assert second["recall@5"] == first["recall@5"] and second["index_s"] < first["index_s"] / 3
