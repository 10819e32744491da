"""The writer: plan -> embed -> assemble -> publish, under the index folder's lock.

- `plan`: which articles the new generation holds, how each is split into sentences and chunks,
  and which texts go through the model (only new text: an unchanged article keeps its vectors).
- `embed`: one model pass per chunk gives the chunk's vector and, pooled from the same token
  vectors, each of its sentences' vectors (embed.embed_with_spans).
- `assemble`: records and vectors (new and reused) -> a `Generation`: FAISS over the chunks, BM25
  over the same rows, sentence vectors in article order.
- `index.publish`: written beside the live generation, made live with one os.replace.

`write` runs the four; `Desk.sync`, `add` and `remove` call it with a selection (`for_sync`,
`for_add`, `for_remove`) that turns the live generation's articles into the new one's.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import index as index_mod
from .chunk import ENCODING, chunk_article, split_sentences
from .config import Config
from .embed import Embedder, embed_with_spans
from .errors import EmptyCorpusError, IndexCorruptError, IndexMismatchError
from .ingest import Skipped, dedupe, drop_near_duplicates
from .lexical import BM25
from .types import Article, Chunk
from .vectors import FaissIndex, chunk_key, day_number

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
# old articles, the folder the index was last synced with -> (the new generation's articles,
# the old ones as this selection sees them, for counting what changed)
Selection = Callable[[list[Article], "Path | None"], tuple[list[Article], list[Article]]]


@dataclass
class Changes:
    """What a write did, as `askdesk index` reports it."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    kept: int = 0  # articles not in the synced folder that stayed (no --prune)
    embedded: int = 0  # texts that went through the model
    n_articles: int = 0
    n_chunks: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    decoded: list[tuple[str, str]] = field(default_factory=list)  # (file, encoding) of non-UTF-8 files read
    reembedded: bool = False  # the index was built with other settings or another model: all embedded again

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- selections: the live articles -> the new generation's --------------------------------------

def key(a: Article) -> str:
    """What makes two versions of an article the same article: its url, else its path, else its id."""
    return a.url or a.path or a.id


def in_folder(a: Article) -> bool:
    """Whether the article was read from the synced folder: its path is relative to it (files
    from anywhere else keep an absolute path, see ingest.read_articles)."""
    return bool(a.path) and not Path(a.path).is_absolute()


def for_sync(articles: list[Article], folder: Path | None, *, unreadable: set[str] = frozenset(),
             prune: bool = False, kept: list[Article] | None = None) -> Selection:
    """Hold ``articles`` (read from ``folder``, or given), plus what the user did not remove.

    An old article goes only when its file was deleted from the folder the index was last synced
    with (``folder`` is that folder), or with ``prune``. Articles from a folder recorded before
    ``folder`` get absolute paths, so that "a.txt" there is never taken for "a.txt" here.
    ``unreadable``: files of ``folder`` that exist but were skipped (their articles stay).
    ``kept``: filled with the old articles kept that are not in ``folder``.
    """
    articles = dedupe(articles)
    keys, ids = {key(a) for a in articles}, {a.id for a in articles}
    kept = kept if kept is not None else []

    def select(old: list[Article], recorded: Path | None) -> tuple[list[Article], list[Article]]:
        seen = []
        for a in old:
            mine = folder is not None and recorded == folder and in_folder(a)
            if folder is not None and recorded is not None and not mine and in_folder(a) and a.url is None:
                a = dataclasses.replace(a, path=str(recorded / a.path))
            seen.append(a)
            if key(a) in keys or a.id in ids:
                continue  # updated or unchanged
            if prune or mine and str(folder / a.path) not in unreadable:
                continue  # pruned, or its file was deleted from this folder: the user removed it
            kept.append(a)
        return articles + kept, seen

    return select


def for_add(new: list[Article]) -> Selection:
    """The old articles with ``new`` added (or replacing the versions with the same key)."""
    def select(old: list[Article], recorded: Path | None) -> tuple[list[Article], list[Article]]:
        keys = {key(a) for a in new}
        return dedupe([a for a in old if key(a) not in keys] + new), old

    return select


def for_remove(ids: set[str]) -> Selection:
    """The old articles less those with the given ids."""
    return lambda old, recorded: ([a for a in old if a.id not in ids], old)


