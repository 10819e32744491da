"""Measure askdesk on data nobody here wrote: `askdesk eval retrieval DIR` and `askdesk eval qa PATH`.

Both index the data set with askdesk's own pipeline (each document one Article, chunked as
usual) in a temporary folder, then put every question through the public API: `Desk.retrieve`
for retrieval, `Desk.ask` for answers. Results are plain dicts (the `--json` output).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import string
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np

from ..articles.ingest import article_from_text, normalize_date
from ..config import Config
from ..desk import Desk, Progress
from ..errors import BadInputError, BadQuestionError
from ..models.embed import Embedder
from ..text import RECENT_DAYS
from ..types import Answer, Article

logger = logging.getLogger(__name__)

RETRIEVE_CHUNKS = 50  # chunks asked of retrieve(); a doc scores as its best chunk, top 10 docs kept
_MARKER = re.compile(r"\s*\[\d+\]")


# -- the two measurements ---------------------------------------------------------------------
def eval_retrieval(path: str | Path, *, config: Config | None = None, limit: int | None = None,
                   embedder: Embedder | None = None, index_dir: str | Path | None = None,
                   progress: Progress | None = None, compare: bool = False) -> dict:
    """Retrieval quality on a BEIR-style folder.

    Args:
        path: folder with ``corpus.jsonl`` (``_id``, ``title``, ``text``, optional ``metadata``),
            ``queries.jsonl`` (``_id``, ``text``) and ``qrels/test.tsv`` or ``qrels.tsv``
            (``query-id corpus-id score``, a header line). Other files are ignored.
        config: askdesk settings (chunking, model, fusion candidates); ``Config.from_env()`` when omitted.
        limit: only the first ``limit`` queries of ``queries.jsonl``, in file order.
        embedder: the embedding model (tests pass a fake); built from ``config.model`` when omitted.
        index_dir: keep the index in this folder (reused by the next run when the corpus is
            unchanged) instead of a temporary one.
        compare: also rank by dense search alone and by BM25 alone, on the same index in the same
            run (each document ranked by its best chunk), so no number stands without its baselines.

    Returns:
        ``ndcg@10``, ``recall@1``, ``recall@5``, ``recall@10``, ``mrr@10`` (means over judged
        queries, in [0, 1]), ``n_queries`` (judged), ``n_skipped`` (no judgement), ``n_docs``,
        ``index_s`` (seconds to build the index) and ``query_p50_ms`` (median retrieve time);
        with ``compare``, the five metrics again as ``dense_<metric>`` and ``bm25_<metric>``.

    Raises:
        BadInputError: a file is missing or malformed, or no query has a judgement.
    """
    root = _folder(path, "eval retrieval")
    articles, doc_of = read_corpus(root)
    qrels = read_qrels(root)
    if qrels is None:
        raise BadInputError(f"no qrels/test.tsv or qrels.tsv in {str(root)!r}; add the relevance judgements "
                            "(query-id, corpus-id, score, with a header line)")
    queries = read_jsonl(root / "queries.jsonl", "queries.jsonl (one {\"_id\", \"text\"} per line)")[:limit]
    judged = [q for q in queries if any(s > 0 for s in qrels.get(str(q.get("_id")), {}).values())]
    if not judged:
        raise BadInputError(f"none of the {len(queries)} queries in {str(root / 'queries.jsonl')!r} has a positive "
                            "judgement in the qrels; check that the query ids match")
    systems = ("", "dense_", "bm25_") if compare else ("",)
    per_query: dict[str, list[float]] = {f"{s}{m}": [] for s in systems for m in METRICS}
    times = []
    with _desk(articles, config, embedder, index_dir, progress) as (desk, index_s):
        for q in _counted(judged, "retrieval", progress):
            text, rels = str(q["text"]), qrels[str(q["_id"])]
            t0 = time.perf_counter()
            try:
                hits = desk.retrieve(text, k=RETRIEVE_CHUNKS)
            except BadQuestionError as e:  # empty or over-long: nothing found, as for a user
                logger.warning("query %s: %s", q["_id"], e)
                hits = []
            times.append((time.perf_counter() - t0) * 1000)
            rankings = {"": [doc_of[h.chunk.article_id] for h in hits]}
            if compare and hits is not None:
                c = desk.retriever.candidates(text, desk.embedder.embed_query(text), n=RETRIEVE_CHUNKS)
                article = {int(k): ch.article_id for k, ch in zip(c.keys, c.chunks)}
                rankings["dense_"] = [doc_of[article[k]] for k, _ in c.dense_hits]
                rankings["bm25_"] = [doc_of[article[k]] for k, _ in c.lexical_hits]
            for system, docs in rankings.items():
                for m, v in _scores(list(dict.fromkeys(docs))[:10], rels).items():
                    per_query[system + m].append(v)
    out = {m: round(float(np.mean(v)), 4) for m, v in per_query.items()}
    return {**out, "n_queries": len(judged), "n_skipped": len(queries) - len(judged), "n_docs": len(articles),
            "index_s": round(index_s, 1), "query_p50_ms": round(float(np.percentile(times, 50)), 1)}


METRICS = ("ndcg@10", "recall@1", "recall@5", "recall@10", "mrr@10")


def _scores(ranked: list[str], rels: dict[str, int]) -> dict[str, float]:
    return {"ndcg@10": ndcg_at_k(ranked, rels, 10), "recall@1": recall_at_k(ranked, rels, 1),
            "recall@5": recall_at_k(ranked, rels, 5), "recall@10": recall_at_k(ranked, rels, 10),
            "mrr@10": mrr_at_k(ranked, rels, 10)}


def eval_qa(path: str | Path, *, config: Config | None = None, limit: int | None = None,
            embedder: Embedder | None = None, index_dir: str | Path | None = None,
            progress: Progress | None = None) -> dict:
    """Answer quality: every question goes through `Desk.ask` exactly as a user's would.

    Args:
        path: a SQuAD v1.1 JSON file (each paragraph becomes an article titled by its article,
            and is the gold document of its questions), or a folder with ``corpus.jsonl`` and
            ``qa.jsonl`` (``id``, ``question``, ``answers`` list, optional ``question_date``: asked
            ``as_of`` that day when the corpus has dates; ``answers: []`` marks a question the
            corpus cannot answer) plus optional qrels
            (``qrels.tsv`` or ``qrels/test.tsv``) naming the documents that hold each answer.
        config: askdesk settings; ``Config.from_env()`` when omitted.
        limit: only the first ``limit`` questions, in file order.
        embedder: the embedding model (tests pass a fake); built from ``config.model`` when omitted.
        index_dir: keep the index in this folder instead of a temporary one.

    Returns:
        Fractions in [0, 1] over answerable questions (a refusal counts as a miss):
        ``answer_hit`` (a gold answer, normalised the SQuAD way, is in the answer text),
        ``first_sentence_hit`` (it is in the first cited sentence), ``citation_hit`` (a
        citation points to a gold document; None when no gold documents are known),
        ``refused_answerable``; ``refused_unanswerable`` over unanswerable questions (None
        when there are none); ``answer_words`` (mean words of the answers given, [n] markers
        left out); ``short_em`` and ``short_f1`` (SQuAD exact match and token F1 of
        ``Answer.short`` against the best gold, over the answered answerable questions whose answer
        carries a short span; None when none does) and ``short_coverage`` (the share of answered
        answerable questions that carry one); ``first_recent`` (news time sense: of the answers
        whose first citation is dated, asked on a ``question_date``, the share citing a report of
        the `RECENT_DAYS` up to it; None without dates); ``p50_ms``, ``p95_ms`` (time per ask); ``n``,
        ``n_answerable``, ``n_unanswerable``, ``n_docs``, ``index_s``.

    Raises:
        BadInputError: a file is missing or malformed.
    """
    p = Path(path)
    if p.is_file():
        articles, doc_of, questions = read_squad(p)
    else:
        articles, doc_of, questions = read_qa_folder(_folder(p, "eval qa"))
    questions = questions[:limit]
    if not questions:
        raise BadInputError(f"no questions in {str(p)!r}; give a SQuAD JSON file or a folder with qa.jsonl")
    rows, times, words = [], [], []
    dated = any(a.date for a in articles)  # as_of drops undated articles: only use it where dates exist
    with _desk(articles, config, embedder, index_dir, progress) as (desk, index_s):
        for q in _counted(questions, "qa", progress):
            t0 = time.perf_counter()
            try:
                ans = desk.ask(q["question"], as_of=q.get("date") if dated else None)  # asked on question_date
            except BadQuestionError as e:  # empty or over-long: counted as a refusal
                logger.warning("question %s: %s", q["id"], e)
                ans = Answer(q["question"], str(e), refused=True)
            times.append((time.perf_counter() - t0) * 1000)
            golds = [g for g in (normalize_answer(a) for a in q["answers"]) if g]
            if not ans.refused:
                words.append(len(_MARKER.sub("", ans.text).split()))
            first = ans.citations[0].sentence if ans.citations else ""
            asked, cited_on = normalize_date(q.get("date")) if dated else None, ans.citations[0].date if first else None
            short = ans.short if not ans.refused and golds else None
            rows.append({
                "answerable": bool(q["answers"]), "refused": ans.refused, "gold_docs": q["gold_docs"],
                "answer": not ans.refused and _contains(_MARKER.sub("", ans.text), golds),
                "first": not ans.refused and _contains(first, golds),
                "cited": not ans.refused and any(doc_of[c.article_id] in q["gold_docs"] for c in ans.citations),
                "short": short is not None,
                "short_em": short is not None and normalize_answer(short) in golds,
                "short_f1": max(token_f1(short, g) for g in golds) if short is not None else 0.0,
                # news time sense: the first citation dated within RECENT_DAYS before the question's date
                "first_dated": not ans.refused and bool(asked and cited_on),
                "first_recent": not ans.refused and bool(asked and cited_on) and _within(cited_on, asked),
            })
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    with_docs = [r for r in answerable if r["gold_docs"]]
    shorts = [r for r in answerable if r["short"]]
    return {
        "answer_hit": _rate(answerable, "answer"), "first_sentence_hit": _rate(answerable, "first"),
        "citation_hit": _rate(with_docs, "cited"), "refused_answerable": _rate(answerable, "refused"),
        "refused_unanswerable": _rate(unanswerable, "refused"),
        "answer_words": round(float(np.mean(words)), 1) if words else None,
        "short_em": _rate(shorts, "short_em"),
        "short_f1": round(float(np.mean([r["short_f1"] for r in shorts])), 4) if shorts else None,
        "short_coverage": _rate([r for r in answerable if not r["refused"]], "short"),
        "first_recent": _rate([r for r in rows if r["first_dated"]], "first_recent"),
        "p50_ms": round(float(np.percentile(times, 50)), 1), "p95_ms": round(float(np.percentile(times, 95)), 1),
        "n": len(rows), "n_answerable": len(answerable), "n_unanswerable": len(unanswerable),
        "n_docs": len(articles), "index_s": round(index_s, 1),
    }


# The published anchor for a reader of this size, given the gold paragraph (deepset/minilm-uncased-squad2:
# MiniLM-L12-H384 trained on all 130k SQuAD 2.0 questions on a GPU).
READER_ANCHOR = {"f1": 0.795, "noans_acc": 0.739}


def eval_reader(path: str | Path, *, reader=None, limit: int | None = None, progress: Progress | None = None) -> dict:
    """The reader alone, given each question's gold paragraph (a SQuAD 2.0 JSON file).

    Every sentence of the paragraph is a candidate (`answering.read.read_passage`); the reader's
    best span is the answer unless its margin is under `read.THRESHOLD`, then it says "no answer".

    Returns:
        ``em`` and ``f1`` (SQuAD 2.0 rules: a no-answer question scores 1 when refused, else 0),
        ``has_ans_f1`` and ``has_ans_refused`` over answerable questions, ``noans_acc`` (unanswerable
        ones refused), ``sentence_hit`` (answered answerable questions whose chosen sentence holds a
        gold answer), ``anchor_f1`` and ``anchor_noans_acc`` (`READER_ANCHOR`), ``p50_ms``, ``n``.
    """
    from ..answering import read as read_mod
    from ..models.reader import shared

    reader = reader or shared()
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))["data"]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise BadInputError(f"{str(p)!r} is not a SQuAD 2.0 JSON file ({{\"data\": [{{\"paragraphs\"}}]}})") from None
    items = [(para["context"], qa) for art in data for para in art["paragraphs"] for qa in para["qas"]][:limit]
    rows, times = [], []
    for ctx, qa in _counted(items, "reader", progress):
        t0 = time.perf_counter()
        r = read_mod.read_passage(reader, qa["question"], ctx)
        times.append((time.perf_counter() - t0) * 1000)
        golds = [a["text"] for a in qa.get("answers", [])] if not qa.get("is_impossible") else []
        said = ctx[r.start:r.end] if r is not None and r.answers else None
        if not golds:
            rows.append({"has": False, "em": said is None, "f1": float(said is None), "refused": said is None})
            continue
        sent = ctx[r.sentence[0]:r.sentence[1]] if said is not None else ""
        rows.append({"has": True, "refused": said is None, "sent": said is not None and any(g in sent for g in golds),
                     "em": said is not None and max(normalize_answer(said) == normalize_answer(g) for g in golds),
                     "f1": max(token_f1(said, g) for g in golds) if said is not None else 0.0})
    has = [r for r in rows if r["has"]]
    no = [r for r in rows if not r["has"]]
    mean = lambda rs, k: round(float(np.mean([float(r[k]) for r in rs])), 4) if rs else None  # noqa: E731
    return {"em": mean(rows, "em"), "f1": mean(rows, "f1"), "has_ans_f1": mean(has, "f1"),
            "has_ans_refused": mean(has, "refused"), "noans_acc": mean(no, "refused"),
            "sentence_hit": mean([r for r in has if not r["refused"]], "sent"),
            "anchor_f1": READER_ANCHOR["f1"], "anchor_noans_acc": READER_ANCHOR["noans_acc"],
            "p50_ms": round(float(np.percentile(times, 50)), 1) if times else None,
            "n": len(rows), "n_answerable": len(has), "n_unanswerable": len(no)}


def format_table(result: dict) -> str:
    """A result dict as a table, one metric a line; with `compare` results, one column a system."""
    if "dense_ndcg@10" in result:
        width = max(len(m) for m in METRICS)
        lines = [f"{'metric':<{width}}  shipped  dense    bm25", f"{'-' * width}  -------  -------  -------"]
        lines += [f"{m:<{width}}  {result[m]:.4f}   {result['dense_' + m]:.4f}   {result['bm25_' + m]:.4f}"
                  for m in METRICS]
        rest = {k: v for k, v in result.items() if k not in METRICS and not k.startswith(("dense_", "bm25_"))}
        return "\n".join(lines) + "\n" + "\n".join(format_table(rest).splitlines()[2:])
    width = max((len(k) for k in result), default=0)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    for k, v in result.items():
        if v is None:
            v = "-"
        elif isinstance(v, float) and 0 <= v <= 1:  # a rate
            v = f"{v:.4f}"
        elif isinstance(v, int):
            v = f"{v:,}"
        lines.append(f"{k:<{width}}  {v}")
    return "\n".join(lines)


# -- metrics (BEIR / pytrec_eval definitions; relevance > 0 counts as relevant) ------------
def ndcg_at_k(ranked: list[str], rels: dict[str, int], k: int) -> float:
    """nDCG@k with linear gains: sum(rel / log2(rank + 1)) over the ideal ordering's."""
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_k(ranked: list[str], rels: dict[str, int], k: int) -> float:
    """Share of the relevant documents found in the top k."""
    relevant = {d for d, r in rels.items() if r > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def mrr_at_k(ranked: list[str], rels: dict[str, int], k: int) -> float:
    """1 / rank of the first relevant document in the top k, else 0."""
    return next((1.0 / (i + 1) for i, d in enumerate(ranked[:k]) if rels.get(d, 0) > 0), 0.0)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


_PUNCT = set(string.punctuation)


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD's token F1: harmonic mean of precision and recall of the normalised words in common."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(pred) & Counter(ref)).values())
    if not same:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def _within(day: str, asked: str, days: int = RECENT_DAYS) -> bool:
    """Whether ISO ``day`` is one of the ``days`` up to ``asked``."""
    gap = (date.fromisoformat(asked) - date.fromisoformat(day)).days
    return 0 <= gap < days


def _contains(text: str, golds: list[str]) -> bool:
    # Whole tokens only: the gold "1973" is not in "19735".
    padded = f" {normalize_answer(text)} "
    return any(f" {g} " in padded for g in golds)


def _rate(rows: list[dict], key: str) -> float | None:
    return round(sum(bool(r[key]) for r in rows) / len(rows), 4) if rows else None


# -- reading data sets ----------------------------------------------------------------------
def _folder(path: str | Path, command: str) -> Path:
    root = Path(path)
    if not root.is_dir():
        raise BadInputError(f"{str(root)!r} is not a folder; `askdesk {command}` needs a folder with corpus.jsonl"
                            + (" (or a SQuAD JSON file)" if command == "eval qa" else ""))
    return root


def read_jsonl(path: Path, what: str) -> list[dict]:
    if not path.is_file():
        raise BadInputError(f"{str(path)!r} is missing; add {what}")
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise BadInputError(f"{str(path)!r} line {n} is not JSON ({e.msg}); fix or remove that line") from None
            if not isinstance(rec, dict):
                raise BadInputError(f"{str(path)!r} line {n} is not a JSON object; write one object per line")
            out.append(rec)
    return out


def read_corpus(root: Path) -> tuple[list[Article], dict[str, str]]:
    """corpus.jsonl -> Articles, and article id -> the doc's ``_id``."""
    articles, doc_of = [], {}
    for n, rec in enumerate(read_jsonl(root / "corpus.jsonl",
                                       "corpus.jsonl (one {\"_id\", \"title\", \"text\"} per line)"), 1):
        if "_id" not in rec or not str(rec.get("text") or "").strip():
            raise BadInputError(f"corpus.jsonl record {n} needs an \"_id\" and a non-empty \"text\"; "
                                f"got keys {sorted(rec)!r}")
        meta = rec.get("metadata") if isinstance(rec.get("metadata"), dict) else {}
        _add(articles, doc_of, str(rec["_id"]), str(rec.get("title") or ""), str(rec["text"]),
             date=meta.get("date"), source=meta.get("source"), url=meta.get("url"))
    if not articles:
        raise BadInputError(f"{str(root / 'corpus.jsonl')!r} holds no documents; add one JSON object per line")
    return articles, doc_of


def _add(articles: list[Article], doc_of: dict[str, str], doc_id: str, title: str, text: str, **meta) -> None:
    a = article_from_text(text, title=title, key=doc_id, path=doc_id, **meta)
    if a.id not in doc_of:  # the id hashes _id and text, so only a repeated record collapses
        doc_of[a.id] = doc_id
        articles.append(a)


def read_qrels(root: Path) -> dict[str, dict[str, int]] | None:
    """qrels/test.tsv or qrels.tsv -> {query id: {doc id: score}}; None when neither exists."""
    path = next((p for p in (root / "qrels" / "test.tsv", root / "qrels.tsv") if p.is_file()), None)
    if path is None:
        return None
    qrels: dict[str, dict[str, int]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        cols = line.split()
        if not cols or (n == 1 and not cols[-1].lstrip("-").isdigit()):
            continue  # blank, or the header line
        if len(cols) not in (3, 4) or not cols[-1].lstrip("-").isdigit():
            raise BadInputError(f"{str(path)!r} line {n} is {line!r}; expected query-id, corpus-id, integer score")
        qrels.setdefault(cols[0], {})[cols[-2]] = int(cols[-1])  # 4 columns: TREC's "qid Q0 doc score"
    return qrels


def read_squad(path: Path) -> tuple[list[Article], dict[str, str], list[dict]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise BadInputError(f"{str(path)!r} is not SQuAD v1.1 JSON ({{\"data\": [{{\"title\", \"paragraphs\"}}]}}); "
                            "give a SQuAD file or a folder with corpus.jsonl and qa.jsonl") from None
    articles, doc_of, questions = [], {}, []
    for art in data:
        title = str(art.get("title", "")).replace("_", " ")  # Wikipedia's "Fresno,_California"
        for i, para in enumerate(art.get("paragraphs", [])):
            doc_id = f"{art.get('title', '')}_{i}"  # the _id that corpus.jsonl versions of SQuAD use
            _add(articles, doc_of, doc_id, title, para["context"])
            for qa in para.get("qas", []):
                answers = list(dict.fromkeys(a["text"] for a in qa.get("answers", [])))
                questions.append({"id": qa["id"], "question": qa["question"], "answers": answers,
                                  "gold_docs": {doc_id} if answers else set()})
    return articles, doc_of, questions


def read_qa_folder(root: Path) -> tuple[list[Article], dict[str, str], list[dict]]:
    articles, doc_of = read_corpus(root)
    qrels = read_qrels(root) or {}
    questions = []
    for n, rec in enumerate(read_jsonl(root / "qa.jsonl",
                                       "qa.jsonl (one {\"id\", \"question\", \"answers\"} per line)"), 1):
        if not str(rec.get("question") or "").strip() or not isinstance(rec.get("answers", []), list):
            raise BadInputError(f"qa.jsonl record {n} needs a \"question\" and an \"answers\" list ([] = unanswerable)")
        answers = [str(a) for a in rec.get("answers", [])]
        qid = str(rec.get("id", n))
        gold = {d for d, s in qrels.get(qid, {}).items() if s > 0} if answers else set()
        questions.append({"id": qid, "question": rec["question"], "answers": answers, "gold_docs": gold,
                          "date": rec.get("question_date")})
    return articles, doc_of, questions


# -- running --------------------------------------------------------------------------------
@contextlib.contextmanager
def _desk(articles: list[Article], config: Config | None, embedder: Embedder | None,
          index_dir: str | Path | None, progress: Progress | None) -> Iterator[tuple[Desk, float]]:
    """A Desk over ``articles`` in ``index_dir`` or a temporary folder, and the seconds it took."""
    cfg = config or Config.from_env()
    with contextlib.ExitStack() as stack:
        if index_dir is None:
            index_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="askdesk-eval-"))) / "index"
        logger.info("indexing %d documents into %s", len(articles), index_dir)
        t0 = time.perf_counter()
        # prune: a kept index from another data set must hold this set's documents only
        desk = Desk.build(articles, index_dir, config=cfg, embedder=embedder, progress=progress, prune=True)
        yield desk, time.perf_counter() - t0


def _counted(items: list, desc: str, progress: Progress | None) -> Iterator:
    """``items``, reporting progress(done, total, desc) as they go."""
    for i, item in enumerate(items):
        if progress:
            progress(i, len(items), desc)
        yield item
    if progress:
        progress(len(items), len(items), desc)
