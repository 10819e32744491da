"""Rollback for a Milvus store: the live row names the state before the last write, as the
folder's CURRENT names the generation before the live one.

Milvus Lite has no aliases, and a write to a store changes its generation in place, so the store
keeps that state in its own rows. The "live" row carries, beside the generation answering and its
manifest, ``previous``: ``{"gen", "manifest", "rows"}``:

- a write that embeds every article again into a new generation (a new model or chunking) keeps
  the old generation's collections; ``previous`` names it, with ``rows`` None;
- a write to the live generation (index, add, remove) first copies the rows it will replace or
  delete (its articles' rows, before) into an undo set, ``NAME_uN_articles``, ``_sentences``,
  ``_chunks`` (a generation's collections, named the same way), and lists the articles it will add:
  in the row itself (``added``, up to `ADDED_IN_ROW`), else a row each in the undo set's
  ``_articles`` (part -1); a write that only adds makes no undo set. ``previous`` names the same
  generation, its manifest before the write, and ``rows`` the undo set (or None). The write points
  "live" at it before it changes anything, so a write killed midway can be rolled back too; the
  write that finishes the killed one adds its own articles to the same undo (an article already
  there keeps its older rows).

`rollback` makes ``previous`` live again: it writes the undo set's rows back and deletes the articles
listed as added, having first copied what that replaces into an undo set of its own, so a second
rollback undoes the first. The new "live" row is one insert. Only the last write's undo is kept:
`collect` drops generations and undo sets that "live" does not name. A rollback killed midway is
finished by the next write (its "journal" row holds what it was doing: `finish`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from ..errors import IndexCorruptError, IndexMissingError
from .milvus import MilvusStore
from .milvus_collections import ROWS_PER_REQUEST, count_rows, get_rows, put_rows, query_all, str_list

logger = logging.getLogger(__name__)

ADDED = -1  # the part number of an undo set's row listing an article the write adds
ADDED_IN_ROW = 500  # ids listed in the "live" row itself (20 bytes each): rows stay far under 65,535 bytes
FIELDS = {"articles": ["pk", "article_id", "part", "meta", "blob", "akey", "path", "_v"],
          "sentences": ["key", "article_id", "hash", "_v"],
          "chunks": ["key", "id", "article_id", "date", "start", "end", "words", "vocab", "sentences", "vector"]}
IDS_PER_REQUEST = 200


def before_write(store: MilvusStore, live: dict, ids: Sequence[str]) -> dict:
    """Keep what a write to the live generation is about to replace (the rows of the articles ``ids``
    that are stored; the ids of the others, which it adds), then point "live" at it. Returns the
    ``previous`` the write's own "live" row records when it is done."""
    gen, prev = live["gen"], live.get("previous") or {}
    if prev.get("open") and prev.get("gen") == gen and prev.get("rows") in (None, *store.generations("u")):
        undo = {k: prev.get(k) for k in ("gen", "manifest", "rows", "added")}  # the write before was killed
    else:
        undo = {"gen": gen, "manifest": live["manifest"], "rows": None, "added": []}
    undo = capture(store, gen, ids, undo, live["manifest"])
    store.set_live(gen, live["manifest"], previous={**undo, "open": True})
    collect(store)
    return undo


def before_rebuild(live: dict | None) -> dict | None:
    """The ``previous`` of a write that goes live in a new generation: the one it replaces, kept
    as it is (or, after a killed write to it, as it was before that write)."""
    if live is None:
        return None
    prev = live.get("previous") or {}
    if prev.get("open") and prev.get("gen") == live["gen"]:
        return {k: prev.get(k) for k in ("gen", "manifest", "rows", "added")}
    return {"gen": live["gen"], "manifest": live["manifest"], "rows": None, "added": []}


def rollback(store: MilvusStore) -> dict:
    """Make the state before the last write live again; the one it replaces becomes the one
    before, so a second rollback undoes the first. Caller holds `upsert.writing` and has run `upsert.repair`.

    Returns:
        ``{"generation", "replaced", "n_articles", "n_chunks", "created"}`` of what is now live.

    Raises:
        IndexMissingError: an empty store, or nothing kept to roll back to.
        IndexCorruptError: what it would bring back is missing.
    """
    live = store.live()
    if live is None:
        raise IndexMissingError(f"no index in the Milvus store {store.uri!r}; build one with: "
                                f"askdesk index corpus/ --store {store.uri}")
    prev = live["previous"]
    if not prev:
        raise IndexMissingError(f"the Milvus store {store.uri!r} keeps no earlier state to roll back to (it was "
                                "written once, or by an askdesk that did not keep one)")
    back, rows, added = prev["gen"], prev.get("rows"), prev.get("added") or []
    if back not in store.generations() or rows and rows not in store.generations("u"):
        raise IndexCorruptError(f"the collections of the state before the live one ({rows or back}) are missing "
                                f"from the Milvus store {store.uri!r}; it cannot be brought back")
    undo = {"gen": live["gen"], "manifest": live["manifest"], "rows": None, "added": []}
    if back == live["gen"]:  # restored in place: what it replaces is kept for the next rollback
        undo = capture(store, back, [*_ids(store, rows), *added], undo, live["manifest"])
    after = {"gen": back, "manifest": prev["manifest"], "previous": undo}
    if rows or added:
        job = {"restore": rows, "added": added, "live": after}
        finish(store, store.begin(back, [], **job), {"gen": back, **job})
    else:
        store.set_live(**after)
        collect(store)
    logger.info("rolled %s back from %s (version %d) to %s as written %s", store.uri, live["gen"], live["version"],
                back, prev["manifest"].get("created"))
    return {"generation": back, "replaced": live["gen"], "n_articles": store.n_articles(back),
            "n_chunks": count_rows(store.client, store.names(back)["chunks"]),
            "created": prev["manifest"].get("created")}


