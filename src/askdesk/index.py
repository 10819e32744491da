"""The index folder: FAISS vectors, article and chunk records, a manifest; atomic publish.

Layout (plain files, no pickle)::

    index/
      CURRENT            the live generation's name, and on a second line the one before it (kept
                         for `askdesk rollback`); replaced atomically with os.replace
      .lock              held by the one process that writes
      g-<time>-<hash>/   one complete generation
        manifest.json    written last: format, askdesk version, model, chunking, counts, file sizes,
                         and "faiss": {"kind": "flat"} or
                         {"kind": "ivf", "nlist": .., "nprobe": .., "vectors": "fp16"}
        vectors.faiss    IndexIDMap2 (ids from chunk ids, rows in chunks.jsonl order) over exact
                         inner product (IndexFlatIP), or above Config.ann_above chunks IVF with
                         float16 vectors (IVF,Flat float32 in indexes written before; both read)
        chunks.jsonl     one chunk a line: chunk id, article id, character span
        articles.jsonl   one article a line, with its sentence spans
        sentences.npy    float16 sentence vectors, rows in article order (for answering)
        lexical.npz      BM25 postings (see retrieve.py), uncompressed

A reader reads the sentences.npy rows it needs on demand (records.SentenceVectors), memory-maps
lexical.npz and slices chunk text from the article text, so a loaded index costs about its FAISS
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
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

from . import __version__
from .errors import IndexCorruptError, IndexLockedError, IndexMismatchError, IndexMissingError, IndexWriteError
from .records import SentenceRows, SentenceSpans, SentenceVectors, StoredChunk, map_npz
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
    sentences: Mapping[str, list[tuple[int, int]]]  # article id -> sentence spans
    sentence_row: Mapping[str, int]  # article id -> first row in sentence_vectors
    sentence_vectors: SentenceVectors | np.ndarray  # float16 rows of sentences.npy: read on demand, or all if small
    chunks: list[Chunk]
    faiss_index: object  # used only here (and by bench/); callers use search() and vector()
    lexical: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        import faiss

        # The file holds an IndexIDMap2 keyed by content-hash ids (see faiss_id), added in chunk
        # order, so the index inside it numbers vectors by row: searching that one directly gives
        # rows with no id lookup (a dict of 100k Python ints cost 11 MB), and filters by row.
        self._inner = faiss.downcast_index(self.faiss_index.index)
        kind = self.manifest.get("faiss", {"kind": "flat"})  # indexes written before IVF are flat
        self._nprobe: int | None = None
        if kind["kind"] == "ivf":
            ivf = faiss.extract_index_ivf(self._inner)
            ivf.nprobe = self._nprobe = int(kind["nprobe"])
            if ivf.direct_map.type == faiss.DirectMap.NoMap:  # vector(row) needs it; written with it
                ivf.make_direct_map()

    def search(self, query: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top ``k`` chunks by inner product: (row in ``chunks``, score), best first.

        ``allowed`` (a boolean mask over rows) keeps only those rows, e.g. a date range; the
        search itself skips the others, so a narrow filter still returns ``k`` rows when it can.
        """
        import faiss

        n = len(self.chunks)
        if not n or k < 1:
            return []
        params = bits = None
        if allowed is not None:
            share = int(np.count_nonzero(allowed))
            if not share:
                return []
            bits = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")  # kept alive for the search
            sel = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
            if self._nprobe is None:
                params = faiss.SearchParameters(sel=sel)
            else:
                # With 1 row in 10 allowed, each probed list holds a tenth as many candidates:
                # probing 10x the lists keeps the candidates seen (and the recall) as unfiltered.
                nlist = faiss.extract_index_ivf(self._inner).nlist
                params = faiss.SearchParametersIVF(sel=sel, nprobe=min(nlist, -(-self._nprobe * n // share)))
        scores, rows = self._inner.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32),
                                          min(k, n), params=params)
        return [(r, s) for r, s in zip(rows[0].tolist(), scores[0].tolist()) if r >= 0]

    def vector(self, row: int) -> np.ndarray:
        """The stored vector of chunk ``row``: normalized, float32 (fp16-rounded in an IVF index)."""
        return self._inner.reconstruct(int(row))

    def chunk_vectors(self) -> dict[str, np.ndarray]:
        """chunk id -> vector, for reuse by the next generation."""
        n = len(self.chunks)
        vecs = self._inner.reconstruct_n(0, n) if n else np.zeros((0, self._inner.d), np.float32)
        return {c.id: v for c, v in zip(self.chunks, vecs)}


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
        # Read by row on demand, not loaded: the answerer touches ~500 rows a question, so the
        # file (377 MB at 100k chunks) stays in the page cache instead of this process's memory.
        # Safe because a generation folder never changes after publish, and an old one is only
        # ever unlinked (collect_garbage): an unlinked file stays readable through the open
        # descriptor, so a reader still holding an old Snapshot keeps answering.
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
        lexical = map_npz(path / "lexical.npz")
        index = faiss.read_index(str(path / "vectors.faiss"))
        if not isinstance(index, faiss.IndexIDMap2):
            raise ValueError(f"vectors.faiss holds a {type(index).__name__}, not an IndexIDMap2")
        ids = faiss.vector_to_array(index.id_map) if index.ntotal else np.zeros(0, np.int64)
        if not np.array_equal(ids, np.fromiter((faiss_id(c.id) for c in chunks), np.int64, len(chunks))):
            raise ValueError("vectors.faiss is not in chunks.jsonl order")
        snap = Snapshot(path, manifest, articles, SentenceSpans(position, starts, spans),
                        SentenceRows(position, starts, spans), vectors, chunks, index, lexical)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, zipfile.BadZipFile) as e:
        raise IndexCorruptError(
            f"index at {str(index_dir)!r} is unreadable ({type(e).__name__}: {str(e)[:120]}); "
            f"rebuild with: askdesk index corpus/ --index {index_dir}"
        ) from None
    if index.ntotal != len(chunks) or len(vectors) != first[-1]:
        raise IndexCorruptError(f"index at {str(index_dir)!r} has mismatched counts; rebuild with: askdesk index corpus/ --index {index_dir}")
    return snap


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
    ann_above: int | None = None,
    previous: "Snapshot | None" = None,
) -> Path:
    """Write a new generation and make it live atomically. Caller holds ``lock(index_dir)``.

    Above ``ann_above`` chunks (default ``Config.from_env().ann_above``) the vectors go into an
    approximate IVF index instead of an exact one; the manifest's ``"faiss"`` entry says which.
    With the ``previous`` generation, an IVF index keeps its list centroids while the corpus
    stays near the size they were trained for (`build_faiss`).
    """
    import faiss

    if ann_above is None:
        from .config import Config

        ann_above = Config.from_env().ann_above
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    content = hashlib.sha1("".join(c.id for c in chunks).encode()).hexdigest()[:8]
    name = f"g-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{content}"
    tmp = index_dir / f".tmp-{name}"
    index, kind = build_faiss(np.ascontiguousarray(chunk_vectors, dtype=np.float32),
                              np.array([faiss_id(c.id) for c in chunks], dtype=np.int64),
                              dim=int(manifest["dim"]), ann_above=ann_above,
                              previous=(previous.faiss_index, previous.manifest.get("faiss", {})) if previous else None)
    # Serialized in memory and written by Python, so a full disk is an OSError with its errno
    # (faiss.write_index reports it as a RuntimeError with the errno in its text).
    faiss_bytes = faiss.serialize_index(index)
    old = current_generation(index_dir)
    # What the generation will take on disk (for the message if it does not fit): the vectors,
    # the postings, the article text and ~100 bytes of JSON per chunk and per sentence span.
    need = (faiss_bytes.nbytes + sentence_vectors.shape[0] * (sentence_vectors.shape[1] * 2 + 16)
            + sum(v.nbytes for v in lexical.values()) + sum(len(a.text.encode()) + 300 for a in articles)
            + 100 * len(chunks))
    try:
        tmp.mkdir()
        with open(tmp / "vectors.faiss", "wb") as f:
            f.write(memoryview(faiss_bytes))
        del faiss_bytes
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
            "faiss": kind,
            "corpus_hash": hashlib.sha1("".join(sorted(a.id for a in articles)).encode()).hexdigest(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": {n: (tmp / n).stat().st_size for n in FILES},
        }
        for n in FILES:
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
    logger.info("published %s (%d articles, %d chunks)", name, len(articles), len(chunks))
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


