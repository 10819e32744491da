"""Merges: some segments of the index rewritten as one, their deleted rows dropped.

Nothing goes through the model again: chunk vectors, sentence vectors and hashes are copied,
BM25 postings renumbered in numpy (lexical.BM25.merge). After a write the lowest size tier that
holds `Config.merge_segments` segments is merged (`merge_plan`, Lucene's log merge policy);
`askdesk optimize` merges them all. A merge is published like a write but keeps CURRENT's
previous generation, so `rollback` still returns to before the last write.

A merge holds the writer lock twice, briefly: to take a snapshot of the live generation, and to
publish. In between (the slow part) it builds the merged segment from the snapshot's segments and
writes it into a workspace of its own (`Workspace`), while writers add and remove articles. Its
commit lists the merged segment with every segment the live generation holds now besides the
merged ones, and adds to its deletions the articles deleted from them since the snapshot (`commit`).
When that would lose an article (a rollback made live again one the merge left out), or nothing of
it is live any more (another merge, a rebuild), the merge is dropped with one line in the log.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..config import Config
from . import index as index_mod
from .lexical import BM25
from .segment import FORMAT_VERSION, segment_bytes, write_segment
from .vectors import FaissIndex

logger = logging.getLogger(__name__)

MERGE_FLOOR = 1000  # chunks; every segment smaller than this is in the lowest tier


def tier(n_chunks: int, factor: int) -> int:
    """A segment's size tier: 0 below `MERGE_FLOOR` chunks, then one tier per ``factor`` times more."""
    return 0 if n_chunks < MERGE_FLOOR else 1 + int(math.log(n_chunks / MERGE_FLOOR, factor))


def merge_plan(snap: index_mod.FolderSnapshot, factor: int) -> list[int]:
    """The segments to merge now (positions in the generation), or [] when none need it.

    The lowest size tier holding ``factor`` segments is merged into one (Lucene's log merge
    policy: each chunk is rewritten about log(N) times in all, and a search visits at most
    ``factor`` - 1 segments a tier); else a segment with half its chunks deleted is rewritten.
    ``factor`` < 2: never (only `askdesk optimize` merges).
    """
    if factor < 2 or not snap.segments:
        return []
    entries = snap.manifest.get("segments", [])
    by_tier: dict[int, list[int]] = {}
    for i, e in enumerate(entries):
        by_tier.setdefault(tier(e["n_chunks"], factor), []).append(i)
    for t in sorted(by_tier):
        if len(by_tier[t]) >= factor:
            return by_tier[t]
    for i, (seg, e) in enumerate(zip(snap.segments, entries)):
        if e["n_chunks"] * 2 <= len(seg):
            return [i]
    return []


