"""Dense + lexical retrieval and their fusion.

MiniLM splits names and numbers ("Isuzu", "$68.5 billion") into fragments and matches them
loosely; BM25 matches them exactly but misses paraphrase. Fusing the two finds both.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Callable, Iterable, Sequence

import numpy as np

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor
    not of off on once only or other our ours ourselves out over own same she should so some such than that the
    their theirs them themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves s t also say said
    says did does""".split()
)
# Acronyms with dots ("U.S." -> "us"), numbers with their decimals ("68.5"), words.
_TOKEN = re.compile(r"(?:[^\W\d_]\.){2,}|\d+(?:[.,]\d+)*|[^\W\d_]+(?:['’][^\W\d_]+)?", re.UNICODE)


def terms(text: str) -> list[str]:
    """Lexical terms: lower-cased words and whole numbers ("68.5"), stopwords out, light stemming."""
    return [t for t in map(_term, _TOKEN.findall(text.lower())) if t]


@lru_cache(maxsize=1 << 17)
def _term(tok: str) -> str:
    # Cached: answering tokenizes a few dozen passage sentences per question, and words repeat
    # (this loop was ~5 ms of a 10 ms answer before).
    tok = tok.replace("’", "'")
    if tok.endswith(".") and not tok[0].isdigit():
        tok = tok.replace(".", "")
    if tok.endswith("'s"):
        tok = tok[:-2]
    if tok in STOPWORDS or not tok:
        return ""
    return stem(tok)


def stem(word: str) -> str:
    """Plural and tense endings folded ("tariffs" -> "tariff", "announced" -> "announc"); numbers kept."""
    if word[0].isdigit() or len(word) <= 3:
        return word
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("es", "e"), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: len(word) - len(suffix)] + repl
    return word


