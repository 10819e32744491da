"""Desk: the one object users hold. Build or open an index, ask questions, add articles.

A facade: writing is `build` (a folder) or `upsert` (a Milvus store), merging `merge`, answering
`respond` (which runs `dialog`, `retrieve`, `answer`, `news` and `generate` in turn). Desk holds
the settings, the models and the loaded snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from .answering import generate as generate_mod
from .answering import read as read_mod
from .answering import respond
from .answering.respond import Evidence
from .answering.retrieve import UNDATED_PENALTY, Retriever, date_window
from .articles.ingest import normalize_date, read_articles, relative_path
from .config import Config
from .errors import BadInputError, BadQuestionError, EmptyCorpusError
from .models.embed import Embedder, SentenceTransformerEmbedder
from .store import build, milvus, rayjob, upsert
from .store import index as index_mod
from .store import merge as merge_mod
from .store.records import Snapshot
from .store.vectors import Window
from .types import Answer, Article, Hit

logger = logging.getLogger(__name__)


def release_memory() -> None:
    """Hand the memory a write freed back to the system (glibc's malloc_trim; elsewhere nothing).

    A write's big transient arrays (embeddings, a segment's columns, a merge) are freed into
    malloc's heaps, which keep the pages: a server adding an article at a time grew by ~150 MB
    per 200 articles with nothing of it in use, and stays flat with this after each write
    (docs/benchmarks.md, "memory over time"). It takes well under a millisecond."""
    trim = getattr(_glibc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def limit_malloc_arenas(n: int = 2) -> bool:
    """Let glibc's malloc keep at most ``n`` heaps for all threads; False where there is no glibc.

    For a server, before its threads start. glibc gives each new thread a heap (arena) of its own,
    up to 8 per core, and a heap keeps the pages of its busiest moment: gradio answers on a pool
    of up to 40 worker threads, so the page's memory climbed for most of an hour as more of them
    answered (bench/soak.py). 1,600 answers on 40 threads, two at a time as the page gives them:
    +31 MB with glibc's heaps, +15 MB with two (bench/thread_memory.py), no slower: an answer holds
    the GIL for most of its work, so threads seldom wait for a heap. MALLOC_ARENA_MAX, when set, wins.
    """
    import os

    mallopt = getattr(_glibc(), "mallopt", None)
    if mallopt is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    return bool(mallopt(_M_ARENA_MAX, n))


_M_ARENA_MAX = -8  # glibc's malloc.h


def _glibc():
    """The C library's handle (ctypes), or None where it cannot be loaded."""
    global _LIBC
    if _LIBC is None:
        import ctypes

        try:
            _LIBC = ctypes.CDLL(None)
        except OSError:
            _LIBC = False
    return _LIBC or None


_LIBC = None

Progress = build.Progress

@dataclass(frozen=True)
class _Loaded:
    generation: str
    snap: Snapshot
    retriever: Retriever