def merged_segment(snap: index_mod.FolderSnapshot, which: Sequence[int], *, ann_above: int
                   ) -> index_mod.NewSegment | None:
    """The segments at ``which`` as one new segment, their deleted articles left out (None when
    nothing of them is live). Nothing goes through the model: vectors, sentence vectors and BM25
    postings are copied (the postings renumbered in numpy); IVF lists are kept from the largest
    IVF part while the size stays within `vectors.RETRAIN_RATIO` of what they were trained on."""
    which = sorted(set(which))
    parts = [(snap.segments[i], snap.deleted[i], snap.live[i]) for i in which]
    articles = [a for seg, dead, _ in parts for a in seg.articles.values() if a.id not in dead]
    sentences = {a.id: seg.sentences[a.id] for seg, dead, _ in parts for a in seg.articles.values()
                 if a.id not in dead}
    sent_blocks, hash_blocks, vec_blocks, key_blocks, date_blocks, chunks = [], [], [], [], [], []
    for seg, dead, live in parts:
        if live is None:
            sent_blocks.append(np.asarray(seg.sentence_vectors, dtype=np.float16))
            hash_blocks.append(seg.hashes)
            vec_blocks.append(seg.vectors.all_vectors())
            key_blocks.append(seg.vectors.keys)
            date_blocks.append(seg.vectors.dates)
            chunks += seg.chunks
            continue
        rows = np.concatenate([np.arange(seg.sentence_row[a], seg.sentence_row[a] + len(seg.sentences[a]))
                               for a in seg.articles if a not in dead] or [np.zeros(0, np.int64)])
        sent_blocks.append(np.asarray(seg.sentence_vectors[rows], dtype=np.float16))
        hash_blocks.append(seg.hashes[rows])
        vec_blocks.append(seg.vectors.all_vectors()[live])
        key_blocks.append(seg.vectors.keys[live])
        date_blocks.append(seg.vectors.dates[live])
        chunks += [seg.chunks[r] for r in np.flatnonzero(live).tolist()]
    if not chunks:  # everything in them was deleted: they just go
        return None
    dates = np.concatenate(date_blocks)
    ivf = [seg.vectors for seg, _, _ in parts if seg.vectors.kind["kind"] == "ivf"]
    previous = max(ivf, key=len) if ivf else None
    vectors = FaissIndex.build(np.concatenate(vec_blocks), np.concatenate(key_blocks), dates, ann_above=ann_above,
                               previous=previous)
    lexical = BM25.merge([seg.lexical for seg, _, _ in parts], [live for _, _, live in parts], dates=dates)
    return index_mod.NewSegment(articles=articles, sentences=sentences, sentence_vectors=np.concatenate(sent_blocks),
                                hashes=np.concatenate(hash_blocks), chunks=chunks, vectors=vectors, lexical=lexical,
                                statements={a: st for seg, dead, _ in parts for a, st in seg.statements.items()
                                            if a not in dead})


# What publish writes into a manifest itself; the rest (model, settings, corpus) a merge carries over.
PUBLISHED = {"format_version", "askdesk_version", "n_articles", "n_chunks", "n_sentences", "faiss", "created",
             "segments", "corpus_hash", "files"}


