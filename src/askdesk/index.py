"""The index folder: FAISS vectors, article and chunk records, a manifest; atomic publish.

Layout (plain files, no pickle)::

    index/
      CURRENT            name of the live generation; replaced atomically with os.replace
      .lock              held by the one process that writes
      g-<time>-<hash>/   one complete generation
        manifest.json    written last: format, askdesk version, model, chunking, counts, file sizes
        vectors.faiss    IndexIDMap2 over inner-product search of normalized float32 chunk vectors
        chunks.jsonl     one chunk a line: faiss id, chunk id, article id, character span
        articles.jsonl   one article a line, with its sentence spans
        sentences.npy    float16 sentence vectors, rows in article order (for answering)
        lexical.npz      BM25 postings (see retrieve.py)

A writer builds a new generation in a temporary folder, renames it into place, and only then
points CURRENT at it. A crash at any point leaves CURRENT naming the last good generation.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

from . import __version__
from .errors import IndexCorruptError, IndexLockedError, IndexMismatchError, IndexMissingError
from .types import Article, Chunk

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
FILES = ("vectors.faiss", "chunks.jsonl", "articles.jsonl", "sentences.npy", "lexical.npz")


def faiss_id(chunk_id: str) -> int:
    """A chunk's FAISS id: 60 bits of its content hash, so ids survive removals and rebuilds."""
    return int(chunk_id[:15], 16)


