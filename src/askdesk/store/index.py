"""The index folder: immutable segments, generations that list them, atomic publish.

Layout (plain files, no pickle)::

    index/
      CURRENT            the live generation's name, and on a second line the one before it (kept
                         for `askdesk rollback`); replaced atomically with os.replace
      .lock              held by the one process that writes
      .merge-<time>-<pid>/  a running merge's workspace: its segment is written there, off the lock
      s-<time>-<hash>/   a segment: some articles with everything answering needs of them; never
                         changed once written, shared by the generations that list it
        segment.json     written last: counts, file sizes, "faiss": {"kind": "flat"} or
                         {"kind": "ivf", "nlist": .., "nprobe": .., "vectors": "fp16"}
        vectors.faiss    IndexIDMap2 keyed by chunk key (vectors.chunk_key), rows in chunks.jsonl
                         order, over exact inner product, or IVF with float16 vectors above
                         Config.ann_above chunks (vectors.FaissIndex)
        chunks.jsonl     one chunk a line: chunk id, article id, character span
        articles.jsonl   one article a line, with its sentence spans and statements (who says what)
        sentences.npy    float16 sentence vectors, rows in article order (for answering)
        hashes.npy       a 64-bit hash of each sentence, same rows (finds near-duplicate articles)
        lexical.*.npy    BM25 postings of its chunks, one array a file (lexical.BM25), memory-mapped
      g-<time>-<hash>/   a generation
        manifest.json    format, askdesk version, model, chunking, counts, the corpus folder, and
                         the segments it holds, each with the ids of its articles deleted since

Within a segment row i of vectors.faiss, of chunks.jsonl and of the BM25 documents is the same
chunk, and each chunk's date is its article's. Outside this module and vectors, lexical, records
and folder_snapshot, chunks are addressed by key, never by row.

A write costs what it changes: adding an article writes a segment holding it and a new manifest
listing the old segments and the new one; removing one writes only a manifest (the deletion
list). Segments are merged by size tiers (merge.py, `askdesk optimize`), which drops what was
deleted; a merge holds the lock only to take its snapshot and to publish. A segment's own files
are written and read by segment.py. A reader loads only the segments it does not hold yet
(`load(reuse=...)`).

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
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from ..errors import IndexCorruptError, IndexLockedError, IndexMismatchError, IndexMissingError, IndexWriteError
from ..types import Article
from ..version import __version__
from .folder_snapshot import FolderSnapshot
from .records import Segment, Sentences, Snapshot
from .segment import (  # noqa: F401 - FORMAT_VERSION and NewSegment are the index's names too
    FORMAT_VERSION,
    SEGMENT,
    NewSegment,
    fsync_dir,
    load_segment,
    read_jsonl,
    segment_bytes,
    write_atomic,
    write_segment,
)

__all__ = ["FolderSnapshot", "Generation", "Kept", "NewSegment", "Segment", "Sentences", "Snapshot", "load",
           "publish", "lock", "rollback"]

logger = logging.getLogger(__name__)

CURRENT = "CURRENT"
MANIFEST = "manifest.json"
MERGING = ".merge-"  # a running merge's workspace (merge.Workspace); removed once no merge holds it


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
    # A segment already written outside the index folder (a merge's, in its workspace) and its
    # manifest entry: publish renames it into place instead of writing ``new``.
    placed: tuple[Path, dict] | None = None


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
    write_atomic(index_dir / CURRENT, live + "\n" + (previous + "\n" if previous else ""))


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
        seg = have.get(entry["name"]) or load_segment(index_dir / entry["name"], _repair(index_dir))
        dead = frozenset(entry.get("deleted", ()))
        live = seg.live(dead)
        if (len(seg) if live is None else int(live.sum())) != entry.get("n_chunks"):
            raise IndexCorruptError(f"segment {entry['name']!r} of {str(index_dir)!r} does not hold the chunks its "
                                    f"manifest counts; {_repair(index_dir)}")
        segments.append(seg)
        deleted.append(dead)
    return FolderSnapshot(path, manifest, segments, deleted)


ARTICLE_FIELDS = tuple(f.name for f in fields(Article))


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
            for rec in read_jsonl(f):
                if rec.get("id") not in dead:
                    # An Article's own fields only: what else a format stores beside it (sentence
                    # spans, statements) must never make its articles unreadable here.
                    got.append(Article(**{k: rec[k] for k in ARTICLE_FIELDS if k in rec}))
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
        from .upgrade import STEPS  # upgrade.py builds on this module

        n = manifest.get("n_articles", "its")
        how = (f"rewrites its {n} articles in format {FORMAT_VERSION} without embedding them again" if fmt in STEPS
               else f"embeds its {n} articles again and keeps them all")
        raise IndexMismatchError(f"index format {fmt!r} is older than this askdesk's ({FORMAT_VERSION}); upgrade it "
                                 f"with: {redo} ({how})")
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
    need = segment_bytes(gen.new) if gen.new is not None else 4096
    try:
        if gen.new is not None:
            entry = write_segment(index_dir, gen.new, stamp, made)
            entries.insert(len(entries) if gen.at is None else gen.at, entry)
        elif gen.placed is not None:
            folder, entry = gen.placed
            os.rename(folder, index_dir / entry["name"])
            made.append(index_dir / entry["name"])
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
        write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False))
        os.rename(tmp, index_dir / name)
        made.append(index_dir / name)
        fsync_dir(index_dir)
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
    neither of them lists, and folders a crashed writer or merge left behind (a running merge's
    workspace stays: `in_use`).

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
                or p.name.startswith("s-") and listed is not None and p.name not in listed
                or p.name.startswith(MERGING) and not in_use(p)):
            shutil.rmtree(p, ignore_errors=True)


def in_use(folder: Path) -> bool:
    """Whether a running merge holds ``folder`` (its workspace: merge.Workspace keeps a flock on
    its .lock while it runs; the kernel drops it when the merge ends or its process dies)."""
    try:
        fh = open(folder / ".lock", "rb")
    except FileNotFoundError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return True
            raise
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


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
