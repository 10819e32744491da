"""Retrieval: dense and lexical candidates, their fusion, date windows and a question's period.

MiniLM splits names and numbers ("Isuzu", "$68.5 billion") into fragments and matches them
loosely; BM25 matches them exactly but misses paraphrase. Fusing the two finds both. The
`Retriever` reads an index only through its `Snapshot` seam (vectors, lexical, records), by
chunk key: the same code runs over the index folder or another store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..articles.ingest import normalize_date
from ..errors import BadInputError
from ..store.records import Sentences, Snapshot
from ..store.vectors import Window
from ..text import DatePhrase, pretty_date, terms
from ..types import Chunk, Hit, Period

# Fusion weights, fitted by bench/fusion.py on the fit halves of squad-dev (its first 12 articles),
# rgb-news (questions 0-49) and realtimeqa-dev's answer documents (its first 6 weeks): the best
# mean gain in nDCG@10 over the SQuAD-only weights (0.6, 1.0, no length term) that loses no more
# than 0.005 on any of them. Held out (docs/quality.md): realtimeqa answer documents 0.529 ->
# 0.575, its evidence snippets (reported, not fitted on) 0.435 -> 0.727, rgb-news 0.605 -> 0.603,
# squad-dev 0.932 -> 0.928.
DENSE_WEIGHT = 0.6  # the meaning side's share against the words side
SENTENCE_SHARE = 0.75  # of the meaning side, the best sentence's share against the whole chunk's
# Length: an article competes through its best chunk, and the more chunks it has, the likelier one
# of them scores high by chance: a 40-chunk article draws 40 tickets to a short report's one. Up to
# LENGTH_FREE_CHUNKS chunks (~400 tokens, a short report) nothing changes; beyond, each doubling of
# the article's length costs its chunks LENGTH_WEIGHT * ln 2 (~0.14) of fused score (in [0, 1]).
LENGTH_WEIGHT = 0.2
LENGTH_FREE_CHUNKS = 2
# Candidates: each retriever's top Config.candidates, at most this many chunks of one article
# (realtimeqa-dev evidence recall@10 0.882 -> 0.918, the same candidates' count and cost).
PER_ARTICLE = 2
# Undated articles under a date window ("as of", since/until): kept, since a partly dated archive
# would otherwise lose them for every dated question, but ranked after the dated ones that fit
# unless clearly better: their fused score minus this. Config.undated chooses "exclude" instead.
UNDATED_PENALTY = 0.1
PERIOD_CHUNKS = 3  # of the 5 chunks answered from, this many from the question's period; see docs/news.md
PERIOD_FALLBACK_NOTE = "Nothing was published {phrase} ({since} to {until}); the answer uses articles from any date."
EMPTY_WINDOW_NOTE = "No article in the index was published {range}."
UNDATED_NOTE = "{which} no date, so whether {it} was published {range} is not known."


@dataclass(frozen=True)
class Candidates:
    """Every chunk either retriever found for a question, with each signal fusion weighs."""

    keys: np.ndarray  # chunk keys: the dense search's first, then BM25's new ones
    chunks: list[Chunk]
    dense: np.ndarray  # cosine of question and chunk
    sentence: np.ndarray  # the chunk's best sentence's cosine (``dense`` where it holds no whole sentence)
    lexical: np.ndarray  # BM25 (0: none of the question's words)
    dense_hits: list[tuple[int, float]]  # each list as its retriever ranked it (for rank fusion)
    lexical_hits: list[tuple[int, float]]
    article_chunks: np.ndarray | None = None  # how many chunks each candidate's article has
    undated: np.ndarray | None = None  # True where the candidate's article has no date

    def __len__(self) -> int:
        return len(self.keys)

    def fused(self, k: int, *, undated_penalty: float = 0.0, **weights) -> list[Hit]:
        """The ``k`` best by `fuse` (keyword arguments as its), undated candidates less ``undated_penalty``."""
        penalty = undated_penalty * self.undated if undated_penalty and self.undated is not None else None
        order = fuse(range(len(self)), self.dense, self.sentence, self.lexical, article_chunks=self.article_chunks,
                     penalty=penalty, **weights)[:k]
        return [Hit(self.chunks[i], s, float(self.dense[i]), float(self.lexical[i])) for i, s in order]


class Retriever:
    """Fused dense + BM25 retrieval over one snapshot of an index.

    Args:
        snap: what to search (`index.Snapshot`).
        candidates: chunks each retriever contributes before fusion.
    """

    def __init__(self, snap: Snapshot, *, candidates: int = 50, undated_penalty: float = UNDATED_PENALTY):
        self.snap = snap
        self.n = candidates
        self.undated_penalty = undated_penalty

    def candidates(self, query: str, qvec: np.ndarray, *, n: int | None = None,
                   window: Window | None = None) -> Candidates:
        """The union of the dense search's and BM25's top ``n``, each with all its signals."""
        n = n or self.n
        qterms = terms(query)
        # Each list is fetched twice as deep and keeps an article's best PER_ARTICLE chunks: a long
        # article's tenth chunk adds nothing its best one does not, and took a short report's place.
        dense_hits = self.snap.vectors.search(qvec, 2 * n, window=window)
        lexical_hits = self.snap.lexical.search(qterms, 2 * n, window=window)
        # Both lists' chunks in one read: a store reads their articles in one request, not one per list.
        found = list(dict.fromkeys([k for k, _ in dense_hits] + [k for k, _ in lexical_hits]))
        by_key = dict(zip(found, self.snap.chunks_of(found))) if found else {}
        dense = self._per_article(dense_hits, n, by_key)
        lexical = self._per_article(lexical_hits, n, by_key)
        keys = list(dict.fromkeys([k for k, _ in dense] + [k for k, _ in lexical]))
        if not keys:
            empty = np.zeros(0)
            return Candidates(np.zeros(0, np.int64), [], empty, empty, empty, dense, lexical)
        dmap = dict(dense)
        missing = [k for k in keys if k not in dmap]  # found only by BM25: their cosine still counts
        if missing:
            dmap.update(zip(missing, (self.snap.vectors.vectors(missing) @ qvec).tolist()))
        cos = np.array([dmap[k] for k in keys], dtype=np.float64)
        chunks = [by_key[k] for k in keys]
        sent = best_sentence_cos(self.snap.sentences_in(chunks), qvec, cos)
        lex = self.snap.lexical.scores_of(qterms, keys).astype(np.float64)
        arts = [self.snap.article(c.article_id) for c in chunks]
        return Candidates(np.asarray(keys, np.int64), chunks, cos, sent, lex, dense, lexical,
                          np.array([self.snap.chunk_count(a.id) for a in arts]),
                          np.array([not a.date for a in arts]))

    @staticmethod
    def _per_article(ranked: list[tuple[int, float]], n: int, chunks: dict[int, Chunk]) -> list[tuple[int, float]]:
        """The first ``n`` of ``ranked`` with at most PER_ARTICLE chunks of one article."""
        if len(ranked) <= n:
            return ranked
        out, seen = [], {}
        for key, score in ranked:
            chunk = chunks[key]
            if seen.get(chunk.article_id, 0) < PER_ARTICLE:
                seen[chunk.article_id] = seen.get(chunk.article_id, 0) + 1
                out.append((key, score))
                if len(out) == n:
                    break
        return out

    def search(self, query: str, qvec: np.ndarray, k: int, *, window: Window | None = None) -> list[Hit]:
        """The ``k`` best chunks, fused, best first. Inside a window that lets undated articles in,
        they rank after the dated ones unless clearly better (`UNDATED_PENALTY`)."""
        penalty = self.undated_penalty if window is not None and window.undated else 0.0
        return self.candidates(query, qvec, window=window).fused(k, undated_penalty=penalty)

    def retrieve(self, query: str, qvec: np.ndarray, k: int, *, window: Window | None = None,
                 period: DatePhrase | None = None) -> tuple[list[Hit], Period | None, str | None]:
        """The chunks to answer from, preferring a question's ``period``: (hits, period, note).

        Softly: the period's best `PERIOD_CHUNKS` go first, the best of any date fill the rest
        (a fact is often reported after the year it happened in). Never a refusal just because
        nothing was published then: the note says so. docs/news.md has the measurement.
        """
        hits = self.search(query, qvec, k, window=window)
        if period is None:
            return hits, None, None
        w = window or Window()
        lo = max(w.since or period.since, period.since)
        hi = min(w.until or period.until, period.until)
        # Dated articles only: an undated one may be from any year, so it comes after the dated
        # reports of the period, among the best of any date.
        inside = self.search(query, qvec, min(PERIOD_CHUNKS, k), window=Window(lo, hi)) if lo <= hi else []
        have = {h.chunk.id for h in inside}
        hits = inside + [h for h in hits if h.chunk.id not in have][:k - len(inside)]
        if period.recent and not period.phrase:  # no word asked for it: the preference goes unsaid
            return hits, None, None
        note = None if inside or period.recent else PERIOD_FALLBACK_NOTE.format(
            phrase=period.phrase, since=pretty_date(period.since), until=pretty_date(period.until))
        return hits, Period(period.phrase, period.since, period.until, bool(inside)), note

    def sentences(self, hits: Sequence[Hit], qvec: np.ndarray) -> tuple[Sentences, np.ndarray]:
        """The whole sentences of the hits' chunks and each one's cosine to the question."""
        block = self.snap.sentences_in([h.chunk for h in hits])
        return block, block.vectors @ qvec if len(block) else np.zeros(0)


def best_sentence_cos(block: Sentences, qvec: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Each chunk's best sentence cosine to the question (``fallback`` where it holds no whole sentence)."""
    out = np.asarray(fallback, dtype=np.float64).copy()
    if not len(block):
        return out
    sims = block.vectors @ qvec
    # Sentences come grouped by chunk, in chunk order: one maximum per group.
    starts = np.flatnonzero(np.r_[True, block.chunk[1:] != block.chunk[:-1]])
    out[block.chunk[starts]] = np.maximum.reduceat(sims, starts)
    return out


