"""Benchmark corpora and an embedding cache.

Real text comes from SQuAD v1.1 dev paragraphs (``../shared/data/squad-dev``, CC BY-SA 4.0).
Sizes past the ~950 paragraphs that fit the model's window are made of variations: sentences of
2-3 paragraphs on the same topic, shuffled and recombined under a new title. Each variation
keeps under 60% of its sentences from any one paragraph, so askdesk's near-duplicate filter
(80% shared sentences) keeps them all.

- ``1k``/``10k``: one paragraph-sized article each (~1 chunk), written as ``.txt`` files so that
  `askdesk index` and `python app.py` read them as they would any corpus.
- ``100k``: multi-paragraph articles (2-4 chunks each) published with ``askdesk.store.index.publish``.
  The text, chunking, sentence spans, BM25 postings and records are askdesk's own; sentence
  vectors are the real model's (every sentence is a SQuAD sentence, embedded once); each chunk
  vector is the normalized mean of its sentences' vectors plus a little noise, instead of
  running the model over 100k chunks (~1 hour here).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "squad-dev"  # bench/run.py --data sets another
RESULTS = ROOT / "bench" / "results"
CACHE = RESULTS / "cache"
GENERATOR_VERSION = 4  # bump when the corpus generator changes (4: index format 3): cached indexes are rebuilt


def parse_size(s: str) -> int:
    """"1k" -> 1000, "100k" -> 100_000, "2500" -> 2500."""
    s = s.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(s[-1:], 1)
    return int(float(s[:-1] if mult > 1 else s) * mult)


def size_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def paragraphs(fits: Callable[[str], bool]) -> list[dict]:
    """SQuAD dev paragraphs that fit one chunk: <= 190 cl100k tokens and, with the title line, the
    model's 256-wordpiece window. So the raw baseline truncates nothing and each is one chunk."""
    from askdesk.articles.chunk import count_tokens

    out = []
    for line in open(DATA / "corpus.jsonl", encoding="utf-8"):
        d = json.loads(line)
        if count_tokens(d["text"]) <= 190 and fits(f"{d['title']}\n{d['text']}"):
            out.append(d)
    return out


def data_digest() -> str:
    """A short hash of DATA's paragraphs: corpora cached from another set (the smoke test's) are rebuilt."""
    return hashlib.sha1((DATA / "corpus.jsonl").read_bytes()).hexdigest()[:12]


def questions(n: int | None = None) -> list[str]:
    """SQuAD dev questions, in file order."""
    qs = [json.loads(line)["text"] for line in open(DATA / "queries.jsonl", encoding="utf-8")]
    return qs[:n] if n else qs


def _sentences(text: str) -> list[str]:
    from askdesk.articles.chunk import split_sentences

    return [text[s:e] for s, e in split_sentences(text)]


def variations(paras: Sequence[dict], n: int, *, seed: int = 0, max_tokens: int = 180,
               blocks: tuple[int, int] = (1, 1)) -> list[tuple[str, str]]:
    """``n`` new (title, text) articles recombined from ``paras``; ``blocks`` paragraphs per article."""
    from askdesk.articles.chunk import count_tokens

    rng = random.Random(seed)
    by_title: dict[str, list[list[str]]] = {}
    for p in paras:
        sents = _sentences(p["text"])
        if len(sents) >= 2:
            by_title.setdefault(p["title"], []).append(sents)
    titles = sorted(t for t, ps in by_title.items() if len(ps) >= 3)
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    counts: dict[str, int] = {}
    while len(out) < n:
        title = rng.choice(titles)
        body = []
        for _ in range(rng.randint(*blocks)):
            sources = rng.sample(by_title[title], rng.choice((2, 3)))
            pool = [(i, s) for i, src in enumerate(sources) for s in src]
            rng.shuffle(pool)
            picked, per_src, tokens = [], {}, 0
            for i, s in pool:
                t = counts[s] if s in counts else counts.setdefault(s, count_tokens(s))
                if tokens + t > max_tokens:
                    continue
                picked.append((i, s))
                per_src[i] = per_src.get(i, 0) + 1
                tokens += t
            if len(picked) < 3 or max(per_src.values()) > 0.6 * len(picked):
                continue  # too close to one paragraph: the near-duplicate filter would drop it
            body.append(" ".join(s for _, s in picked))
        text = "\n\n".join(body)
        if not body or text in seen:
            continue
        seen.add(text)
        out.append((f"{title}: {_headline(rng)} {len(out) + 1}", text))
    return out


