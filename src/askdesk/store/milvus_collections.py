"""The Milvus store's collections: their schemas and indexes, the row requests every part of the
store makes (count, get, upsert, query in batches), and how a chunk row carries the vectors of its
sentences. `milvus` describes the collections; `milvus_snapshot` reads them, `milvus_write` makes
their rows.
"""

from __future__ import annotations

import base64
import json
import logging
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from ..errors import StoreUnavailableError
from .vectors import Window, day_number

INSTALL = "the Milvus store needs: pip install 'askdesk[milvus]'"
ROWS_PER_REQUEST = 1_000  # rows per insert/upsert request (a few MB of vectors)
MAX_LIMIT = 16_384  # Milvus' largest top-k and query window
K1, B = 0.9, 0.4  # lexical.BM25's (Anserini's defaults)


def import_pymilvus():
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


def int_list(keys: Iterable[int]) -> str:
    """Keys as a Milvus filter list: ``[1,2,3]``."""
    return "[" + ",".join(str(int(k)) for k in keys) + "]"


def str_list(ids: Iterable[str]) -> str:
    """Strings as a Milvus filter list: ``["a","b"]``."""
    return "[" + ",".join(json.dumps(i) for i in ids) + "]"


# ---- a chunk row's sentence vectors ---------------------------------------------------------------

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


def sentence_range(spans: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """[lo, hi): the positions of the sentences wholly inside [start, end) (spans sorted, not overlapping)."""
    lo = bisect_left([s for s, _ in spans], start)
    return lo, max(bisect_right([e for _, e in spans], end), lo)


# ---- the collections ------------------------------------------------------------------------------

def create_meta(client, name: str) -> None:
    """The meta collection: small JSON rows by key ("live:N", "journal:N", "writer")."""
    DataType = import_pymilvus().DataType
    s = client.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
    s.add_field("value", DataType.VARCHAR, max_length=65_535)
    s.add_field("_v", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector field in every collection
    ip = client.prepare_index_params()
    ip.add_index(field_name="_v", index_type="FLAT", metric_type="L2")
    _create(client, name, s, ip)


def create_generation(client, names: dict[str, str], dim: int, analyzer: str,
                      parts: Sequence[str] = ("articles", "sentences", "chunks")) -> None:
    """A generation's collections (``names``: "articles", "sentences", "chunks"), those in ``parts``."""
    pymilvus = import_pymilvus()
    DataType, Function, FunctionType = pymilvus.DataType, pymilvus.Function, pymilvus.FunctionType
    s = client.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=48)
    s.add_field("article_id", DataType.VARCHAR, max_length=64)
    s.add_field("part", DataType.INT64)
    s.add_field("meta", DataType.VARCHAR, max_length=65_535)  # the fields but text, on part 0 (listing)
    s.add_field("blob", DataType.VARCHAR, max_length=65_535)
    s.add_field("akey", DataType.VARCHAR, max_length=8_192)  # build.key: url, else path, else id (part 0)
    s.add_field("path", DataType.VARCHAR, max_length=8_192)  # (part 0) `askdesk remove PATH` finds it
    s.add_field("_v", DataType.FLOAT_VECTOR, dim=2)
    ip = client.prepare_index_params()
    ip.add_index(field_name="_v", index_type="FLAT", metric_type="L2")
    for f in ("article_id", "akey", "path"):
        ip.add_index(field_name=f, index_type="INVERTED")
    if "articles" in parts:
        _create(client, names["articles"], s, ip)

    s = client.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("key", DataType.INT64, is_primary=True)
    s.add_field("article_id", DataType.VARCHAR, max_length=64)
    s.add_field("hash", DataType.INT64)
    s.add_field("_v", DataType.FLOAT_VECTOR, dim=2)
    ip = client.prepare_index_params()
    ip.add_index(field_name="_v", index_type="FLAT", metric_type="L2")
    ip.add_index(field_name="article_id", index_type="INVERTED")
    ip.add_index(field_name="hash", index_type="INVERTED")
    if "sentences" in parts:
        _create(client, names["sentences"], s, ip)

    words = {"tokenizer": "whitespace"} if analyzer == "askdesk" else {"type": "english"}
    s = client.create_schema(auto_id=False, enable_dynamic_field=False)
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
    ip = client.prepare_index_params()
    # Exact inner product, as the folder's up to Config.ann_above (Milvus Lite offers FLAT, IVF_FLAT, AUTOINDEX)
    ip.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
    ip.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                 params={"bm25_k1": K1, "bm25_b": B})
    ip.add_index(field_name="vocab_sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                 params={"bm25_k1": K1, "bm25_b": 0.0})
    ip.add_index(field_name="article_id", index_type="INVERTED")
    ip.add_index(field_name="date", index_type="INVERTED")
    if "chunks" in parts:
        _create(client, names["chunks"], s, ip)


def _create(client, name: str, schema, index_params) -> None:
    """A collection with its indexes, loaded. The indexes are asked for without waiting on each:
    Milvus Lite polls each one for ~0.5 s, 5 s for a new store where this takes 0.05 s."""
    client.create_collection(name, schema=schema, consistency_level="Strong")
    client.create_index(name, index_params, sync=False)
    client.load_collection(name)


# ---- rows -----------------------------------------------------------------------------------------

def count_rows(client, collection: str, expr: str = "") -> int:
    return int(client.query(collection, filter=expr, output_fields=["count(*)"])[0]["count(*)"])


def get_rows(client, collection: str, keys: Sequence, fields: list[str]) -> list[dict]:
    """Rows by primary key, `MAX_LIMIT` keys a request."""
    out: list[dict] = []
    keys = list(dict.fromkeys(keys))
    for i in range(0, len(keys), MAX_LIMIT):
        out += client.get(collection, ids=keys[i:i + MAX_LIMIT], output_fields=fields)
    return out


def put_rows(client, collection: str, rows: list[dict]) -> None:
    """Upsert, `ROWS_PER_REQUEST` rows a request."""
    for i in range(0, len(rows), ROWS_PER_REQUEST):
        client.upsert(collection, rows[i:i + ROWS_PER_REQUEST])


def query_all(client, collection: str, expr: str, fields: list[str]) -> Iterator[dict]:
    """Every row matching ``expr``, read in batches."""
    it = client.query_iterator(collection, batch_size=2_000, filter=expr, output_fields=fields)
    try:
        while True:
            batch = it.next()
            if not batch:
                return
            yield from batch
    finally:
        it.close()
