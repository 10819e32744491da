"""Desk: the one object users hold. Build or open an index, ask questions, add articles."""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from functools import cached_property
from datetime import date
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from . import answer as answer_mod
from . import generate as generate_mod
from . import index as index_mod
from . import news
from .chunk import ENCODING, chunk_article, split_sentences
from .config import Config
from .embed import Embedder, SentenceTransformerEmbedder, embed_with_spans
from .errors import BadInputError, BadQuestionError, EmptyCorpusError
from .ingest import Skipped, dedupe, drop_near_duplicates, normalize_date, read_articles
from .retrieve import BM25, best_sentence_cos, fuse, sentence_ranges, terms, top_rows
from .short import short_answer
from .types import Answer, Article, Chunk, Hit

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]

# Words that make a question lean on the one before it ("And what did he say about that?").
_FOLLOW_UP = re.compile(r"^(and|but|so|also|what about|how about)\b|\b(he|she|him|her|his|hers|they|them|their|it|its|"
                        r"that|this|those|these|there|then|the same)\b", re.I)


@dataclass(frozen=True)
class _State:
    snap: index_mod.Snapshot
    bm25: BM25
    generation: str
    sent_lo: np.ndarray  # per chunk row: its first whole sentence's row in snap.sentence_vectors
    sent_hi: np.ndarray  # ... and one past its last

    @cached_property
    def chunk_dates(self) -> np.ndarray:
        """Per chunk row, its article's date ("" when undated): date windows become one comparison.

        Built on the first dated question, not at load: a scan of every chunk (~3 ms at 10k)."""
        day = {a.id: a.date or "" for a in self.snap.articles.values()}
        return np.array([day[c.article_id] for c in self.snap.chunks], dtype=str)


