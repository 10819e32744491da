"""What answering reads of a Milvus store: `MilvusSnapshot` (the `records.Snapshot` seam) over the
chunks collection behind the `vectors.VectorIndex` and `lexical.LexicalIndex` seams (`MilvusVectors`,
`MilvusLexical`). Searches bring their hits' chunk rows back with them (`RowCache`), so the chunks,
sentences and vectors answering reads next are rarely fetched again; `milvus` says what a question
costs in requests.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..articles.quotes import STATEMENTS_FORMAT, Statement, find_statements
from ..models.embed import Embedder
from ..types import Article, Chunk
from .milvus_collections import (
    CHUNK_FIELDS,
    MAX_LIMIT,
    count_rows,
    get_rows,
    int_list,
    put_rows,
    query_all,
    sentence_range,
    str_list,
    unpack,
    window_expr,
)
from .records import Sentences, StoredChunk
from .vectors import Window, chunk_key

if TYPE_CHECKING:
    from .milvus import MilvusStore


# ---- the engine's side of the seams ---------------------------------------------------------------

class RowCache:
    """Chunk rows a question's searches brought back (their fields came with the hits), by key;
    the chunks, sentences and vectors answering reads next are then read from here, not fetched."""

    def __init__(self, size: int = 4096):
        self._rows: OrderedDict[int, dict] = OrderedDict()
        self._lock = threading.Lock()
        self.size = size

    def put(self, key: int, row: dict) -> None:
        with self._lock:
            self._rows[key] = {**self._rows.pop(key, {}), **row}
            while len(self._rows) > self.size:
                self._rows.popitem(last=False)

    def get(self, keys: Iterable[int], field: str) -> dict[int, dict]:
        with self._lock:
            return {k: self._rows[k] for k in keys if k in self._rows and field in self._rows[k]}


class MilvusVectors:
    """The chunks collection behind `vectors.VectorIndex`: inner product over normalized vectors.

    With a ``cache``, searches bring back each hit's `CHUNK_FIELDS` too (`MilvusSnapshot` reads them)."""

    def __init__(self, client, collection: str, dim: int, *, search_params: dict | None = None,
                 cache: RowCache | None = None):
        self.client, self.collection, self.dim, self.cache = client, collection, dim, cache
        self.params = {"metric_type": "IP", "params": search_params or {}}

    def __len__(self) -> int:
        return count_rows(self.client, self.collection)

    def search(self, query: np.ndarray, k: int, *, window: Window | None = None) -> list[tuple[int, float]]:
        if k < 1:
            return []
        res = self.client.search(self.collection, data=[np.asarray(query, np.float32).reshape(-1)],
                                 anns_field="vector", limit=min(k, MAX_LIMIT), filter=window_expr(window),
                                 search_params=self.params, output_fields=CHUNK_FIELDS if self.cache else [])
        return _hits(res[0], self.cache)

    def vectors(self, keys: Sequence[int]) -> np.ndarray:
        keys = [int(k) for k in keys]
        if not keys:
            return np.zeros((0, self.dim), np.float32)
        got = {k: r["vector"] for k, r in (self.cache.get(keys, "vector") if self.cache else {}).items()}
        missing = [k for k in dict.fromkeys(keys) if k not in got]
        if missing:
            rows = get_rows(self.client, self.collection, missing, ["vector"])
            got.update({int(r["key"]): r["vector"] for r in rows})
        absent = [k for k in keys if k not in got]
        if absent:
            raise KeyError(f"chunk keys not in the store: {absent[:3]}")
        return np.asarray([got[k] for k in keys], dtype=np.float32)

    def add(self, keys: Sequence[int], vectors: np.ndarray, dates: Sequence[int]) -> None:
        """Chunk rows with only a vector and a date (the writer upserts whole rows instead)."""
        rows = [{"key": int(k), "id": "", "article_id": "", "date": int(d), "start": 0, "end": 0, "words": "",
                 "vocab": "", "sentences": "", "vector": np.asarray(v, np.float32)}
                for k, v, d in zip(keys, vectors, dates)]
        put_rows(self.client, self.collection, rows)

    def remove(self, keys: Sequence[int]) -> None:
        if len(keys):
            self.client.delete(self.collection, ids=[int(k) for k in keys])


def _hits(hits, cache: RowCache | None) -> list[tuple[int, float]]:
    out = []
    for h in hits:
        key = int(h["id"])
        if cache is not None:
            cache.put(key, dict(h["entity"]))
        out.append((key, float(h["distance"])))
    return out


