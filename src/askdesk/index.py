"""The index folder: FAISS vectors, BM25 postings, article and chunk records, a manifest; atomic publish.

Layout (plain files, no pickle)::

    index/
      CURRENT            the live generation's name, and on a second line the one before it (kept
                         for `askdesk rollback`); replaced atomically with os.replace
      .lock              held by the one process that writes
      g-<time>-<hash>/   one complete generation
        manifest.json    written last: format, askdesk version, model, chunking, counts, file sizes,
                         the corpus folder, and "faiss": {"kind": "flat"} or
                         {"kind": "ivf", "nlist": .., "nprobe": .., "vectors": "fp16"}
        vectors.faiss    IndexIDMap2 keyed by chunk key (vectors.chunk_key), rows in chunks.jsonl
                         order, over exact inner product, or IVF with float16 vectors above
                         Config.ann_above chunks (vectors.FaissIndex)
        chunks.jsonl     one chunk a line: chunk id, article id, character span
        articles.jsonl   one article a line, with its sentence spans
        sentences.npy    float16 sentence vectors, rows in article order (for answering)
        lexical.*.npy    BM25 postings, one array a file (lexical.BM25), memory-mapped when read

One invariant ties the files together: row i of vectors.faiss, of chunks.jsonl and of the BM25
documents is the same chunk, and each chunk's date is its article's (FolderSnapshot.chunk_dates).
Outside this module and vectors/lexical, chunks are addressed by key, never by row.

A reader reads the sentences.npy rows it needs on demand (records.SentenceVectors), memory-maps
the postings and slices chunk text from the article text, so a loaded index costs about its FAISS
vectors, the article text and little else.

A writer builds a new generation in a temporary folder, renames it into place, and only then
points CURRENT at it. A crash at any point leaves CURRENT naming the last good generation; a
write that fails (a full disk) removes its temporary folder at once and says what to free.
The generation before the live one is kept, so `rollback` can bring it back.
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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import __version__
from .errors import IndexCorruptError, IndexLockedError, IndexMismatchError, IndexMissingError, IndexWriteError
from .lexical import BM25
from .records import FolderSnapshot, SentenceRows, Sentences, SentenceSpans, SentenceVectors, Snapshot, StoredChunk
from .types import Article, Chunk
from .vectors import FaissIndex, chunk_key, day_number

__all__ = ["FolderSnapshot", "Generation", "Sentences", "Snapshot", "load", "publish", "lock", "rollback"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: lexical.*.npy (variable-length vocabulary, Snowball stems), CURRENT's two lines
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
FILES = ("vectors.faiss", "chunks.jsonl", "articles.jsonl", "sentences.npy")
SENTENCES_IN_MEMORY = 64 << 20  # sentence vectors up to this size (~80k sentences, ~15k chunks) are read whole


@dataclass
class Generation:
    """A generation ready to publish: what `build.assemble` returns and `publish` writes."""

    manifest: dict  # model, dim, tokenizer, chunk settings, corpus: the writer's part
    articles: list[Article]
    sentences: dict[str, list[tuple[int, int]]]
    sentence_vectors: np.ndarray  # rows in article order, then sentence order
    chunks: list[Chunk]  # rows of vectors and lexical
    vectors: FaissIndex
    lexical: BM25


def current_generation(index_dir: str | Path) -> str | None:
    """The live generation's name, or None when there is no index."""
    return _pointers(Path(index_dir))[0]


def previous_generation(index_dir: str | Path) -> str | None:
    """The generation `rollback` returns to, or None when there is none (or it is gone)."""
    index_dir = Path(index_dir)
    live, name = _pointers(index_dir)
    if name is None or name == live or not (index_dir / name / MANIFEST).is_file():
        return None
    return name


def _pointers(index_dir: Path) -> tuple[str | None, str | None]:
    """CURRENT's two lines: the live generation and the previous one. One file, so that a
    publish or a rollback moves both with one os.replace."""
    try:
        lines = (index_dir / CURRENT).read_text().split()
    except FileNotFoundError:
        return None, None
    return (lines[0] if lines else None), (lines[1] if len(lines) > 1 else None)


def _point(index_dir: Path, live: str, previous: str | None) -> None:
    _write_atomic(index_dir / CURRENT, live + "\n" + (previous + "\n" if previous else ""))


