"""One segment folder of the index: the files it holds, written and read back.

A segment holds some articles and everything answering needs of them (FAISS and BM25 over their
chunks, sentence spans, vectors and hashes); `segment.json` is written last and lists the file
sizes. Once written it never changes; index.py lists segments in generations.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..articles.quotes import STATEMENTS_FORMAT, Statement, find_statements
from ..errors import IndexCorruptError
from ..types import Article, Chunk
from .lexical import BM25
from .records import Segment, SentenceRows, SentenceSpans, SentenceVectors, StoredChunk
from .vectors import FaissIndex, chunk_key, day_number

# 2: lexical.*.npy (variable-length vocabulary, Snowball stems), CURRENT's two lines; 3: segments + deletions
FORMAT_VERSION = 3
SEGMENT = "segment.json"
FILES = ("vectors.faiss", "chunks.jsonl", "articles.jsonl", "sentences.npy", "hashes.npy")
SENTENCES_IN_MEMORY = 64 << 20  # sentence vectors up to this size (~80k sentences, ~15k chunks) are read whole


@dataclass
class NewSegment:
    """A segment ready to write: what `build.assemble` and `merge.merge` make, `index.publish` writes."""

    articles: list[Article]
    sentences: dict[str, list[tuple[int, int]]]
    sentence_vectors: np.ndarray  # rows in article order, then sentence order
    hashes: np.ndarray  # per sentence row, records.sentence_hash
    chunks: list[Chunk]  # rows of vectors and lexical, in article order
    vectors: FaissIndex
    lexical: BM25
    # Statements already found (an article copied by a merge); the others are found on write.
    statements: dict[str, tuple[Statement, ...]] = field(default_factory=dict)



def load_segment(path: Path, fix: str) -> Segment:
    """One segment folder, checked against its segment.json (sizes, counts, row order).

    Raises:
        IndexCorruptError: a file missing, truncated or unreadable; the message ends with ``fix``.
    """
    try:
        meta = json.loads((path / SEGMENT).read_text())
    except FileNotFoundError:
        raise IndexCorruptError(f"segment {str(path)!r} is missing; {fix}") from None
    except (OSError, ValueError):
        raise IndexCorruptError(f"{str(path / SEGMENT)!r} is not valid JSON; {fix}") from None
    for name, size in meta.get("files", {}).items():
        f = path / name
        if not f.is_file() or f.stat().st_size != size:
            raise IndexCorruptError(f"index file {str(f)!r} is missing or truncated; {fix}")
    try:
        # Read by row on demand, not loaded: the answerer touches ~500 rows a question, so the
        # file (377 MB at 100k chunks) stays in the page cache instead of this process's memory.
        # Safe because a segment never changes after publish, and an old one is only ever
        # unlinked (collect_garbage): an unlinked file stays readable through the open
        # descriptor, so a reader still holding an old snapshot keeps answering.
        vectors = SentenceVectors(path / "sentences.npy")
        if vectors.nbytes <= SENTENCES_IN_MEMORY:
            # Small enough to hold: one read now instead of ~100 preadv calls per question
            # (with their Python around them, ~7% of a busy page's CPU at 10k chunks).
            vectors = np.asarray(vectors)
        articles: dict[str, Article] = {}
        position: dict[str, int] = {}
        statements: dict[str, tuple[Statement, ...]] = {}
        # Statements found by older rules (no statements_format, or another) are left out, so each
        # article's are found again on first use (Snapshot.statements_of), without re-embedding.
        current = meta.get("statements_format") == STATEMENTS_FORMAT
        first = [0]
        spans = np.zeros((len(vectors), 2), dtype=np.int32)  # one row per sentence vector
        for rec in read_jsonl(path / "articles.jsonl"):
            row, n = rec.pop("sentence_row"), len(rec["sentences"])
            if row != first[-1] or row + n > len(spans):
                raise ValueError(f"sentence rows out of order at article {rec['id']!r}")
            spans[row:row + n] = np.asarray(rec.pop("sentences"), dtype=np.int32).reshape(n, 2)
            position[rec["id"]] = len(first) - 1
            rows = rec.pop("statements", None)  # absent in a segment written before they were stored
            if rows is not None and current:
                statements[rec["id"]] = tuple(Statement.from_row(r) for r in rows)
            first.append(row + n)
            articles[rec["id"]] = Article(**rec)
        starts = np.asarray(first, dtype=np.int64)
        chunks: list[Chunk] = []
        counts = np.zeros(len(articles), dtype=np.int64)
        last = 0
        for rec in read_jsonl(path / "chunks.jsonl"):
            a = articles[rec["article_id"]]
            i = position[a.id]
            if i < last:
                raise ValueError("chunks.jsonl is not in articles.jsonl order")
            last = i
            counts[i] += 1
            chunks.append(StoredChunk(rec["id"], a.id, rec["start"], rec["end"], a.text))
        chunk_first = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        art_of = np.repeat(np.arange(len(articles)), counts)
        day = np.fromiter((day_number(a.date) for a in articles.values()), np.int32, len(articles))
        dates = day[art_of] if len(art_of) else np.zeros(0, np.int32)
        index = FaissIndex.load(path / "vectors.faiss", meta.get("faiss", {"kind": "flat"}), dates)
        keys = np.fromiter((chunk_key(c.id) for c in chunks), np.int64, len(chunks))
        if not np.array_equal(index.keys, keys):
            raise ValueError("vectors.faiss is not in chunks.jsonl order")
        lexical = BM25.load(path, dates=dates)
        if not np.array_equal(lexical.keys, keys):
            raise ValueError("the BM25 postings are not in chunks.jsonl order")
        hashes = np.load(path / "hashes.npy", allow_pickle=False)
        if hashes.shape != (len(vectors),):
            raise ValueError(f"hashes.npy holds {hashes.shape} for {len(vectors)} sentences")
        seg = Segment(path.name, path, meta, articles, position, SentenceSpans(position, starts, spans),
                      SentenceRows(position, starts, spans), vectors, chunks, chunk_first, index, lexical, hashes,
                      statements)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise IndexCorruptError(f"index at {str(path.parent)!r} is unreadable ({type(e).__name__}: {str(e)[:120]}); "
                                f"{fix}") from None
    if len(index) != len(chunks) or len(vectors) != first[-1]:
        raise IndexCorruptError(f"index at {str(path.parent)!r} has mismatched counts; {fix}")
    return seg


def segment_bytes(seg: NewSegment) -> int:
    """What a segment takes on disk (for the message if it does not fit): the vectors, the
    postings, the article text and ~100 bytes of JSON per chunk and per sentence span."""
    v = seg.sentence_vectors
    return (len(seg.chunks) * seg.vectors.dim * 4 + v.shape[0] * (v.shape[1] * 2 + 24) + seg.lexical.nbytes
            + sum(len(a.text.encode()) + 300 for a in seg.articles) + 100 * len(seg.chunks))


def write_segment(index_dir: Path, seg: NewSegment, stamp: str, made: list[Path]) -> dict:
    """Write ``seg`` beside the live segments (a temporary folder renamed into place); its manifest entry."""
    content = hashlib.sha1("".join(c.id for c in seg.chunks).encode()).hexdigest()[:8]
    name = f"s-{stamp}-{content}"
    tmp = index_dir / f".tmp-{name}"
    made.append(tmp)
    # Serialized in memory and written by Python, so a full disk is an OSError with its errno
    # (faiss.write_index reports it as a RuntimeError with the errno in its text).
    faiss_bytes = seg.vectors.to_bytes()
    tmp.mkdir()
    with open(tmp / "vectors.faiss", "wb") as f:
        f.write(memoryview(faiss_bytes))
    del faiss_bytes
    write_jsonl(tmp / "chunks.jsonl", ({"id": c.id, "article_id": c.article_id, "start": c.start, "end": c.end}
                                        for c in seg.chunks))
    rows, row = {}, 0
    for a in seg.articles:
        rows[a.id] = row
        row += len(seg.sentences[a.id])
    # Who says what is found here, once per article written (the parse: ~80 ms for a 1,600-word one), not
    # per question; an article a merge copies keeps those found before (none found is kept too).
    write_jsonl(tmp / "articles.jsonl", ({**a.__dict__, "sentences": seg.sentences[a.id], "sentence_row": rows[a.id],
                                           "statements": [st.to_row() for st in (seg.statements[a.id] if a.id in
                                                          seg.statements else find_statements(a.text))]}
                                          for a in seg.articles))
    with open(tmp / "sentences.npy", "wb") as f:
        np.save(f, seg.sentence_vectors.astype(np.float16), allow_pickle=False)
    with open(tmp / "hashes.npy", "wb") as f:
        np.save(f, np.asarray(seg.hashes, dtype=np.int64), allow_pickle=False)
    files = [*FILES, *seg.lexical.save(tmp)]
    n_sentences = int(seg.sentence_vectors.shape[0])
    meta = {"format_version": FORMAT_VERSION, "statements_format": STATEMENTS_FORMAT,
            "n_articles": len(seg.articles), "n_chunks": len(seg.chunks),
            "n_sentences": n_sentences, "faiss": seg.vectors.kind,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": {n: (tmp / n).stat().st_size for n in files}}
    for n in files:
        fsync(tmp / n)
    write_atomic(tmp / SEGMENT, json.dumps(meta, indent=1))
    os.rename(tmp, index_dir / name)
    made.append(index_dir / name)
    return {"name": name, "n_articles": len(seg.articles), "n_chunks": len(seg.chunks), "n_sentences": n_sentences,
            "faiss": seg.vectors.kind, "deleted": []}


def read_jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
