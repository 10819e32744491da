"""Format upgrades: an index of an older format rewritten in the current one, nothing embedded again.

One registry per kind of index, one step per older format it converts:

- `STEPS` (the index folder, `segment.FORMAT_VERSION`): a step reads the live generation of its
  format into the writer's in-memory segment (`NewSegment`): chunk vectors, sentence vectors and
  records carried over, what later formats added worked out from them (sentence hashes from the
  text, BM25 postings fitted again from the chunk text with today's terms), statements (who says
  what) left out, so that they are found when the segment is written (parsing, not embedding).
  `upgrade` publishes it as one generation of the current format, like a write (the old
  generation stays as the one `askdesk rollback` returns to). A format bump adds the step that
  reads the format it replaces: a format of several segments reads them into one, as
  `merge.merged_segment` does.
- `STORE_STEPS` (a Milvus store, `milvus.FORMAT`): a step rewrites the store's live generation in
  place. The store has had one layout since it came to askdesk (2; layout 1 was the branch it was
  developed on, never released), so the registry is empty: the next layout adds its step here.

A writer upgrades before it writes (`build.write`, `upsert.write`, holding the writer lock) and
says so in one line. Readers never do: a reader may run where it cannot or must not write (a
read-only page, a copy on read-only media, a second process beside the writer), so it refuses an
older format with the command that converts it (`askdesk index --index DIR`). An index whose
model or chunking differs from the writer's is not converted (its vectors would not be reused):
the writer embeds its articles again, as before. A step that fails (a file missing or damaged)
leaves the index as it is, and the writer falls back to embedding the articles again, keeping
every article (`index.load_articles`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..types import Article, Chunk
from . import index as index_mod
from .lexical import BM25
from .merge import PUBLISHED
from .records import sentence_hash
from .segment import FORMAT_VERSION, NewSegment, read_jsonl
from .vectors import FaissIndex, chunk_key, day_number

logger = logging.getLogger(__name__)

UPGRADED = "index upgraded from format {old} to {new} ({n} articles, no re-embedding)"


def _from_format_2(path: Path, manifest: dict) -> NewSegment:
    """Format 2: one folder per generation holding every file (vectors.faiss, chunks.jsonl,
    articles.jsonl with sentence spans and no statements, sentences.npy, lexical.*.npy), their
    sizes in the manifest; no sentence hashes."""
    for name, size in manifest.get("files", {}).items():
        if not (path / name).is_file() or (path / name).stat().st_size != size:
            raise ValueError(f"{name} is missing or truncated")
    articles: list[Article] = []
    sentences: dict[str, list[tuple[int, int]]] = {}
    for rec in read_jsonl(path / "articles.jsonl"):
        if rec.pop("sentence_row") != sum(len(s) for s in sentences.values()):
            raise ValueError(f"sentence rows out of order at article {rec['id']!r}")
        sentences[rec["id"]] = [(int(s), int(e)) for s, e in rec.pop("sentences")]
        articles.append(Article(**{k: rec[k] for k in index_mod.ARTICLE_FIELDS if k in rec}))
    vectors = np.load(path / "sentences.npy", allow_pickle=False)
    if vectors.shape[0] != sum(len(s) for s in sentences.values()):
        raise ValueError(f"sentences.npy holds {vectors.shape[0]} rows for {sum(map(len, sentences.values()))} "
                         "sentences")
    by_id = {a.id: (i, a) for i, a in enumerate(articles)}
    chunks = [Chunk(r["id"], r["article_id"], r["start"], r["end"],
                    by_id[r["article_id"]][1].text[r["start"]:r["end"]]) for r in read_jsonl(path / "chunks.jsonl")]
    order = [by_id[c.article_id][0] for c in chunks]
    if order != sorted(order):
        raise ValueError("chunks.jsonl is not in articles.jsonl order")
    keys = np.fromiter((chunk_key(c.id) for c in chunks), np.int64, len(chunks))
    day = {a.id: day_number(a.date) for a in articles}
    dates = np.fromiter((day[c.article_id] for c in chunks), np.int32, len(chunks))
    faiss = FaissIndex.load(path / "vectors.faiss", manifest.get("faiss", {"kind": "flat"}), dates)
    if not np.array_equal(faiss.keys, keys):
        raise ValueError("vectors.faiss is not in chunks.jsonl order")
    titles = {a.id: a.title for a in articles}
    lexical = BM25.fit((f"{titles[c.article_id]} {c.text}" for c in chunks), keys, dates=dates)  # as build.assemble
    hashes = np.fromiter((sentence_hash(a.text[s:e]) for a in articles for s, e in sentences[a.id]), np.int64,
                         len(vectors))
    return NewSegment(articles=articles, sentences=sentences, sentence_vectors=vectors, hashes=hashes, chunks=chunks,
                      vectors=faiss, lexical=lexical)


# The index folder's formats that convert, each to the segment it holds. Format 1 (lexical.npz
# instead of lexical.*.npy, the rest as format 2) has no step: no index of it is kept to test one
# on, and the first ones recorded fewer settings than a reuse needs; it is embedded again.
STEPS: dict[int, Callable[[Path, dict], NewSegment]] = {2: _from_format_2}

# A Milvus store's layouts that convert in place: (store, its live row) -> the manifest to publish.
STORE_STEPS: dict[int, Callable[[object, dict], dict]] = {}


def upgrade(index_dir: Path, *, want: dict) -> dict | None:
    """Rewrite the live generation in the current format when it is an older one that `STEPS`
    converts and it was built as ``want`` says (model, chunk settings). Caller holds the writer lock.

    Returns:
        ``{"from", "to", "n_articles"}``, or None when nothing was done (the current format, one
        no step converts, another model or chunking, or a step that failed: said in the log).
    """
    gen = index_mod.current_generation(index_dir)
    if gen is None:
        return None
    try:
        manifest = json.loads((index_dir / gen / index_mod.MANIFEST).read_text())
    except (OSError, ValueError):
        return None  # the writer's own load says what is wrong with it
    old = manifest.get("format_version")
    step = STEPS.get(old) if old != FORMAT_VERSION else None
    if step is None or any(manifest.get(k) != v for k, v in want.items()):
        return None
    try:
        seg = step(index_dir / gen, manifest)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        logger.warning("index format %s at %s could not be converted (%s: %s); its articles are embedded again",
                       old, index_dir, type(e).__name__, str(e)[:120])
        return None
    carried = {k: v for k, v in manifest.items() if k not in PUBLISHED}
    index_mod.publish(index_dir, index_mod.Generation(manifest=carried, new=seg))
    logger.warning(UPGRADED.format(old=old, new=FORMAT_VERSION, n=len(seg.articles)))
    return {"from": old, "to": FORMAT_VERSION, "n_articles": len(seg.articles)}


def upgrade_store(store, *, current: int, want: dict) -> dict | None:
    """The Milvus store's `upgrade`: its live generation rewritten in place by the step for its
    layout (`STORE_STEPS`), when it was built as ``want`` says; ``current``: `milvus.FORMAT`.
    Caller holds the store as its writer (`upsert.writing`).

    Returns:
        ``{"from", "to", "n_articles"}``, or None when nothing was done.
    """
    if not STORE_STEPS:
        return None  # (one layout so far: no request to the store)
    live = store.live()
    if live is None:
        return None
    manifest = live["manifest"]
    old = manifest.get("format")
    step = STORE_STEPS.get(old) if old != current else None
    if step is None or any(manifest.get(k) != v for k, v in want.items()):
        return None
    new = step(store, live)
    store.set_live(live["gen"], {**new, "format": current}, previous=live.get("previous"))
    n = store.n_articles(live["gen"])
    logger.warning(UPGRADED.format(old=old, new=current, n=n))
    return {"from": old, "to": current, "n_articles": n}
