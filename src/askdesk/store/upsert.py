"""The writer of a Milvus store: a selection -> deletes and upserts of the articles it changes.

The same selections as the folder's writer (`build.for_sync`, `for_add`, `for_remove`) turn the
store's articles into the new list; only the difference is written: new articles are embedded and
upserted, then the rows of removed ones deleted, batch by batch (`milvus` has the layout and the
order within a batch that keeps readers safe; a reader during a write sees the old articles and
some of the new). An article's chunking and vectors are the folder's (`build.plan`,
`build.embed`); a new model or chunking re-embeds every article into a new generation that goes live
when complete.

Before a write changes anything, what it will replace is kept for `askdesk rollback`
(`milvus_rollback`: the generation a rebuild replaces, or the rows a write to the live one replaces).

Crashes: each batch is recorded in the store's "journal" row before it is written and cleared
after; `repair`, run at the start of every write, deletes what a killed writer's last batch left
(the batches before it are complete and stay: a re-run embeds only what is missing).

Two writers: in one process they queue on a lock (`Config.lock_wait`, then refused). Across
processes a Milvus Lite file is opened by one process only, so a second one is refused at open; on
a server a lease row ("writer") refuses the second writer, naming the first (pid, host, since when).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..articles.chunk import ENCODING, split_sentences
from ..articles.ingest import Skipped, drop_near_duplicates
from ..config import Config
from ..errors import BadInputError, EmptyCorpusError, IndexLockedError
from ..models.embed import Embedder
from ..types import Article
from ..version import __version__
from . import build, milvus_rollback
from .folder_snapshot import FolderSnapshot
from .milvus import FORMAT, MilvusStore
from .milvus_write import ARTICLES_PER_BATCH, EmbedArticles, Embedded, text_hash
from .selection import Held
from .upgrade import upgrade_store

logger = logging.getLogger(__name__)

LEASE_S = 30.0  # a server's write lease; renewed every third of it while the write runs
SETTLE_S = 0.5  # a claim is read back after this long: of two writers claiming at once, one wins


def _apply(select: build.Selection, old: list[Article], recorded: Path | None) -> tuple[list[Article], list[Article]]:
    """(the articles the store holds after the selection, the stored ones it looked at): the
    folder's selections, which return what changes (`selection.Delta`), over the stored listing."""
    delta = select(Held(articles=old), recorded)
    written = {a.id: a for a in delta.write}
    planned = [a for a in old if a.id not in delta.remove and a.id not in written] + list(written.values())
    return planned, old


def _diff(old: list[Article], new: list[Article]) -> build.Changes:
    """What changed: an article is the same when its id is (its path may have moved), updated
    when its key (url or path) is and its text is not; ``changed`` lists them as the folder's writer does."""
    old_ids, new_ids = {a.id for a in old}, {a.id for a in new}
    old_keys, new_keys = {build.key(a) for a in old}, {build.key(a) for a in new}
    unchanged = sum(1 for a in new if a.id in old_ids)
    updated = sum(1 for a in new if a.id not in old_ids and build.key(a) in old_keys)
    gone = [a for a in old if a.id not in new_ids and build.key(a) not in new_keys]
    changed = [("updated" if build.key(a) in old_keys else "added", a.path or a.id, a.title)
               for a in new if a.id not in old_ids] + [("removed", a.path or a.id, a.title) for a in gone]
    return build.Changes(added=len(new) - unchanged - updated, updated=updated, removed=len(gone),
                         unchanged=unchanged, changed=changed)


def local_embedding(config: Config, embedder: Embedder) -> EmbedArticles:
    """Embedding in this process: `build.plan` and `build.embed`, a batch of articles at a time."""
    def run(articles: list[Article]) -> Iterator[Embedded]:
        for i in range(0, len(articles), ARTICLES_PER_BATCH):
            batch = articles[i:i + ARTICLES_PER_BATCH]
            p = build.plan(batch, None, config, embedder.fits)
            chunk_vectors, sentence_vectors, n = build.embed(p, embedder)
            for j, a in enumerate(batch):
                cs = p.chunks.get(a.id, [])
                vecs = (np.stack([chunk_vectors[c.id] for c in cs]) if cs
                        else np.zeros((0, embedder.dim), np.float32))
                yield Embedded(a, p.sentences[a.id], cs, vecs, sentence_vectors[a.id], n if j == 0 else 0)
    return run