class Desk:
    """A question-answering desk over one index folder, or a Milvus store.

    Args:
        index_dir: the index folder (default ``config.index``).
        config: settings; ``Config.from_env()`` when omitted.
        store: a Milvus store instead of the folder (``config.store``): ``PATH.db`` (Milvus Lite) or
            ``http://host:19530``; see `askdesk.store.milvus`.
        embedder: the embedding model; sentence-transformers with ``config.model`` when omitted.
        reader: the reader that chooses the cited sentence, short answer and refusal; by default the
            one askdesk ships (`askdesk.models.reader`), or none when ``config.reader`` is off.
        generator: an LLM that writes the answers (`askdesk.answering.generate.Generator`); by default the one
            ``config.llm_url`` and ``config.llm_model`` name, or none: extractive answers only.
    """

    def __init__(self, index_dir: str | Path | None = None, *, config: Config | None = None,
                 embedder: Embedder | None = None, generator: generate_mod.Generator | None = None,
                 store: str | None = None, reader: read_mod.SpanReader | None = None):
        self.config = (config or Config.from_env()).replace(store=store)
        # Connected on first use: a bad question is refused before anything opens.
        self.store = milvus.MilvusStore(self.config.store) if self.config.store else None
        self.index_dir = Path(index_dir) if index_dir is not None else self.config.index
        self.embedder = embedder or SentenceTransformerEmbedder(
            self.config.model, batch_size=self.config.batch_size, max_wordpieces=self.config.max_wordpieces,
            quantize=self.config.int8, device=self.config.device)
        self._loaded: _Loaded | None = None
        self._pinned: _Loaded | None = None  # Desk.over: this snapshot, never reloaded
        self._load_lock = threading.Lock()
        self._write_lock = threading.Lock()  # this process's writers (a watcher, the page, a merge) take turns
        self._merging: threading.Thread | None = None
        # Merge full size tiers after a write in a thread of their own (the page, `askdesk watch`), so the
        # write returns as soon as its articles are live; False: in the write's call (the CLI, scripts).
        self.merge_in_background = False
        self.generator = generator if generator is not None else generate_mod.from_config(self.config)
        self._reader = reader

    # -- opening and building -------------------------------------------------------------
    @classmethod
    def open(cls, index_dir: str | Path | None = None, **kw) -> Desk:
        """Open an existing index; raises IndexMissingError, IndexMismatchError or IndexCorruptError.

        Keyword arguments as for `Desk` (config, embedder, generator)."""
        desk = cls(index_dir, **kw)
        desk._current()
        return desk

    @classmethod
    def build(cls, corpus: str | Path | Iterable[Article], index_dir: str | Path | None = None, *,
              progress: Progress | None = None, prune: bool = False, **kw) -> Desk:
        """Build (or sync, see `sync`) the index from a folder of articles or from Article objects.

        Keyword arguments as for `Desk`. Raises EmptyCorpusError when no readable article is found.
        """
        desk = cls(index_dir, **kw)
        desk.sync(corpus, progress=progress, prune=prune)
        return desk

    ensure = build  # the page's older name for it: open the index, syncing it first

    @classmethod
    def over(cls, snapshot: Snapshot, **kw) -> Desk:
        """A desk that answers from ``snapshot`` as given, never reloading: another store's
        snapshot, or a folder one with parts swapped (bench/ compares FAISS kinds this way).

        Keyword arguments as for `Desk`; it cannot write (sync, add, remove raise)."""
        desk = cls(getattr(snapshot, "path", None), **kw)
        desk._pinned = _Loaded("pinned", snapshot, desk._retriever(snapshot))
        desk._loaded = desk._pinned
        return desk

    @property
    def corpus(self) -> Path | None:
        """The article folder this desk syncs with and adds uploads to: ``config.corpus`` when
        set, else the folder the index was last synced with (when it still exists), else None."""
        if self.config.corpus is not None:
            return self.config.corpus
        if self.store is not None:
            return self.store.recorded_corpus()
        return index_mod.recorded_corpus(self.index_dir)

    @property
    def indexed(self) -> bool:
        """Whether there is an index to answer from (a live generation in the folder or the store)."""
        if self.store is not None:
            return self.store.live() is not None
        return index_mod.current_generation(self.index_dir) is not None

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
            `build.Changes` as a dict: added, updated, removed, unchanged, kept (not in ``corpus``),
            embedded, n_articles, n_chunks, skipped [(path, reason)], decoded [(path, encoding)].
        """
        folder: Path | None = None
        corpus = self.corpus or Path("corpus") if corpus is None else corpus
        if isinstance(corpus, (str, Path)):
            folder = Path(corpus)
            if not folder.is_dir():
                raise BadInputError(f"corpus folder {str(folder)!r} does not exist; "
                                    "give a folder of .txt/.md/.html articles")
            articles, skipped = read_articles([folder], root=folder, max_bytes=self.config.max_file_bytes)
            # As for_sync names a held article's file (resolved folder / its path): a skipped
            # "corpus/a.html" must match, or a file that failed to read would count as deleted.
            unreadable = {str(folder.resolve() / relative_path(Path(s.path), folder)) for s in skipped}
            folder = folder.resolve()
        else:
            articles, skipped, unreadable = list(corpus), [], set()
        if not articles:
            raise EmptyCorpusError(f"no readable article in {str(corpus)!r}; "
                                   "add .txt, .md or .html files and run again")
        kept: list[Article] = []
        select = build.for_sync(articles, folder, unreadable=unreadable, prune=prune, kept=kept)
        changes = self._write(select, skipped, progress, corpus=folder, record_corpus=folder is not None)
        changes.kept = sum(1 for a in kept if not (folder is not None and build.in_folder(a)))
        return changes.to_dict()

    def add(self, paths: Sequence[str | Path], *, progress: Progress | None = None) -> dict:
        """Add or update article files (or folders); identical articles are skipped. Returns what changed."""
        new, skipped = read_articles(paths, root=self.corpus, max_bytes=self.config.max_file_bytes)
        scope = sorted({build.key(a) for a in new} | {a.id for a in new})  # a store reads only these
        return self._write(build.for_add(new), skipped, progress, scope=scope).to_dict()

    def update(self, paths: Sequence[str | Path], *, progress: Progress | None = None) -> dict:
        """Bring these files of the corpus folder into the index in one write: a file that
        exists is added or updated, one that no longer exists has its article removed
        (what `askdesk watch` does with a batch of changes). Unreadable files are skipped
        with their reason in "skipped". Returns what changed."""
        root = self.corpus
        there = [Path(p) for p in paths if Path(p).is_file()]
        gone = [Path(p) for p in paths if not Path(p).exists()]
        new, skipped = read_articles(there, root=root, max_bytes=self.config.max_file_bytes) if there else ([], [])
        rel = [relative_path(Path(p).absolute(), root) for p in gone]  # as read_articles records it
        return self._write(build.for_files(new, rel), skipped, progress).to_dict()

    def optimize(self) -> dict:
        """Merge the index's segments into one, dropping what was deleted (nothing is embedded again).

        Returns:
            ``{"merges", "segments_before", "segments", "n_chunks", "expunged"}``.
        """
        self._check_writable()
        if self.store is not None:
            raise BadInputError("a Milvus store has no segments of askdesk's to merge (Milvus compacts its own); "
                                "askdesk optimize is for an index folder")
        return merge_mod.compact(self.index_dir, config=self.config, current=lambda: self._current().snap,
                                 everything=True, turn=self._write_lock)

    def remove(self, refs: Sequence[str]) -> dict:
        """Remove articles by id or path; raises BadInputError naming refs that match nothing."""
        by_ref = (self.store.find(refs) if self.store is not None else
                  {ref: a.id for a in self._current().snap.all_articles() for ref in (a.id, a.path) if ref})
        missing = [r for r in refs if r not in by_ref]
        if missing:
            raise BadInputError(f"no article with id or path {sorted(missing)[0]!r}; `askdesk info` lists them")
        ids = {by_ref[r] for r in refs}
        return self._write(build.for_remove(ids), [], None, scope=sorted(ids)).to_dict()

    def rollback(self) -> dict:
        """Make the index's previous generation live again (a second call undoes the first); in a
        Milvus store, the state before its last write (`askdesk.store.milvus_rollback`).

        Returns:
            ``{"generation", "replaced", "n_articles", "n_chunks", "created"}`` of the generation now live.

        Raises:
            IndexMissingError: no index, or no earlier generation is kept.
        """
        if self.store is not None:
            with self._write_lock:
                return upsert.rollback(self.store, lock_wait=self.config.lock_wait)
        with index_mod.lock(self.index_dir, timeout=self.config.lock_wait):
            return index_mod.rollback(self.index_dir)

    def _check_writable(self) -> None:
        if self._pinned is not None:
            raise BadInputError("this desk answers from a snapshot in memory (Desk.over) and cannot write; "
                                "open the index folder with Desk.open to change it")

    def _write(self, select: build.Selection, skipped, progress, *, scope=None, **kw) -> build.Changes:
        self._check_writable()
        if self.store is not None:
            embedding = rayjob.ray_embedding(self.config, self.embedder) if self.config.ray else None
            changes = upsert.write(self.store, select, config=self.config, embedder=self.embedder, skipped=skipped,
                                   progress=progress, embedding=embedding, scope=scope, **kw)
            release_memory()
            return changes
        embedder = rayjob.RayEmbedder(self.config, self.embedder) if self.config.ray else self.embedder
        with self._write_lock:
            changes = build.write(self.index_dir, select, config=self.config, embedder=embedder,
                                  current=lambda: self._current().snap, skipped=skipped, progress=progress, **kw)
        if self.config.merge_segments >= 2:
            if not self.merge_in_background:
                self._merge_tiers()
            elif self._merging is None or not self._merging.is_alive():
                self._merging = threading.Thread(target=self._merge_tiers, name="askdesk-merge", daemon=True)
                self._merging.start()
        release_memory()
        return changes

    def _merge_tiers(self) -> None:
        """Merge the full size tiers (build.merge_plan); a failure is logged: the index stays as it is."""
        try:
            # This process's writes queue on _write_lock; the merge holds it (and the writer lock) only
            # to read the live generation and to publish, so a write never waits for a merge's work.
            out = merge_mod.compact(self.index_dir, config=self.config, current=lambda: self._current().snap,
                                    turn=self._write_lock)
            if out["merges"]:
                logger.info("merged segments: %d -> %d", out["segments_before"], out["segments"])
                release_memory()
        except Exception as e:  # noqa: BLE001 - a merge is housekeeping; the write it follows is done
            logger.warning("merging segments of %s failed (%s); the index is as it was, the next write tries again",
                           self.index_dir, e)

    def wait_for_merges(self, timeout: float | None = None) -> None:
        """Wait until a background merge (`merge_in_background`) has finished."""
        t = self._merging
        if t is not None:
            t.join(timeout)

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
        sentence is then verified (``Answer.sentences``). If the LLM fails or times out, or its answer
        fails its check (`generate.rejection`), the extractive answer comes back with ``Answer.note`` saying why.

        Raises:
            BadQuestionError: empty or over-long question.
            BadInputError: a date that cannot be read.
        """
        *_, answer = self._answer(question, history, stream=False, window=self._window(since, until, as_of),
                                  as_of=normalize_date(as_of))
        return answer

    def ask_stream(self, question: str, history: Sequence[str] | None = None, *, since: str | date | None = None,
                   until: str | date | None = None, as_of: str | date | None = None) -> Iterator[str | Answer]:
        """Like `ask`, for a page: yields the LLM's text pieces as they arrive, then the final Answer.

        Without a generator (or when the extractive answer refuses) it yields only the Answer.
        The pieces carry the model's own [n] numbers; the final Answer renumbers its citations.
        """
        yield from self._answer(question, history, stream=True, window=self._window(since, until, as_of),
                                as_of=normalize_date(as_of))

    def evidence(self, question: str, *, history: Sequence[str] | None = None, since: str | date | None = None,
                 until: str | date | None = None, as_of: str | date | None = None) -> Evidence:
        """What an answer to ``question`` would rest on, without composing it: how the question was
        read in its conversation, what was retrieved, and the refusal model's features and
        confidence. Arguments as for `ask` (bench/calibrate.py fits the refusal model on these)."""
        q = self._check_question(question)
        return self._evidence(q, history, self._window(since, until, as_of), normalize_date(as_of))

    def _evidence(self, q: str, history: Sequence[str] | None, window: Window | None, as_of: str | None) -> Evidence:
        encoder = None
        if (self._loaded is None and isinstance(getattr(type(self.embedder), "fast", None), property)
                and index_mod.current_generation(self.index_dir) is not None):
            # A process's first question (the CLI's cold start): the question encoder loads
            # (~0.5 s) while the index does, instead of after it. Only when there is an index to
            # load: a process that exits on an error while that thread is inside onnxruntime's
            # or torch's loader can abort ("FATAL: exception not rethrown").
            # The reader (~0.3 s) loads in the same thread: the first answer waits for neither.
            encoder = threading.Thread(target=lambda: (self.embedder.fast, self.reader), name="askdesk-encoder",
                                       daemon=True)
            encoder.start()
        try:
            loaded = self._current()
        except BaseException:
            if encoder is not None:
                encoder.join()  # the same abort, for an index that exists but is refused
            raise
        return respond.evidence(self._asking(loaded), q, history or (), window, as_of)

    def _answer(self, question: str, history: Sequence[str] | None, *, stream: bool, window: Window | None,
                as_of: str | None) -> Iterator[str | Answer]:
        q = self._check_question(question)
        started = time.perf_counter()
        ev = self._evidence(q, history, window, as_of)
        ctx = self._asking(None, ev)
        yield from respond.answers(ctx, q, history or (), ev, window=window, stream=stream, started=started)

    def _asking(self, loaded: _Loaded | None, ev: Evidence | None = None) -> respond.Asking:
        snap, retriever = (loaded.snap, loaded.retriever) if loaded is not None else (ev.snap, ev.retriever)
        return respond.Asking(snap, retriever, self.embedder, self.config, self.generator, self.reader)

    @property
    def reader(self) -> read_mod.SpanReader | None:
        """The trained reader (`askdesk.models.reader`), loaded on first use; None with ``config.reader`` off."""
        if self._reader is None and self.config.reader:
            from .models.reader import shared

            self._reader = shared()
        return self._reader if self.config.reader else None

    def retrieve(self, question: str, *, k: int | None = None) -> list[Hit]:
        """The ``k`` best chunks for ``question`` (fused dense + BM25), best first."""
        q = self._check_question(question)
        return self._current().retriever.search(q, self.embedder.embed_query(q), k or self.config.top_k)

    @property
    def snapshot(self) -> Snapshot:
        """The live generation, loaded (records, vectors, BM25): for tools that look inside."""
        return self._current().snap

    @property
    def retriever(self) -> Retriever:
        """The retriever over the live generation (reloaded when another process published one)."""
        return self._current().retriever

    # -- looking inside ---------------------------------------------------------------------
    def info(self) -> dict:
        """What the index holds: model, counts, build time, the folder it syncs with, and the article list."""
        snap = self._current().snap
        m = snap.manifest
        return {
            "index": str(self.index_dir) if self.store is None else self.store.uri,
            "model": m["model"], "n_articles": m["n_articles"],
            "n_chunks": m["n_chunks"], "created": m["created"], "askdesk_version": m["askdesk_version"],
            "chunk_tokens": m["chunk_tokens"], "chunk_overlap": m["chunk_overlap"], "corpus": m.get("corpus"),
            "embedder": m.get("embedder"), "segments": len(m.get("segments", [])),
            "articles": [{"id": a.id, "title": a.title, "date": a.date, "source": a.source, "path": a.path,
                          "encoding": a.encoding} for a in snap.all_articles()],
        }

    def article(self, article_id: str) -> Article:
        """The full article; raises BadInputError for an unknown id."""
        try:
            return self._current().snap.article(article_id)
        except KeyError:
            raise BadInputError(f"no article with id {article_id!r}; `askdesk info` lists them") from None

    # -- internals --------------------------------------------------------------------------
    def _window(self, since, until, as_of) -> Window | None:
        return date_window(since, until, as_of, undated=self.config.undated != "exclude")

    def _check_question(self, question: str) -> str:
        if not isinstance(question, str) or not question.strip():
            raise BadQuestionError("the question is empty; type a question, "
                                   "e.g. askdesk ask \"What did Trump announce?\"")
        q = " ".join(question.split())
        if len(q) > self.config.max_question_chars:
            raise BadQuestionError(f"the question is {len(q):,} characters long; keep it under "
                                   f"{self.config.max_question_chars:,} (ASKDESK_MAX_QUESTION_CHARS)")
        return q

    def _retriever(self, snap: Snapshot) -> Retriever:
        penalty = UNDATED_PENALTY if self.config.undated == "after" else 0.0
        return Retriever(snap, candidates=self.config.candidates, undated_penalty=penalty)

    def close(self) -> None:
        """Let go of the store: a Milvus Lite file can then be opened by another process."""
        if self.store is not None:
            self.store.close()
            self._loaded = None

    def _current(self) -> _Loaded:
        """The loaded index, reloaded when another process has published a newer generation
        (or, in a Milvus store, has written: its "live" row counts the writes)."""
        if self._pinned is not None:
            return self._pinned
        if self.store is not None:
            live = self.store.live()
            gen = f"{live['gen']}:{live['version']}" if live else None
            loaded = self._loaded
            if loaded is not None and loaded.generation == gen:
                return loaded
            with self._load_lock:
                if self._loaded is None or self._loaded.generation != gen:
                    snap = self.store.snapshot(expect={"model": self.config.model}, embedder=self.embedder)
                    self._loaded = _Loaded(gen or "", snap, Retriever(snap, candidates=self.config.candidates))
                return self._loaded
        gen = index_mod.current_generation(self.index_dir)
        loaded = self._loaded
        if loaded is not None and (gen is None or gen == loaded.generation):
            return loaded
        with self._load_lock:
            gen = index_mod.current_generation(self.index_dir)
            if self._loaded is None or self._loaded.generation != gen:
                old = self._loaded.snap if self._loaded is not None else None
                snap = index_mod.load(self.index_dir, expect={"model": self.config.model},
                                      reuse=old if isinstance(old, index_mod.FolderSnapshot) else None)
                self._loaded = _Loaded(snap.path.name, snap, self._retriever(snap))
                logger.info("loaded index %s", snap.path)
            return self._loaded