# Never IVF below this many chunks: exact search there takes ~0.2 ms, and k-means wants ~39
# points a list (1,000 chunks -> 25 lists).
MIN_IVF = 1000


SENTENCES_IN_MEMORY = 64 << 20  # sentence vectors up to this size (~80k sentences, ~15k chunks) are read whole
RETRAIN_RATIO = 1.5  # IVF lists are re-trained once the corpus grew or shrank this much since


def ivf_shape(n: int) -> tuple[int, int]:
    """(nlist, nprobe) of the IVF index over ``n`` vectors: 100k -> 1,264 lists, 40 probed."""
    nlist = max(1, min(int(4 * n ** 0.5), n // 39))  # ~4 sqrt(n), and k-means' 39 points a list
    # A 32nd of the lists, at least 32 (recall@10 vs exact, 200 squad questions: 0.993 at 100k
    # with 40 of 1,264; a 32nd alone fell to 0.964 at 10k, where 32 of 256 lists gave 0.99+).
    return nlist, min(nlist, max(32, -(-nlist // 32)))


def build_faiss(vectors: np.ndarray, ids: np.ndarray, *, dim: int, ann_above: int,
                previous: tuple[object, dict] | None = None) -> tuple[object, dict]:
    """The FAISS index over ``vectors`` (rows in chunk order, keyed by ``ids``) and its manifest entry.

    Exact inner product up to ``ann_above`` vectors; above, ``IVF{nlist},SQfp16`` (`ivf_shape`):
    at 100k chunks recall@10 0.9875 against exact search (200 questions; IVF,Flat the same),
    and `Desk.ask` in 0.45x the time. Vectors are float16: 73 MB instead of IVF,Flat's 147 MB
    at 100k, each component within 6e-5 of the float32 one. SQ8 (37 MB) fell to 0.974, under
    the 0.98 floor, and would be re-trained, drifting, on every add; fp16 does not drift.

    ``previous``: the last generation's (index, manifest entry). Its IVF centroids are reused
    while ``n`` is within `RETRAIN_RATIO` of the count they were trained on: k-means was 12 of
    the ~20 s an add to a 100k index spent in FAISS, and a few articles do not move the lists.
    """
    import faiss

    n = len(vectors)
    if n <= max(ann_above, MIN_IVF - 1):
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        kind: dict = {"kind": "flat"}
    else:
        old_index, old_kind = previous or (None, {})
        trained_on = old_kind.get("trained_on") or old_kind.get("nlist", 0) ** 2 // 16  # older manifests: ~ivf_shape's n
        reuse = (old_index is not None and old_kind.get("kind") == "ivf" and old_kind.get("vectors") == "fp16"
                 and 1 / RETRAIN_RATIO <= n / max(trained_on, 1) <= RETRAIN_RATIO)
        nlist, nprobe = (old_kind["nlist"], old_kind["nprobe"]) if reuse else ivf_shape(n)
        index = faiss.index_factory(dim, f"IDMap2,IVF{nlist},SQfp16", faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        # Each vector's own fp16, not its residual from the list centroid: the stored vector is
        # then the same whichever centroids k-means found, so chunk_vectors() -> the next
        # generation's index gives back the very same values.
        ivf.by_residual = False
        if reuse:
            ivf.quantizer.add(faiss.extract_index_ivf(old_index).quantizer.reconstruct_n(0, nlist))
            ivf.is_trained = index.is_trained = True  # fp16 codes need no training, only the lists did
        else:
            # k-means on 40 points a list (FAISS asks for 39): at 100k half the training time of 64
            # a list, and no worse (recall@10 0.993 vs 0.988 at nprobe 40).
            sample = np.random.default_rng(0).choice(n, min(n, 40 * nlist), replace=False)
            index.train(vectors[np.sort(sample)])
            trained_on = n
        kind = {"kind": "ivf", "nlist": nlist, "nprobe": nprobe, "vectors": "fp16", "trained_on": int(trained_on)}
    if n:
        index.add_with_ids(vectors, ids)
    if kind["kind"] == "ivf":
        # Written with the file: lets vector(row) reconstruct a chunk found only by BM25.
        faiss.extract_index_ivf(index).make_direct_map()
    return index, kind


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


def rollback(index_dir: str | Path) -> tuple[str, str]:
    """Make the previous generation live again; the one it replaces becomes the previous one,
    so a second rollback undoes the first. Caller holds ``lock(index_dir)``.

    Returns:
        (the generation now live, the one it replaced).

    Raises:
        IndexMissingError: no index, or no earlier generation is kept.
    """
    index_dir = Path(index_dir)
    now = current_generation(index_dir)
    if now is None:
        raise IndexMissingError(f"no index at {str(index_dir)!r}; build one with: askdesk index corpus/ --index {index_dir}")
    back = previous_generation(index_dir)
    if back is None:
        raise IndexMissingError(f"the index at {str(index_dir)!r} keeps no earlier generation to roll back to "
                                "(it was written once, or by an askdesk that did not keep one)")
    read_manifest(index_dir / back)  # refuse a broken one before pointing at it
    try:
        _point(index_dir, back, now)
    except OSError as e:
        raise write_error(e, index_dir, "roll back") from None
    logger.info("rolled %s back from %s to %s", index_dir, now, back)
    return back, now


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
