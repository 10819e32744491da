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
from .records import (
    Segment,
    SentenceRows,
    SentenceSpans,
    SentenceVectors,
    StoredArticles,
    StoredChunk,
    StoredChunks,
    StoredStatements,
)
from .vectors import FaissIndex, chunk_key, day_number

# 2: lexical.*.npy (variable-length vocabulary, Snowball stems), CURRENT's two lines; 3: segments + deletions
FORMAT_VERSION = 3
SEGMENT = "segment.json"
FILES = ("vectors.faiss", "chunks.jsonl", "articles.jsonl", "sentences.npy", "hashes.npy")
SENTENCES_IN_MEMORY = 64 << 20  # sentence vectors up to this size (~80k sentences, ~15k chunks) are read whole
# What opening a segment needs of its records, as arrays beside the JSON lines (which stay whole,
# so an askdesk without these reads the segment as before): articles.npy (id, publication day,
# line offset in articles.jsonl, first sentence row), chunks.npy (key, id, article position,
# start, end), spans.npy (each sentence's start and end, by row). Segments written before them
# are read line by line, and get them when a merge rewrites them.
COLUMNS = ("articles.npy", "chunks.npy", "spans.npy")
# A segment whose articles.jsonl is larger than this (~7k articles) is opened from its columns,
# each article parsed when first read; a smaller one is parsed whole (fewer open files).
ARTICLES_IN_MEMORY = 16 << 20


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
        # Statements found by older rules (no statements_format, or another) are left out, so each
        # article's are found again on first use (Snapshot.statements_of), without re-embedding.
        current = meta.get("statements_format") == STATEMENTS_FORMAT
        if (all(n in meta.get("files", {}) for n in COLUMNS)
                and meta["files"].get("articles.jsonl", 0) > ARTICLES_IN_MEMORY):
            records = _from_columns(path, len(vectors), current, fix)
        else:
            records = _from_lines(path, len(vectors), current)
        articles, position, statements, starts, spans, chunks, counts, day = records
        chunk_first = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        art_of = np.repeat(np.arange(len(articles)), counts)
        dates = day[art_of] if len(art_of) else np.zeros(0, np.int32)
        index = FaissIndex.load(path / "vectors.faiss", meta.get("faiss", {"kind": "flat"}), dates)
        keys = (chunks.keys if isinstance(chunks, StoredChunks)
                else np.fromiter((chunk_key(c.id) for c in chunks), np.int64, len(chunks)))
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
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, IndexError) as e:
        raise IndexCorruptError(f"index at {str(path.parent)!r} is unreadable ({type(e).__name__}: {str(e)[:120]}); "
                                f"{fix}") from None
    if len(index) != len(chunks) or len(vectors) != int(starts[-1]):
        raise IndexCorruptError(f"index at {str(path.parent)!r} has mismatched counts; {fix}")
    return seg


def _from_lines(path: Path, n_sentences: int, current: bool):
    """The records of a segment, every line of articles.jsonl and chunks.jsonl parsed."""
    articles: dict[str, Article] = {}
    position: dict[str, int] = {}
    statements: dict[str, list] = {}  # stored rows, made Statements when asked for (StoredStatements)
    first = [0]
    spans = np.zeros((n_sentences, 2), dtype=np.int32)  # one row per sentence vector
    for rec in read_jsonl(path / "articles.jsonl"):
        row, n = rec.pop("sentence_row"), len(rec["sentences"])
        if row != first[-1] or row + n > len(spans):
            raise ValueError(f"sentence rows out of order at article {rec['id']!r}")
        spans[row:row + n] = np.asarray(rec.pop("sentences"), dtype=np.int32).reshape(n, 2)
        position[rec["id"]] = len(first) - 1
        rows = rec.pop("statements", None)  # absent in a segment written before they were stored
        if rows is not None and current:
            statements[rec["id"]] = rows
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
    day = np.fromiter((day_number(a.date) for a in articles.values()), np.int32, len(articles))
    return articles, position, StoredStatements(statements.get, statements), starts, spans, chunks, counts, day