class Workspace:
    """A merge's own folder in the index folder (``.merge-<time>-<pid>``), where its segment is
    written while writers go on. It holds a flock on its ``.lock`` from creation (made under the
    writer lock, so `index.collect_garbage` never sees it half made) until `close`, so the writers'
    garbage collection leaves it alone while the merge runs and removes it once its process died."""

    def __init__(self, index_dir: Path):
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        self.path = index_dir / f"{index_mod.MERGING}{stamp}-{os.getpid()}"
        self.path.mkdir()
        self._fh = open(self.path / ".lock", "a+")
        fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it

    def write(self, seg: index_mod.NewSegment) -> tuple[Path, dict]:
        """Write ``seg`` here; (its folder, its manifest entry)."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        entry = write_segment(self.path, seg, stamp, [])
        return self.path / entry["name"], entry

    def close(self) -> None:
        """Remove what is left here (all of it unless the commit moved the segment out) and let go."""
        shutil.rmtree(self.path, ignore_errors=True)
        self._fh.close()


def commit(index_dir: Path, snap: index_mod.FolderSnapshot, which: Sequence[int], seg: index_mod.NewSegment | None,
           written: tuple[Path, dict] | None) -> index_mod.Generation | None:
    """The generation that puts a merge built from ``snap`` into the live one, or None when it
    cannot (logged in one line). Caller holds the writer lock.

    Every segment the live generation lists besides the merged ones stays as it is now: those
    written since the snapshot too. The merged segment holds what the merged ones still hold live:
    an article removed or replaced since the snapshot is deleted from it, and so are the articles
    of a merged segment the live generation no longer lists (all of them removed since, or the
    segment merged by another process: its articles are live there, or nowhere).
    """
    gen = index_mod.current_generation(index_dir)
    live = index_mod.read_manifest(index_dir / gen, index_dir) if gen is not None else {}
    entries = live.get("segments", [])
    listed = {e["name"]: e for e in entries}
    merged = {snap.segments[i].name: (snap.segments[i], snap.deleted[i]) for i in which}
    undone = [n for n, (_, dead) in merged.items() if n in listed and not dead <= set(listed[n].get("deleted", ()))]
    why = ("the index was rewritten" if live.get("format_version") != FORMAT_VERSION
           else "articles it leaves out are live again (a rollback)" if undone
           else "its segments were merged or removed by another writer" if not set(merged) & set(listed) else None)
    if why is not None:
        logger.warning("merge of %d segments of %s dropped: %s since it began; the index is as the writes left it, "
                       "and the next write merges again", len(merged), index_dir, why)
        return None
    still = {a for n, (s, _) in merged.items() if n in listed for a in s.articles} - {
        a for n in merged if n in listed for a in listed[n].get("deleted", ())}
    kept, at = [], None
    for e in entries:
        if e["name"] in merged:
            at = len(kept) if at is None else at
            continue
        kept.append(index_mod.Kept(e["name"], frozenset(e.get("deleted", ())), e["n_articles"], e["n_chunks"],
                                   e["n_sentences"], e.get("faiss", {"kind": "flat"})))
    manifest = {k: v for k, v in live.items() if k not in PUBLISHED}
    dead = {a.id for a in seg.articles} - still if seg is not None else set()
    if seg is None or written is None or len(dead) == len(seg.articles):  # nothing of them is live any more
        return index_mod.Generation(manifest=manifest, kept=kept)
    folder, entry = written
    if dead:
        entry = {**entry, "deleted": sorted(dead), "n_articles": entry["n_articles"] - len(dead),
                 "n_chunks": entry["n_chunks"] - sum(1 for c in seg.chunks if c.article_id in dead),
                 "n_sentences": entry["n_sentences"] - sum(len(seg.sentences[a]) for a in dead)}
    return index_mod.Generation(manifest=manifest, kept=kept, at=at, placed=(folder, entry))


def compact(index_dir: Path, *, config: Config, current: Callable[[], index_mod.FolderSnapshot],
            everything: bool = False, turn: contextlib.AbstractContextManager | None = None) -> dict:
    """Merge segments: the size tiers that are full (`merge_plan`), or with ``everything`` all of
    them into one (`askdesk optimize`). Each merge takes the writer lock to read the live
    generation, builds and writes its segment without it, and takes it again to publish (crash-safe,
    readers see it on their next question), keeping CURRENT's previous generation so that
    `rollback` still returns to before the last write.

    Args:
        turn: held with the writer lock, each time (`Desk`'s lock that its own threads' writes
            queue on); None: the writer lock alone.

    Returns:
        ``{"merges", "segments_before", "segments", "n_chunks", "expunged"}``: merges published,
        segments before and after, chunks held, deleted chunks dropped.
    """
    out = {"merges": 0, "segments_before": None, "segments": 0, "n_chunks": 0, "expunged": 0}
    turn = turn if turn is not None else contextlib.nullcontext()
    while True:
        with turn, index_mod.lock(index_dir, timeout=config.lock_wait):
            snap = current()
            if out["segments_before"] is None:
                out["segments_before"] = len(snap.segments)
            out["segments"], out["n_chunks"] = len(snap.segments), snap.manifest["n_chunks"]
            if everything:
                which = list(range(len(snap.segments))) if (len(snap.segments) > 1 or any(snap.deleted)) else []
            else:
                which = merge_plan(snap, config.merge_segments)
            if not which:
                return out
            work = Workspace(index_dir)
        try:
            seg = merged_segment(snap, which, ann_above=config.ann_above)
            n = len(seg.chunks) if seg is not None else 0
            logger.info("merging %d segments (%d chunks)", len(which), n)
            try:
                written = work.write(seg) if seg is not None else None
            except OSError as e:
                raise index_mod.write_error(e, index_dir, "write a merged segment", need=segment_bytes(seg)) from None
            with turn, index_mod.lock(index_dir, timeout=config.lock_wait):
                gen = commit(index_dir, snap, which, seg, written)
                if gen is None:
                    return out
                index_mod.publish(index_dir, gen, keep_previous=True)
        finally:
            work.close()
        out["merges"] += 1
        out["expunged"] += sum(len(snap.segments[i]) for i in which) - n
        if everything:
            everything = False  # one merge holds everything; the loop reads it back and stops