class Desk:
    """A question-answering desk over one index folder.

    Args:
        index_dir: the index folder (default ``config.index``).
        config: settings; ``Config.from_env()`` when omitted.
        embedder: the embedding model; sentence-transformers with ``config.model`` when omitted.
        generator: an LLM that writes the answers (`askdesk.generate.Generator`); by default the one
            ``config.llm_url`` and ``config.llm_model`` name, or none: extractive answers only.
    """

    def __init__(self, index_dir: str | Path | None = None, *, config: Config | None = None,
                 embedder: Embedder | None = None, generator: generate_mod.Generator | None = None):
        self.config = config or Config.from_env()
        self.index_dir = Path(index_dir) if index_dir is not None else self.config.index
        self.embedder = embedder or SentenceTransformerEmbedder(
            self.config.model, batch_size=self.config.batch_size, max_wordpieces=self.config.max_wordpieces,
            quantize=self.config.int8)
        self._state: _State | None = None
        self._load_lock = threading.Lock()
        self.generator = generator if generator is not None else generate_mod.from_config(self.config)

    # -- opening and building -------------------------------------------------------------
    @classmethod
    def open(cls, index_dir: str | Path | None = None, *, config: Config | None = None,
             embedder: Embedder | None = None, generator: generate_mod.Generator | None = None) -> "Desk":
        """Open an existing index; raises IndexMissingError, IndexMismatchError or IndexCorruptError."""
        desk = cls(index_dir, config=config, embedder=embedder, generator=generator)
        desk._reload()
        return desk

    @classmethod
    def build(cls, corpus: str | Path | Iterable[Article], index_dir: str | Path | None = None, *,
              config: Config | None = None, embedder: Embedder | None = None,
              progress: Progress | None = None, generator: generate_mod.Generator | None = None,
              prune: bool = False) -> "Desk":
        """Build (or sync, see `sync`) the index from a folder of articles or from Article objects.

        Unchanged chunks keep their vectors from the existing index; only new text is embedded.
        Raises EmptyCorpusError when no readable article is found.
        """
        desk = cls(index_dir, config=config, embedder=embedder, generator=generator)
        desk.sync(corpus, progress=progress, prune=prune)
        return desk

    @classmethod
    def ensure(cls, corpus: str | Path, index_dir: str | Path | None = None, *, config: Config | None = None,
               embedder: Embedder | None = None, progress: Progress | None = None,
               generator: generate_mod.Generator | None = None) -> "Desk":
        """Open the index, building or syncing it first when it is missing or the corpus changed."""
        return cls.build(corpus, index_dir, config=config, embedder=embedder, progress=progress, generator=generator)

    @property
    def corpus(self) -> Path | None:
        """The article folder this desk syncs with and adds uploads to: ``config.corpus`` when
        set, else the folder the index was last synced with (when it still exists), else None."""
        if self.config.corpus is not None:
            return self.config.corpus
        return index_mod.recorded_corpus(self.index_dir)

    def sync(self, corpus: str | Path | Iterable[Article] | None = None, *, prune: bool = False,
             progress: Progress | None = None) -> dict:
        """Bring the index up to date with a folder of articles (or with Article objects).

        New and changed articles are added and updated; unchanged text is never embedded again.
        An article is removed only when its file was deleted from the folder the index was
        built from; articles that came from anywhere else (another folder, `add` of an outside
        file, another sync) are kept unless ``prune`` is set. The folder is recorded in the
        index, so the next sync, `askdesk serve` and the page default to it.

        Args:
            corpus: a folder, or Article objects; None: `Desk.corpus`, else ./corpus.
            prune: also remove every article that is not in ``corpus``.

        Returns:
            Counts: added, updated, removed, unchanged, kept (articles not in ``corpus`` that
            were kept), n_articles, n_chunks, skipped [(path, reason)], decoded [(path, encoding)].
        """
        folder: Path | None = None
        if corpus is None:
            corpus = self.corpus or Path("corpus")
        if isinstance(corpus, (str, Path)):
            folder = Path(corpus)
            if not folder.is_dir():
                raise BadInputError(f"corpus folder {str(folder)!r} does not exist; give a folder of .txt/.md/.html articles")
            articles, skipped = read_articles([folder], root=folder, max_bytes=self.config.max_file_bytes)
            folder = folder.resolve()
        else:
            articles, skipped = list(corpus), []
        if not articles:
            raise EmptyCorpusError(f"no readable article in {str(corpus)!r}; add .txt, .md or .html files and run again")
        articles = dedupe(articles)
        unreadable = {s.path for s in skipped}
        kept: list[Article] = []

        def plan(old: list[Article], recorded: Path | None) -> tuple[list[Article], list[Article]]:
            keys, ids = {_key(a) for a in articles}, {a.id for a in articles}
            seen = []  # the old articles as this sync sees them (paths rebased), for counting changes
            for a in old:
                mine = folder is not None and recorded == folder and _in_folder(a)
                if folder is not None and recorded is not None and not mine and _in_folder(a) and a.url is None:
                    # From the folder recorded before this one: its path becomes absolute, so that
                    # "a.txt" of the old folder is never taken for "a.txt" of the new one.
                    a = dataclasses.replace(a, path=str(recorded / a.path))
                seen.append(a)
                if _key(a) in keys or a.id in ids:
                    continue  # updated or unchanged
                if prune or mine and str(folder / a.path) not in unreadable:
                    continue  # pruned, or its file was deleted from this folder: the user removed it
                kept.append(a)
            return articles + kept, seen

        stats = self._write(plan, skipped, progress, corpus_folder=folder, keep_record=folder is None)
        stats["kept"] = sum(1 for a in kept if not (folder is not None and _in_folder(a)))
        return stats

    def add(self, paths: Sequence[str | Path], *, progress: Progress | None = None) -> dict:
        """Add or update article files (or folders); identical articles are skipped."""
        root = self.corpus
        new, skipped = read_articles(paths, root=root, max_bytes=self.config.max_file_bytes)

        def merge(old: list[Article], recorded: Path | None) -> tuple[list[Article], list[Article]]:
            keys = {_key(a) for a in new}
            return dedupe([a for a in old if _key(a) not in keys] + new), old

        return self._write(merge, skipped, progress)

    def rollback(self) -> dict:
        """Make the index's previous generation live again (a second call undoes the first).

        Returns:
            ``{"generation", "replaced", "n_articles", "n_chunks", "created"}`` of the generation now live.

        Raises:
            IndexMissingError: no index, or no earlier generation is kept.
        """
        with index_mod.lock(self.index_dir, timeout=self.config.lock_wait):
            back, replaced = index_mod.rollback(self.index_dir)
        m = index_mod.read_manifest(self.index_dir / back)
        return {"generation": back, "replaced": replaced, "n_articles": m.get("n_articles", 0),
                "n_chunks": m.get("n_chunks", 0), "created": m.get("created")}

    def remove(self, refs: Sequence[str]) -> dict:
        """Remove articles by id or path; raises BadInputError naming refs that match nothing."""
        state = self._current()
        by_ref = {ref: a.id for a in state.snap.articles.values() for ref in (a.id, a.path) if ref}
        missing = [r for r in refs if r not in by_ref]
        hit = {by_ref[r] for r in refs if r in by_ref}
        if missing:
            raise BadInputError(f"no article with id or path {sorted(missing)[0]!r}; `askdesk info` lists them")
        return self._write(lambda old, recorded: ([a for a in old if a.id not in hit], old), [], None)

    # -- asking ---------------------------------------------------------------------------
    def ask(self, question: str, *, history: Sequence[str] | None = None, since: str | date | None = None,
            until: str | date | None = None, as_of: str | date | None = None) -> Answer:
        """Answer ``question`` from the index, with citations, or refuse.

        Args:
            question: the question, up to ``config.max_question_chars`` characters.
            history: earlier questions of the same conversation, oldest first; a follow-up
                ("what did he say about it?") is retrieved together with the last of them.
            since, until: only articles published in this range (ISO dates or ``date``), inclusive.
            as_of: answer as of that day: nothing published later is used.

        With a generator (``Desk(generator=...)`` or ``config.llm_url``/``llm_model``) the LLM
        writes the answer from the same passages unless the extractive answer refuses; each
        sentence is then verified (``Answer.sentences``). If the LLM fails or times out, the
        extractive answer comes back with ``Answer.note`` saying why.

        Raises:
            BadQuestionError: empty or over-long question.
            BadInputError: a date that cannot be read.
        """
        *_, answer = self._answer(question, history, stream=False, window=date_window(since, until, as_of),
                                  as_of=normalize_date(as_of))
        return answer

    def ask_stream(self, question: str, history: Sequence[str] | None = None, *, since: str | date | None = None,
                   until: str | date | None = None, as_of: str | date | None = None) -> Iterator[str | Answer]:
        """Like `ask`, for a page: yields the LLM's text pieces as they arrive, then the final Answer.

        Without a generator (or when the extractive answer refuses) it yields only the Answer.
        The pieces carry the model's own [n] numbers; the final Answer renumbers its citations.
        """
        yield from self._answer(question, history, stream=True, window=date_window(since, until, as_of),
                                as_of=normalize_date(as_of))

    def _answer(self, question: str, history: Sequence[str] | None, *, stream: bool,
                window: tuple[str | None, str | None] = (None, None), as_of: str | None = None
                ) -> Iterator[str | Answer]:
        q = self._check_question(question)
        t0 = time.perf_counter()
        if self._state is None and isinstance(getattr(type(self.embedder), "fast", None), property):
            # A process's first question (the CLI's cold start): the question encoder loads
            # (~0.5 s) while the index does, instead of after it.
            threading.Thread(target=lambda: self.embedder.fast, name="askdesk-encoder", daemon=True).start()
        state = self._current()
        # "last week" is resolved against as_of (default today) and cut from the text retrieval sees.
        period = news.resolve_period(q, as_of or date.today())
        query = news.without_period(q, period)
        if history and _FOLLOW_UP.search(q):
            query = f"{history[-1]} {query}"
        qvec = self.embedder.embed_query(query)
        hits = self._retrieve(state, query, qvec, self.config.top_k, window)
        note, period_info = None, None
        if period is not None:
            # Prefer the period, softly: its best chunks go first, the best of any date fill the rest
            # (a fact is often reported after the year it happened in). Never a refusal just because
            # nothing was published then. docs/news.md has the measurement.
            lo, hi = max(window[0] or period.since, period.since), min(window[1] or period.until, period.until)
            k = min(news.PERIOD_CHUNKS, self.config.top_k)
            inside = self._retrieve(state, query, qvec, k, (lo, hi)) if lo <= hi else []
            have = {h.chunk.id for h in inside}
            hits = inside + [h for h in hits if h.chunk.id not in have][:self.config.top_k - len(inside)]
            period_info = {"phrase": period.phrase, "since": period.since, "until": period.until, "used": bool(inside)}
            if not inside:
                note = news.PERIOD_FALLBACK_NOTE.format(phrase=period.phrase, since=news.pretty_date(period.since),
                                                        until=news.pretty_date(period.until))
        t1 = time.perf_counter()
        text, refused, cites, related, conf = answer_mod.answer(
            query, hits, state.snap, qvec, state.bm25, max_citations=self.config.max_citations,
            refuse_below=self.config.refuse_below)
        t2 = time.perf_counter()
        quoted = tuple({"text": c.sentence, "cites": [c.n], "supported": True, "evidence": c.sentence} for c in cites)
        short = short_answer(q, cites[0].sentence, context=cites[0].snippet) if cites else None
        base = Answer(question=q, text=text, refused=refused, citations=cites, related=related, confidence=conf,
                      timings_ms={"retrieve": (t1 - t0) * 1000, "answer": (t2 - t1) * 1000}, sentences=quoted,
                      note=note, period=period_info, short=short)
        if refused:  # the extractive refusal stands: the LLM is not asked, the news layer has nothing to add
            yield base
            return
        passages = self._passages(state, hits, qvec)
        if self.generator is None:
            yield news.enrich(base, passages)
            return
        for item in generate_mod.written_answer(
                base, generate_mod.passages_from_hits(hits, state.snap), self.generator, self.embedder,
                stream=stream, history=list(history or ())):  # the generator's own timeout (config.llm_timeout)
            yield news.enrich(item, passages) if isinstance(item, Answer) else item

    def _passages(self, state: _State, hits: Sequence[Hit], qvec: np.ndarray) -> list[news.Passage]:
        """The sentences of the retrieved chunks with their cosine to the question, for `news.enrich`."""
        snap, spans, rows = state.snap, [], []
        lo, hi = sentence_ranges([h.chunk for h in hits], snap.sentences, snap.sentence_row)
        for h, first, end in zip(hits, lo, hi):
            a = snap.articles[h.chunk.article_id]
            base = snap.sentence_row[a.id]
            for row in range(int(first), int(end)):
                s, e = snap.sentences[a.id][row - base]
                spans.append((a, s, e))
                rows.append(row)
        if not rows:
            return []
        scores = snap.sentence_vectors[rows].astype(np.float32) @ qvec
        return [news.Passage(a, s, e, float(x)) for (a, s, e), x in zip(spans, scores)]

    def retrieve(self, question: str, *, k: int | None = None) -> list[Hit]:
        """The ``k`` best chunks for ``question`` (fused dense + BM25), best first."""
        q = self._check_question(question)
        state = self._current()
        return self._retrieve(state, q, self.embedder.embed_query(q), k or self.config.top_k)

    def _retrieve(self, state: _State, query: str, qvec: np.ndarray, k: int,
                  window: tuple[str | None, str | None] = (None, None)) -> list[Hit]:
        n = self.config.candidates
        snap = state.snap
        allowed = _in_window(state, window)
        dense = snap.search(qvec, n, allowed=allowed)
        lex = state.bm25.scores(terms(query))
        if allowed is not None:
            lex = np.where(allowed, lex, 0.0)
        rows = list(dict.fromkeys([r for r, _ in dense] + [r for r, _ in top_rows(lex, n)]))
        if not rows:
            return []
        dmap = dict(dense)
        # Chunks found only by BM25 still need their cosine.
        cos = np.array([dmap[r] if r in dmap else float(self._chunk_vector(state, r) @ qvec) for r in rows])
        fused = fuse(rows, cos, best_sentence_cos(state.sent_lo, state.sent_hi, snap.sentence_vectors, rows, qvec, cos), lex[rows])[:k]
        at = {r: i for i, r in enumerate(rows)}
        return [Hit(snap.chunks[r], s, float(cos[at[r]]), float(lex[r])) for r, s in fused]

    def _chunk_vector(self, state: _State, row: int) -> np.ndarray:
        return state.snap.vector(row)

    # -- looking inside ---------------------------------------------------------------------
    def info(self) -> dict:
        """What the index holds: model, counts, build time, and the article list."""
        snap = self._current().snap
        m = snap.manifest
        return {
            "index": str(self.index_dir), "model": m["model"], "n_articles": m["n_articles"],
            "n_chunks": m["n_chunks"], "created": m["created"], "askdesk_version": m["askdesk_version"],
            "chunk_tokens": m["chunk_tokens"], "chunk_overlap": m["chunk_overlap"],
            "corpus": m.get("corpus"),
            "articles": [{"id": a.id, "title": a.title, "date": a.date, "source": a.source, "path": a.path,
                          "encoding": a.encoding} for a in snap.articles.values()],
        }

    def article(self, article_id: str) -> Article:
        """The full article; raises BadInputError for an unknown id."""
        try:
            return self._current().snap.articles[article_id]
        except KeyError:
            raise BadInputError(f"no article with id {article_id!r}; `askdesk info` lists them") from None

    # -- internals --------------------------------------------------------------------------
    def _check_question(self, question: str) -> str:
        if not isinstance(question, str) or not question.strip():
            raise BadQuestionError("the question is empty; type a question, e.g. askdesk ask \"What did Trump announce?\"")
        q = " ".join(question.split())
        if len(q) > self.config.max_question_chars:
            raise BadQuestionError(f"the question is {len(q):,} characters long; keep it under "
                                   f"{self.config.max_question_chars:,} (ASKDESK_MAX_QUESTION_CHARS)")
        return q

    def _expect(self) -> dict:
        return {"model": self.config.model}

    def _current(self) -> _State:
        """The loaded index, reloaded when another process has published a newer generation."""
        gen = index_mod.current_generation(self.index_dir)
        state = self._state
        if state is None or (gen is not None and gen != state.generation):
            self._reload()
        return self._state  # type: ignore[return-value]

    def _reload(self) -> None:
        with self._load_lock:
            gen = index_mod.current_generation(self.index_dir)
            if self._state is not None and self._state.generation == gen:
                return
            snap = index_mod.load(self.index_dir, expect=self._expect())
            self._state = _State(snap, BM25.from_arrays(snap.lexical), snap.path.name, *sentence_ranges(snap.chunks, snap.sentences, snap.sentence_row))
            logger.info("loaded index %s", snap.path)

    def _write(self, plan: Callable[[list[Article], Path | None], tuple[list[Article], list[Article]]],
               skipped: list[Skipped],
               progress: Progress | None, *, corpus_folder: Path | None = None, keep_record: bool = True) -> dict:
        cfg = self.config
        with index_mod.lock(self.index_dir, timeout=cfg.lock_wait):
            index_mod.collect_garbage(self.index_dir)  # what a killed writer left behind
            old = self._old_snapshot()
            old_bm25 = self._state.bm25 if old else None  # loaded with old by _old_snapshot
            old_articles = list(old.articles.values()) if old else []
            recorded_entry = old.manifest.get("corpus") if old else None
            recorded = Path(recorded_entry["path"]) if recorded_entry else None
            planned, seen = plan(old_articles, recorded)
            articles, dupes = drop_near_duplicates(planned, known=old.sentences if old else None)
            skipped = skipped + dupes
            if not articles:
                raise EmptyCorpusError("that would leave the index empty; add articles first (askdesk add FILE)")
            stats = _diff(seen, articles)
            stats["skipped"] = [(s.path, s.reason) for s in skipped]
            stats["decoded"] = [(a.path or a.id, a.encoding) for a in articles if a.encoding and a.id not in
                                {o.id for o in old_articles}]
            record = recorded_entry if keep_record else index_mod.corpus_record(corpus_folder, self.index_dir)
            reuse_ok = old is not None and all(old.manifest.get(k) == v for k, v in self._chunk_settings().items())
            # Nothing to do only when the articles *and* the chunk and embedding settings are the
            # same; new settings (ASKDESK_CHUNK_TOKENS, ASKDESK_INT8, ...) re-embed everything.
            if reuse_ok and stats["added"] == stats["updated"] == stats["removed"] == 0 and record == recorded_entry \
                    and {(a.id, a.path) for a in articles} == {(a.id, a.path) for a in old_articles}:
                self._reload()
                return {**stats, **self._counts()}
            old_chunk_vecs = old.chunk_vectors() if reuse_ok else {}
            old_ids = set(old.articles) if reuse_ok else set()

            chunks: list[Chunk] = []
            sentences: dict[str, list[tuple[int, int]]] = {}
            texts: list[str] = []  # chunk texts to embed, title line first
            spans: list[list[tuple[int, int]]] = []  # per text: the sentences pooled from its pass
            chunk_slots: list[int | None] = []  # per chunk: row in texts, or None when reused
            sent_slots: dict[str, list[tuple[int, int]]] = {}  # new article -> per sentence (text row, span no.)
            old_chunks: dict[str, list[Chunk]] = {}
            for c in (old.chunks if reuse_ok else ()):
                old_chunks.setdefault(c.article_id, []).append(c)
            for a in articles:
                prefix = _title_prefix(a)
                if a.id in old_ids:  # same id, same text and settings: same sentences and chunks
                    sentences[a.id] = old.sentences[a.id]
                    article_chunks = old_chunks.get(a.id, [])
                else:
                    sentences[a.id] = split_sentences(a.text)
                    article_chunks = chunk_article(a, max_tokens=cfg.chunk_tokens, overlap=cfg.chunk_overlap,
                                                   fits=lambda t, p=prefix: self.embedder.fits(p + t))
                rows = {}
                for c in article_chunks:
                    chunks.append(c)
                    if c.id in old_chunk_vecs:
                        chunk_slots.append(None)
                    else:
                        chunk_slots.append(len(texts))
                        rows[c.id] = len(texts)
                        texts.append(prefix + c.text)
                        spans.append([])
                if a.id not in old_ids:
                    slots = []
                    for s_, e_ in sentences[a.id]:
                        c = _home_chunk(article_chunks, s_, e_, rows)
                        if c is None:  # no embedded chunk holds the whole sentence: it is embedded alone
                            texts.append(a.text[s_:e_])
                            spans.append([(0, e_ - s_)])
                            slots.append((len(texts) - 1, 0))
                        else:
                            off = len(prefix) - c.start  # article offsets -> offsets in the chunk's text
                            spans[rows[c.id]].append((s_ + off, e_ + off))
                            slots.append((rows[c.id], len(spans[rows[c.id]]) - 1))
                    sent_slots[a.id] = slots
            total = len(texts)
            if progress:
                progress(0, total, "embedding")
            done = 0

            def tick(n: int) -> None:
                nonlocal done
                done += n
                if progress:
                    progress(min(done, total), total, "embedding")

            logger.info("embedding %d texts (%d chunks reused)", total, len(old_chunk_vecs))
            new_vecs, span_vecs, n_encoded = embed_with_spans(self.embedder, texts, spans, progress=tick)
            dim = new_vecs.shape[1] if total else (old.manifest["dim"] if old else self.embedder.dim)
            chunk_vecs = np.stack([old_chunk_vecs[c.id] if slot is None else new_vecs[slot]
                                   for c, slot in zip(chunks, chunk_slots)]).astype(np.float32)
            sent_blocks = []
            for a in articles:
                if a.id in sent_slots:
                    block = [span_vecs[r][j] for r, j in sent_slots[a.id]]
                    sent_blocks.append(np.stack(block) if block else np.zeros((0, dim), np.float32))
                else:
                    r, n = old.sentence_row[a.id], len(sentences[a.id])
                    sent_blocks.append(old.sentence_vectors[r:r + n].astype(np.float32))
            sent_vecs = np.concatenate(sent_blocks) if sent_blocks else np.zeros((0, dim), np.float32)
            if progress:
                progress(total, total, "writing")
            titles = {a.id: a.title for a in articles}
            if reuse_ok:  # same article id: same title and text, so the same terms as before
                was = {(c.article_id, c.id): r for r, c in enumerate(old.chunks)}
                bm25 = old_bm25.refit(
                    [was.get((c.article_id, c.id)) for c in chunks],
                    lambda i: f"{titles[chunks[i].article_id]} {chunks[i].text}")
            else:
                bm25 = BM25.fit(f"{titles[c.article_id]} {c.text}" for c in chunks)
            manifest = {"model": cfg.model, "dim": int(dim), "tokenizer": ENCODING, **self._chunk_settings(),
                        "corpus": record}
            index_mod.publish(self.index_dir, manifest=manifest, articles=articles, sentences=sentences,
                              sentence_vectors=sent_vecs, chunks=chunks, chunk_vectors=chunk_vecs,
                              lexical=bm25.to_arrays(), ann_above=cfg.ann_above,
                              previous=old if reuse_ok else None)
            self._reload()
            return {**stats, "embedded": n_encoded, **self._counts()}

    def _chunk_settings(self) -> dict:
        c = self.config
        return {"chunk_tokens": c.chunk_tokens, "chunk_overlap": c.chunk_overlap, "max_wordpieces": c.max_wordpieces,
                "title_prefix": True, "sentence_vectors": "late-pooled", "int8": c.int8}

    def _old_snapshot(self) -> index_mod.Snapshot | None:
        if index_mod.current_generation(self.index_dir) is None:
            return None
        self._reload()
        return self._state.snap if self._state else None

    def _counts(self) -> dict:
        m = self._state.snap.manifest if self._state else {}
        return {"n_articles": m.get("n_articles", 0), "n_chunks": m.get("n_chunks", 0)}


