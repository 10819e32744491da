"""The writer: plan -> embed -> assemble -> publish, under the index folder's lock.

- a selection (`for_sync`, `for_add`, `for_remove`, `for_files`) turns the live articles into a
  `Delta`: the articles to write and the live ones to delete. Adding one article to 100k chunks
  looks up its key; it does not go through every article.
- `plan`: how each article to write is split into sentences and chunks, and which texts go
  through the model (only new text: an article written again keeps its vectors).
- `embed`: one model pass per chunk gives the chunk's vector and, pooled from the same token
  vectors, each of its sentences' vectors (embed.embed_with_spans).
- `assemble`: records and vectors -> a new segment: FAISS over its chunks, BM25 over the same
  rows, sentence vectors in article order.
- `index.publish`: the new segment and a manifest listing it beside the kept segments (with the
  deletions), made live with one os.replace.

Merging segments (by size tiers after a write, or all of them: `askdesk optimize`) is merge.py.
An index of an older format is first converted (upgrade.py: vectors carried over, nothing embedded).
A write that cannot reuse the live index (another model or chunking, a format no upgrade step
reads, a damaged file) embeds every article again into one segment, keeping them all.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..articles.chunk import ENCODING, chunk_article, split_sentences
from ..articles.ingest import Skipped, dedupe, drop_near_duplicates
from ..articles.quotes import Statement, find_statements
from ..config import Config
from ..errors import EmptyCorpusError, IndexCorruptError, IndexMismatchError
from ..models.embed import Embedder, embed_with_spans
from ..types import Article, Chunk
from . import index as index_mod
from . import upgrade
from .lexical import BM25
from .records import sentence_hash
from .selection import (  # noqa: F401 - the writer's selections: build.for_add, ... as before
    Delta,
    Held,
    Selection,
    for_add,
    for_files,
    for_remove,
    for_sync,
    in_folder,
    key,
)
from .vectors import FaissIndex, chunk_key, day_number

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
CHANGED_LISTED = 1000  # a write of more articles than this lists none of them in Changes.changed


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
    # Each article a write added, updated or removed: (change, path or id, title). Kept for writes of up
    # to CHANGED_LISTED articles (a watched folder's batch); a whole rebuild leaves it empty.
    changed: list[tuple[str, str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
    hashes: dict[str, np.ndarray] = field(default_factory=dict)  # article id -> its sentences' hashes
    kept: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # reused: (chunk, sentence) vectors
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
        if old is not None and old.find(a.id) is not None:
            chunks, spans, chunk_vecs, sentence_vecs, hashes = old.article_parts(a.id)
            p.sentences[a.id], p.chunks[a.id], p.hashes[a.id] = spans, list(chunks), hashes
            p.kept[a.id] = (chunk_vecs, sentence_vecs)
            p.reused.add(a.id)
            continue
        p.sentences[a.id] = split_sentences(a.text)
        p.hashes[a.id] = np.fromiter((sentence_hash(a.text[s:e]) for s, e in p.sentences[a.id]), np.int64,
                                     len(p.sentences[a.id]))
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


def statements(articles: Sequence[Article], progress: Progress | None = None) -> dict[str, tuple[Statement, ...]]:
    """Who says what in each of ``articles`` (`quotes.find_statements`), found once, when they are
    written: the parse is ~80 ms for a 1,600-word news article, minutes for thousands, so it reports
    its progress as a stage of its own instead of running silent inside the segment's write."""
    out: dict[str, tuple[Statement, ...]] = {}
    step = max(1, len(articles) // 100)
    for i, a in enumerate(articles, start=1):
        out[a.id] = tuple(find_statements(a.text))
        if progress and (i % step == 0 or i == len(articles)):
            progress(i, len(articles), "who said what")
    return out


# ---- assemble ------------------------------------------------------------------------------------

def assemble(p: Plan, chunk_vectors: Mapping[str, np.ndarray], sentence_vectors: Mapping[str, np.ndarray], *,
             manifest: dict, ann_above: int) -> index_mod.Generation:
    """Records and vectors -> a `Generation` holding them as one new segment, for `index.publish`.

    ``chunk_vectors`` and ``sentence_vectors`` cover the articles the plan does not reuse
    (bench/ passes vectors it made itself); the reused ones come with the plan.
    """
    chunks = [c for a in p.articles for c in p.chunks.get(a.id, ())]
    if not chunks:
        raise EmptyCorpusError("no article has any text to index; add articles with text (askdesk add FILE)")
    dim = int(manifest["dim"])
    vecs = np.empty((len(chunks), dim), np.float32)
    # Sentence vectors are float16 on disk (segment.write_segment), so they are gathered as float16
    # into one array made once: at 1M chunks (5M sentences) float32 copies per article and their
    # concatenation were 16 GB, and took the build's peak past a 24 GB machine.
    sent_vecs = np.empty((sum(len(p.sentences[a.id]) for a in p.articles), dim), np.float16)
    i = row = 0
    for a in p.articles:
        cs = p.chunks.get(a.id, ())
        if a.id in p.kept:
            cv, sv = p.kept[a.id]
            vecs[i:i + len(cs)] = cv
        else:
            for j, c in enumerate(cs):
                vecs[i + j] = chunk_vectors[c.id]
            sv = sentence_vectors[a.id]
        sv = np.asarray(sv).reshape(-1, dim)
        sent_vecs[row:row + len(sv)] = sv
        i, row = i + len(cs), row + len(sv)
    if row != len(sent_vecs):
        raise ValueError(f"{row} sentence vectors for {len(sent_vecs)} sentences")
    keys = np.fromiter((chunk_key(c.id) for c in chunks), np.int64, len(chunks))
    day = {a.id: day_number(a.date) for a in p.articles}
    dates = np.fromiter((day[c.article_id] for c in chunks), np.int32, len(chunks))
    titles = {a.id: a.title for a in p.articles}
    lexical = BM25.fit((f"{titles[c.article_id]} {c.text}" for c in chunks), keys, dates=dates)
    vectors = FaissIndex.build(vecs, keys, dates, ann_above=ann_above)
    hashes = np.concatenate([p.hashes[a.id] for a in p.articles]) if p.articles else np.zeros(0, np.int64)
    new = index_mod.NewSegment(articles=p.articles, sentences=p.sentences, sentence_vectors=sent_vecs,
                               hashes=hashes, chunks=chunks, vectors=vectors, lexical=lexical)
    return index_mod.Generation(manifest=manifest, new=new)


def kept_segments(old: index_mod.FolderSnapshot, remove: set[str]) -> list[index_mod.Kept]:
    """The live segments, each with ``remove`` added to its deletions (a segment left empty goes)."""
    out = [kept_segment(seg, dead | {i for i in remove if i in seg.position})
           for seg, dead in zip(old.segments, old.deleted)]
    return [k for k in out if k is not None]


def kept_segment(seg: index_mod.Segment, dead: frozenset[str]) -> index_mod.Kept | None:
    """A segment as the next generation keeps it, with its live counts; None when nothing of it is live."""
    if len(dead) >= len(seg.articles):
        return None
    pos = np.fromiter((seg.position[i] for i in dead), np.int64, len(dead))
    first = seg.chunk_first
    return index_mod.Kept(seg.name, frozenset(dead), len(seg.articles) - len(dead),
                          len(seg) - int(np.sum(first[pos + 1] - first[pos])),
                          len(seg.sentence_vectors) - sum(len(seg.sentences[i]) for i in dead),
                          seg.meta.get("faiss", {"kind": "flat"}))


# ---- write: the four steps under the lock --------------------------------------------------------

def write(index_dir: Path, select: Selection, *, config: Config, embedder: Embedder,
          current: Callable[[], index_mod.FolderSnapshot | None], skipped: Sequence[Skipped] = (),
          progress: Progress | None = None, corpus: Path | None = None, record_corpus: bool = False) -> Changes:
    """Publish the generation ``select`` makes of the live one; returns what changed.

    The new articles go into one new segment; the live segments stay, with the removed and
    replaced articles added to their deletions. With another model or chunking, an older
    format or a damaged index, every article is embedded again into one segment.

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
        upgrade.upgrade(index_dir, want={"model": config.model, **settings(config)})  # an older format, converted
        old, old_articles, why = _old(index_dir, current)
        recorded_entry = old.manifest.get("corpus") if old is not None else None
        if old is None and old_articles:  # unreadable or another format/model: its articles are kept anyway
            recorded_entry = (index_mod.read_manifest(index_dir / index_mod.current_generation(index_dir))
                              .get("corpus") if why != "corrupt" else None)
        recorded = Path(recorded_entry["path"]) if recorded_entry else None
        reuse = old is not None and all(old.manifest.get(k) == v for k, v in settings(config).items())
        held = Held(old) if reuse else Held(articles=old.all_articles() if old is not None else old_articles)
        n_old = len(held)
        delta = select(held, recorded)
        if reuse:
            articles, dupes = _drop_near_duplicates(delta, old)
        else:  # everything is written again: the whole set, as one list
            articles = dedupe([a for a in held.all() if a.id not in delta.remove] + delta.write)
            articles, dupes = drop_near_duplicates(articles)
        changes = _count(delta, articles, n_old, held, full=not reuse)
        changes.skipped = [(s.path, s.reason) for s in [*skipped, *dupes]]
        changes.decoded = [(a.path or a.id, a.encoding) for a in articles if a.encoding and held.get(a.id) is None]
        changes.reembedded = n_old > 0 and not reuse
        if reuse and len(articles) + len(delta.remove) <= CHANGED_LISTED:
            changes.changed = _changed(delta, articles, held)
        record = index_mod.corpus_record(corpus, index_dir) if record_corpus else recorded_entry
        left = (changes.unchanged + changes.added + changes.updated) if reuse else len(articles)
        if not left:
            raise EmptyCorpusError("that would leave the index empty; add articles first (askdesk add FILE)")
        if reuse and not articles and not delta.remove and record == recorded_entry:
            changes.n_articles, changes.n_chunks = old.manifest["n_articles"], old.manifest["n_chunks"]
            return changes  # nothing changed: no new generation
        p = plan(articles, old if reuse else None, config, embedder.fits)
        logger.info("embedding %d texts (%d articles reused)", len(p.texts), len(p.reused))
        chunk_vectors, sentence_vectors, changes.embedded = embed(p, embedder, progress)
        found = statements(p.articles, progress)  # every article the new segment writes
        if progress:
            progress(len(p.texts), len(p.texts), "writing")
        dim = embedder.dim if p.texts else old.manifest["dim"]
        ran = getattr(embedder, "int8_active", None) if p.texts else (old.manifest.get("embedder") or {}).get("int8")
        manifest = {"model": config.model, "dim": int(dim), "tokenizer": ENCODING, **settings(config),
                    "embedder": {"int8": ran}, "corpus": record}
        gen = (assemble(p, chunk_vectors, sentence_vectors, manifest=manifest, ann_above=config.ann_above)
               if articles else index_mod.Generation(manifest=manifest))
        if gen.new is not None:
            gen.new.statements.update(found)
        if reuse:
            gen.kept = kept_segments(old, delta.remove)
        index_mod.publish(index_dir, gen)
        new = gen.new
        changes.n_articles = sum(k.n_articles for k in gen.kept) + (len(new.articles) if new else 0)
        changes.n_chunks = sum(k.n_chunks for k in gen.kept) + (len(new.chunks) if new else 0)
        return changes


def _drop_near_duplicates(delta: Delta, old: index_mod.FolderSnapshot, share: float = 0.8
                          ) -> tuple[list[Article], list[Skipped]]:
    """The articles to write less the copies of a story the index (or an earlier one of them)
    holds: ``share`` of its sentences already stand in one article (ingest.drop_near_duplicates'
    rule, with the index's sentences looked up by hash instead of split again)."""
    owner: dict[int, int] = {}  # sentence hash -> position in kept, for the articles written here
    kept: list[Article] = []
    dropped: list[Skipped] = []
    for a in delta.write:
        hashes = list({sentence_hash(a.text[s:e]) for s, e in split_sentences(a.text)})
        if old.get(a.id) is None and hashes:  # a live article written again is no copy of itself
            there = old.hash_owners(hashes, exclude=delta.remove)
            counts: dict[object, int] = {}
            for h, aid in zip(hashes, there):
                who = aid if aid is not None else owner.get(h)
                if who is not None:
                    counts[who] = counts.get(who, 0) + 1
            twin = max(counts, key=counts.get) if counts else None
            if twin is not None and counts[twin] >= share * len(hashes):
                other = kept[twin] if isinstance(twin, int) else old.article(twin)
                dropped.append(Skipped(a.path or a.id, f"near-duplicate of {other.path or other.id}"))
                continue
        for h in hashes:
            owner.setdefault(h, len(kept))
        kept.append(a)
    return kept, dropped


def _changed(delta: Delta, articles: list[Article], held: Held) -> list[tuple[str, str, str]]:
    """(change, path or id, title) of each article added, updated or removed (not those only moved)."""
    out, written = [], {a.id for a in articles}
    for a in articles:
        if held.get(a.id) is None:
            out.append(("updated" if a.id in delta.replaces else "added", a.path or a.id, a.title))
    replaced = {o for w, olds in delta.replaces.items() if w in written for o in olds}
    for i in sorted(delta.remove - written - replaced):
        a = held.get(i)
        if a is not None:
            out.append(("removed", a.path or a.id, a.title))
    return out


def _count(delta: Delta, articles: list[Article], n_old: int, held: Held, *, full: bool) -> Changes:
    """What a write did: an article is unchanged when its id was live (its path may have moved),
    updated when it replaces live articles with its key, removed when it goes without a newer
    version; the counts `askdesk index` prints."""
    written = {a.id for a in articles}
    live = {a.id for a in articles if held.get(a.id) is not None}
    updated = sum(1 for a in articles if a.id in delta.replaces and a.id not in live)
    added = len(articles) - len(live) - updated
    if full:  # the new set is ``articles``; everything else live went
        gone = n_old - len(live)
        olds = {o for a in articles if a.id in delta.replaces and a.id not in live for o in delta.replaces[a.id]}
        replaced = len(olds - written)
        return Changes(added=added, updated=updated, removed=max(0, gone - replaced), unchanged=len(live))
    lost = {o for w, olds in delta.replaces.items() if w not in written for o in olds}  # updates dropped as copies
    return Changes(added=added, updated=updated, removed=delta.removed + len(lost),
                   unchanged=n_old - len(delta.remove) + len(live))


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
    return old, [], None  # its articles are read through it (Held), not listed
