"""The lexical side of retrieval: the `LexicalIndex` seam, and BM25 over numpy postings.

MiniLM splits names and numbers ("Isuzu", "$68.5 billion") into fragments and matches them
loosely; BM25 matches them exactly. Documents are chunks, keyed like the vector index (`chunk_key`).

Saved as plain .npy files that `np.load` memory-maps (no pickle, no zip): a question touches the
postings of its few terms, not the 50 MB of postings a 100k-chunk index holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ..text import terms
from .vectors import KeyRows, Segments, Window, merge_top

FILES = ("indptr", "docs", "tfs", "doc_len", "keys", "vocab")


class LexicalIndex(Protocol):
    """Chunks by their words. Another engine (Milvus' BM25) plugs in here."""

    def search(self, query_terms: Sequence[str], k: int, *, window: Window | None = None
               ) -> list[tuple[int, float]]:
        """The ``k`` best chunks with a positive score as (chunk key, score), best first, inside ``window``."""

    def scores_of(self, query_terms: Sequence[str], keys: Sequence[int]) -> np.ndarray:
        """The score of each given chunk (0 where none of the terms is in it)."""

    def idf_of(self, term: str) -> float:
        """How rare a term is; an unseen term is as rare as it gets."""


class BM25:
    """Okapi BM25 over postings held as flat numpy arrays; document ``i`` is chunk ``keys[i]``."""

    def __init__(self, vocab: Sequence[str], indptr: np.ndarray, docs: np.ndarray, tfs: np.ndarray,
                 doc_len: np.ndarray, keys: np.ndarray | None = None, *, k1: float = 0.9, b: float = 0.4,
                 dates: np.ndarray | None = None):
        self.vocab = list(vocab)
        self.dates = dates  # per document, `day_number` of its article (0: undated); for windows
        self.term_id = {t: i for i, t in enumerate(self.vocab)}
        self.indptr, self.docs, self.tfs, self.doc_len = indptr, docs, tfs, doc_len
        self.keys = np.arange(len(doc_len), dtype=np.int64) if keys is None else np.asarray(keys, dtype=np.int64)
        self.k1, self.b = k1, b  # Anserini's defaults, strong on short news passages
        n = len(doc_len)
        df = np.diff(indptr).astype(np.float64)
        self.idf = np.log1p((n - df + 0.5) / (df + 0.5))
        avg = float(np.mean(doc_len)) if n else 1.0
        self.norm = (k1 * (1 - b + b * np.asarray(doc_len) / max(avg, 1e-9))).astype(np.float32)
        self.rows_of = KeyRows(self.keys)
        self._last: tuple[frozenset, np.ndarray] | None = None  # the last question's scores (search, then scores_of)

    def __len__(self) -> int:
        return len(self.doc_len)

    @property
    def nbytes(self) -> int:
        """About what `save` writes."""
        return (sum(np.asarray(a).nbytes for a in (self.indptr, self.docs, self.tfs, self.doc_len, self.keys))
                + sum(len(w) + 1 for w in self.vocab))

    @classmethod
    def fit(cls, texts: Iterable[str], keys: Sequence[int] | None = None, *, dates: np.ndarray | None = None) -> BM25:
        # Each document's (term, count) pairs go into flat arrays of 4-byte ints, then one stable
        # sort by term makes the postings (documents stay in order within a term). A dict per
        # document and a list of tuples per term held ~11 GB of Python objects at 1M chunks
        # (~100M postings) and took a 1M-chunk build past a 24 GB machine.
        from array import array

        vocab: dict[str, int] = {}
        tids, docs, counts_ = array("i"), array("i"), array("i")
        doc_len = array("f")
        for d, text in enumerate(texts):
            counts: dict[int, int] = {}
            for t in terms(text):
                tid = vocab.setdefault(t, len(vocab))
                counts[tid] = counts.get(tid, 0) + 1
            tids.extend(counts)
            docs.extend([d] * len(counts))
            counts_.extend(counts.values())
            doc_len.append(sum(counts.values()))
        t = np.frombuffer(tids, dtype=np.int32) if len(tids) else np.zeros(0, np.int32)
        order = np.argsort(t, kind="stable")
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(np.bincount(t, minlength=len(vocab)))
        d_arr = (np.frombuffer(docs, dtype=np.int32) if len(docs) else np.zeros(0, np.int32))[order]
        c_arr = (np.frombuffer(counts_, dtype=np.int32) if len(counts_) else np.zeros(0, np.int32))[order]
        return cls(list(vocab), indptr, d_arr.astype(np.int32), c_arr.astype(np.float32),
                   np.array(doc_len, dtype=np.float32), None if keys is None else np.asarray(keys, np.int64),
                   dates=dates)

    def refit(self, old_rows: Sequence[int | None], text: Callable[[int], str], keys: Sequence[int], *,
              dates: np.ndarray | None = None) -> BM25:
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
        old_d = where[np.asarray(self.docs)]
        kept = old_d >= 0
        t = np.concatenate([old_t[kept], np.asarray(new_t, dtype=np.int64)])
        d = np.concatenate([old_d[kept], np.asarray(new_d, dtype=np.int64)])
        c = np.concatenate([np.asarray(self.tfs)[kept], np.asarray(new_c, dtype=np.float32)])
        words = self.vocab + list(term_id)[v:]
        df = np.bincount(t, minlength=len(term_id))
        used = df > 0  # words only removed documents had leave the vocabulary
        renumber = np.cumsum(used) - 1
        t = renumber[t]
        order = np.lexsort((d, t))  # postings by term, then document, as `fit` writes them
        indptr = np.zeros(int(used.sum()) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(df[used])
        return BM25([w for w, u in zip(words, used) if u], indptr, d[order].astype(np.int32),
                    c[order].astype(np.float32), doc_len, np.asarray(keys, np.int64), k1=self.k1, b=self.b, dates=dates)

    @classmethod
    def merge(cls, parts: Sequence[BM25], live: Sequence[np.ndarray | None], *,
              dates: np.ndarray | None = None) -> BM25:
        """One BM25 of the live documents of ``parts``, in part order then row order (a segment
        merge): postings renumbered in numpy, nothing tokenized again."""
        words: dict[str, int] = {}
        ts, ds, cs, lens, keys = [], [], [], [], []
        base = 0
        for part, keep in zip(parts, live):
            n = len(part.doc_len)
            keep = np.ones(n, bool) if keep is None else np.asarray(keep, bool)
            where = np.full(n, -1, np.int64)
            where[keep] = base + np.arange(int(keep.sum()))
            ids = np.fromiter((words.setdefault(w, len(words)) for w in part.vocab), np.int64, len(part.vocab))
            t = np.repeat(ids, np.diff(np.asarray(part.indptr)))
            d = where[np.asarray(part.docs)]
            ok = d >= 0
            ts.append(t[ok])
            ds.append(d[ok])
            cs.append(np.asarray(part.tfs)[ok])
            lens.append(np.asarray(part.doc_len)[keep])
            keys.append(part.keys[keep])
            base += int(keep.sum())
        t = np.concatenate(ts) if ts else np.zeros(0, np.int64)
        d = np.concatenate(ds) if ds else np.zeros(0, np.int64)
        c = np.concatenate(cs) if cs else np.zeros(0, np.float32)
        df = np.bincount(t, minlength=len(words))
        used = df > 0
        t = (np.cumsum(used) - 1)[t]
        order = np.lexsort((d, t))
        indptr = np.zeros(int(used.sum()) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(df[used])
        k1, b = (parts[0].k1, parts[0].b) if parts else (0.9, 0.4)
        vocab = [w for w, u in zip(words, used) if u]
        return cls(vocab, indptr, d[order].astype(np.int32), c[order].astype(np.float32),
                   np.concatenate(lens).astype(np.float32) if lens else np.zeros(0, np.float32),
                   np.concatenate(keys) if keys else np.zeros(0, np.int64), k1=k1, b=b, dates=dates)

    # -- storage ------------------------------------------------------------------------------
    def save(self, folder: Path, prefix: str = "lexical.") -> list[str]:
        """Write the postings as .npy files (`prefix` + name); returns the file names."""
        arrays = {"indptr": self.indptr, "docs": self.docs, "tfs": self.tfs, "doc_len": self.doc_len, "keys": self.keys,
                  # Variable length: the words joined by "\n" as bytes. A fixed-width string array
                  # sized by the longest token (one 232-letter "word") made the file 10x larger.
                  "vocab": np.frombuffer("\n".join(self.vocab).encode("utf-8"), dtype=np.uint8)}
        names = []
        for name, arr in arrays.items():
            with open(folder / f"{prefix}{name}.npy", "wb") as f:
                np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
            names.append(f"{prefix}{name}.npy")
        return names

    @classmethod
    def load(cls, folder: Path, prefix: str = "lexical.", *, dates: np.ndarray | None = None) -> BM25:
        """The postings memory-mapped (read when a question touches them), the vocabulary read."""
        a = {n: np.load(folder / f"{prefix}{n}.npy", mmap_mode="r", allow_pickle=False) for n in FILES}
        words = bytes(a["vocab"]).decode("utf-8").split("\n") if len(a["vocab"]) else []
        if len(words) + 1 != len(a["indptr"]):
            raise ValueError(f"{prefix}vocab.npy holds {len(words)} words for {len(a['indptr']) - 1} postings lists")
        return cls(words, a["indptr"], a["docs"], a["tfs"], np.asarray(a["doc_len"]), np.asarray(a["keys"]),
                   dates=dates)

    # -- scoring ------------------------------------------------------------------------------
    def scores(self, query_terms: Sequence[str]) -> np.ndarray:
        """BM25 score of every document, by row (zeros where no term matches)."""
        wanted = frozenset(query_terms)
        last = self._last  # one read: another thread may replace it meanwhile
        if last is not None and last[0] == wanted:
            return last[1]
        out = np.zeros(len(self.doc_len), dtype=np.float32)
        for t in wanted:
            i = self.term_id.get(t)
            if i is None:
                continue
            lo, hi = self.indptr[i], self.indptr[i + 1]
            d, tf = self.docs[lo:hi], self.tfs[lo:hi]
            out[d] += self.idf[i] * tf * (self.k1 + 1) / (tf + self.norm[d])
        self._last = (wanted, out)
        return out

    def search(self, query_terms: Sequence[str], k: int, *, window: Window | None = None
               ) -> list[tuple[int, float]]:
        s = self.scores(query_terms)
        if window is not None:
            if self.dates is None:
                raise ValueError("this BM25 holds no dates: build it with dates= to search in a window")
            s = np.where(window.mask(self.dates), s, 0.0)
        return [(int(self.keys[r]), x) for r, x in top_rows(s, k)]

    def scores_of(self, query_terms: Sequence[str], keys: Sequence[int]) -> np.ndarray:
        return self.scores(query_terms)[self.rows_of(keys)]

    def idf_of(self, term: str) -> float:
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


class SegmentedBM25:
    """One `LexicalIndex` over the BM25 postings of several segments, less their deleted rows.

    The statistics are the whole index's: N and the average length over every live document,
    a term's document frequency summed over the parts (deleted documents left out), so a chunk
    scores as it would in one BM25 fitted over all live chunks (tests/test_segments.py).
    """

    def __init__(self, parts: Sequence[BM25], live: Sequence[np.ndarray | None], *, k1: float = 0.9, b: float = 0.4):
        self.parts, self.live = list(parts), list(live)
        self.k1, self.b = k1, b
        self.n = sum(len(p) if m is None else int(np.count_nonzero(m)) for p, m in zip(self.parts, self.live))
        total = sum(float(np.sum(np.asarray(p.doc_len) if m is None else np.asarray(p.doc_len)[m], dtype=np.float64))
                    for p, m in zip(self.parts, self.live))
        self.avgdl = total / self.n if self.n else 1.0
        self.where = Segments([p.rows_of for p in self.parts], self.live)
        self._norm: list[np.ndarray | None] = [None] * len(self.parts)
        self._last: tuple[frozenset, list[np.ndarray]] | None = None

    def __len__(self) -> int:
        return self.n

    def _norm_of(self, i: int) -> np.ndarray:
        norm = self._norm[i]
        if norm is None:  # as BM25 computes it, with the whole index's average length
            dl = np.asarray(self.parts[i].doc_len)
            norm = self._norm[i] = (self.k1 * (1 - self.b + self.b * dl / max(self.avgdl, 1e-9))).astype(np.float32)
        return norm

    def _postings(self, term: str) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Per part, the live (docs, tfs) of ``term``."""
        out = []
        for part, live in zip(self.parts, self.live):
            i = part.term_id.get(term)
            if i is None:
                out.append(None)
                continue
            lo, hi = part.indptr[i], part.indptr[i + 1]
            d, tf = part.docs[lo:hi], part.tfs[lo:hi]
            if live is not None:
                keep = live[d]
                d, tf = d[keep], tf[keep]
            out.append((d, tf))
        return out

    def _idf(self, df: int) -> float:
        return float(np.log1p((self.n - df + 0.5) / (df + 0.5)))

    def scores(self, query_terms: Sequence[str]) -> list[np.ndarray]:
        """Per part, the BM25 score of each of its rows (0 for deleted rows and no match)."""
        wanted = frozenset(query_terms)
        last = self._last
        if last is not None and last[0] == wanted:
            return last[1]
        out = [np.zeros(len(p.doc_len), dtype=np.float32) for p in self.parts]
        for t in wanted:
            post = self._postings(t)
            df = sum(len(x[0]) for x in post if x is not None)
            if not df:
                continue
            idf = np.float64(self._idf(df))
            for i, x in enumerate(post):
                if x is not None and len(x[0]):
                    d, tf = x
                    out[i][d] += idf * tf * (self.k1 + 1) / (tf + self._norm_of(i)[d])
        self._last = (wanted, out)
        return out

    def search(self, query_terms: Sequence[str], k: int, *, window: Window | None = None
               ) -> list[tuple[int, float]]:
        lists = []
        for part, s in zip(self.parts, self.scores(query_terms)):
            if window is not None:
                if part.dates is None:
                    raise ValueError("this BM25 holds no dates: build it with dates= to search in a window")
                s = np.where(window.mask(part.dates), s, 0.0)
            lists.append([(int(part.keys[r]), x) for r, x in top_rows(s, k)])
        return merge_top(lists, k)

    def scores_of(self, query_terms: Sequence[str], keys: Sequence[int]) -> np.ndarray:
        if not len(keys):
            return np.zeros(0, np.float32)
        part, row = self.where.locate(keys)
        s = self.scores(query_terms)
        return np.array([s[i][r] for i, r in zip(part.tolist(), row.tolist())], dtype=np.float32)

    def idf_of(self, term: str) -> float:
        return self._idf(sum(len(x[0]) for x in self._postings(term) if x is not None))