def recorded_corpus(index_dir: str | Path) -> Path | None:
    """The article folder the live generation was last synced with, if it still exists.

    The manifest keeps it absolute and relative to the index folder, so a project folder that
    was moved (index and corpus together) still finds its corpus."""
    index_dir = Path(index_dir)
    gen = current_generation(index_dir)
    if gen is None:
        return None
    try:
        corpus = json.loads((index_dir / gen / MANIFEST).read_text()).get("corpus") or {}
    except (OSError, ValueError):
        return None
    for p in (corpus.get("path"), corpus.get("relative") and index_dir / corpus["relative"]):
        if p and Path(p).is_dir():
            return Path(p).resolve()
    return None


def corpus_record(folder: str | Path | None, index_dir: str | Path) -> dict | None:
    """The manifest's "corpus" entry for ``folder``: its absolute path and its path from the index."""
    if folder is None:
        return None
    folder = Path(folder).resolve()
    return {"path": str(folder), "relative": os.path.relpath(folder, Path(index_dir).resolve())}


def load(index_dir: str | Path, *, expect: dict | None = None) -> FolderSnapshot:
    """Load the live generation, refusing an index that ``expect`` (model, chunking) does not match.

    Raises:
        IndexMissingError, IndexMismatchError, IndexCorruptError: each with the command that fixes it.
    """
    index_dir = Path(index_dir)
    gen = current_generation(index_dir)
    if gen is None:
        raise IndexMissingError(f"no index at {str(index_dir)!r}; "
                                f"build one with: askdesk index corpus/ --index {index_dir}")
    path = index_dir / gen
    manifest = read_manifest(path, index_dir)
    check_manifest(manifest, expect or {}, index_dir)
    for name, size in manifest.get("files", {}).items():
        f = path / name
        if not f.is_file() or f.stat().st_size != size:
            raise IndexCorruptError(f"index file {str(f)!r} is missing or truncated; {_repair(index_dir)}")
    try:
        # Read by row on demand, not loaded: the answerer touches ~500 rows a question, so the
        # file (377 MB at 100k chunks) stays in the page cache instead of this process's memory.
        # Safe because a generation folder never changes after publish, and an old one is only
        # ever unlinked (collect_garbage): an unlinked file stays readable through the open
        # descriptor, so a reader still holding an old snapshot keeps answering.
        vectors = SentenceVectors(path / "sentences.npy")
        if vectors.nbytes <= SENTENCES_IN_MEMORY:
            # Small enough to hold: one read now instead of ~100 preadv calls per question
            # (with their Python around them, ~7% of a busy page's CPU at 10k chunks).
            vectors = np.asarray(vectors)
        articles: dict[str, Article] = {}
        position: dict[str, int] = {}
        first = [0]
        spans = np.zeros((len(vectors), 2), dtype=np.int32)  # one row per sentence vector
        for rec in _read_jsonl(path / "articles.jsonl"):
            row, n = rec.pop("sentence_row"), len(rec["sentences"])
            if row != first[-1] or row + n > len(spans):
                raise ValueError(f"sentence rows out of order at article {rec['id']!r}")
            spans[row:row + n] = np.asarray(rec.pop("sentences"), dtype=np.int32).reshape(n, 2)
            position[rec["id"]] = len(first) - 1
            first.append(row + n)
            articles[rec["id"]] = Article(**rec)
        starts = np.asarray(first, dtype=np.int64)
        chunks: list[Chunk] = []
        for rec in _read_jsonl(path / "chunks.jsonl"):
            a = articles[rec["article_id"]]
            chunks.append(StoredChunk(rec["id"], a.id, rec["start"], rec["end"], a.text))
        day = {a.id: day_number(a.date) for a in articles.values()}
        dates = np.fromiter((day[c.article_id] for c in chunks), np.int32, len(chunks))
        index = FaissIndex.load(path / "vectors.faiss", manifest.get("faiss", {"kind": "flat"}), dates)
        keys = np.fromiter((chunk_key(c.id) for c in chunks), np.int64, len(chunks))
        if not np.array_equal(index.keys, keys):
            raise ValueError("vectors.faiss is not in chunks.jsonl order")
        lexical = BM25.load(path, dates=dates)
        if not np.array_equal(lexical.keys, keys):
            raise ValueError("the BM25 postings are not in chunks.jsonl order")
        snap = FolderSnapshot(path, manifest, articles, SentenceSpans(position, starts, spans),
                              SentenceRows(position, starts, spans), vectors, chunks, index, lexical)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise IndexCorruptError(f"index at {str(index_dir)!r} is unreadable ({type(e).__name__}: {str(e)[:120]}); "
                                f"{_repair(index_dir)}") from None
    if len(index) != len(chunks) or len(vectors) != first[-1]:
        raise IndexCorruptError(f"index at {str(index_dir)!r} has mismatched counts; {_repair(index_dir)}")
    return snap