def date_window(since=None, until=None, as_of=None) -> tuple[str | None, str | None]:
    """(since, until) as ISO dates; ``as_of`` caps ``until``. Raises BadInputError for unreadable dates."""
    out = []
    for name, value in (("since", since), ("until", until), ("as_of", as_of)):
        if value is None or value == "":
            out.append(None)
            continue
        iso = normalize_date(value)
        if iso is None:
            raise BadInputError(f"{name}={value!r} is not a date; use YYYY-MM-DD, e.g. 2025-02-07")
        out.append(iso)
    lo, hi, cap = out
    if cap is not None and (hi is None or cap < hi):
        hi = cap
    if lo is not None and hi is not None and lo > hi:
        raise BadInputError(f"since={lo!r} is after until={hi!r}; swap them")
    return lo, hi


def _in_window(state: _State, window: tuple[str | None, str | None]) -> np.ndarray | None:
    """Boolean mask over chunk rows whose article date lies in the window; undated articles drop out."""
    lo, hi = window
    if lo is None and hi is None:
        return None
    dates = state.chunk_dates
    ok = dates != ""
    if lo is not None:
        ok &= dates >= lo
    if hi is not None:
        ok &= dates <= hi
    return ok


def _home_chunk(chunks: Sequence[Chunk], s: int, e: int, embedded: dict) -> Chunk | None:
    """The embedded chunk holding sentence [s, e) with the most context around it (overlap puts a
    sentence in two chunks; the one where it sits nearer the middle reads it better)."""
    best, best_gap = None, -1
    for c in chunks:
        if c.id in embedded and c.start <= s and e <= c.end:
            gap = min(s - c.start, c.end - e)
            if gap > best_gap:
                best, best_gap = c, gap
    return best


def _title_prefix(a: Article) -> str:
    # The title gives a chunk its topic ("the rainforest" -> "Amazon rainforest").
    return f"{a.title}\n" if a.title else ""


def _key(a: Article) -> str:
    return a.url or a.path or a.id


def _in_folder(a: Article) -> bool:
    """Whether the article was read from the synced folder: its path is relative to it (files
    from anywhere else keep an absolute path, see ingest.read_articles)."""
    return bool(a.path) and not Path(a.path).is_absolute()


def _diff(old: list[Article], new: list[Article]) -> dict:
    """What changed: an article is the same when its id is (its path may have moved), updated
    when its key (url or path) is and its text is not."""
    old_ids, new_ids = {a.id for a in old}, {a.id for a in new}
    old_by_key = {_key(a): a.id for a in old}
    new_keys = {_key(a) for a in new}
    unchanged = sum(1 for a in new if a.id in old_ids)
    updated = sum(1 for a in new if a.id not in old_ids and _key(a) in old_by_key)
    added = len(new) - unchanged - updated
    removed = sum(1 for a in old if a.id not in new_ids and _key(a) not in new_keys)
    return {"added": added, "updated": updated, "removed": removed, "unchanged": unchanged}