def write(store: MilvusStore, select: build.Selection, *, config: Config, embedder: Embedder,
          skipped: Sequence[Skipped] = (), progress: build.Progress | None = None, corpus: Path | None = None,
          record_corpus: bool = False, embedding: EmbedArticles | None = None,
          scope: Sequence[str] | None = None) -> build.Changes:
    """Apply the articles ``select`` makes of the store's to the store; returns what changed.

    Args:
        embedding: how new articles are chunked and embedded (`local_embedding` when None; the Ray
            job's `rayjob.ray_embedding`).
        corpus, record_corpus: as for `build.write`.
        scope: the ids and keys (`build.key`) of the only stored articles ``select`` can change
            (`Desk.add`, `Desk.remove`): the others are neither read nor written. None (a sync):
            the selection sees every stored article's fields (no text, no vectors).

    Raises:
        EmptyCorpusError: the selection leaves no article.
        IndexLockedError: another writer holds the store.
    """
    with writing(store, config.lock_wait):
        repair(store)
        upgrade_store(store, current=FORMAT, want={"model": config.model, **build.settings(config)})  # an older layout
        live = store.live()
        gen = live["gen"] if live else None
        manifest = dict(live["manifest"]) if live else {}
        reuse = gen is not None and all(manifest.get(k) == v for k, v in
                                        {"model": config.model, "format": FORMAT, **build.settings(config)}.items())
        scope = scope if reuse else None  # embedding every article again reads them all
        old = store.listing(gen, scope) if gen else []
        others = store.n_articles(gen) - len(old) if gen and scope is not None else 0  # neither read nor changed
        recorded_entry = manifest.get("corpus")
        recorded = Path(recorded_entry["path"]) if recorded_entry else None
        planned, seen = _apply(select, old, recorded)
        old_ids = {a.id for a in old}
        if not reuse and old_ids:  # a new model or chunking: every kept article is embedded again
            full = store.read_articles(gen, [a.id for a in planned if a.id in old_ids])
            planned = [full[a.id][0] if a.id in full else a for a in planned]
        articles, dupes = near_duplicates(store, gen if reuse else None, planned, old_ids if reuse else set())
        if not articles and not others:
            raise EmptyCorpusError("that would leave the index empty; add articles first (askdesk add FILE)")
        changes = _diff(seen, articles)
        if not (reuse and old_ids) or len(changes.changed) > build.CHANGED_LISTED:
            changes.changed = []  # listed as the folder's writer lists them: a write to an index, not a build
        changes.unchanged += others
        changes.skipped = [(s.path, s.reason) for s in [*skipped, *dupes]]
        changes.decoded = [(a.path or a.id, a.encoding) for a in articles if a.encoding and a.id not in old_ids]
        changes.reembedded = bool(old_ids) and not reuse
        record = store.corpus_record(corpus) if record_corpus else recorded_entry
        keep = {a.id for a in articles}
        paths = {a.id: a.path for a in old}
        new = [a for a in articles if a.id not in old_ids] if reuse else articles
        gone = [a.id for a in old if a.id not in keep] if reuse else []
        moved = [a for a in articles if a.id in paths and a.path != paths[a.id]] if reuse else []
        if reuse and not (new or gone or moved) and record == recorded_entry:
            changes.n_articles, changes.n_chunks = len(articles) + others, _chunks(store, gen)
            return changes
        target = gen if reuse else f"g{max([int(g[1:]) for g in store.generations()] + [0]) + 1}"
        analyzer = manifest.get("analyzer", "askdesk") if reuse else store.analyzer  # as its collections were made
        if not reuse:
            store.create(target, embedder.dim, analyzer)
            if gen is None:  # a new store answers as it fills: each batch written is complete
                store.set_live(target, {**_manifest(config, embedder, manifest), "analyzer": analyzer,
                                        "corpus": record})
        # What `askdesk rollback` brings back: kept before anything changes (milvus_rollback)
        previous = (milvus_rollback.before_write(store, live, [a.id for a in new] + gone + [a.id for a in moved])
                    if reuse else milvus_rollback.before_rebuild(live))
        if moved:  # same text, another path (the folder moved): the records only
            full = store.read_records(target, [a.id for a in moved])
            key = store.begin(target, [a.id for a in moved])  # an upsert killed midway loses the row
            store.put_records(target, [(a, *full[a.id][1:]) for a in moved if a.id in full])
            store.end(key)
        # New articles first, removals last: while the write runs, a reader finds an updated story in
        # its old version or its new one (or both for a moment), never in neither.
        changes.embedded = _embed_and_write(store, target, analyzer, new,
                                            embedding or local_embedding(config, embedder), progress)
        for i in range(0, len(gone), ARTICLES_PER_BATCH * 8):
            ids = gone[i:i + ARTICLES_PER_BATCH * 8]
            key = store.begin(target, ids)
            store.delete_articles(target, ids)
            store.end(key)
        # A rebuild goes live here; its predecessor stays, for rollback (and a question in flight may read it)
        store.set_live(target, {**(manifest if reuse else {}), **_manifest(config, embedder, manifest),
                                "analyzer": analyzer, "corpus": record}, previous=previous)
        milvus_rollback.collect(store)
        changes.n_articles, changes.n_chunks = len(articles) + others, _chunks(store, target)
        return changes