def load_articles(index_dir: str | Path) -> list[Article]:
    """The live generation's articles from articles.jsonl alone (any format version): what a
    writer keeps when the rest of an index cannot be reused (another format, another model, a
    damaged file), so that re-embedding never loses an article. [] when unreadable."""
    index_dir = Path(index_dir)
    gen = current_generation(index_dir)
    if gen is None:
        return []
    try:
        out = []
        for rec in _read_jsonl(index_dir / gen / "articles.jsonl"):
            rec.pop("sentences", None)
            rec.pop("sentence_row", None)
            out.append(Article(**rec))
        return out
    except (OSError, ValueError, TypeError) as e:
        logger.warning("articles of %s unreadable (%s); nothing to keep from it", index_dir / gen, e)
        return []


def _repair(index_dir: Path) -> str:
    """What to run for a damaged live generation: rollback when an earlier one is kept, else a rebuild."""
    back = "`askdesk rollback --index {d}` brings back the generation before it, or " if previous_generation(
        index_dir) else ""
    return (back + "`askdesk index --index {d}` rebuilds it from its folder (keeping every article "
            "articles.jsonl still holds)").format(d=index_dir)


def read_manifest(path: Path, index_dir: Path | None = None) -> dict:
    fix = _repair(index_dir) if index_dir is not None else "run: askdesk index"
    try:
        return json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise IndexCorruptError(f"{str(path / MANIFEST)!r} is missing; {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IndexCorruptError(f"{str(path / MANIFEST)!r} is not valid JSON; {fix}") from None


def check_manifest(manifest: dict, expect: dict, index_dir: Path) -> None:
    """Refuse another format or model than ``expect``, with the command that brings them together."""
    redo = f"askdesk index --index {index_dir}"
    fmt = manifest.get("format_version")
    if fmt != FORMAT_VERSION:
        if isinstance(fmt, int) and fmt > FORMAT_VERSION:
            raise IndexMismatchError(f"index format {fmt!r} is newer than this askdesk's ({FORMAT_VERSION}); "
                                     "upgrade askdesk (pip install -U askdesk)")
        n = manifest.get("n_articles", "its")
        raise IndexMismatchError(f"index format {fmt!r} is older than this askdesk's ({FORMAT_VERSION}); upgrade it "
                                 f"with: {redo} (embeds its {n} articles again and keeps them all)")
    for key, want in expect.items():
        have = manifest.get(key)
        if have != want:
            raise IndexMismatchError(f"index was built with {key}={have!r} but askdesk is set to {want!r}; "
                                     f"set ASKDESK_{key.upper()}={have}, or embed it again with: {redo} --{key} {want}")


def publish(index_dir: str | Path, gen: Generation) -> Path:
    """Write a new generation and make it live atomically. Caller holds ``lock(index_dir)``.

    Raises:
        IndexWriteError: the write failed (a full disk); nothing of it is left behind.
    """
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    content = hashlib.sha1("".join(c.id for c in gen.chunks).encode()).hexdigest()[:8]
    name = f"g-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{content}"
    tmp = index_dir / f".tmp-{name}"
    # Serialized in memory and written by Python, so a full disk is an OSError with its errno
    # (faiss.write_index reports it as a RuntimeError with the errno in its text).
    faiss_bytes = gen.vectors.to_bytes()
    old = current_generation(index_dir)
    # What the generation will take on disk (for the message if it does not fit): the vectors,
    # the postings, the article text and ~100 bytes of JSON per chunk and per sentence span.
    need = (faiss_bytes.nbytes + gen.sentence_vectors.shape[0] * (gen.sentence_vectors.shape[1] * 2 + 16)
            + gen.lexical.nbytes + sum(len(a.text.encode()) + 300 for a in gen.articles) + 100 * len(gen.chunks))
    try:
        tmp.mkdir()
        with open(tmp / "vectors.faiss", "wb") as f:
            f.write(memoryview(faiss_bytes))
        del faiss_bytes
        _write_jsonl(tmp / "chunks.jsonl", ({"id": c.id, "article_id": c.article_id, "start": c.start, "end": c.end}
                                            for c in gen.chunks))
        rows, row = {}, 0
        for a in gen.articles:
            rows[a.id] = row
            row += len(gen.sentences[a.id])
        _write_jsonl(tmp / "articles.jsonl", ({**a.__dict__, "sentences": gen.sentences[a.id],
                                               "sentence_row": rows[a.id]} for a in gen.articles))
        with open(tmp / "sentences.npy", "wb") as f:
            np.save(f, gen.sentence_vectors.astype(np.float16), allow_pickle=False)
        files = [*FILES, *gen.lexical.save(tmp)]
        manifest = {
            **gen.manifest,
            "format_version": FORMAT_VERSION,
            "askdesk_version": __version__,
            "n_articles": len(gen.articles),
            "n_chunks": len(gen.chunks),
            "n_sentences": int(gen.sentence_vectors.shape[0]),
            "faiss": gen.vectors.kind,
            "corpus_hash": hashlib.sha1("".join(sorted(a.id for a in gen.articles)).encode()).hexdigest(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": {n: (tmp / n).stat().st_size for n in files},
        }
        for n in files:
            _fsync(tmp / n)
        _write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))
        os.rename(tmp, index_dir / name)
        _fsync_dir(index_dir)
        _point(index_dir, name, old)  # the publish: one os.replace
    except OSError as e:
        # Nothing half-written stays behind to keep the disk full: the new generation goes at
        # once, unless CURRENT already names it (then only the clean-up failed).
        if current_generation(index_dir) != name:
            for p in (tmp, index_dir / name):
                shutil.rmtree(p, ignore_errors=True)
        raise write_error(e, index_dir, need=need) from None
    collect_garbage(index_dir, keep=name)
    logger.info("published %s (%d articles, %d chunks)", name, len(gen.articles), len(gen.chunks))
    return index_dir / name