@dataclass
class Snapshot:
    """One loaded generation; never modified after load, so readers can share it."""

    path: Path
    manifest: dict
    articles: dict[str, Article]
    sentences: dict[str, list[tuple[int, int]]]  # article id -> sentence spans
    sentence_row: dict[str, int]  # article id -> first row in sentence_vectors
    sentence_vectors: np.ndarray
    chunks: list[Chunk]
    faiss_index: object
    lexical: dict[str, np.ndarray]
    row_of: dict[int, int] = field(default_factory=dict)  # faiss id -> position in chunks

    def __post_init__(self) -> None:
        self.row_of = {faiss_id(c.id): i for i, c in enumerate(self.chunks)}

    def search(self, query: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top ``k`` chunks by inner product: (row in ``chunks``, score), best first.

        ``allowed`` (a boolean mask over rows) keeps only those rows, e.g. a date range.
        """
        if not self.chunks:
            return []
        want = k if allowed is None else min(len(self.chunks), max(k * 10, 200))  # over-fetch, then filter
        scores, ids = self.faiss_index.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32),
                                              min(want, len(self.chunks)))
        rows = [(self.row_of[int(i)], float(s)) for s, i in zip(scores[0], ids[0]) if i >= 0]
        if allowed is not None:
            rows = [(r, s) for r, s in rows if allowed[r]]
        return rows[:k]

    def chunk_vectors(self) -> dict[str, np.ndarray]:
        """chunk id -> vector, for reuse by the next generation."""
        ids, vecs = _all_vectors(self.faiss_index)
        by_fid = dict(zip(ids.tolist(), vecs))
        return {c.id: by_fid[faiss_id(c.id)] for c in self.chunks if faiss_id(c.id) in by_fid}


def current_generation(index_dir: str | Path) -> str | None:
    """The live generation's name, or None when there is no index."""
    try:
        return (Path(index_dir) / CURRENT).read_text().strip() or None
    except FileNotFoundError:
        return None


def load(index_dir: str | Path, *, expect: dict | None = None) -> Snapshot:
    """Load the live generation, refusing an index that ``expect`` (model, chunking) does not match."""
    import faiss

    index_dir = Path(index_dir)
    gen = current_generation(index_dir)
    if gen is None:
        raise IndexMissingError(f"no index at {str(index_dir)!r}; build one with: askdesk index corpus/ --index {index_dir}")
    path = index_dir / gen
    manifest = read_manifest(path)
    check_manifest(manifest, expect or {}, index_dir)
    for name, size in manifest.get("files", {}).items():
        f = path / name
        if not f.is_file() or f.stat().st_size != size:
            raise IndexCorruptError(f"index file {str(f)!r} is missing or truncated; rebuild with: askdesk index corpus/ --index {index_dir}")
    try:
        articles, sentences, rows = {}, {}, {}
        for rec in _read_jsonl(path / "articles.jsonl"):
            sentences[rec["id"]] = [tuple(s) for s in rec.pop("sentences")]
            rows[rec["id"]] = rec.pop("sentence_row")
            articles[rec["id"]] = Article(**rec)
        chunks = []
        for rec in _read_jsonl(path / "chunks.jsonl"):
            text = articles[rec["article_id"]].text
            chunks.append(Chunk(id=rec["id"], article_id=rec["article_id"], start=rec["start"], end=rec["end"],
                                text=text[rec["start"]:rec["end"]]))
        # Memory-mapped, not read: the answerer touches ~30 rows a question, so the rest of the
        # file (377 MB at 100k chunks) stays in the page cache instead of this process's memory.
        # Safe because a generation folder never changes after publish, and an old one is only
        # ever unlinked (collect_garbage): on Linux an unlinked file stays readable through an
        # existing mapping, so a reader still holding an old Snapshot keeps answering.
        vectors = np.load(path / "sentences.npy", mmap_mode="r", allow_pickle=False)
        with np.load(path / "lexical.npz", allow_pickle=False) as z:
            lexical = {k: z[k] for k in z.files}
        index = faiss.read_index(str(path / "vectors.faiss"))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise IndexCorruptError(
            f"index at {str(index_dir)!r} is unreadable ({type(e).__name__}: {str(e)[:120]}); "
            f"rebuild with: askdesk index corpus/ --index {index_dir}"
        ) from None
    if index.ntotal != len(chunks) or vectors.shape[0] != sum(len(s) for s in sentences.values()):
        raise IndexCorruptError(f"index at {str(index_dir)!r} has mismatched counts; rebuild with: askdesk index corpus/ --index {index_dir}")
    return Snapshot(path, manifest, articles, sentences, rows, vectors, chunks, index, lexical)


def read_manifest(path: Path) -> dict:
    try:
        return json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise IndexCorruptError(f"{str(path / MANIFEST)!r} is missing; rebuild with: askdesk index corpus/") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IndexCorruptError(f"{str(path / MANIFEST)!r} is not valid JSON; rebuild with: askdesk index corpus/") from None


def check_manifest(manifest: dict, expect: dict, index_dir: Path) -> None:
    fix = f"rebuild with: askdesk index corpus/ --index {index_dir}"
    fmt = manifest.get("format_version")
    if fmt != FORMAT_VERSION:
        newer = isinstance(fmt, int) and fmt > FORMAT_VERSION
        raise IndexMismatchError(
            f"index format {fmt!r} is {'newer than' if newer else 'not'} this askdesk's ({FORMAT_VERSION}); "
            + ("upgrade askdesk, or " if newer else "") + fix
        )
    for key, want in expect.items():
        have = manifest.get(key)
        if have != want:
            raise IndexMismatchError(f"index was built with {key}={have!r} but askdesk is set to {want!r}; "
                                     f"set ASKDESK_{key.upper()}={have} or {fix}")


def publish(
    index_dir: str | Path,
    *,
    manifest: dict,
    articles: list[Article],
    sentences: dict[str, list[tuple[int, int]]],
    sentence_vectors: np.ndarray,
    chunks: list[Chunk],
    chunk_vectors: np.ndarray,
    lexical: dict[str, np.ndarray],
) -> Path:
    """Write a new generation and make it live atomically. Caller holds ``lock(index_dir)``."""
    import faiss

    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    content = hashlib.sha1("".join(c.id for c in chunks).encode()).hexdigest()[:8]
    name = f"g-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{content}"
    tmp = index_dir / f".tmp-{name}"
    tmp.mkdir()
    dim = int(manifest["dim"])
    flat = faiss.IndexFlatIP(dim)
    index = faiss.IndexIDMap2(flat)
    if len(chunks):
        index.add_with_ids(np.ascontiguousarray(chunk_vectors, dtype=np.float32),
                           np.array([faiss_id(c.id) for c in chunks], dtype=np.int64))
    faiss.write_index(index, str(tmp / "vectors.faiss"))
    _write_jsonl(tmp / "chunks.jsonl", ({"id": c.id, "article_id": c.article_id, "start": c.start, "end": c.end}
                                        for c in chunks))
    rows, row = {}, 0
    for a in articles:
        rows[a.id] = row
        row += len(sentences[a.id])
    _write_jsonl(tmp / "articles.jsonl", ({**a.__dict__, "sentences": sentences[a.id], "sentence_row": rows[a.id]}
                                          for a in articles))
    with open(tmp / "sentences.npy", "wb") as f:
        np.save(f, sentence_vectors.astype(np.float16), allow_pickle=False)
    with open(tmp / "lexical.npz", "wb") as f:
        np.savez(f, **lexical)
    manifest = {
        **manifest,
        "format_version": FORMAT_VERSION,
        "askdesk_version": __version__,
        "n_articles": len(articles),
        "n_chunks": len(chunks),
        "n_sentences": int(sentence_vectors.shape[0]),
        "corpus_hash": hashlib.sha1("".join(sorted(a.id for a in articles)).encode()).hexdigest(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": {n: (tmp / n).stat().st_size for n in FILES},
    }
    for n in FILES:
        _fsync(tmp / n)
    _write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))
    os.rename(tmp, index_dir / name)
    _fsync_dir(index_dir)
    _write_atomic(index_dir / CURRENT, name + "\n")  # the publish: one os.replace
    collect_garbage(index_dir, keep=name)
    logger.info("published %s (%d articles, %d chunks)", name, len(articles), len(chunks))
    return index_dir / name


@contextlib.contextmanager
def lock(index_dir: str | Path, *, timeout: float = 0.0) -> Iterator[None]:
    """Exclusive writer lock on the index folder; waits up to ``timeout`` seconds."""
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / ".lock", "a+") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise IndexLockedError(
                        f"another askdesk process is writing {str(index_dir)!r}; wait for it to finish and run again"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def collect_garbage(index_dir: str | Path, keep: str | None = None) -> None:
    """Remove generations other than the live one, and folders a crashed writer left behind.

    Caller holds ``lock(index_dir)``. Removing an old generation never breaks a reader that
    still holds it: its records are in memory, and its memory-mapped ``sentences.npy`` stays
    readable after the unlink (POSIX semantics; askdesk already needs ``fcntl``).
    """
    index_dir = Path(index_dir)
    keep = keep or current_generation(index_dir)
    if keep is None or not index_dir.is_dir():
        return
    for p in index_dir.iterdir():
        if p.is_dir() and p.name != keep and (p.name.startswith("g-") or p.name.startswith(".tmp-")):
            shutil.rmtree(p, ignore_errors=True)


def _all_vectors(index) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    vecs = index.index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, index.d), np.float32)
    return ids, vecs


def _read_jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