def _from_columns(path: Path, n_sentences: int, current: bool, fix: str):
    """The records of a segment from its columns (`COLUMNS`): no line parsed until it is read."""
    arts = np.load(path / "articles.npy", allow_pickle=False)
    cols = np.load(path / "chunks.npy", allow_pickle=False)
    spans = np.load(path / "spans.npy", allow_pickle=False)
    if spans.shape != (n_sentences, 2):
        raise ValueError(f"spans.npy holds {spans.shape} for {n_sentences} sentences")
    ids = arts["id"].tolist()
    offsets = np.append(arts["offset"], (path / "articles.jsonl").stat().st_size)
    starts = np.append(arts["first"], n_sentences).astype(np.int64)
    article = cols["article"].astype(np.int64)
    if ((np.diff(offsets) <= 0).any() or starts[0] != 0 or (np.diff(starts) < 0).any()
            or (np.diff(article) < 0).any() or (len(article) and (article[0] < 0 or article[-1] >= len(ids)))):
        raise ValueError("the columns of articles.jsonl and chunks.jsonl are out of order")
    articles = StoredArticles(path / "articles.jsonl", ids, offsets, fix)
    if ids:
        articles[ids[0]], articles[ids[-1]]  # the lines at both ends are where the columns say (cheap)
    chunks = StoredChunks(cols["id"], article, cols["start"].astype(np.int64), cols["end"].astype(np.int64),
                          articles, keys=cols["key"].astype(np.int64))
    counts = np.bincount(article, minlength=len(ids)).astype(np.int64)
    statements = StoredStatements(articles.statement_rows, articles) if current else StoredStatements()
    return (articles, articles.position, statements, starts, np.ascontiguousarray(spans, dtype=np.int32), chunks,
            counts, arts["day"].astype(np.int32))


def segment_bytes(seg: NewSegment) -> int:
    """What a segment takes on disk (for the message if it does not fit): the vectors, the
    postings, the article text, ~100 bytes of JSON per chunk and per sentence span, and the
    columns (~100 bytes a chunk and an article, 8 a sentence)."""
    v = seg.sentence_vectors
    return (len(seg.chunks) * seg.vectors.dim * 4 + v.shape[0] * (v.shape[1] * 2 + 32) + seg.lexical.nbytes
            + sum(len(a.text.encode()) + 400 for a in seg.articles) + 200 * len(seg.chunks))


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
    offsets = write_jsonl(tmp / "articles.jsonl", (
        {**a.__dict__, "sentences": seg.sentences[a.id], "sentence_row": rows[a.id],
         "statements": [st.to_row() for st in (seg.statements[a.id] if a.id in seg.statements
                                               else find_statements(a.text))]}
        for a in seg.articles))
    write_columns(tmp, seg, offsets, rows)
    with open(tmp / "sentences.npy", "wb") as f:
        np.save(f, np.asarray(seg.sentence_vectors, dtype=np.float16), allow_pickle=False)  # no copy if float16
    with open(tmp / "hashes.npy", "wb") as f:
        np.save(f, np.asarray(seg.hashes, dtype=np.int64), allow_pickle=False)
    files = [*FILES, *COLUMNS, *seg.lexical.save(tmp)]
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


def read_jsonl(path: Path, block: int = 4096) -> Iterator[dict]:
    """The rows of a JSON-lines file, in order. Lines are parsed ``block`` at a time as one JSON
    array: one ``json.loads`` a line was half the time of reading 100k chunk rows."""
    with open(path, encoding="utf-8") as f:
        lines: list[str] = []
        for line in f:
            if line.strip():
                lines.append(line)
                if len(lines) == block:
                    yield from json.loads("[" + ",".join(lines) + "]")
                    lines = []
        if lines:
            yield from json.loads("[" + ",".join(lines) + "]")


def write_jsonl(path: Path, rows) -> list[int]:
    """Write one JSON object a line; the byte offset where each line starts."""
    offsets, at = [], 0
    with open(path, "wb") as f:
        for r in rows:
            line = (json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8")
            f.write(line)
            offsets.append(at)
            at += len(line)
    return offsets


def write_columns(folder: Path, seg: NewSegment, offsets: list[int], rows: dict[str, int]) -> None:
    """The segment's `COLUMNS`, from the same records as its JSON lines."""
    position = {a.id: i for i, a in enumerate(seg.articles)}
    id_len = max((len(x) for x in (*position, *(c.id for c in seg.chunks))), default=1)
    arts = np.zeros(len(seg.articles), [("id", f"<U{id_len}"), ("day", "<i4"), ("offset", "<i8"), ("first", "<i8")])
    arts["id"] = [a.id for a in seg.articles]
    arts["day"] = [day_number(a.date) for a in seg.articles]
    arts["offset"] = offsets
    arts["first"] = [rows[a.id] for a in seg.articles]
    cols = np.zeros(len(seg.chunks), [("key", "<i8"), ("id", f"<U{id_len}"), ("article", "<i4"), ("start", "<i8"),
                                      ("end", "<i8")])
    cols["key"] = [chunk_key(c.id) for c in seg.chunks]
    cols["id"] = [c.id for c in seg.chunks]
    cols["article"] = [position[c.article_id] for c in seg.chunks]
    cols["start"] = [c.start for c in seg.chunks]
    cols["end"] = [c.end for c in seg.chunks]
    spans = np.asarray([span for a in seg.articles for span in seg.sentences[a.id]], dtype=np.int32).reshape(-1, 2)
    for name, arr in zip(COLUMNS, (arts, cols, spans)):
        with open(folder / name, "wb") as f:
            np.save(f, arr, allow_pickle=False)


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
