"""A Milvus store behind the seams: chunk records and vectors, BM25 run by Milvus, dates as filter expressions.

``--store /tmp/desk.db`` (``ASKDESK_STORE``, ``Config.store``) opens a Milvus Lite file, the real
Milvus engine in this process; ``--store http://host:19530`` a Milvus server or cluster, with the
same code. ``#name`` after either names the collections (default ``askdesk``)::

    NAME_meta            small rows: "live" (the generation answering, and a version each write bumps),
                         "manifest:GEN" (model, chunk settings, corpus folder), "writer" (a server's
                         write lease), "journal" (the article batch a write is changing, until done)
    NAME_GEN_articles    each article as JSON (its text, fields and sentence spans) in pieces of
                         16,000 characters, so any article fits VARCHAR's 65,535 bytes
    NAME_GEN_sentences   a row per sentence, keyed by article id and position: a hash of its text
                         (a new article sharing most sentences with a stored one is a near-duplicate)
    NAME_GEN_chunks      a row per chunk, keyed by `vectors.chunk_key`: chunk id, article id, date
                         (`day_number`), span, float32 vector, the float16 vectors of the sentences
                         inside it (pooled in the chunk's pass, as the folder stores them), and
                         askdesk's own terms of its title and text, from which Milvus' BM25 function
                         makes a sparse vector

A question reads: the dense search and the BM25 search (each with the date window as a filter
expression; both bring back their hits' chunk rows, sentence vectors included, and BM25's the
chunk vectors too), the idf of the question's words (one request), the BM25 scores of the chunks
only the dense side found, and the articles of the candidates (cached per snapshot): about five
requests. Nothing is loaded at open beyond the manifest and the counts.

BM25 runs in Milvus over askdesk's terms (Snowball stems, its stopwords, numbers kept whole,
``text.terms``) through a whitespace analyzer, with askdesk's k1 and b, so its scores are the
folder's. Milvus' English analyzer on the raw text is the other choice (``analyzer="english"``);
docs/scaling.md has the measurement that chose. A second BM25 field holds each chunk's distinct
terms with b = 0: a one-word search there scores exactly the word's idf (`MilvusLexical.idf_of`).

Writes touch only the rows of the articles they change (upsert, delete by article id). Milvus has
no transaction across collections, so a write goes in batches of articles: it records the batch in
"journal", writes articles, then sentences, then chunks (a search never finds a chunk whose article
is missing), and removes in the opposite order. A writer killed mid-batch leaves that
batch's rows partly written; the next write (any `askdesk index`, `add`, `remove`) first deletes
them, and as ids come from content, writing them again gives the same rows. Embedding a new model
or chunking writes a whole new generation of collections and switches "live" only when it is
complete (``live`` is one row: the switch is one upsert).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import threading
import warnings
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..articles.quotes import Statement, find_statements
from ..errors import BadInputError, IndexLockedError, IndexMismatchError, IndexMissingError, StoreUnavailableError
from ..models.embed import Embedder
from ..text import terms
from ..types import Article, Chunk
from .records import Sentences, StoredChunk
from .vectors import Window, chunk_key, day_number

logger = logging.getLogger(__name__)

INSTALL = "the Milvus store needs: pip install 'askdesk[milvus]'"
PIECE = 16_000  # characters of an article's JSON per row: 4 bytes a character at most, under VARCHAR's 65,535
ARTICLES_PER_BATCH = 64  # articles embedded and written together (~200 chunks); the journal holds one batch
ROWS_PER_REQUEST = 1_000  # rows per insert/upsert request (a few MB of vectors)
MAX_LIMIT = 16_384  # Milvus' largest top-k and query window
FORMAT = 2  # the store's layout (this module); each generation's manifest records it
# 2: an article's record holds its chunk count and its statements (who says what), found on write
K1, B = 0.9, 0.4  # lexical.BM25's (Anserini's defaults)
_LITE_LOCKS: dict[str, threading.Lock] = {}  # one writer per Milvus Lite file in this process


@dataclass(frozen=True)
class Embedded:
    """One article ready to write: its sentences and chunks, with their vectors."""

    article: Article
    sentences: list[tuple[int, int]]
    chunks: list[Chunk]
    chunk_vectors: np.ndarray  # (len(chunks), dim) float32
    sentence_vectors: np.ndarray  # (len(sentences), dim)
    encoded: int = 0  # texts that went through the model for it


EmbedArticles = Callable[[list[Article]], Iterator[Embedded]]  # new articles -> embedded, in any order


def sentence_key(article_id: str, position: int) -> int:
    """A sentence's key: 60 bits of a hash of its article's id and its position there."""
    return chunk_key(hashlib.sha1(f"{article_id}:{position}".encode()).hexdigest())


def text_hash(text: str) -> int:
    """A stable 63-bit hash of a sentence, whitespace and case folded (finds near-duplicate articles)."""
    return int.from_bytes(hashlib.blake2b(" ".join(text.lower().split()).encode(), digest_size=8).digest(),
                          "big", signed=True)


def window_expr(window: Window | None) -> str:
    """A date window as a Milvus filter expression on ``date`` (`day_number`; 0 = undated)."""
    if window is None:
        return ""
    parts = ["date > 0"]
    if window.since:
        parts.append(f"date >= {day_number(window.since)}")
    if window.until:
        parts.append(f"date <= {day_number(window.until)}")
    expr = " and ".join(parts)
    return f"({expr}) or date == 0" if window.undated else expr


def _ints(keys: Iterable[int]) -> str:
    return "[" + ",".join(str(int(k)) for k in keys) + "]"


def _strs(ids: Iterable[str]) -> str:
    return "[" + ",".join(json.dumps(i) for i in ids) + "]"


def _import_pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise StoreUnavailableError(INSTALL) from None
    if not logging.getLogger("askdesk").isEnabledFor(logging.DEBUG):
        # pymilvus logs each failed call with its traceback on its own stderr handler, and a
        # warning per query_iterator; askdesk reports what failed itself, as one line.
        for name in ("pymilvus", "pymilvus.milvus_client"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    return pymilvus


def _lite_busy(path: Path) -> bool:
    """Whether another process holds the Milvus Lite file (milvus_lite.server takes this lock on
    ``.NAME.lock`` beside it). Asked before opening, so that milvus-lite logs nothing."""
    import fcntl

    from milvus_lite.server_manager import server_manager_instance

    if str(path.resolve()) in server_manager_instance._servers:
        return False  # this process serves it (closing a probe of our own lock would release it)
    lock = path.parent / f".{path.name}.lock"
    if not lock.exists():
        return False
    with open(lock, "a") as fh:
        try:
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(fh, fcntl.LOCK_UN)
    return False


# ---- the engine's side of the seams ---------------------------------------------------------------

# Each chunk row carries the vectors of the whole sentences inside it, float16, base64 in a VARCHAR
# (Milvus 2.5 has no bytes field): 49,149 bytes -> 65,532 characters, under VARCHAR's 65,535, so
# 63 sentences a chunk at 384 dimensions. A chunk that holds more (a list of two-word lines) gives
# the others its own vector. Read with the chunk row that searches return anyway, instead of a
# lookup by key in a collection of sentences: Milvus Lite 2.5.1 scans a collection's keys on each
# `get` (50-70 ms a question on 515k sentence rows at 100k chunks; docs/scaling.md).
SENTENCE_BYTES = 49_149
CHUNK_FIELDS = ["id", "article_id", "start", "end", "sentences"]  # what answering reads of a chunk row


def pack(vectors: np.ndarray) -> str:
    """Sentence vectors as they ride in a chunk row: float16 bytes, base64."""
    data = np.asarray(vectors, np.float16).tobytes()
    return base64.b64encode(data[:SENTENCE_BYTES - SENTENCE_BYTES % max(1, vectors.shape[-1] * 2)]).decode("ascii")


def unpack(blob: str, dim: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(blob), np.float16).reshape(-1, dim).astype(np.float32)


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
        return _count(self.client, self.collection)

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
            got.update({int(r["key"]): r["vector"] for r in _get(self.client, self.collection, missing, ["vector"])})
        absent = [k for k in keys if k not in got]
        if absent:
            raise KeyError(f"chunk keys not in the store: {absent[:3]}")
        return np.asarray([got[k] for k in keys], dtype=np.float32)

    def add(self, keys: Sequence[int], vectors: np.ndarray, dates: Sequence[int]) -> None:
        """Chunk rows with only a vector and a date (the writer upserts whole rows instead)."""
        rows = [{"key": int(k), "id": "", "article_id": "", "date": int(d), "start": 0, "end": 0, "words": "",
                 "vocab": "", "sentences": "", "vector": np.asarray(v, np.float32)}
                for k, v, d in zip(keys, vectors, dates)]
        _put(self.client, self.collection, rows)

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
            got.update(self._search(query_terms, len(unknown), f"key in {_ints(unknown)}", []))
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
                unseen = float(np.log1p((_count(self.client, self.collection) + 0.5) / 0.5))
            self._idf[t] = float(hits[0]["distance"]) if hits else unseen

    def idf_of(self, term: str) -> float:
        if term not in self._idf:
            self._prefetch_idf([term])
        return self._idf.get(term) or float(np.log1p((_count(self.client, self.collection) + 0.5) / 0.5))


def _create(client, name: str, schema, index_params) -> None:
    """A collection with its indexes, loaded. The indexes are asked for without waiting on each:
    Milvus Lite polls each one for ~0.5 s, 5 s for a new store where this takes 0.05 s."""
    client.create_collection(name, schema=schema, consistency_level="Strong")
    client.create_index(name, index_params, sync=False)
    client.load_collection(name)


def _count(client, collection: str, expr: str = "") -> int:
    return int(client.query(collection, filter=expr, output_fields=["count(*)"])[0]["count(*)"])


def _get(client, collection: str, keys: Sequence, fields: list[str]) -> list[dict]:
    out: list[dict] = []
    keys = list(dict.fromkeys(keys))
    for i in range(0, len(keys), MAX_LIMIT):
        out += client.get(collection, ids=keys[i:i + MAX_LIMIT], output_fields=fields)
    return out


def _put(client, collection: str, rows: list[dict]) -> None:
    for i in range(0, len(rows), ROWS_PER_REQUEST):
        client.upsert(collection, rows[i:i + ROWS_PER_REQUEST])


def _query_all(client, collection: str, expr: str, fields: list[str]) -> Iterator[dict]:
    it = client.query_iterator(collection, batch_size=2_000, filter=expr, output_fields=fields)
    try:
        while True:
            batch = it.next()
            if not batch:
                return
            yield from batch
    finally:
        it.close()


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
        for r in _get(self.store.client, self._chunks, missing, CHUNK_FIELDS) if missing else ():
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
        return tuple(Statement.from_row(r) for r in rows) if rows is not None else tuple(find_statements(rec[0].text))

    def sentences_of(self, article_ids: Sequence[str]) -> Sentences:
        """Every sentence of the articles, with the vectors their chunk rows carry (one query for
        all their rows); a sentence no chunk holds whole (cut by a chunk limit) takes its first
        chunk's vector."""
        ids = list(article_ids)
        recs = self._records(ids)
        dim = self.vectors.dim
        rows: dict[str, list[dict]] = {}
        if self._sentences == "stored" and ids:
            for r in _query_all(self.store.client, self._chunks, f"article_id in {_strs(set(ids))}",
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


def sentence_range(spans: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """[lo, hi): the positions of the sentences wholly inside [start, end) (spans sorted, not overlapping)."""
    lo = bisect_left([s for s, _ in spans], start)
    return lo, max(bisect_right([e for _, e in spans], end), lo)


# ---- the store: connection, collections, records -------------------------------------------------

def parse_uri(uri: str) -> tuple[str, str, str]:
    """``"/tmp/desk.db#news"`` -> (what MilvusClient opens, collection name prefix, "lite" or "server")."""
    where, _, name = str(uri).partition("#")
    name = name or "askdesk"
    if not name.replace("_", "a").isalnum() or not name[0].isalpha() or len(name) > 40:
        raise BadInputError(f"store name {name!r} (after '#') must be letters, digits and '_', starting with a letter")
    if where.lower().endswith(".db"):
        return str(Path(where).expanduser().absolute()), name, "lite"
    return where, name, "server"


class MilvusStore:
    """One Milvus store: a Milvus Lite file or a server, connected on first use.

    Args:
        uri: ``PATH.db`` or ``http(s)://host:port``, optionally ``#name`` (the collections' prefix).
        analyzer: for a new store, how BM25 reads text: "askdesk" (askdesk's terms through
            Milvus' whitespace analyzer: the folder's scores) or "english" (Milvus' own analyzer).
        sentences: "stored" or "question" (see `MilvusSnapshot`).
    """

    def __init__(self, uri: str, *, analyzer: str = "askdesk", sentences: str = "stored",
                 search_params: dict | None = None):
        self.uri = uri
        self.where, self.name, self.kind = parse_uri(uri)
        self.analyzer, self.sentences, self.search_params = analyzer, sentences, search_params
        self._client = None
        self._connect_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MilvusStore({self.uri!r})"

    # -- connection ---------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            with self._connect_lock:
                if self._client is None:
                    self._client = self._connect()
        return self._client

    def _connect(self):
        pymilvus = _import_pymilvus()
        if self.kind == "lite":
            path = Path(self.where)
            try:
                with warnings.catch_warnings():  # milvus-lite 2.5.1 imports the deprecated pkg_resources
                    warnings.simplefilter("ignore")
                    import milvus_lite  # noqa: F401 - pymilvus opens .db files with it
            except ImportError as e:
                raise StoreUnavailableError(f"{INSTALL} (milvus-lite 2.5.1 could not be imported: {e})") from None
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                if _lite_busy(path):
                    raise pymilvus.exceptions.MilvusException(message="busy")
                return pymilvus.MilvusClient(str(path))
            except RuntimeError as e:  # milvus-lite's own checks of the file name
                raise BadInputError(f"{str(path)!r} cannot be a Milvus Lite file: {e}") from None
            except pymilvus.exceptions.MilvusException:
                raise IndexLockedError(
                    f"the Milvus Lite file {str(path)!r} is open in another process (Milvus Lite serves one "
                    "process at a time, so that process is the only reader and writer): stop it (an `askdesk "
                    "serve` page?) and run again, or serve the file with a Milvus server and use its http:// URI"
                ) from None
        try:
            return pymilvus.MilvusClient(uri=self.where, timeout=10)
        except pymilvus.exceptions.MilvusException as e:
            raise StoreUnavailableError(f"cannot reach the Milvus server at {self.where!r} ({e.message}); "
                                        "start it, or check the address") from None

    def close(self) -> None:
        """Close the connection; for a Milvus Lite file also stop its engine, so another process can open it."""
        with self._connect_lock:
            if self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.close()
                self._client = None
            if self.kind == "lite":
                with contextlib.suppress(ImportError):
                    from milvus_lite.server_manager import server_manager_instance

                    if str(Path(self.where).resolve()) in server_manager_instance._servers:
                        server_manager_instance.release_server(self.where)

    def writer_lock(self) -> threading.Lock:
        """The lock writers of this store in this process take (one per Milvus Lite file or server)."""
        return _LITE_LOCKS.setdefault(f"{self.where}#{self.name}", threading.Lock())

    # -- meta rows ------------------------------------------------------------------------------
    @property
    def meta(self) -> str:
        return f"{self.name}_meta"

    def names(self, gen: str) -> dict[str, str]:
        return {k: f"{self.name}_{gen}_{k}" for k in ("articles", "sentences", "chunks")}

    # Milvus Lite's upsert deletes the old row, then inserts the new one: a process killed between
    # the two loses the row (4 kills in 12 while one row was upserted in a loop). So the rows a crash
    # must not lose are never replaced: a write inserts a new "live:N" row (and deletes the older
    # ones after), and a "journal:N" row per batch, deleted when the batch is complete. Only the
    # lease ("writer") is upserted: losing it frees the store, as its expiry would.
    def _rows(self, prefix: str) -> list[tuple[int, dict]]:
        if not self.client.has_collection(self.meta):
            return []
        rows = self.client.query(self.meta, filter=f'key like "{prefix}:%"', output_fields=["key", "value"],
                                 limit=MAX_LIMIT)
        return sorted((int(r["key"].rsplit(":", 1)[1]), json.loads(r["value"])) for r in rows)

    def _insert_meta(self, prefix: str, value: dict) -> str:
        self._ensure_meta()
        old = self._rows(prefix)
        key = f"{prefix}:{(old[-1][0] + 1 if old else 1):012d}"
        self.client.insert(self.meta, [{"key": key, "value": json.dumps(value), "_v": [0.0, 0.0]}])
        return key

    def get_meta(self, key: str) -> dict | None:
        if not self.client.has_collection(self.meta):
            return None
        rows = self.client.get(self.meta, ids=[key], output_fields=["value"])
        return json.loads(rows[0]["value"]) if rows else None

    def put_meta(self, key: str, value: dict) -> None:
        """Replace a row that may be lost in a crash (the lease)."""
        self._ensure_meta()
        self.client.upsert(self.meta, [{"key": key, "value": json.dumps(value), "_v": [0.0, 0.0]}])

    def delete_meta(self, *keys: str) -> None:
        if keys and self.client.has_collection(self.meta):
            self.client.delete(self.meta, ids=list(keys))

    def _ensure_meta(self) -> None:
        if self.client.has_collection(self.meta):
            return
        DataType = _import_pymilvus().DataType
        s = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
        s.add_field("value", DataType.VARCHAR, max_length=65_535)
        s.add_field("_v", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector field in every collection
        ip = self.client.prepare_index_params()
        ip.add_index(field_name="_v", index_type="FLAT", metric_type="L2")
        _create(self.client, self.meta, s, ip)

    def live(self) -> dict | None:
        """``{"gen", "version", "manifest"}`` of the generation answering (version: counts the
        writes), or None for an empty store."""
        rows = self._rows("live")
        return {**rows[-1][1], "version": rows[-1][0]} if rows else None

    def set_live(self, gen: str, manifest: dict) -> None:
        """Point the store at ``gen`` with its manifest: one inserted row (older ones deleted after)."""
        old = self._rows("live")
        self._insert_meta("live", {"gen": gen, "manifest": manifest})
        self.delete_meta(*(f"live:{n:012d}" for n, _ in old))

    def manifest(self, gen: str) -> dict | None:
        live = self.live()
        return live["manifest"] if live and live["gen"] == gen else None

    def journal(self) -> list[tuple[str, dict]]:
        """The batches a write has begun and not finished: (row key, {"gen", "ids"})."""
        return [(f"journal:{n:012d}", v) for n, v in self._rows("journal")]

    def begin(self, gen: str, ids: Sequence[str]) -> str:
        """Record the articles a batch is about to change; returns the row `end` deletes."""
        return self._insert_meta("journal", {"gen": gen, "ids": list(ids), "pid": os.getpid()})

    def end(self, key: str) -> None:
        self.delete_meta(key)

    # -- generations ----------------------------------------------------------------------------
    def create(self, gen: str, dim: int, analyzer: str, parts: Sequence[str] = ("articles", "sentences", "chunks")
               ) -> None:
        """The collections of a generation (the meta collection too, the first time); ``parts``
        leaves some out (the VectorIndex contract tests need only the chunks)."""
        self._ensure_meta()
        DataType, Function, FunctionType = (_import_pymilvus().DataType, _import_pymilvus().Function,
                                            _import_pymilvus().FunctionType)
        names, c = self.names(gen), self.client
        s = c.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=48)
        s.add_field("article_id", DataType.VARCHAR, max_length=64)
        s.add_field("part", DataType.INT64)
        s.add_field("meta", DataType.VARCHAR, max_length=65_535)  # the fields but text, on part 0 (listing)
        s.add_field("blob", DataType.VARCHAR, max_length=65_535)
        s.add_field("akey", DataType.VARCHAR, max_length=8_192)  # build.key: url, else path, else id (part 0)
        s.add_field("path", DataType.VARCHAR, max_length=8_192)  # (part 0) `askdesk remove PATH` finds it
        s.add_field("_v", DataType.FLOAT_VECTOR, dim=2)
        ip = c.prepare_index_params()
        ip.add_index(field_name="_v", index_type="FLAT", metric_type="L2")
        for f in ("article_id", "akey", "path"):
            ip.add_index(field_name=f, index_type="INVERTED")
        if "articles" in parts:
            _create(c, names["articles"], s, ip)

        s = c.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("key", DataType.INT64, is_primary=True)
        s.add_field("article_id", DataType.VARCHAR, max_length=64)
        s.add_field("hash", DataType.INT64)
        s.add_field("_v", DataType.FLOAT_VECTOR, dim=2)
        ip = c.prepare_index_params()
        ip.add_index(field_name="_v", index_type="FLAT", metric_type="L2")
        ip.add_index(field_name="article_id", index_type="INVERTED")
        ip.add_index(field_name="hash", index_type="INVERTED")
        if "sentences" in parts:
            _create(c, names["sentences"], s, ip)

        words = {"tokenizer": "whitespace"} if analyzer == "askdesk" else {"type": "english"}
        s = c.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("key", DataType.INT64, is_primary=True)
        s.add_field("id", DataType.VARCHAR, max_length=64)
        s.add_field("article_id", DataType.VARCHAR, max_length=64)
        s.add_field("date", DataType.INT64)
        s.add_field("start", DataType.INT64)
        s.add_field("end", DataType.INT64)
        s.add_field("words", DataType.VARCHAR, max_length=65_535, enable_analyzer=True, analyzer_params=words)
        s.add_field("vocab", DataType.VARCHAR, max_length=65_535, enable_analyzer=True,
                    analyzer_params={"tokenizer": "whitespace"})
        s.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        s.add_field("vocab_sparse", DataType.SPARSE_FLOAT_VECTOR)
        s.add_field("sentences", DataType.VARCHAR, max_length=65_535)  # `pack`ed vectors of its whole sentences
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        s.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["words"],
                                output_field_names=["sparse"]))
        s.add_function(Function(name="idf", function_type=FunctionType.BM25, input_field_names=["vocab"],
                                output_field_names=["vocab_sparse"]))
        ip = c.prepare_index_params()
        # Exact inner product, as the folder's up to Config.ann_above (Milvus Lite offers FLAT, IVF_FLAT, AUTOINDEX)
        ip.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
        ip.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                     params={"bm25_k1": K1, "bm25_b": B})
        ip.add_index(field_name="vocab_sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                     params={"bm25_k1": K1, "bm25_b": 0.0})
        ip.add_index(field_name="article_id", index_type="INVERTED")
        ip.add_index(field_name="date", index_type="INVERTED")
        if "chunks" in parts:
            _create(c, names["chunks"], s, ip)

    def drop(self, gen: str) -> None:
        for n in self.names(gen).values():
            if self.client.has_collection(n):
                self.client.drop_collection(n)

    def generations(self) -> list[str]:
        """Every generation with collections in the store (a killed rebuild's too)."""
        prefix = f"{self.name}_"
        gens = {n[len(prefix):].rsplit("_", 1)[0] for n in self.client.list_collections()
                if n.startswith(prefix) and n != self.meta}
        return sorted(g for g in gens if g.startswith("g") and g[1:].isdigit())

    # -- reading ----------------------------------------------------------------------------------
    def snapshot(self, *, expect: dict | None = None, embedder: Embedder | None = None) -> MilvusSnapshot:
        """The live generation for answering; raises IndexMissingError or IndexMismatchError."""
        live = self.live()
        if live is None:
            raise IndexMissingError(f"no index in the Milvus store {self.uri!r}; build one with: "
                                    f"askdesk index corpus/ --store {self.uri}")
        gen = live["gen"]
        m = dict(live["manifest"])
        if m.get("format") != FORMAT:
            raise IndexMismatchError(f"the Milvus store {self.uri!r} has layout {m.get('format')!r}, this askdesk "
                                     f"reads {FORMAT}; bring it up to date with: askdesk index --store {self.uri} "
                                     "(embeds its articles again and keeps them all)")
        for key, want in (expect or {}).items():
            if m.get(key) != want:
                raise IndexMismatchError(
                    f"the Milvus store {self.uri!r} was built with {key}={m.get(key)!r} but askdesk is set to "
                    f"{want!r}; set ASKDESK_{key.upper()}={m.get(key)}, or embed it again with: "
                    f"askdesk index --store {self.uri} --{key} {want}")
        names = self.names(gen)
        m["n_chunks"] = _count(self.client, names["chunks"])
        m["n_articles"] = self.n_articles(gen)
        m["store"] = self.uri
        if self.journal():
            logger.info("a write to %s is running, or was interrupted (the next write finishes it)", self.uri)
        return MilvusSnapshot(self, gen, m, sentences=self.sentences, embedder=embedder)

    def read_articles(self, gen: str, ids: Sequence[str] | None
                      ) -> dict[str, tuple[Article, list[tuple[int, int]]]]:
        """(Article, sentence spans) by id; ``ids`` None: every article, in the order written."""
        return {i: (a, spans) for i, (a, spans, _) in self.read_records(gen, ids).items()}

    def read_records(self, gen: str, ids: Sequence[str] | None
                     ) -> dict[str, tuple[Article, list[tuple[int, int]], dict]]:
        """(Article, sentence spans, the rest of its record) by id, as `read_articles`."""
        name = self.names(gen)["articles"]
        pieces: dict[str, list[tuple[int, str, str]]] = {}
        fields = ["article_id", "part", "meta", "blob"]
        if ids is None:
            rows: Iterable[dict] = _query_all(self.client, name, "part >= 0", fields)
        else:  # by key: part 0 holds the count of parts (a filter on article_id took 3x as long at 100k)
            rows = _get(self.client, name, [f"{i}:0" for i in ids], fields)
            more = [f"{r['article_id']}:{k}" for r in rows for k in range(1, json.loads(r["meta"])["parts"])]
            rows += _get(self.client, name, more, fields) if more else []
        for r in rows:
            pieces.setdefault(r["article_id"], []).append((int(r["part"]), r["meta"], r["blob"]))
        out = {}
        for aid, parts in pieces.items():
            parts.sort()
            meta = json.loads(parts[0][1])
            rec = json.loads("".join(p[2] for p in parts))
            if meta.get("parts") != len(parts):  # a piece missing: a killed write, repaired by the next one
                continue
            fields_ = {k: v for k, v in meta.items() if k != "parts"}
            out[aid] = (Article(id=aid, text=rec.pop("text"), **fields_), [tuple(s) for s in rec.pop("sentences")],
                        rec)
        if ids is None:
            order = sorted(out, key=lambda i: out[i][0].path or i)
            return {i: out[i] for i in order}
        return out

    def listing(self, gen: str, scope: Sequence[str] | None = None) -> list[Article]:
        """The articles' fields without their text (``text=""``): what a writer's selection needs.

        ``scope``: only the articles with these ids or keys (`build.key`), not all."""
        out = []
        name = self.names(gen)["articles"]
        if scope is None:
            rows: Iterable[dict] = _query_all(self.client, name, "part == 0", ["article_id", "meta"])
        else:
            scope = list(scope)
            rows = [r for i in range(0, len(scope), 500) for r in self.client.query(
                name, filter=f"part == 0 and (article_id in {_strs(scope[i:i + 500])} or akey in "
                             f"{_strs(scope[i:i + 500])})", output_fields=["article_id", "meta"], limit=MAX_LIMIT)]
        for r in rows:
            meta = json.loads(r["meta"])
            meta.pop("parts", None)
            out.append(Article(id=r["article_id"], text="", **meta))
        return sorted({a.id: a for a in out}.values(), key=lambda a: a.path or a.id)

    def find(self, refs: Sequence[str]) -> dict[str, str]:
        """Article id by reference (an id or a path), for the references that name an article."""
        live = self.live()
        if live is None:
            return {}
        gen, out = live["gen"], {}
        for i in range(0, len(refs), 500):
            part = list(refs[i:i + 500])
            for r in self.client.query(self.names(gen)["articles"], output_fields=["article_id", "path"],
                                       filter=f"part == 0 and (article_id in {_strs(part)} or path in {_strs(part)})",
                                       limit=MAX_LIMIT):
                out.update({ref: r["article_id"] for ref in (r["article_id"], r["path"]) if ref in part})
        return out

    def n_articles(self, gen: str) -> int:
        return _count(self.client, self.names(gen)["articles"], "part == 0")

    def recorded_corpus(self) -> Path | None:
        """The article folder the store was last synced with, if it still exists (for a Milvus
        Lite file, also where it is from the file: a project folder moved as a whole finds it)."""
        live = self.live()
        corpus = (live["manifest"].get("corpus") or {}) if live else {}
        for p in (corpus.get("path"), corpus.get("relative") and Path(self.where).parent / corpus["relative"]):
            if p and Path(p).is_dir():
                return Path(p).resolve()
        return None

    def corpus_record(self, folder: str | Path | None) -> dict | None:
        """The manifest's "corpus" entry for ``folder``, as the index folder records it."""
        if folder is None:
            return None
        folder = Path(folder).resolve()
        if self.kind != "lite":
            return {"path": str(folder)}
        return {"path": str(folder), "relative": os.path.relpath(folder, Path(self.where).parent.resolve())}

    # -- writing rows --------------------------------------------------------------------------------
    def write_articles(self, gen: str, items: Sequence[Embedded], analyzer: str) -> None:
        """Articles, then sentences, then chunks: a chunk a search finds has its article and sentences."""
        names, articles, sentences, chunks = self.names(gen), [], [], []
        for e in items:
            a = e.article
            articles += _article_rows(a, e.sentences, {"n_chunks": len(e.chunks),
                                                        "statements": [st.to_row() for st in find_statements(a.text)]})
            sentences += [{"key": sentence_key(a.id, j), "article_id": a.id, "hash": text_hash(a.text[s:end]),
                           "_v": [0.0, 0.0]} for j, (s, end) in enumerate(e.sentences)]
            date = day_number(a.date)
            sv = np.asarray(e.sentence_vectors, np.float32).reshape(len(e.sentences), -1)
            for c, v in zip(e.chunks, e.chunk_vectors):
                words = terms(f"{a.title} {c.text}")
                lo, hi = sentence_range(e.sentences, c.start, c.end)
                chunks.append({"key": chunk_key(c.id), "id": c.id, "article_id": a.id, "date": date,
                               "start": c.start, "end": c.end,
                               "words": " ".join(words) if analyzer == "askdesk" else f"{a.title} {c.text}",
                               "vocab": " ".join(sorted(set(words))), "sentences": pack(sv[lo:hi]),
                               "vector": np.asarray(v, np.float32)})
        _put(self.client, names["articles"], articles)
        _put(self.client, names["sentences"], sentences)
        _put(self.client, names["chunks"], chunks)

    def put_records(self, gen: str, records: Sequence[tuple[Article, list[tuple[int, int]], dict]]) -> None:
        """Rewrite articles' records only (a new path for the same text): (article, spans, extra)
        as `read_records` gives them."""
        _put(self.client, self.names(gen)["articles"],
             [r for a, spans, extra in records for r in _article_rows(a, spans, extra)])

    def delete_articles(self, gen: str, ids: Sequence[str]) -> None:
        """Chunks first (no search finds them any more), then sentences, then the articles."""
        names = self.names(gen)
        for i in range(0, len(ids), 500):
            expr = f"article_id in {_strs(ids[i:i + 500])}"
            for n in ("chunks", "sentences", "articles"):
                self.client.delete(names[n], filter=expr)

    def holders(self, gen: str, hashes: Sequence[int]) -> set[str]:
        """The articles holding a sentence with one of these text hashes."""
        out: set[str] = set()
        name = self.names(gen)["sentences"]
        for i in range(0, len(hashes), 1_000):
            out |= {r["article_id"] for r in self.client.query(name, filter=f"hash in {_ints(hashes[i:i + 1_000])}",
                                                               output_fields=["article_id"], limit=MAX_LIMIT)}
        return out


def _article_rows(a: Article, spans: Sequence[tuple[int, int]], extra: dict | None = None) -> list[dict]:
    """An article as rows of the articles collection: its JSON in `PIECE`-character parts.
    ``extra``: what else the record keeps ("n_chunks", "statements": found when it is written)."""
    fields = {k: v for k, v in dataclasses.asdict(a).items() if k not in ("id", "text")}
    blob = json.dumps({"text": a.text, "sentences": [list(s) for s in spans], **(extra or {})}, ensure_ascii=False)
    parts = [blob[i:i + PIECE] for i in range(0, len(blob), PIECE)] or [""]
    return [{"pk": f"{a.id}:{n}", "article_id": a.id, "part": n, "blob": piece, "_v": [0.0, 0.0],
             "meta": json.dumps({**fields, "parts": len(parts)}, ensure_ascii=False) if n == 0 else "",
             "akey": (a.url or a.path or a.id) if n == 0 else "", "path": (a.path or "") if n == 0 else ""}
            for n, piece in enumerate(parts)]