class MilvusLexical:
    """BM25 run by Milvus behind `lexical.LexicalIndex` (the chunks collection's ``words`` field).

    A search also brings back its hits' rows (with their vectors: a chunk only BM25 found is scored
    by its cosine too), their scores for `scores_of`, and the idf of its terms for `idf_of`."""

    def __init__(self, client, collection: str, *, cache: RowCache | None = None):
        self.client, self.collection, self.cache = client, collection, cache
        self._idf: dict[str, float] = {}  # per snapshot: a write makes a new one
        self._scores: tuple[frozenset, dict[int, float]] | None = None  # the last search's, unwindowed parts

    def _search(self, query_terms: Sequence[str], k: int, expr: str, fields: list[str]) -> list[tuple[int, float]]:
        # Each distinct term once: lexical.BM25 scores a set of terms; Milvus would count a repeated one twice.
        text = " ".join(dict.fromkeys(t for t in query_terms if t))
        if not text or k < 1:
            return []
        res = self.client.search(self.collection, data=[text], anns_field="sparse", limit=min(k, MAX_LIMIT),
                                 filter=expr, search_params={"metric_type": "BM25"}, output_fields=fields)
        return [(key, s) for key, s in _hits(res[0], self.cache if fields else None) if s > 0]

    def search(self, query_terms: Sequence[str], k: int, *, window: Window | None = None
               ) -> list[tuple[int, float]]:
        hits = self._search(query_terms, k, window_expr(window), [*CHUNK_FIELDS, "vector"] if self.cache else [])
        self._scores = (frozenset(query_terms), dict(hits))
        self._prefetch_idf(query_terms)
        return hits

    def scores_of(self, query_terms: Sequence[str], keys: Sequence[int]) -> np.ndarray:
        keys = [int(k) for k in keys]
        last = self._scores
        known = last[1] if last is not None and last[0] == frozenset(query_terms) else {}
        unknown = [k for k in dict.fromkeys(keys) if k not in known]
        got = dict(known)
        if unknown:  # chunks the search did not return (found by the dense side, or outside its window)
            got.update(self._search(query_terms, len(unknown), f"key in {int_list(unknown)}", []))
        return np.array([got.get(k, 0.0) for k in keys], dtype=np.float32)

    def _prefetch_idf(self, query_terms: Sequence[str]) -> None:
        """The idf of each term, one request for all (the answerer asks for them next)."""
        todo = [t for t in dict.fromkeys(query_terms) if t and t not in self._idf]
        if not todo:
            return
        # The ``vocab`` field holds each chunk's distinct terms and its BM25 has b = 0, so a
        # one-term search scores idf * 1 * (k1 + 1) / (1 + k1) = idf in every chunk holding it.
        res = self.client.search(self.collection, data=todo, anns_field="vocab_sparse", limit=1,
                                 search_params={"metric_type": "BM25"}, output_fields=[])
        unseen = None
        for t, hits in zip(todo, res):
            if not hits and unseen is None:
                unseen = float(np.log1p((count_rows(self.client, self.collection) + 0.5) / 0.5))
            self._idf[t] = float(hits[0]["distance"]) if hits else unseen

    def idf_of(self, term: str) -> float:
        if term not in self._idf:
            self._prefetch_idf([term])
        return self._idf.get(term) or float(np.log1p((count_rows(self.client, self.collection) + 0.5) / 0.5))



# ---- what answering reads ------------------------------------------------------------------------