def diff(old: list[Article], new: list[Article]) -> Changes:
    """What changed: an article is the same when its id is (its path may have moved), updated
    when its key (url or path) is and its text is not."""
    old_ids, new_ids = {a.id for a in old}, {a.id for a in new}
    old_keys, new_keys = {key(a) for a in old}, {key(a) for a in new}
    unchanged = sum(1 for a in new if a.id in old_ids)
    updated = sum(1 for a in new if a.id not in old_ids and key(a) in old_keys)
    removed = sum(1 for a in old if a.id not in new_ids and key(a) not in new_keys)
    return Changes(added=len(new) - unchanged - updated, updated=updated, removed=removed, unchanged=unchanged)


# ---- plan ----------------------------------------------------------------------------------------

def settings(cfg: Config) -> dict:
    """The chunking and embedding settings a generation records; vectors are reused only when
    the old generation recorded the same (and the same model)."""
    return {"chunk_tokens": cfg.chunk_tokens, "chunk_overlap": cfg.chunk_overlap, "max_wordpieces": cfg.max_wordpieces,
            "title_prefix": True, "sentence_vectors": "late-pooled", "int8": cfg.int8}


@dataclass
class Plan:
    """The new generation's records, and the texts that must go through the model."""

    articles: list[Article]
    sentences: dict[str, list[tuple[int, int]]]  # article id -> sentence spans
    chunks: dict[str, list[Chunk]]  # article id -> its chunks
    reused: set[str]  # article ids whose chunk and sentence vectors come from the old generation
    texts: list[str] = field(default_factory=list)  # to embed: chunk texts after their title line, or lone sentences
    spans: list[list[tuple[int, int]]] = field(default_factory=list)  # per text, sentence spans pooled from its pass
    chunk_text: dict[str, int] = field(default_factory=dict)  # chunk id -> its row in texts
    sentence_slots: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # article -> (text row, span no.)


def title_prefix(a: Article) -> str:
    # The title gives a chunk its topic ("the rainforest" -> "Amazon rainforest").
    return f"{a.title}\n" if a.title else ""


def plan(articles: list[Article], old: index_mod.FolderSnapshot | None, cfg: Config,
         fits: Callable[[str], bool]) -> Plan:
    """Split each article into sentences and chunks; queue the new text for the model.

    An article the old generation holds under the same id (same text, title and date) keeps its
    sentences, chunks and vectors: ``old`` must have been built with the same settings.
    """
    p = Plan(articles, {}, {}, set())
    for a in articles:
        prefix = title_prefix(a)
        if old is not None and a.id in old.articles:
            p.sentences[a.id] = old.sentences[a.id]
            p.reused.add(a.id)
            continue
        p.sentences[a.id] = split_sentences(a.text)
        p.chunks[a.id] = chunk_article(a, max_tokens=cfg.chunk_tokens, overlap=cfg.chunk_overlap,
                                       fits=lambda t, pre=prefix: fits(pre + t))
        rows = {}
        for c in p.chunks[a.id]:
            rows[c.id] = p.chunk_text[c.id] = len(p.texts)
            p.texts.append(prefix + c.text)
            p.spans.append([])
        slots = []
        for s, e in p.sentences[a.id]:
            c = _home_chunk(p.chunks[a.id], s, e)
            if c is None:  # no chunk holds the whole sentence: it is embedded alone
                p.texts.append(a.text[s:e])
                p.spans.append([(0, e - s)])
                slots.append((len(p.texts) - 1, 0))
            else:
                off = len(prefix) - c.start  # article offsets -> offsets in the chunk's text
                p.spans[rows[c.id]].append((s + off, e + off))
                slots.append((rows[c.id], len(p.spans[rows[c.id]]) - 1))
        p.sentence_slots[a.id] = slots
    if old is not None:
        for c in old.chunks:
            if c.article_id in p.reused:
                p.chunks.setdefault(c.article_id, []).append(c)
    return p