def _embed_and_write(store: MilvusStore, gen: str, analyzer: str, new: list[Article], embedding: EmbedArticles,
                     progress: build.Progress | None) -> int:
    """Embed ``new`` and write it a batch at a time; returns the texts that went through the model."""
    done = chunks = encoded = 0
    batch: list[Embedded] = []

    def flush() -> None:
        nonlocal done, chunks
        key = store.begin(gen, [e.article.id for e in batch])
        store.write_articles(gen, batch, analyzer)
        store.end(key)
        done += len(batch)
        chunks += sum(len(e.chunks) for e in batch)
        batch.clear()
        if progress:
            progress(done, len(new), f"articles ({chunks:,} chunks)")

    if progress:
        progress(0, len(new), "articles (0 chunks)")
    for e in embedding(new):
        batch.append(e)
        encoded += e.encoded
        if len(batch) >= ARTICLES_PER_BATCH:
            flush()
    if batch:
        flush()
    return encoded


def _manifest(config: Config, embedder: Embedder, old: dict) -> dict:
    int8 = getattr(embedder, "int8_active", None)
    return {"model": config.model, "dim": int(embedder.dim), "tokenizer": ENCODING, **build.settings(config),
            "embedder": {"int8": int8 if int8 is not None else (old.get("embedder") or {}).get("int8")},
            "askdesk_version": __version__, "format": FORMAT,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _chunks(store: MilvusStore, gen: str) -> int:
    return int(store.client.query(store.names(gen)["chunks"], filter="", output_fields=["count(*)"])[0]["count(*)"])


def copy(snapshot: FolderSnapshot, store: MilvusStore, *, lock_wait: float = 30.0,
         progress: build.Progress | None = None) -> int:
    """Copy an index folder's live generation into an empty Milvus store, vectors as they are
    (nothing is embedded again; an IVF index's vectors are its float16 ones). Returns the chunks copied.

    Raises:
        BadInputError: the store already holds an index (copy into another ``#name``).
    """
    with writing(store, lock_wait):
        repair(store)
        if store.live() is not None:
            raise BadInputError(f"the Milvus store {store.uri!r} already holds an index; copy into an empty one "
                                f"(another name: {store.uri.split('#')[0]}#copy)")
        m = snapshot.manifest
        manifest = {**{k: m[k] for k in ("model", "dim", "tokenizer", "embedder", *build.settings(Config()))
                       if k in m},
                    "askdesk_version": __version__, "format": FORMAT, "analyzer": store.analyzer,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "corpus": store.corpus_record((m.get("corpus") or {}).get("path"))}
        store.create("g1", int(m["dim"]), store.analyzer)
        store.set_live("g1", manifest)
        articles = snapshot.all_articles()
        done = chunks = 0
        for i in range(0, len(articles), ARTICLES_PER_BATCH * 4):
            batch = []
            for a in articles[i:i + ARTICLES_PER_BATCH * 4]:
                cs, spans, vecs, sentence_vecs, _ = snapshot.article_parts(a.id)  # its segment's rows, as stored
                batch.append(Embedded(a, list(spans), list(cs), np.asarray(vecs, np.float32),
                                      np.asarray(sentence_vecs, np.float32)))
            key = store.begin("g1", [e.article.id for e in batch])
            store.write_articles("g1", batch, store.analyzer)
            store.end(key)
            done, chunks = done + len(batch), chunks + sum(len(e.chunks) for e in batch)
            if progress:
                progress(done, len(articles), f"articles ({chunks:,} chunks)")
        store.set_live("g1", manifest)  # a write: readers reload
        return chunks


def near_duplicates(store: MilvusStore, gen: str | None, planned: list[Article], old_ids: set[str]
                    ) -> tuple[list[Article], list[Skipped]]:
    """`ingest.drop_near_duplicates` over the new articles and the stored ones sharing a sentence
    with them (found by the sentence hashes the store keeps): the stored ones the selection did not
    see first, then ``planned``'s order. The other stored articles cannot take part and are not read."""
    new = [a for a in planned if a.id not in old_ids]
    if not new:
        return planned, []
    planned_ids = {a.id for a in planned}
    related: set[str] = set()
    if gen is not None:
        hashes = {text_hash(a.text[s:e]) for a in new for s, e in split_sentences(a.text)}
        related = store.holders(gen, sorted(hashes)) - {a.id for a in new} - (old_ids - planned_ids)
    full = store.read_articles(gen, sorted(related)) if related else {}
    part = [full[i][0] for i in sorted(full) if i not in planned_ids]  # stored, outside the selection's scope
    part += [full[a.id][0] if a.id in full else a for a in planned if a.id in full or a.id not in old_ids]
    kept, dupes = drop_near_duplicates(part, known={i: spans for i, (_, spans) in full.items()})
    dropped = {a.id for a in part} - {a.id for a in kept}
    return [a for a in planned if a.id not in dropped], dupes


def repair(store: MilvusStore) -> None:
    """Finish what a killed writer left: delete its last batch's rows, drop a rebuild that never went
    live, finish a rollback."""
    live = store.live()
    for key, batch in store.journal():
        if "restore" in batch:  # a rollback: done again from its start, then it goes live
            milvus_rollback.finish(store, key, batch)
            live = store.live()
            continue
        if live is not None and batch["gen"] == live["gen"]:  # (a rebuild's generation goes below)
            store.delete_articles(batch["gen"], batch["ids"])
        logger.warning("finished a write to %s that was interrupted: %d articles of its last batch deleted "
                       "(written again when selected)", store.uri, len(batch["ids"]))
        store.end(key)
    milvus_rollback.collect(store)  # a rebuild that never went live, undo sets of older writes


def rollback(store: MilvusStore, *, lock_wait: float = 30.0) -> dict:
    """Bring back the store as it was before the last write (`milvus_rollback.rollback`), holding it as a writer."""
    with writing(store, lock_wait):
        repair(store)
        return milvus_rollback.rollback(store)


# ---- two writers --------------------------------------------------------------------------------

@contextlib.contextmanager
def writing(store: MilvusStore, wait: float) -> Iterator[None]:
    """Hold the store for one writer: the in-process lock, and on a server the lease row too."""
    lock = store.writer_lock()
    if not (lock.acquire(timeout=wait) if wait > 0 else lock.acquire(blocking=False)):
        raise IndexLockedError(f"another write to the Milvus store {store.uri!r} is running in this process; "
                               "wait for it to finish and run again")
    try:
        if store.kind == "lite":  # Milvus Lite: this process is the file's only user
            yield
            return
        with _lease(store, wait):
            yield
    finally:
        lock.release()


@contextlib.contextmanager
def _lease(store: MilvusStore, wait: float) -> Iterator[None]:
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait
    while True:
        held = store.get_meta("writer")
        if held is None or held["expires"] < time.time():
            store.put_meta("writer", _claim(token))
            time.sleep(SETTLE_S)  # a writer that found it free at the same moment has written its claim by now
            held = store.get_meta("writer")
            if held and held["token"] == token:
                break
        if time.monotonic() >= deadline:
            raise IndexLockedError(
                f"another askdesk process is writing the Milvus store {store.uri!r} (pid {held['pid']} on "
                f"{held['host']}, since {held['since']}); writers are refused, never interleaved: wait for it "
                f"to finish and run again (a writer that died releases the store {LEASE_S:.0f} s after)")
        time.sleep(0.2)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LEASE_S / 3):
            with contextlib.suppress(Exception):  # a missed renewal is retried; the lease has slack
                store.put_meta("writer", _claim(token, since=held["since"]))

    beat = threading.Thread(target=renew, name="askdesk-lease", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        with contextlib.suppress(Exception):
            if (store.get_meta("writer") or {}).get("token") == token:
                store.delete_meta("writer")


def _claim(token: str, since: str | None = None) -> dict:
    host, pid, _ = token.split(":")
    return {"token": token, "host": host, "pid": int(pid), "expires": time.time() + LEASE_S,
            "since": since or datetime.now(timezone.utc).isoformat(timespec="seconds")}