def _headline(rng: random.Random) -> str:
    return rng.choice(("Briefing", "Digest", "Background", "Explainer", "Review", "Roundup", "Notes", "Summary"))


def write_corpus(folder: Path, n_articles: int, fits: Callable[[str], bool], *, seed: int = 0) -> dict:
    """The ``n_articles`` paragraph-sized articles as .txt files in ``folder`` (reused when present)."""
    stamp = folder / ".bench.json"
    want = {"version": GENERATOR_VERSION, "n_articles": n_articles, "seed": seed, "data": data_digest()}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return want
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    paras = paragraphs(fits)
    items = [(p["title"], p["text"]) for p in paras[:n_articles]]
    items += variations(paras, n_articles - len(items), seed=seed)
    for i, (title, text) in enumerate(items):
        (folder / f"a{i:06d}.txt").write_text(f"Title: {title}\nDate: 2025-{1 + i % 12:02d}-{1 + i % 28:02d}\n\n"
                                              f"{text}\n", encoding="utf-8")
    stamp.write_text(json.dumps(want))
    return want


def corpus_texts(folder: Path) -> list[str]:
    """Each article's body as askdesk reads it (for the raw-model baseline)."""
    from askdesk.articles.ingest import read_articles

    articles, _ = read_articles([folder], root=folder)
    return [a.text for a in articles]