def _home_chunk(chunks: Sequence[Chunk], s: int, e: int) -> Chunk | None:
    """The chunk holding sentence [s, e) with the most context around it (overlap puts a
    sentence in two chunks; the one where it sits nearer the middle reads it better)."""
    best, best_gap = None, -1
    for c in chunks:
        if c.start <= s and e <= c.end:
            gap = min(s - c.start, c.end - e)
            if gap > best_gap:
                best, best_gap = c, gap
    return best


# ---- embed ---------------------------------------------------------------------------------------

def embed(p: Plan, embedder: Embedder, progress: Progress | None = None
          ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """The plan's texts through the model: (chunk id -> vector, article id -> sentence vectors,
    texts encoded)."""
    total, done = len(p.texts), 0
    if progress:
        progress(0, total, "embedding")

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(min(done, total), total, "embedding")

    vecs, span_vecs, n_encoded = embed_with_spans(embedder, p.texts, p.spans, progress=tick)
    chunk_vectors = {cid: vecs[row] for cid, row in p.chunk_text.items()}
    dim = vecs.shape[1] if total else embedder.dim
    sentence_vectors = {aid: np.stack([span_vecs[r][j] for r, j in slots]) if slots else np.zeros((0, dim), np.float32)
                        for aid, slots in p.sentence_slots.items()}
    return chunk_vectors, sentence_vectors, n_encoded


# ---- assemble ------------------------------------------------------------------------------------

def assemble(p: Plan, chunk_vectors: Mapping[str, np.ndarray], sentence_vectors: Mapping[str, np.ndarray], *,
             manifest: dict, ann_above: int, old: index_mod.FolderSnapshot | None = None) -> index_mod.Generation:
    """Records and vectors -> a `Generation` ready for `index.publish`.

    ``chunk_vectors`` and ``sentence_vectors`` cover the articles the plan does not reuse from
    ``old`` (bench/ passes vectors it made itself); the reused ones are read from ``old``.
    """
    chunks = [c for a in p.articles for c in p.chunks.get(a.id, ())]
    if not chunks:
        raise EmptyCorpusError("no article has any text to index; add articles with text (askdesk add FILE)")
    old_rows: dict[str, int] = {}
    old_vecs = None
    if old is not None and p.reused:
        old_rows = {c.id: r for r, c in enumerate(old.chunks) if c.article_id in p.reused}
        old_vecs = old.vectors.all_vectors()
    dim = int(manifest["dim"])
    vecs = np.empty((len(chunks), dim), np.float32)
    for i, c in enumerate(chunks):
        vecs[i] = old_vecs[old_rows[c.id]] if c.id in old_rows else chunk_vectors[c.id]
    blocks = []
    for a in p.articles:
        if a.id in p.reused:
            r, n = old.sentence_row[a.id], len(p.sentences[a.id])
            blocks.append(np.asarray(old.sentence_vectors[r:r + n], dtype=np.float32))
        else:
            blocks.append(np.asarray(sentence_vectors[a.id], dtype=np.float32).reshape(-1, dim))
    sent_vecs = np.concatenate(blocks) if blocks else np.zeros((0, dim), np.float32)
    keys = np.fromiter((chunk_key(c.id) for c in chunks), np.int64, len(chunks))
    day = {a.id: day_number(a.date) for a in p.articles}
    dates = np.fromiter((day[c.article_id] for c in chunks), np.int32, len(chunks))
    titles = {a.id: a.title for a in p.articles}
    if old is not None and old_rows:  # same article id: same title and text, so the same terms as before
        lexical = old.lexical.refit([old_rows.get(c.id) for c in chunks],
                                    lambda i: f"{titles[chunks[i].article_id]} {chunks[i].text}", keys, dates=dates)
    else:
        lexical = BM25.fit((f"{titles[c.article_id]} {c.text}" for c in chunks), keys, dates=dates)
    vectors = FaissIndex.build(vecs, keys, dates, ann_above=ann_above, previous=old.vectors if old else None)
    return index_mod.Generation(manifest=manifest, articles=p.articles, sentences=p.sentences,
                                sentence_vectors=sent_vecs, chunks=chunks, vectors=vectors, lexical=lexical)


# ---- write: the four steps under the lock --------------------------------------------------------

def write(index_dir: Path, select: Selection, *, config: Config, embedder: Embedder,
          current: Callable[[], index_mod.FolderSnapshot | None], skipped: Sequence[Skipped] = (),
          progress: Progress | None = None, corpus: Path | None = None, record_corpus: bool = False) -> Changes:
    """Publish the generation ``select`` makes of the live one; returns what changed.

    Args:
        current: the live generation, loaded (the caller's, so that it is not read twice).
        corpus, record_corpus: with ``record_corpus`` the folder synced with, recorded in the
            manifest (None forgets it); without, the live generation's record is kept.

    Raises:
        EmptyCorpusError: the selection leaves no article.
        IndexLockedError, IndexWriteError: another writer holds the lock; the write failed.
    """
    with index_mod.lock(index_dir, timeout=config.lock_wait):
        index_mod.collect_garbage(index_dir)  # what a killed writer left behind
        old, old_articles, why = _old(index_dir, current)
        recorded_entry = old.manifest.get("corpus") if old is not None else None
        if old is None and old_articles:  # unreadable or another format/model: its articles are kept anyway
            recorded_entry = (index_mod.read_manifest(index_dir / index_mod.current_generation(index_dir))
                              .get("corpus") if why != "corrupt" else None)
        recorded = Path(recorded_entry["path"]) if recorded_entry else None
        planned, seen = select(old_articles, recorded)
        articles, dupes = drop_near_duplicates(planned, known=old.sentences if old is not None else None)
        if not articles:
            raise EmptyCorpusError("that would leave the index empty; add articles first (askdesk add FILE)")
        changes = diff(seen, articles)
        changes.skipped = [(s.path, s.reason) for s in [*skipped, *dupes]]
        old_ids = {a.id for a in old_articles}
        changes.decoded = [(a.path or a.id, a.encoding) for a in articles if a.encoding and a.id not in old_ids]
        record = index_mod.corpus_record(corpus, index_dir) if record_corpus else recorded_entry
        reuse = old is not None and all(old.manifest.get(k) == v for k, v in settings(config).items())
        changes.reembedded = bool(old_articles) and not reuse
        nothing = (reuse and not (changes.added or changes.updated or changes.removed) and record == recorded_entry
                   and {(a.id, a.path) for a in articles} == {(a.id, a.path) for a in old_articles})
        if nothing:
            changes.n_articles, changes.n_chunks = old.manifest["n_articles"], old.manifest["n_chunks"]
            return changes
        p = plan(articles, old if reuse else None, config, embedder.fits)
        logger.info("embedding %d texts (%d articles reused)", len(p.texts), len(p.reused))
        chunk_vectors, sentence_vectors, changes.embedded = embed(p, embedder, progress)
        if progress:
            progress(len(p.texts), len(p.texts), "writing")
        dim = embedder.dim if p.texts else old.manifest["dim"]
        ran = getattr(embedder, "int8_active", None) if p.texts else (old.manifest.get("embedder") or {}).get("int8")
        manifest = {"model": config.model, "dim": int(dim), "tokenizer": ENCODING, **settings(config),
                    "embedder": {"int8": ran}, "corpus": record}
        gen = assemble(p, chunk_vectors, sentence_vectors, manifest=manifest, ann_above=config.ann_above,
                       old=old if reuse else None)
        index_mod.publish(index_dir, gen)
        changes.n_articles, changes.n_chunks = len(gen.articles), len(gen.chunks)
        return changes


def _old(index_dir: Path, current: Callable[[], index_mod.FolderSnapshot | None]
         ) -> tuple[index_mod.FolderSnapshot | None, list[Article], str | None]:
    """The live generation to build on: (loaded or None, its articles, why it could not be loaded).

    One that cannot be loaded (another format or model, a damaged file) still gives its articles
    (articles.jsonl): the new generation embeds them again instead of dropping them."""
    if index_mod.current_generation(index_dir) is None:
        return None, [], None
    try:
        old = current()
    except IndexMismatchError as e:
        logger.warning("%s: embedding its articles again", e)
        return None, index_mod.load_articles(index_dir), "mismatch"
    except IndexCorruptError as e:
        logger.warning("%s: building a new generation from what it still holds", e)
        return None, index_mod.load_articles(index_dir), "corrupt"
    return old, (old.all_articles() if old is not None else []), None