def write_error(e: OSError, index_dir: Path, action: str = "write the new index", *,
                need: int | None = None) -> IndexWriteError:
    """One line for a failed write: which folder, why, and what to do; the old index is intact.

    ``need``: the bytes the new generation takes, said with what is free."""
    where = str(index_dir)
    try:
        free = shutil.disk_usage(index_dir).free
    except OSError:
        free = None
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
               errno.EFBIG: "a file size limit was reached (ulimit -f)"}[e.errno]
        need = (f"; the new generation needs about {_mb(need)}"
                + (f" and {_mb(free)} are free" if free is not None else "")) if need else ""
        return IndexWriteError(f"could not {action} in {where!r}: {why}{need}. The index is unchanged; free space "
                               f"on that disk (`df -h {where}`; `askdesk info --index {where}` shows what it holds) "
                               "or use another --index folder, then run the command again")
    return IndexWriteError(f"could not {action} in {where!r}: {e.strerror or e} "
                           f"({e.filename or where}). The index is unchanged; fix that and run the command again")


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
    """Remove generations other than the live one and the one before it (`rollback`), and
    folders a crashed writer left behind.

    Caller holds ``lock(index_dir)``. Removing an old generation never breaks a reader that
    still holds it: its records are in memory, and its open ``sentences.npy`` and mapped
    ``lexical.npz`` stay readable after the unlink (POSIX semantics; askdesk already needs ``fcntl``).
    """
    index_dir = Path(index_dir)
    keep = keep or current_generation(index_dir)
    if keep is None or not index_dir.is_dir():
        return
    kept = {keep, _pointers(index_dir)[1]}
    for p in index_dir.iterdir():
        if p.is_dir() and p.name not in kept and (p.name.startswith("g-") or p.name.startswith(".tmp-")):
            shutil.rmtree(p, ignore_errors=True)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} KB"


def rollback(index_dir: str | Path) -> dict:
    """Make the previous generation live again; the one it replaces becomes the previous one,
    so a second rollback undoes the first. Caller holds ``lock(index_dir)``.

    Returns:
        ``{"generation", "replaced", "n_articles", "n_chunks", "created"}`` of the generation now live.

    Raises:
        IndexMissingError: no index, or no earlier generation is kept.
    """
    index_dir = Path(index_dir)
    now = current_generation(index_dir)
    if now is None:
        raise IndexMissingError(f"no index at {str(index_dir)!r}; "
                                f"build one with: askdesk index corpus/ --index {index_dir}")
    back = previous_generation(index_dir)
    if back is None:
        raise IndexMissingError(f"the index at {str(index_dir)!r} keeps no earlier generation to roll back to "
                                "(it was written once, or by an askdesk that did not keep one)")
    m = read_manifest(index_dir / back)  # refuse a broken one before pointing at it
    try:
        _point(index_dir, back, now)
    except OSError as e:
        raise write_error(e, index_dir, "roll back") from None
    logger.info("rolled %s back from %s to %s", index_dir, now, back)
    return {"generation": back, "replaced": now, "n_articles": m.get("n_articles", 0),
            "n_chunks": m.get("n_chunks", 0), "created": m.get("created")}


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