def finish(store: MilvusStore, key: str, job: dict) -> None:
    """Do (or, after a kill, do again) a rollback's restore: idempotent, then "live" and the journal row."""
    restore(store, job["gen"], job["restore"], job.get("added") or [])
    live = store.live()
    if live is None or {k: live.get(k) for k in job["live"]} != job["live"]:
        store.set_live(**job["live"])
    store.end(key)
    collect(store)


def capture(store: MilvusStore, gen: str, ids: Sequence[str], undo: dict, manifest: dict) -> dict:
    """``undo`` ({"rows", "added", ...}) with the articles ``ids`` it does not hold yet: the rows of
    those ``gen`` holds copied into its undo set (made when first needed), the others listed as added."""
    names, rows, added = store.names(gen), undo.get("rows"), list(undo.get("added") or [])
    known = set(added)
    ids = [a for a in dict.fromkeys(ids) if a not in known]
    for i in range(0, len(ids), IDS_PER_REQUEST):
        part = ids[i:i + IDS_PER_REQUEST]
        if rows is not None:  # an article the undo set has keeps what it has
            have = {r["article_id"] for r in query_all(store.client, store.names(rows)["articles"],
                                                       _where(part, "part <= 0"), ["article_id"])}
            part = [a for a in part if a not in have]
        stored = {r["article_id"] for r in get_rows(store.client, names["articles"], [f"{a}:0" for a in part],
                                                    ["article_id"])} if part else set()
        kept = [a for a in part if a in stored]
        if kept and rows is None:
            rows = _new_set(store, manifest)
        # Its article row last: an article with it is whole there (a capture killed midway is done again).
        for kind in ("chunks", "sentences", "articles") if kept else ():
            _copy(store, query_all(store.client, names[kind], _where(kept), FIELDS[kind]), store.names(rows)[kind])
        added += [a for a in part if a not in stored]
    if len(added) > ADDED_IN_ROW:  # too many for the row: listed in the undo set
        rows = rows or _new_set(store, manifest)
        put_rows(store.client, store.names(rows)["articles"], [
            {"pk": f"{a}:+", "article_id": a, "part": ADDED, "meta": "", "blob": "", "akey": "", "path": "",
             "_v": [0.0, 0.0]} for a in added])
        added = []
    return {**undo, "rows": rows, "added": added}


def restore(store: MilvusStore, gen: str, rows: str | None, added: Sequence[str] = ()) -> None:
    """Write the undo set's rows back into ``gen`` (articles, then sentences, then chunks: a chunk a
    search finds has its article), then delete the articles listed as added (chunks first)."""
    names = store.names(gen)
    if rows is not None:
        undo = store.names(rows)
        for kind in ("articles", "sentences", "chunks"):
            _copy(store, query_all(store.client, undo[kind], "part >= 0" if kind == "articles" else "key >= 0",
                                   FIELDS[kind]), names[kind])
        added = [*added, *(r["article_id"] for r in query_all(store.client, undo["articles"], f"part == {ADDED}",
                                                               ["article_id"]))]
    store.delete_articles(gen, sorted(set(added)))


def collect(store: MilvusStore) -> None:
    """Drop the generations and undo sets that "live" names neither as live nor as before it
    (a killed rebuild's, an older write's undo)."""
    live = store.live()
    prev = (live or {}).get("previous") or {}
    keep = {(live or {}).get("gen"), prev.get("gen"), prev.get("rows")}
    for g in store.generations() + store.generations("u"):
        if g not in keep:
            store.drop(g)


def _ids(store: MilvusStore, rows: str | None) -> list[str]:
    """The articles an undo set holds or lists as added."""
    if rows is None:
        return []
    return sorted({r["article_id"] for r in query_all(store.client, store.names(rows)["articles"], "part <= 0",
                                                      ["article_id"])})


def _new_set(store: MilvusStore, manifest: dict) -> str:
    """A new, empty undo set for the generation of ``manifest`` (its dimension and analyzer)."""
    name = f"u{max([int(u[1:]) for u in store.generations('u')] + [0]) + 1}"
    store.create(name, int(manifest["dim"]), manifest.get("analyzer", "askdesk"))
    return name


def _where(ids: Sequence[str], also: str = "") -> str:
    return f"article_id in {str_list(ids)}" + (f" and {also}" if also else "")


def _copy(store: MilvusStore, rows: Iterable[dict], into: str) -> None:
    batch: list[dict] = []
    for r in rows:
        batch.append({k: v for k, v in r.items() if k != "sparse" and k != "vocab_sparse"})
        if len(batch) >= ROWS_PER_REQUEST:
            put_rows(store.client, into, batch)
            batch = []
    if batch:
        put_rows(store.client, into, batch)