def fuse(rows: Sequence[int], dense: np.ndarray, sentence: np.ndarray, lexical: np.ndarray, *,
         dense_weight: float = DENSE_WEIGHT, sentence_share: float = SENTENCE_SHARE,
         article_chunks: np.ndarray | None = None, length_weight: float = LENGTH_WEIGHT,
         penalty: np.ndarray | None = None) -> list[tuple[int, float]]:
    """Score fusion over the union of both retrievers' candidates, best first.

    Args:
        rows: candidate ids (positions, keys: whatever the caller wants back).
        dense: each candidate's cosine to the question.
        sentence: each candidate's best sentence cosine (a chunk that holds one sentence on the
            question's topic among others about something else still ranks).
        lexical: each candidate's BM25 score (0: no question word in it).
        article_chunks: how many chunks each candidate's article has (the length term; None: none).
        penalty: subtracted from each candidate's score (undated ones under a window).
        dense_weight: share of the meaning side against the words side.
        sentence_share: share of the best sentence within the meaning side. With sentence
            vectors pooled in their chunk's context, the best sentence alone ranks best
            (squad-dev dev half, bench/fusion.py: 1.0 > 0.75 > 0.5 > 0.25 > 0.0).

    Cosines are min-max scaled over the candidates (their spread, not their level, tells the
    candidates apart); BM25 is divided by its maximum, so a chunk without the question's words
    gets 0. Unlike rank fusion, a large gap on one side survives: measured on squad-dev (dev half)
    this beats weighted RRF on MRR@10 by 2.7 points (docs/quality.md).
    """
    rows = list(rows)
    if not rows:
        return []
    meaning = (1 - sentence_share) * _minmax(np.asarray(dense)) + sentence_share * _minmax(np.asarray(sentence))
    lex = np.asarray(lexical, dtype=np.float64)
    top = float(lex.max())
    words = lex / top if top > 0 else np.zeros_like(lex)
    score = dense_weight * meaning + (1 - dense_weight) * words
    if article_chunks is not None and length_weight:
        score = score - length_weight * np.log(np.maximum(np.asarray(article_chunks) / LENGTH_FREE_CHUNKS, 1.0))
    if penalty is not None:
        score = score - penalty
    order = np.argsort(-score, kind="stable")
    return [(rows[i], float(score[i])) for i in order]


