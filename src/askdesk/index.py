"""The index folder: immutable segments, generations that list them, atomic publish.

Layout (plain files, no pickle)::

    index/
      CURRENT            the live generation's name, and on a second line the one before it (kept
                         for `askdesk rollback`); replaced atomically with os.replace
      .lock              held by the one process that writes
      s-<time>-<hash>/   a segment: some articles with everything answering needs of them; never
                         changed once written, shared by the generations that list it
        segment.json     written last: counts, file sizes, "faiss": {"kind": "flat"} or
                         {"kind": "ivf", "nlist": .., "nprobe": .., "vectors": "fp16"}
        vectors.faiss    IndexIDMap2 keyed by chunk key (vectors.chunk_key), rows in chunks.jsonl
                         order, over exact inner product, or IVF with float16 vectors above
                         Config.ann_above chunks (vectors.FaissIndex)
        chunks.jsonl     one chunk a line: chunk id, article id, character span
        articles.jsonl   one article a line, with its sentence spans
        sentences.npy    float16 sentence vectors, rows in article order (for answering)
        hashes.npy       a 64-bit hash of each sentence, same rows (finds near-duplicate articles)
        lexical.*.npy    BM25 postings of its chunks, one array a file (lexical.BM25), memory-mapped
      g-<time>-<hash>/   a generation
        manifest.json    format, askdesk version, model, chunking, counts, the corpus folder, and
                         the segments it holds, each with the ids of its articles deleted since

Within a segment row i of vectors.faiss, of chunks.jsonl and of the BM25 documents is the same
chunk, and each chunk's date is its article's. Outside this module and vectors/lexical/records,
chunks are addressed by key, never by row.

A write costs what it changes: adding an article writes a segment holding it and a new manifest
listing the old segments and the new one; removing one writes only a manifest (the deletion
list). Segments are merged by size tiers (`merge_plan`, `askdesk optimize`), which drops what
was deleted. A reader loads only the segments it does not hold yet (`load(reuse=...)`).

A writer writes new folders beside the live ones (a temporary name, renamed into place) and only
then points CURRENT at the new generation: a crash at any point leaves CURRENT naming the last
good generation, whose segments are all still there; a write that fails (a full disk) removes
what it wrote at once and says what to free. The generation before the live one is kept, with
its segments, so `rollback` can bring it back; a segment goes only when no kept generation lists it.
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import __version__
from .errors import IndexCorruptError, IndexLockedError, IndexMismatchError, IndexMissingError, IndexWriteError
from .lexical import BM25
from .records import (
    FolderSnapshot,
    Segment,
    SentenceRows,
    Sentences,
    SentenceSpans,
    SentenceVectors,
    Snapshot,
    StoredChunk,
)
from .types import Article, Chunk
from .vectors import FaissIndex, chunk_key, day_number

__all__ = ["FolderSnapshot", "Generation", "Kept", "NewSegment", "Segment", "Sentences", "Snapshot", "load",
           "publish", "lock", "rollback"]

logger = logging.getLogger(__name__)

# 2: lexical.*.npy (variable-length vocabulary, Snowball stems), CURRENT's two lines; 3: segments + deletions
FORMAT_VERSION = 3
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
SEGMENT = "segment.json"
FILES = ("vectors.faiss", "chunks.jsonl", "articles.jsonl", "sentences.npy", "hashes.npy")
SENTENCES_IN_MEMORY = 64 << 20  # sentence vectors up to this size (~80k sentences, ~15k chunks) are read whole


@dataclass
class NewSegment:
    """A segment ready to write: what `build.assemble` and `build.merge` make, `publish` writes."""

    articles: list[Article]
    sentences: dict[str, list[tuple[int, int]]]
    sentence_vectors: np.ndarray  # rows in article order, then sentence order
    hashes: np.ndarray  # per sentence row, records.sentence_hash
    chunks: list[Chunk]  # rows of vectors and lexical, in article order
    vectors: FaissIndex
    lexical: BM25


@dataclass(frozen=True)
class Kept:
    """A segment of the live generation that the new one lists too, with its live counts."""

    name: str
    deleted: frozenset[str]  # ids of its articles that are gone
    n_articles: int
    n_chunks: int
    n_sentences: int
    faiss: dict


@dataclass
class Generation:
    """A generation ready to publish: kept segments (with their deletions) and at most one new one."""

    manifest: dict  # model, dim, tokenizer, chunk settings, corpus: the writer's part
    new: NewSegment | None = None
    kept: list[Kept] = field(default_factory=list)
    at: int | None = None  # where the new segment goes among the kept ones (None: last)


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


def load(index_dir: str | Path, *, expect: dict | None = None, reuse: FolderSnapshot | None = None) -> FolderSnapshot:
    """Load the live generation, refusing an index that ``expect`` (model, chunking) does not match.

    ``reuse``: a generation loaded before; its segments that the live one lists are taken as
    they are (segments never change), so a reader loads only what was written since.

    Raises:
        IndexMissingError, IndexMismatchError, IndexCorruptError: each with the command that fixes it.
    """
    index_dir = Path(index_dir)
    for attempt in range(3):
        gen = current_generation(index_dir)
        if gen is None:
            raise IndexMissingError(f"no index at {str(index_dir)!r}; "
                                    f"build one with: askdesk index corpus/ --index {index_dir}")
        try:
            return _load(index_dir, gen, expect or {}, reuse)
        except IndexCorruptError:
            if attempt < 2 and current_generation(index_dir) != gen:
                continue  # writers published twice while this read: the next generation is whole
            raise
    raise AssertionError("unreachable")


def _load(index_dir: Path, gen: str, expect: dict, reuse: FolderSnapshot | None) -> FolderSnapshot:
    path = index_dir / gen
    manifest = read_manifest(path, index_dir)
    check_manifest(manifest, expect, index_dir)
    have = {s.name: s for s in reuse.segments} if reuse is not None else {}
    segments, deleted = [], []
    for entry in manifest.get("segments", []):
        seg = have.get(entry["name"]) or load_segment(index_dir / entry["name"], index_dir)
        dead = frozenset(entry.get("deleted", ()))
        live = seg.live(dead)
        if (len(seg) if live is None else int(live.sum())) != entry.get("n_chunks"):
            raise IndexCorruptError(f"segment {entry['name']!r} of {str(index_dir)!r} does not hold the chunks its "
                                    f"manifest counts; {_repair(index_dir)}")
        segments.append(seg)
        deleted.append(dead)
    return FolderSnapshot(path, manifest, segments, deleted)


def load_segment(path: Path, index_dir: Path) -> Segment:
    """One segment folder, checked against its segment.json (sizes, counts, row order)."""
    try:
        meta = json.loads((path / SEGMENT).read_text())
    except FileNotFoundError:
        raise IndexCorruptError(f"segment {str(path)!r} is missing; {_repair(index_dir)}") from None
    except (OSError, ValueError):
        raise IndexCorruptError(f"{str(path / SEGMENT)!r} is not valid JSON; {_repair(index_dir)}") from None
    for name, size in meta.get("files", {}).items():
        f = path / name
        if not f.is_file() or f.stat().st_size != size:
            raise IndexCorruptError(f"index file {str(f)!r} is missing or truncated; {_repair(index_dir)}")
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
        counts = np.zeros(len(articles), dtype=np.int64)
        last = 0
        for rec in _read_jsonl(path / "chunks.jsonl"):
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
                      SentenceRows(position, starts, spans), vectors, chunks, chunk_first, index, lexical, hashes)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise IndexCorruptError(f"index at {str(index_dir)!r} is unreadable ({type(e).__name__}: {str(e)[:120]}); "
                                f"{_repair(index_dir)}") from None
    if len(index) != len(chunks) or len(vectors) != first[-1]:
        raise IndexCorruptError(f"index at {str(index_dir)!r} has mismatched counts; {_repair(index_dir)}")
    return seg


def load_articles(index_dir: str | Path) -> list[Article]:
    """The live generation's articles from its articles.jsonl files alone (any format version):
    what a writer keeps when the rest of an index cannot be reused (another format, another
    model, a damaged file), so that re-embedding never loses an article. [] when unreadable."""
    index_dir = Path(index_dir)
    gen = current_generation(index_dir)
    if gen is None:
        return []
    try:
        manifest = json.loads((index_dir / gen / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = {}
    if "segments" in manifest:  # format 3: each segment's articles, less the deleted ones
        parts = [(index_dir / e["name"] / "articles.jsonl", frozenset(e.get("deleted", ())))
                 for e in manifest["segments"]]
    else:  # format 1 and 2: one articles.jsonl in the generation folder
        parts = [(index_dir / gen / "articles.jsonl", frozenset())]
    out: list[Article] = []
    for f, dead in parts:
        try:
            got = []
            for rec in _read_jsonl(f):
                rec.pop("sentences", None)
                rec.pop("sentence_row", None)
                if rec.get("id") not in dead:
                    got.append(Article(**rec))
            out += got
        except (OSError, ValueError, TypeError) as e:
            logger.warning("articles of %s unreadable (%s); nothing to keep from it", f.parent, e)
    return out


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


def publish(index_dir: str | Path, gen: Generation, *, keep_previous: bool = False) -> Path:
    """Write a new generation (and its new segment) and make it live atomically. Caller holds
    ``lock(index_dir)``.

    ``keep_previous``: CURRENT keeps naming the same previous generation (a merge: it changes
    how the articles are stored, not which; `rollback` still returns to before the last write).

    Raises:
        IndexWriteError: the write failed (a full disk); nothing of it is left behind.
    """
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    live, previous = _pointers(index_dir)
    entries = [{"name": k.name, "n_articles": k.n_articles, "n_chunks": k.n_chunks, "n_sentences": k.n_sentences,
                "faiss": k.faiss, "deleted": sorted(k.deleted)} for k in gen.kept]
    made: list[Path] = []
    name = None
    need = _need(gen.new) if gen.new is not None else 4096
    try:
        if gen.new is not None:
            entry = _write_segment(index_dir, gen.new, stamp, made)
            entries.insert(len(entries) if gen.at is None else gen.at, entry)
        content = hashlib.sha1(json.dumps([(e["name"], e["deleted"]) for e in entries]).encode()).hexdigest()[:8]
        name = f"g-{stamp}-{content}"
        biggest = max(entries, key=lambda e: e["n_chunks"], default={"faiss": {"kind": "flat"}})
        manifest = {
            **gen.manifest,
            "format_version": FORMAT_VERSION,
            "askdesk_version": __version__,
            "n_articles": sum(e["n_articles"] for e in entries),
            "n_chunks": sum(e["n_chunks"] for e in entries),
            "n_sentences": sum(e["n_sentences"] for e in entries),
            "faiss": biggest["faiss"],  # the largest segment's (the others are small and exact)
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "segments": entries,
        }
        tmp = index_dir / f".tmp-{name}"
        made.append(tmp)
        tmp.mkdir()
        _write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False))
        os.rename(tmp, index_dir / name)
        made.append(index_dir / name)
        _fsync_dir(index_dir)
        _point(index_dir, name, previous if keep_previous else live)  # the publish: one os.replace
    except OSError as e:
        # Nothing half-written stays behind to keep the disk full: what this write made goes at
        # once, unless CURRENT already names it (then only the clean-up failed).
        if name is None or current_generation(index_dir) != name:
            for p in made:
                shutil.rmtree(p, ignore_errors=True)
        raise write_error(e, index_dir, need=need) from None
    collect_garbage(index_dir, keep=name)
    logger.info("published %s (%d articles, %d chunks in %d segments)", name, manifest["n_articles"],
                manifest["n_chunks"], len(entries))
    return index_dir / name


def _need(seg: NewSegment) -> int:
    """What a segment takes on disk (for the message if it does not fit): the vectors, the
    postings, the article text and ~100 bytes of JSON per chunk and per sentence span."""
    v = seg.sentence_vectors
    return (len(seg.chunks) * seg.vectors.dim * 4 + v.shape[0] * (v.shape[1] * 2 + 24) + seg.lexical.nbytes
            + sum(len(a.text.encode()) + 300 for a in seg.articles) + 100 * len(seg.chunks))


def _write_segment(index_dir: Path, seg: NewSegment, stamp: str, made: list[Path]) -> dict:
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
    _write_jsonl(tmp / "chunks.jsonl", ({"id": c.id, "article_id": c.article_id, "start": c.start, "end": c.end}
                                        for c in seg.chunks))
    rows, row = {}, 0
    for a in seg.articles:
        rows[a.id] = row
        row += len(seg.sentences[a.id])
    _write_jsonl(tmp / "articles.jsonl", ({**a.__dict__, "sentences": seg.sentences[a.id],
                                           "sentence_row": rows[a.id]} for a in seg.articles))
    with open(tmp / "sentences.npy", "wb") as f:
        np.save(f, seg.sentence_vectors.astype(np.float16), allow_pickle=False)
    with open(tmp / "hashes.npy", "wb") as f:
        np.save(f, np.asarray(seg.hashes, dtype=np.int64), allow_pickle=False)
    files = [*FILES, *seg.lexical.save(tmp)]
    n_sentences = int(seg.sentence_vectors.shape[0])
    meta = {"format_version": FORMAT_VERSION, "n_articles": len(seg.articles), "n_chunks": len(seg.chunks),
            "n_sentences": n_sentences, "faiss": seg.vectors.kind,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": {n: (tmp / n).stat().st_size for n in files}}
    for n in files:
        _fsync(tmp / n)
    _write_atomic(tmp / SEGMENT, json.dumps(meta, indent=1))
    os.rename(tmp, index_dir / name)
    made.append(index_dir / name)
    return {"name": name, "n_articles": len(seg.articles), "n_chunks": len(seg.chunks), "n_sentences": n_sentences,
            "faiss": seg.vectors.kind, "deleted": []}


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
    """Remove generations other than the live one and the one before it (`rollback`), segments
    neither of them lists, and folders a crashed writer left behind.

    Caller holds ``lock(index_dir)``. Removing an old segment never breaks a reader that still
    holds it: its records are in memory, and its open ``sentences.npy`` and mapped postings
    stay readable after the unlink (POSIX semantics; askdesk already needs ``fcntl``).
    """
    index_dir = Path(index_dir)
    keep = keep or current_generation(index_dir)
    if keep is None or not index_dir.is_dir():
        return
    kept = {keep, _pointers(index_dir)[1]} - {None}
    listed: set[str] | None = set()
    for g in kept:
        try:
            listed |= {e["name"] for e in json.loads((index_dir / g / MANIFEST).read_text()).get("segments", [])}
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError):
            listed = None  # a kept manifest cannot be read: keep every segment
            break
    for p in index_dir.iterdir():
        if not p.is_dir():
            continue
        if (p.name.startswith("g-") and p.name not in kept or p.name.startswith(".tmp-")
                or p.name.startswith("s-") and listed is not None and p.name not in listed):
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
    for e in m.get("segments", []):
        if not (index_dir / e["name"] / SEGMENT).is_file():
            raise IndexCorruptError(f"the generation before the live one ({back}) misses its segment {e['name']!r}; "
                                    "it cannot be brought back")
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