class BM25:
    """Okapi BM25 over postings held as flat numpy arrays (saved as .npz, no pickle)."""

    def __init__(self, vocab: np.ndarray, indptr: np.ndarray, docs: np.ndarray, tfs: np.ndarray,
                 doc_len: np.ndarray, *, k1: float = 0.9, b: float = 0.4):
        self.vocab = vocab
        self.term_id = {t: i for i, t in enumerate(vocab.tolist())}
        self.indptr, self.docs, self.tfs, self.doc_len = indptr, docs, tfs, doc_len
        self.k1, self.b = k1, b  # Anserini's defaults, strong on short news passages
        n = len(doc_len)
        df = np.diff(indptr).astype(np.float64)
        self.idf = np.log1p((n - df + 0.5) / (df + 0.5))
        avg = float(doc_len.mean()) if n else 1.0
        self.norm = (k1 * (1 - b + b * doc_len / max(avg, 1e-9))).astype(np.float32)

    @classmethod
    def fit(cls, texts: Iterable[str]) -> "BM25":
        vocab: dict[str, int] = {}
        rows: list[dict[int, int]] = []
        for text in texts:
            counts: dict[int, int] = {}
            for t in terms(text):
                tid = vocab.setdefault(t, len(vocab))
                counts[tid] = counts.get(tid, 0) + 1
            rows.append(counts)
        postings: list[list[tuple[int, int]]] = [[] for _ in vocab]
        for d, counts in enumerate(rows):
            for tid, c in counts.items():
                postings[tid].append((d, c))
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(p) for p in postings])
        flat = [x for p in postings for x in p]
        docs = np.array([d for d, _ in flat], dtype=np.int32)
        tfs = np.array([c for _, c in flat], dtype=np.float32)
        doc_len = np.array([sum(c.values()) for c in rows], dtype=np.float32)
        words = np.array(list(vocab), dtype=str) if vocab else np.zeros(0, dtype="<U1")
        return cls(words, indptr, docs, tfs, doc_len)

    def refit(self, old_rows: Sequence[int | None], text: Callable[[int], str]) -> "BM25":
        """The BM25 of a new list of documents in which document ``i`` is this index's row
        ``old_rows[i]`` (same text), or new (None, its text is ``text(i)``).

        Only the new documents are tokenized; the kept ones' postings are renumbered in numpy.
        Adding one article to a 100k-chunk index re-tokenized every chunk before (~45 s). Scores
        equal `fit` over all the texts; only the vocabulary's order differs.
        """
        n, v = len(old_rows), len(self.vocab)
        where = np.full(len(self.doc_len), -1, dtype=np.int64)  # old row -> new row, -1 when gone
        doc_len = np.zeros(n, dtype=np.float32)
        term_id = dict(self.term_id)
        new_t: list[int] = []
        new_d: list[int] = []
        new_c: list[int] = []
        for i, r in enumerate(old_rows):
            if r is not None:
                where[r] = i
                doc_len[i] = self.doc_len[r]
                continue
            counts: dict[int, int] = {}
            for t in terms(text(i)):
                tid = term_id.setdefault(t, len(term_id))
                counts[tid] = counts.get(tid, 0) + 1
            new_t += counts
            new_d += [i] * len(counts)
            new_c += counts.values()
            doc_len[i] = sum(counts.values())
        old_t = np.repeat(np.arange(v, dtype=np.int64), np.diff(self.indptr))
        old_d = where[self.docs]
        kept = old_d >= 0
        t = np.concatenate([old_t[kept], np.asarray(new_t, dtype=np.int64)])
        d = np.concatenate([old_d[kept], np.asarray(new_d, dtype=np.int64)])
        c = np.concatenate([self.tfs[kept], np.asarray(new_c, dtype=np.float32)])
        words = np.concatenate([np.asarray(self.vocab), np.array(list(term_id)[v:], dtype=str)]) \
            if len(term_id) > v else np.asarray(self.vocab)
        df = np.bincount(t, minlength=len(term_id))
        used = df > 0  # words only removed documents had leave the vocabulary
        renumber = np.cumsum(used) - 1
        t = renumber[t]
        order = np.lexsort((d, t))  # postings by term, then document, as `fit` writes them
        indptr = np.zeros(int(used.sum()) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(df[used])
        return BM25(words[used] if len(words) else words, indptr, d[order].astype(np.int32),
                    c[order].astype(np.float32), doc_len, k1=self.k1, b=self.b)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"vocab": self.vocab, "indptr": self.indptr, "docs": self.docs, "tfs": self.tfs, "doc_len": self.doc_len}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> "BM25":
        return cls(a["vocab"], a["indptr"], a["docs"], a["tfs"], a["doc_len"])

    def scores(self, query_terms: Sequence[str]) -> np.ndarray:
        """BM25 score of every document (zeros where no term matches)."""
        out = np.zeros(len(self.doc_len), dtype=np.float32)
        for t in set(query_terms):
            i = self.term_id.get(t)
            if i is None:
                continue
            lo, hi = self.indptr[i], self.indptr[i + 1]
            d, tf = self.docs[lo:hi], self.tfs[lo:hi]
            out[d] += self.idf[i] * tf * (self.k1 + 1) / (tf + self.norm[d])
        return out

    def top(self, query_terms: Sequence[str], k: int, *, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        s = self.scores(query_terms)
        if allowed is not None:
            s = np.where(allowed, s, 0.0)
        return top_rows(s, k)

    def idf_of(self, term: str) -> float:
        """A term's IDF; unseen terms get the maximum (they are as rare as it gets)."""
        i = self.term_id.get(term)
        n = len(self.doc_len)
        return float(self.idf[i]) if i is not None else math.log1p((n + 0.5) / 0.5)


def top_rows(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` highest positive scores as (row, score), best first."""
    if not len(scores) or k <= 0:
        return []
    k = min(k, len(scores))
    idx = np.argpartition(-scores, k - 1)[:k]
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return [(int(i), float(scores[i])) for i in idx if scores[i] > 0]


def fuse(rows: Sequence[int], dense: np.ndarray, sentence: np.ndarray, lexical: np.ndarray, *,
         dense_weight: float = 0.6, sentence_share: float = 1.0) -> list[tuple[int, float]]:
    """Score fusion over the union of both retrievers' candidates, best first.

    Args:
        rows: candidate chunk rows (found by the dense search, BM25, or both).
        dense: each candidate's cosine to the question.
        sentence: each candidate's best sentence cosine (a chunk that holds one sentence on the
            question's topic among others about something else still ranks).
        lexical: each candidate's BM25 score (0: no question word in it).
        dense_weight: share of the meaning side against the words side.
        sentence_share: share of the best sentence within the meaning side. With sentence
            vectors pooled in their chunk's context, the best sentence alone ranks best
            (squad-dev dev half, bench/fusion.py: 1.0 > 0.75 > 0.5 > 0.25 > 0.0).

    Cosines are min-max scaled over the candidates (their spread, not their level, tells the
    candidates apart); BM25 is divided by its maximum, so a chunk without the question's words
    gets 0. Unlike rank fusion, a large gap on one side survives: measured on squad-dev (dev half)
    this beats weighted RRF on MRR@10 by 2.7 points (docs/quality.md).
    """
    if not len(rows):
        return []
    meaning = (1 - sentence_share) * _minmax(np.asarray(dense)) + sentence_share * _minmax(np.asarray(sentence))
    lex = np.asarray(lexical, dtype=np.float64)
    top = float(lex.max())
    words = lex / top if top > 0 else np.zeros_like(lex)
    score = dense_weight * meaning + (1 - dense_weight) * words
    order = np.argsort(-score, kind="stable")
    return [(int(rows[i]), float(score[i])) for i in order]


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


def sentence_ranges(chunks: Sequence, sentences, sentence_row) -> tuple[np.ndarray, np.ndarray]:
    """Per chunk, the rows (in the sentence vectors) of the sentences wholly inside it, as [lo, hi).

    An article's sentences are sorted and do not overlap, so they form a contiguous range.
    ``sentences[article_id]`` holds (start, end) pairs; ``sentence_row[article_id]`` its first row.
    """
    from bisect import bisect_left, bisect_right

    lo = np.zeros(len(chunks), dtype=np.int64)
    hi = np.zeros(len(chunks), dtype=np.int64)
    bounds: dict[str, tuple[list[int], list[int]]] = {}
    for i, c in enumerate(chunks):
        if c.article_id not in bounds:
            spans = sentences[c.article_id]
            bounds[c.article_id] = ([s for s, _ in spans], [e for _, e in spans])
        starts, ends = bounds[c.article_id]
        base = sentence_row[c.article_id]
        first = bisect_left(starts, c.start)
        lo[i] = base + first
        hi[i] = base + max(bisect_right(ends, c.end), first)
    return lo, hi


def best_sentence_cos(lo: np.ndarray, hi: np.ndarray, sentence_vectors: np.ndarray, rows: Sequence[int],
                      qvec: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Each chunk's best sentence cosine to the question (``fallback`` where it holds no whole sentence)."""
    lo, hi = lo[rows], hi[rows]
    sizes = hi - lo
    out = np.asarray(fallback, dtype=np.float64).copy()
    if not sizes.sum():
        return out
    idx = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)])
    sims = np.asarray(sentence_vectors[idx], dtype=np.float32) @ qvec
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    nonempty = sizes > 0
    out[nonempty] = np.maximum.reduceat(sims, starts[nonempty])  # empty ranges add no boundary of their own
    return out