def _minmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.ones_like(x)


def rrf(dense: Sequence[tuple[int, float]], lexical: Sequence[tuple[int, float]], *,
        dense_weight: float = 0.4, k: int = 2) -> list[tuple[int, float]]:
    """Weighted reciprocal-rank fusion (the earlier default; kept as the baseline bench/fusion.py measures)."""
    scores: dict[int, float] = {}
    for w, ranked in ((dense_weight, dense), (1.0 - dense_weight, lexical)):
        for rank, (row, _) in enumerate(ranked):
            scores[row] = scores.get(row, 0.0) + w / (k + rank + 1)
    return sorted(scores.items(), key=lambda x: -x[1])


def window_words(window: Window) -> str:
    """"between 1 March 2024 and 5 March 2024", "by 5 March 2024", "since 1 March 2024"."""
    if window.since and window.until:
        return f"between {pretty_date(window.since)} and {pretty_date(window.until)}"
    return f"by {pretty_date(window.until)}" if window.until else f"since {pretty_date(window.since)}"


def window_notes(window: Window | None, hits: Sequence[Hit], cited: Sequence) -> str | None:
    """What the reader should know about dates: nothing in the window, or cited articles without one."""
    if window is None:
        return None
    if not hits:
        return EMPTY_WINDOW_NOTE.format(range=window_words(window))
    undated = [c.n for c in cited if not c.date]
    if not undated:
        return None
    which = " and ".join(f"[{n}]" for n in undated) + (" has" if len(undated) == 1 else " have")
    return UNDATED_NOTE.format(which=which, it="it" if len(undated) == 1 else "they", range=window_words(window))


def date_window(since=None, until=None, as_of=None, *, undated: bool = True) -> Window | None:
    """The articles a question may use, from ISO dates; ``as_of`` caps ``until``; None: any date.
    ``undated``: whether articles without a date stay usable.

    Raises:
        BadInputError: a date that cannot be read, or since after until.
    """
    out = []
    for name, value in (("since", since), ("until", until), ("as_of", as_of)):
        if value is None or value == "":
            out.append(None)
            continue
        iso = normalize_date(value)
        if iso is None:
            raise BadInputError(f"{name}={value!r} is not a date; use YYYY-MM-DD, e.g. 2025-02-07")
        out.append(iso)
    lo, hi, cap = out
    if cap is not None and (hi is None or cap < hi):
        hi = cap
    if lo is not None and hi is not None and lo > hi:
        raise BadInputError(f"since={lo!r} is after until={hi!r}; swap them")
    return None if lo is None and hi is None else Window(lo, hi, undated=undated)
