"""Merges: some segments of the index rewritten as one, their deleted rows dropped.

Nothing goes through the model again: chunk vectors, sentence vectors and hashes are copied,
BM25 postings renumbered in numpy (lexical.BM25.merge). After a write the lowest size tier that
holds `Config.merge_segments` segments is merged (`merge_plan`, Lucene's log merge policy);
`askdesk optimize` merges them all. A merge is published like a write but keeps CURRENT's
previous generation, so `rollback` still returns to before the last write.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..config import Config
from . import index as index_mod
from .build import kept_segment
from .lexical import BM25
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


def merge(snap: index_mod.FolderSnapshot, which: Sequence[int], *, ann_above: int) -> index_mod.Generation:
    """The generation with the segments at ``which`` rewritten as one, their deleted articles
    left out. Nothing goes through the model: vectors, sentence vectors and BM25 postings are
    copied (the postings renumbered in numpy); IVF lists are kept from the largest IVF part
    while the size stays within `vectors.RETRAIN_RATIO` of what they were trained on."""
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
    kept, at = [], 0
    for i, (seg, dead) in enumerate(zip(snap.segments, snap.deleted)):
        k = None if i in which else kept_segment(seg, dead)
        if k is not None:
            kept.append(k)
            at += i < which[0]
    manifest = {k: v for k, v in snap.manifest.items() if k not in PUBLISHED}
    if not chunks:  # everything in them was deleted: they just go
        return index_mod.Generation(manifest=manifest, kept=kept)
    dates = np.concatenate(date_blocks)
    ivf = [seg.vectors for seg, _, _ in parts if seg.vectors.kind["kind"] == "ivf"]
    previous = max(ivf, key=len) if ivf else None
    vectors = FaissIndex.build(np.concatenate(vec_blocks), np.concatenate(key_blocks), dates, ann_above=ann_above,
                               previous=previous)
    lexical = BM25.merge([seg.lexical for seg, _, _ in parts], [live for _, _, live in parts], dates=dates)
    new = index_mod.NewSegment(articles=articles, sentences=sentences, sentence_vectors=np.concatenate(sent_blocks),
                               hashes=np.concatenate(hash_blocks), chunks=chunks, vectors=vectors, lexical=lexical,
                               statements={a: st for seg, dead, _ in parts for a, st in seg.statements.items()
                                           if a not in dead})
    return index_mod.Generation(manifest=manifest, new=new, kept=kept, at=at)


# What publish writes into a manifest itself; the rest (model, settings, corpus) a merge carries over.
PUBLISHED = {"format_version", "askdesk_version", "n_articles", "n_chunks", "n_sentences", "faiss", "created",
             "segments", "corpus_hash", "files"}


def compact(index_dir: Path, *, config: Config, current: Callable[[], index_mod.FolderSnapshot],
            everything: bool = False) -> dict:
    """Merge segments under the lock: the size tiers that are full (`merge_plan`), or with
    ``everything`` all of them into one (`askdesk optimize`). Each merge is published like a
    write (crash-safe, readers see it on their next question) but keeps CURRENT's previous
    generation, so `rollback` still returns to before the last write.

    Returns:
        ``{"merges", "segments_before", "segments", "n_chunks", "expunged"}``: merges published,
        segments before and after, chunks held, deleted chunks dropped.
    """
    out = {"merges": 0, "segments_before": None, "segments": 0, "n_chunks": 0, "expunged": 0}
    with index_mod.lock(index_dir, timeout=config.lock_wait):
        while True:
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
            gen = merge(snap, which, ann_above=config.ann_above)
            n = len(gen.new.chunks) if gen.new is not None else 0
            out["expunged"] += sum(len(snap.segments[i]) for i in which) - n
            logger.info("merging %d segments (%d chunks)", len(which), n)
            index_mod.publish(index_dir, gen, keep_previous=True)
            out["merges"] += 1
            if everything:
                everything = False  # one merge holds everything; the loop reads it back and stops
