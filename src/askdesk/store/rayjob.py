"""The embedding job on Ray Data: `askdesk index CORPUS --ray [ADDRESS]`.

Into a Milvus store (`ray_embedding`): articles -> `build.plan` of each article in Ray tasks on
CPU workers (sentences, chunks, the texts to embed) and its statements (`quotes.find_statements`,
the spaCy parse: ~70 ms for a 10k-character article) -> `build.embed` in a pool of actors that
each load the model once -> the writer in this process upserts each article as it arrives
(`upsert.write`), with the statements the worker found: it parses nothing. Into an index folder
(`RayEmbedder`): the folder's writer plans (it reuses unchanged articles), only the model passes go
to the actors, and the statements are found in this process when a segment is written
(`segment.write_segment`). Either way the chunks, ids, vectors and statements are those of a local
build: the same functions run, only elsewhere.

Where: ``--ray ADDRESS`` connects to a running cluster (``ray start --head`` prints it); ``--ray``
alone uses ``$RAY_ADDRESS``, else starts Ray on this machine for the job and stops it after.
Actors: one per GPU with ``num_gpus=1`` when the cluster has GPUs (and ``Config.device`` is not
"cpu"), else one per two CPUs, each running torch on two threads. On this 2-core machine that is
one actor: two held both cores and the pipeline stalled (docs/scaling.md).
Workers import askdesk: on a cluster, install it on every node (or ship it as a runtime_env).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict

import numpy as np

from ..articles.quotes import STATEMENTS_FORMAT, Statement, find_statements
from ..config import Config
from ..errors import StoreUnavailableError
from ..models.embed import Embedder, SentenceTransformerEmbedder, embed_with_spans
from ..types import Article, Chunk
from . import build
from .milvus_write import EmbedArticles, Embedded

logger = logging.getLogger(__name__)

INSTALL = "the Ray job needs: pip install 'askdesk[ray]'"
ARTICLES_PER_CALL = 16  # articles per actor call (~50 chunks and their lone sentences)
TEXTS_PER_CALL = 64  # texts per actor call when the folder's writer planned them


# ---- what travels to the workers ------------------------------------------------------------------

def embedder_spec(embedder: Embedder) -> dict | Embedder:
    """How a worker makes the same embedder: the settings of askdesk's own, or the object itself
    (a test's fake or a custom embedder, pickled by value so that workers need not import its module)."""
    if isinstance(embedder, SentenceTransformerEmbedder):
        return {"model": embedder.name, "batch_size": embedder.batch_size, "max_wordpieces": embedder.max_wordpieces,
                "quantize": embedder.quantize, "device": embedder.device}
    import ray.cloudpickle

    module = sys.modules.get(type(embedder).__module__)
    if module is not None and not module.__name__.startswith("askdesk"):
        ray.cloudpickle.register_pickle_by_value(module)
    return embedder


_MADE: dict[str, Embedder] = {}  # per worker process: one embedder, made on first use


def _make(spec: dict | Embedder, device: str | None = None) -> Embedder:
    if not isinstance(spec, dict):
        return spec
    key = json.dumps({**spec, "device": device or spec["device"]}, sort_keys=True)
    if key not in _MADE:
        _MADE[key] = SentenceTransformerEmbedder(spec["model"], batch_size=spec["batch_size"],
                                                 max_wordpieces=spec["max_wordpieces"], quantize=spec["quantize"],
                                                 device=device or spec["device"])
    return _MADE[key]


def _plan(row: dict, *, config: Config, spec: dict | Embedder) -> dict:
    """A Ray task: one article's sentences, chunks and texts to embed (`build.plan`) and its
    statements (`find_statements`, so that the writer parses nothing), as JSON."""
    a = Article(**json.loads(row["article"]))
    p = build.plan([a], None, config, _make(spec, "cpu").fits)  # counting wordpieces needs no GPU
    return {"plan": json.dumps({"article": asdict(a), "sentences": p.sentences[a.id],
                                "chunks": [[c.id, c.start, c.end] for c in p.chunks[a.id]],
                                "texts": p.texts, "spans": p.spans, "chunk_text": p.chunk_text,
                                "slots": p.sentence_slots[a.id],
                                "statements": [st.to_row() for st in find_statements(a.text)],
                                "statements_format": STATEMENTS_FORMAT}, ensure_ascii=False)}


def _merge(plans: Sequence[dict]) -> tuple[build.Plan, list[Article]]:
    """Single-article plans -> one `build.Plan` (text rows renumbered), so one `build.embed` call serves them."""
    arts = [Article(**d["article"]) for d in plans]
    p = build.Plan(arts, {}, {}, set())
    for d, a in zip(plans, arts):
        at = len(p.texts)
        p.sentences[a.id] = [tuple(s) for s in d["sentences"]]
        p.chunks[a.id] = [Chunk(cid, a.id, s, e, a.text[s:e]) for cid, s, e in d["chunks"]]
        p.texts += d["texts"]
        p.spans += [[tuple(s) for s in sp] for sp in d["spans"]]
        p.chunk_text.update({cid: at + r for cid, r in d["chunk_text"].items()})
        p.sentence_slots[a.id] = [(at + r, j) for r, j in d["slots"]]
    return p, arts


class _Embed:
    """A Ray actor: loads the model once, then embeds batches of planned articles (``plan``
    column) or of texts with their sentence spans (``text``/``spans`` columns)."""

    def __init__(self, spec: dict | Embedder, device: str, threads: int):
        import torch

        torch.set_num_threads(threads)  # Ray sets OMP_NUM_THREADS=1; 2 threads ran 35 vs 23 texts/s here
        self.embedder = _make(spec, device)

    def __call__(self, batch: dict) -> dict:
        if "plan" in batch:
            plans = [json.loads(x) for x in batch["plan"]]
            p, arts = _merge(plans)
            cv, sv, n = build.embed(p, self.embedder)
            dim = self.embedder.dim
            return {"article": np.array([json.dumps({"article": asdict(a), "sentences": p.sentences[a.id],
                                                     "chunks": [[c.id, c.start, c.end] for c in p.chunks[a.id]],
                                                     "statements": d["statements"],
                                                     "statements_format": d["statements_format"]},
                                                    ensure_ascii=False) for d, a in zip(plans, arts)], dtype=object),
                    "chunk_vectors": np.array([np.stack([cv[c.id] for c in p.chunks[a.id]]).astype(np.float32).tobytes()
                                               if p.chunks[a.id] else b"" for a in arts], dtype=object),
                    "sentence_vectors": np.array([np.asarray(sv[a.id], np.float32).reshape(-1, dim).tobytes()
                                                  for a in arts], dtype=object),
                    "encoded": np.array([n] + [0] * (len(arts) - 1)),
                    "int8": np.array([bool(getattr(self.embedder, "int8_active", False))] * len(arts))}
        spans = [[tuple(s) for s in json.loads(x)] for x in batch["spans"]]
        vecs, span_vecs, n = embed_with_spans(self.embedder, list(batch["text"]), spans)
        return {"i": batch["i"], "vector": np.asarray(vecs, np.float32),
                "span_vectors": np.array([np.asarray(v, np.float32).tobytes() for v in span_vecs], dtype=object),
                "encoded": np.array([n] + [0] * (len(spans) - 1)),
                "int8": np.array([bool(getattr(self.embedder, "int8_active", False))] * len(spans))}


# ---- running it -----------------------------------------------------------------------------------

def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise StoreUnavailableError(INSTALL) from None
    return ray


def _connect(address: str | None) -> bool:
    """Join the cluster at ``address`` ("auto": $RAY_ADDRESS, else a Ray of this machine's own);
    returns whether this call started Ray (and so should stop it)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no calls home from an offline desk
    local = address == "local" or (address in (None, "", "auto") and not os.environ.get("RAY_ADDRESS"))
    quiet = logging.INFO if logging.getLogger("askdesk").isEnabledFor(logging.INFO) else logging.WARNING
    for attempt in (1, 2, 3):
        try:
            if local:
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level=quiet)
            else:
                ray.init(address=None if address == "auto" else address, log_to_driver=False, logging_level=quiet)
            break
        except Exception as e:  # noqa: BLE001 - whatever Ray raises, the advice is the same
            ray.shutdown()
            # A local start can time out waiting for its own processes on a busy machine (seen twice in a
            # row here, while other jobs ran): try again, three times in all.
            if local and attempt < 3:
                logger.warning("starting Ray failed (%s); trying again", str(e)[:200])
                continue
            where = "on this machine" if local else f"at {address!r}"
            raise StoreUnavailableError(f"cannot start or reach Ray {where} ({str(e)[:200]}); start it "
                                        "(ray start --head) or check the address") from None
    logging.getLogger("ray.data").setLevel(max(quiet, logging.ERROR))  # its own progress lines: askdesk reports
    ray.data.DataContext.get_current().enable_progress_bars = False
    return True


def _pool(config: Config) -> dict:
    """map_batches' arguments for the embedding actors on this cluster."""
    ray = _ray()
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 1))
    if gpus and config.device != "cpu":
        return {"compute": ray.data.ActorPoolStrategy(size=gpus), "num_gpus": 1,
                "fn_constructor_kwargs": {"device": "cuda" if config.device == "auto" else config.device,
                                          "threads": 2}}
    return {"compute": ray.data.ActorPoolStrategy(size=max(1, cpus // 2)), "num_cpus": 1,
            "fn_constructor_kwargs": {"device": "cpu", "threads": 2}}


def ray_embedding(config: Config, embedder: Embedder) -> EmbedArticles:
    """The Ray job as the Milvus writer's embedding step: articles in, `Embedded` articles out as they finish."""
    def run(articles: list[Article]) -> Iterator[Embedded]:
        if not articles:
            return
        started = _connect(config.ray)
        try:
            ray = _ray()
            spec = embedder_spec(embedder)
            pool = _pool(config)
            pool["fn_constructor_kwargs"]["spec"] = spec
            ds = ray.data.from_items([{"article": json.dumps(asdict(a), ensure_ascii=False)} for a in articles])
            ds = ds.map(_plan, fn_kwargs={"config": config, "spec": spec})
            ds = ds.map_batches(_Embed, batch_size=ARTICLES_PER_CALL, batch_format="numpy", **pool)
            for row in ds.iter_rows():
                d = json.loads(row["article"])
                a = Article(**d["article"])
                cv = np.frombuffer(row["chunk_vectors"], np.float32).reshape(len(d["chunks"]), -1)
                sv = np.frombuffer(row["sentence_vectors"], np.float32).reshape(len(d["sentences"]), -1)
                if getattr(embedder, "int8_active", 0) is None:
                    embedder.int8_active = bool(row["int8"])  # what the actors ran, for the manifest
                # A worker with another askdesk (other rules for statements) leaves them to the writer.
                found = (tuple(Statement.from_row(r) for r in d["statements"])
                         if d.get("statements_format") == STATEMENTS_FORMAT else None)
                yield Embedded(a, [tuple(s) for s in d["sentences"]],
                               [Chunk(cid, a.id, s, e, a.text[s:e]) for cid, s, e in d["chunks"]],
                               cv.reshape(len(d["chunks"]), embedder.dim), sv.reshape(len(d["sentences"]),
                                                                                      embedder.dim),
                               int(row["encoded"]), statements=found)
        finally:
            if started:
                _ray().shutdown()
    return run


class RayEmbedder:
    """An `Embedder` whose model passes run on Ray actors (for the folder's writer); questions and
    wordpiece counts stay in this process, on the embedder it wraps."""

    def __init__(self, config: Config, inner: Embedder):
        self.config, self.inner = config, inner
        self.name = inner.name
        self.int8_active: bool | None = getattr(inner, "int8_active", None)

    @property
    def dim(self) -> int:
        return self.inner.dim

    def fits(self, text: str) -> bool:
        return self.inner.fits(text)

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)

    def embed_documents(self, texts: Sequence[str], *, progress: Callable[[int], None] | None = None) -> np.ndarray:
        return self.embed_spans(texts, [[] for _ in texts], progress=progress)[0]

    def embed_spans(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
                    progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[np.ndarray], int]:
        dim, n = self.inner.dim, len(texts)
        vecs = np.zeros((n, dim), np.float32)
        span_vecs: list[np.ndarray] = [np.zeros((len(sp), dim), np.float32) for sp in spans]
        if not n:
            return vecs, span_vecs, 0
        started = _connect(self.config.ray)
        encoded = 0
        try:
            ray = _ray()
            pool = _pool(self.config)
            pool["fn_constructor_kwargs"]["spec"] = embedder_spec(self.inner)
            ds = ray.data.from_items([{"i": i, "text": t, "spans": json.dumps(sp)}
                                      for i, (t, sp) in enumerate(zip(texts, spans))])
            ds = ds.map_batches(_Embed, batch_size=TEXTS_PER_CALL, batch_format="numpy", **pool)
            for batch in ds.iter_batches(batch_size=TEXTS_PER_CALL, batch_format="numpy"):
                for i, v, sv in zip(batch["i"].tolist(), batch["vector"], batch["span_vectors"]):
                    vecs[i] = v
                    span_vecs[i] = np.frombuffer(sv, np.float32).reshape(len(spans[i]), dim)
                encoded += int(batch["encoded"].sum())
                self.int8_active = bool(batch["int8"][0])
                if progress:
                    progress(len(batch["i"]))
        finally:
            if started:
                _ray().shutdown()
        return vecs, span_vecs, encoded