class CachedEmbedder:
    """Wraps an Embedder; document vectors are cached by sha1(model, text) in ``bench/results/cache``.

    For building benchmark indexes only: build throughput is always measured without it.
    """

    def __init__(self, inner, cache_dir: Path = CACHE, *, lookup: bool = True):
        self.inner = inner
        self.lookup = lookup  # False: embed everything (a timed build), only record the vectors
        self.name = inner.name
        self.dir = cache_dir
        # Keys and vectors in one file, replaced whole: two files written one after the other let
        # two bench processes interleave them. The keys are stored as 20 raw bytes a row: as numpy
        # "S20" strings a digest ending in a zero byte came back a byte short, was never found,
        # was embedded again and stored twice, and the rows after it shifted (2026-12-08).
        self._file = cache_dir / f"{inner.name}.cache.npz"
        self.keys: list[bytes] = []  # row -> key
        self.index: dict[bytes, int] = {}  # key -> row
        self.vecs = np.zeros((0, 0), np.float32)
        self._load()
        self.hits = self.misses = 0
        self.dirty = False

    def _load(self) -> None:
        if not self._file.is_file():
            return
        with np.load(self._file, allow_pickle=False) as z:
            keys, vecs = z["keys"], z["vecs"]
        if keys.dtype != np.uint8 or keys.ndim != 2 or keys.shape[1] != 20 or len(keys) != len(vecs):
            print(f"  {self._file.name}: {keys.shape} keys for {len(vecs)} vectors; ignored", flush=True)
            return
        self.keys = [k.tobytes() for k in keys]
        self.index = {k: i for i, k in enumerate(self.keys)}
        if len(self.index) != len(self.keys):
            print(f"  {self._file.name}: repeated keys; ignored", flush=True)
            self.keys, self.index = [], {}
            return
        self.vecs = vecs

    @property
    def dim(self) -> int:
        return self.inner.dim

    def fits(self, text: str) -> bool:
        return self.inner.fits(text)

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)

    def _key(self, text: str) -> bytes:
        return hashlib.sha1(f"{self.name}\n{text}".encode()).digest()

    def embed_documents(self, texts: Sequence[str], *, progress=None) -> np.ndarray:
        if not self.lookup:  # a timed build: the model sees every text, as without the cache
            vecs = self.inner.embed_documents(texts, progress=progress)
            self._record(texts, vecs)
            return vecs
        keys = [self._key(t) for t in texts]
        todo: dict[bytes, str] = {}
        for k, t in zip(keys, texts):
            if k not in self.index and k not in todo:
                todo[k] = t
        self.misses += len(todo)
        self.hits += len(texts) - len(todo)
        fresh_vecs: dict[bytes, np.ndarray] = {}
        if todo:
            t0 = time.perf_counter()
            new = self.inner.embed_documents(list(todo.values()), progress=progress)
            print(f"  embedded {len(todo):,} new texts in {time.perf_counter() - t0:.0f} s", flush=True)
            fresh_vecs = dict(zip(todo, new))
            self._record(list(todo.values()), new)
            self.save()
        elif progress:
            progress(len(texts))
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([fresh_vecs[k] if k in fresh_vecs else self.vecs[self.index[k]]
                         for k in keys]).astype(np.float32)

    def _record(self, texts: Sequence[str], vecs: np.ndarray) -> None:
        add: dict[bytes, np.ndarray] = {}
        for t, v in zip(texts, vecs):
            k = self._key(t)
            if k not in self.index:
                add.setdefault(k, v)
        if add:
            self._append(list(add), np.stack(list(add.values())).astype(np.float32))
            self.dirty = True

    def _append(self, keys: list[bytes], block: np.ndarray) -> None:
        base = len(self.keys)  # the rows: keys and vectors stay one to one
        self.vecs = block if not len(self.vecs) else np.concatenate([self.vecs, block])
        self.keys += keys
        self.index.update((k, base + i) for i, k in enumerate(keys))

    def save(self) -> None:
        """Merge what this process embedded into the cache file, under a lock, and replace it whole."""
        import fcntl
        import os

        if not self.dirty:
            return
        self.dirty = False
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / f"{self.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            mine_keys, mine_vecs = self.keys, self.vecs
            self.keys, self.index, self.vecs = [], {}, np.zeros((0, 0), np.float32)
            self._load()  # what other processes saved meanwhile
            rows = [i for i, k in enumerate(mine_keys) if k not in self.index]
            if rows:
                self._append([mine_keys[i] for i in rows], mine_vecs[rows].astype(np.float32))
            keys = np.frombuffer(b"".join(self.keys), dtype=np.uint8).reshape(-1, 20)
            tmp = self._file.with_suffix(".tmp.npz")
            with open(tmp, "wb") as f:
                np.savez(f, keys=keys, vecs=self.vecs)
            os.replace(tmp, self._file)


class _Rows(Mapping):
    """Article id -> its sentences' vectors, gathered from the distinct sentences' vectors when
    asked for: held per article they were 3.9 GB at 1M chunks."""

    def __init__(self, vecs: np.ndarray, rows: dict[str, np.ndarray]):
        self.vecs, self.rows = vecs, rows

    def __getitem__(self, article_id: str) -> np.ndarray:
        return self.vecs[self.rows[article_id]]

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def _statements(text: str) -> tuple:
    from askdesk.articles.quotes import find_statements

    return tuple(find_statements(text))


def statements_of(articles: Sequence) -> dict:
    """Article id -> its statements (`quotes.find_statements`), found in one worker process per core."""
    import multiprocessing
    import os

    workers = os.cpu_count() or 1
    if workers == 1 or len(articles) < 1000:
        return {a.id: _statements(a.text) for a in articles}
    # fork: the workers share the parent's imports; each loads the parser once on its first article.
    # Frozen first: a worker's garbage collection would otherwise write to every object the parent
    # holds (10+ GB at 1M chunks) and copy their pages, ~1 GB a worker within minutes.
    import gc

    gc.freeze()
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            found = pool.map(_statements, (a.text for a in articles), chunksize=256)
    finally:
        gc.unfreeze()
    return {a.id: st for a, st in zip(articles, found)}


