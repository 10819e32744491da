"""The writer's side of a Milvus store: an article embedded and ready to write (`Embedded`), and
the rows it becomes in each collection. `MilvusStore.write_articles` writes them in the order that
keeps readers safe; `upsert` decides which articles are written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..articles.quotes import STATEMENTS_FORMAT, Statement, find_statements
from ..text import terms
from ..types import Article, Chunk
from .milvus_collections import pack, sentence_range
from .vectors import chunk_key, day_number

PIECE = 16_000  # characters of an article's JSON per row: 4 bytes a character at most, under VARCHAR's 65,535
ARTICLES_PER_BATCH = 64  # articles embedded and written together (~200 chunks); the journal holds one batch


@dataclass(frozen=True)
class Embedded:
    """One article ready to write: its sentences and chunks, with their vectors."""

    article: Article
    sentences: list[tuple[int, int]]
    chunks: list[Chunk]
    chunk_vectors: np.ndarray  # (len(chunks), dim) float32
    sentence_vectors: np.ndarray  # (len(sentences), dim)
    encoded: int = 0  # texts that went through the model for it
    statements: tuple[Statement, ...] | None = None  # found where it was planned (a Ray worker); None: found here


EmbedArticles = Callable[[list[Article]], Iterator[Embedded]]  # new articles -> embedded, in any order


def sentence_key(article_id: str, position: int) -> int:
    """A sentence's key: 60 bits of a hash of its article's id and its position there."""
    return chunk_key(hashlib.sha1(f"{article_id}:{position}".encode()).hexdigest())


def text_hash(text: str) -> int:
    """A stable 63-bit hash of a sentence, whitespace and case folded (finds near-duplicate articles)."""
    return int.from_bytes(hashlib.blake2b(" ".join(text.lower().split()).encode(), digest_size=8).digest(),
                          "big", signed=True)


def rows_of(e: Embedded, analyzer: str) -> tuple[list[dict], list[dict], list[dict]]:
    """An embedded article as rows of the articles, sentences and chunks collections; its
    statements (who says what) are those it carries, else found here, once, when it is written."""
    a = e.article
    found = e.statements if e.statements is not None else find_statements(a.text)
    articles = article_rows(a, e.sentences, {"n_chunks": len(e.chunks), "statements_format": STATEMENTS_FORMAT,
                                             "statements": [st.to_row() for st in found]})
    sentences = [{"key": sentence_key(a.id, j), "article_id": a.id, "hash": text_hash(a.text[s:end]),
                  "_v": [0.0, 0.0]} for j, (s, end) in enumerate(e.sentences)]
    date = day_number(a.date)
    sv = np.asarray(e.sentence_vectors, np.float32).reshape(len(e.sentences), -1)
    chunks = []
    for c, v in zip(e.chunks, e.chunk_vectors):
        words = terms(f"{a.title} {c.text}")
        lo, hi = sentence_range(e.sentences, c.start, c.end)
        chunks.append({"key": chunk_key(c.id), "id": c.id, "article_id": a.id, "date": date,
                       "start": c.start, "end": c.end,
                       "words": " ".join(words) if analyzer == "askdesk" else f"{a.title} {c.text}",
                       "vocab": " ".join(sorted(set(words))), "sentences": pack(sv[lo:hi]),
                       "vector": np.asarray(v, np.float32)})
    return articles, sentences, chunks


def article_rows(a: Article, spans: Sequence[tuple[int, int]], extra: dict | None = None) -> list[dict]:
    """An article as rows of the articles collection: its JSON in `PIECE`-character parts.
    ``extra``: what else the record keeps ("n_chunks", "statements": found when it is written)."""
    fields = {k: v for k, v in dataclasses.asdict(a).items() if k not in ("id", "text")}
    blob = json.dumps({"text": a.text, "sentences": [list(s) for s in spans], **(extra or {})}, ensure_ascii=False)
    parts = [blob[i:i + PIECE] for i in range(0, len(blob), PIECE)] or [""]
    return [{"pk": f"{a.id}:{n}", "article_id": a.id, "part": n, "blob": piece, "_v": [0.0, 0.0],
             "meta": json.dumps({**fields, "parts": len(parts)}, ensure_ascii=False) if n == 0 else "",
             "akey": (a.url or a.path or a.id) if n == 0 else "", "path": (a.path or "") if n == 0 else ""}
            for n, piece in enumerate(parts)]