class MilvusSnapshot:
    """The store as answering reads it (`records.Snapshot`). Searches go to the engine and bring
    their hits' rows back with them (`RowCache`); the articles read are cached for the snapshot's
    life (a write makes a new snapshot).

    ``sentences``: "stored" reads the sentence vectors written with each chunk; "question" embeds
    the candidate sentences at question time with ``embedder`` (the alternative measured against it)."""

    def __init__(self, store: MilvusStore, gen: str, manifest: dict, *, sentences: str = "stored",
                 embedder: Embedder | None = None):
        self.store, self.gen, self.manifest = store, gen, manifest
        self.path = None  # not a folder (Desk.over reads it)
        self._chunks = store.names(gen)["chunks"]
        self._rows = RowCache()
        self.vectors = MilvusVectors(store.client, self._chunks, int(manifest["dim"]),
                                     search_params=store.search_params, cache=self._rows)
        self.lexical = MilvusLexical(store.client, self._chunks, cache=self._rows)
        self._sentences, self._embedder = sentences, embedder
        self._cache: OrderedDict[str, tuple[Article, list[tuple[int, int]]]] = OrderedDict()
        self._lock = threading.Lock()

    def _records(self, ids: Iterable[str]) -> dict[str, tuple[Article, list[tuple[int, int]], dict]]:
        ids = list(dict.fromkeys(ids))
        with self._lock:
            out = {i: self._cache[i] for i in ids if i in self._cache}
        missing = [i for i in ids if i not in out]
        if missing:
            got = self.store.read_records(self.gen, missing)
            with self._lock:
                for i, rec in got.items():
                    self._cache[i] = rec
                while len(self._cache) > 4096:  # ~20 MB of news text
                    self._cache.popitem(last=False)
            out.update(got)
        return out

    def _chunk_rows(self, keys: Sequence[int]) -> dict[int, dict]:
        rows = self._rows.get(keys, "sentences")
        missing = [k for k in dict.fromkeys(keys) if k not in rows]
        for r in get_rows(self.store.client, self._chunks, missing, CHUNK_FIELDS) if missing else ():
            rows[int(r["key"])] = r
            self._rows.put(int(r["key"]), dict(r))
        absent = [k for k in keys if k not in rows]
        if absent:
            raise KeyError(f"chunk keys not in the store: {absent[:3]}")
        return rows

    def article(self, article_id: str) -> Article:
        rec = self._records([article_id]).get(article_id)
        if rec is None:
            raise KeyError(article_id)
        return rec[0]

    def all_articles(self) -> list[Article]:
        return [a for a, _ in self.store.read_articles(self.gen, None).values()]

    def chunk_count(self, article_id: str) -> int:
        rec = self._records([article_id]).get(article_id)
        if rec is None:
            raise KeyError(article_id)
        return int(rec[2].get("n_chunks", 1))

    def statements_of(self, article_id: str) -> tuple[Statement, ...]:
        rec = self._records([article_id]).get(article_id)
        if rec is None:
            raise KeyError(article_id)
        rows = rec[2].get("statements")
        if rows is not None and rec[2].get("statements_format") == STATEMENTS_FORMAT:
            return tuple(Statement.from_row(r) for r in rows)
        # A record written before statements were stored, or by older rules: found from the text
        # (quotes caches the last articles' parses), never the stale rows.
        return tuple(find_statements(rec[0].text))

    def sentences_of(self, article_ids: Sequence[str]) -> Sentences:
        """Every sentence of the articles, with the vectors their chunk rows carry (one query for
        all their rows); a sentence no chunk holds whole (cut by a chunk limit) takes its first
        chunk's vector."""
        ids = list(article_ids)
        recs = self._records(ids)
        dim = self.vectors.dim
        rows: dict[str, list[dict]] = {}
        if self._sentences == "stored" and ids:
            for r in query_all(self.store.client, self._chunks, f"article_id in {str_list(set(ids))}",
                                CHUNK_FIELDS + ["key"]):
                rows.setdefault(r["article_id"], []).append(r)
        owner, arts, spans, vecs = [], [], [], []
        for j, aid in enumerate(ids):
            a, all_spans, _ = recs[aid]
            owner += [j] * len(all_spans)
            arts += [a] * len(all_spans)
            spans += [tuple(sp) for sp in all_spans]
            if self._sentences != "stored":
                continue
            got: list[np.ndarray | None] = [None] * len(all_spans)
            mine = sorted(rows.get(aid, ()), key=lambda r: int(r["start"]))
            for r in mine:
                lo, hi = sentence_range(all_spans, int(r["start"]), int(r["end"]))
                stored = unpack(r["sentences"], dim)
                for k in range(lo, min(hi, lo + len(stored))):
                    if got[k] is None:
                        got[k] = stored[k - lo]
            for k, (s, e) in enumerate(all_spans):
                if got[k] is not None:
                    continue
                near = next((r for r in mine if int(r["start"]) < e and s < int(r["end"])), mine[0] if mine else None)
                got[k] = self.vectors.vectors([int(near["key"])])[0] if near is not None else np.zeros(dim, np.float32)
            vecs += got
        if not spans:
            out = np.zeros((0, dim), np.float32)
        elif self._sentences == "stored":
            out = np.stack(vecs)
        else:
            out = self._embedder.embed_documents([a.text[s:e] for a, (s, e) in zip(arts, spans)])
        return Sentences(np.asarray(owner, dtype=np.int64), tuple(arts), tuple(spans), np.asarray(out, np.float32))

    def chunks_of(self, keys: Sequence[int]) -> list[Chunk]:
        keys = [int(k) for k in keys]
        rows = self._chunk_rows(keys)
        recs = self._records(r["article_id"] for r in rows.values())
        return [StoredChunk(rows[k]["id"], rows[k]["article_id"], int(rows[k]["start"]), int(rows[k]["end"]),
                            recs[rows[k]["article_id"]][0].text) for k in keys]

    def sentences_in(self, chunks: Sequence[Chunk]) -> Sentences:
        recs = self._records(c.article_id for c in chunks)
        keys = [chunk_key(c.id) for c in chunks]
        rows = self._chunk_rows(keys) if self._sentences == "stored" else {}
        dim = self.vectors.dim
        owner, arts, spans, vecs = [], [], [], []
        for i, c in enumerate(chunks):
            a, all_spans, _ = recs[c.article_id]
            lo, hi = sentence_range(all_spans, c.start, c.end)
            if hi <= lo:
                continue
            if rows:
                stored = unpack(rows[keys[i]]["sentences"], dim)
                if len(stored) < hi - lo:  # more sentences than a row holds: the rest take the chunk's vector
                    rest = np.repeat(self.vectors.vectors([keys[i]]), hi - lo - len(stored), axis=0)
                    stored = np.concatenate([stored, rest])
                vecs.append(stored[:hi - lo])
            owner += [i] * (hi - lo)
            arts += [a] * (hi - lo)
            spans += [tuple(sp) for sp in all_spans[lo:hi]]
        if not spans:
            out = np.zeros((0, dim), np.float32)
        elif rows:
            out = np.concatenate(vecs)
        else:
            out = self._embedder.embed_documents([a.text[s:e] for a, (s, e) in zip(arts, spans)])
        return Sentences(np.asarray(owner, dtype=np.int64), tuple(arts), tuple(spans), np.asarray(out, np.float32))