def build_synthetic(index_dir: Path, n_chunks: int, embedder: CachedEmbedder, config, *, seed: int = 1) -> dict:
    """Publish a ~``n_chunks`` index of multi-paragraph articles with askdesk's own writer
    (`build.plan` chunks and splits, `build.assemble` takes the vectors made here, `index.publish`
    writes), vectors as described in the module doc."""
    from askdesk.articles.chunk import ENCODING
    from askdesk.articles.ingest import article_from_text
    from askdesk.store import build
    from askdesk.store import index as index_mod

    stamp = index_dir / ".bench.json"
    want = {"version": GENERATOR_VERSION, "n_chunks": n_chunks, "seed": seed, "data": data_digest()}
    if stamp.is_file() and json.loads(stamp.read_text()) == want and index_mod.current_generation(index_dir):
        return want
    t0 = time.perf_counter()
    paras = paragraphs(embedder.fits)
    rng = np.random.default_rng(seed)
    # Planned a batch at a time, once (sentences, chunks and hashes are per article): the articles and
    # their chunks are those of planning each alone, at half the cost of planning them twice.
    articles: list = []
    plan = build.Plan([], {}, {}, set())
    n, batch = 0, 0
    while n < n_chunks:
        made = [article_from_text(text, title=title, key=f"synthetic/{len(articles) + i}", date="2025-03-01",
                                  source="bench", path=f"synthetic/{len(articles) + i:06d}.txt")
                for i, (title, text) in enumerate(variations(paras, 2000, seed=seed * 1000 + batch, blocks=(2, 4)))]
        part = build.plan(made, None, config, embedder.fits)
        for a in made:
            articles.append(a)
            plan.sentences[a.id], plan.chunks[a.id], plan.hashes[a.id] = (part.sentences[a.id], part.chunks[a.id],
                                                                        part.hashes[a.id])
            n += len(part.chunks[a.id])
            if n >= n_chunks:
                break
        batch += 1
    plan.articles = articles
    sent_texts = [a.text[s:e] for a in articles for s, e in plan.sentences[a.id]]
    unique = sorted(set(sent_texts))
    # float16 per article: at 1M chunks the sentence vectors are 5M x 384, and float32 copies per
    # article beside assemble's float32 concatenation would not fit 24 GB with room to spare.
    uvecs = embedder.embed_documents(unique).astype(np.float16)
    row = {t: i for i, t in enumerate(unique)}
    n_sentences = len(sent_texts)
    del sent_texts
    sentence_vectors = _Rows(uvecs, {a.id: np.fromiter((row[a.text[s:e]] for s, e in plan.sentences[a.id]), np.int32)
                                     for a in articles})
    # A chunk's vector: the mean of the vectors of the sentences inside it, plus noise, normalized.
    chunk_vectors = {}
    for a in articles:
        spans, vecs = plan.sentences[a.id], sentence_vectors[a.id]
        for c in plan.chunks[a.id]:
            inside = [k for k, (s, e) in enumerate(spans) if s >= c.start and e <= c.end] or [0]
            v = vecs[inside].astype(np.float32).mean(0) + rng.normal(0, 0.01, uvecs.shape[1]).astype(np.float32)
            chunk_vectors[c.id] = v / np.linalg.norm(v)
    manifest = {"model": config.model, "dim": int(uvecs.shape[1]), "tokenizer": ENCODING, **build.settings(config),
                "embedder": {"int8": None}, "corpus": None}
    gen = build.assemble(plan, chunk_vectors, sentence_vectors, manifest=manifest, ann_above=config.ann_above)
    del chunk_vectors, sentence_vectors
    # Who says what: found here on every core (the segment writer would parse 400k articles on one),
    # with the same function, so the records are those a build writes.
    gen.new.statements.update(statements_of(articles))
    with index_mod.lock(index_dir):
        index_mod.publish(index_dir, gen)
    stamp.write_text(json.dumps(want))
    print(f"  published synthetic index: {len(articles):,} articles, {len(gen.new.chunks):,} chunks, "
          f"{n_sentences:,} sentences in {time.perf_counter() - t0:.0f} s", flush=True)
    return want
