"""The measurements behind `bench/run.py`; each returns a flat dict of numbers.

Every comparison is timed in the same process and the same run, because absolute times drift on a
shared 2-core machine: the ratios are the result, the milliseconds are context.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from corpus import RESULTS, ROOT, CachedEmbedder, corpus_texts

BENCH = ROOT / "bench"
ASKDESK = Path(sys.executable).with_name("askdesk")


def pct(xs: Sequence[float], p: float) -> float:
    return float(np.percentile(xs, p)) if len(xs) else float("nan")


def env(**extra: str) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
            **extra}


def build(folder: Path, emb, config) -> dict:
    """askdesk's index build of ``folder`` against one raw ``encode`` of every article's text.

    The raw baseline is plain fp32 ``SentenceTransformer.encode`` with default settings; askdesk
    builds with its own embedder exactly as `Desk` makes it (int8 per ``config.int8``, sentence
    vectors pooled from the chunk pass). Both models are loaded and warmed up first, and the raw
    baseline runs before and after askdesk (the mean is the baseline), so drift on a shared
    machine shows. askdesk's time covers everything: reading the files, chunking, embedding,
    BM25, writing and publishing.
    """
    from askdesk import Desk
    from askdesk.models.embed import SentenceTransformerEmbedder

    texts = corpus_texts(folder)
    model = emb.model
    ours = SentenceTransformerEmbedder(config.model, batch_size=config.batch_size,
                                       max_wordpieces=config.max_wordpieces, quantize=config.int8)
    for m in (model, ours.model):
        m.encode(["warm up"] * 8, show_progress_bar=False)
    t, c = time.perf_counter(), time.process_time()
    model.encode(texts, show_progress_bar=False)  # default settings: batch 32, no normalization
    raw_s, raw_cpu = time.perf_counter() - t, time.process_time() - c
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        cfg = config.replace(index=Path(tmp) / "index")
        t, c = time.perf_counter(), time.process_time()
        desk = Desk.build(folder, cfg.index, config=cfg, embedder=ours)
        build_s, build_cpu = time.perf_counter() - t, time.process_time() - c
        info = desk.info()
    t, c = time.perf_counter(), time.process_time()
    model.encode(texts, show_progress_bar=False)
    raw_again_s, raw_again_cpu = time.perf_counter() - t, time.process_time() - c
    raw = (raw_s + raw_again_s) / 2
    # CPU seconds (all threads) drift less than wall time when other jobs share the cores.
    raw_cpu_mean = (raw_cpu + raw_again_cpu) / 2
    return {"articles": len(texts), "raw_encode_s": raw, "raw_encode_first_s": raw_s, "raw_encode_again_s": raw_again_s,
            "build_s": build_s, "raw_texts_per_s": len(texts) / raw, "build_articles_per_s": len(texts) / build_s,
            "build_ratio": raw / build_s, "raw_encode_cpu_s": raw_cpu_mean, "raw_encode_first_cpu_s": raw_cpu,
            "raw_encode_again_cpu_s": raw_again_cpu, "build_cpu_s": build_cpu,
            "build_ratio_cpu": raw_cpu_mean / build_cpu, "build_chunks": info["n_chunks"], "int8": config.int8}


def ensure_index(folder: Path, index: Path, emb, config) -> dict:
    """The benchmark's index of ``folder`` at ``index``, built through `Desk.build` with cached vectors."""
    import shutil

    from askdesk import Desk
    from askdesk.store import build
    from askdesk.store import index as index_mod

    cached = CachedEmbedder(emb)
    cfg = config.replace(index=index)
    gen = index_mod.current_generation(index)
    if gen is not None:
        # Desk.build returns early when no article changed, even if the chunk settings did (an
        # index written before late pooling or int8 would be kept): start over instead.
        old = index_mod.read_manifest(index / gen)
        want = build.settings(cfg)
        if any(old.get(k) != v for k, v in want.items()):
            shutil.rmtree(index)
    t = time.perf_counter()
    desk = Desk.build(folder, index, config=cfg, embedder=cached)
    info = desk.info()
    return {"chunks": info["n_chunks"], "n_articles": info["n_articles"],
            "cached_build_s": time.perf_counter() - t, "cache_hits": cached.hits, "cache_misses": cached.misses}


def latency(index: Path, emb, config, questions: Sequence[str]) -> dict:
    """`Desk.ask` against the bare minimum (the raw model's encode of the question + one FAISS search)."""
    from askdesk import Desk

    desk = Desk.open(index, config=config.replace(index=index), embedder=emb)
    vectors = desk.snapshot.segments[0].vectors  # the bench's indexes are one segment (bench/corpus.py)
    raw = emb.model
    for q in questions[:10]:  # warm up: first-use loads, page faults
        desk.ask(q)
        raw.encode([q], show_progress_bar=False)
    import torch

    # The bare minimum is torch's encode with its default threads (2 here) and with one thread,
    # whichever is faster in this run: on a shared 2-core machine two OpenMP threads wait on
    # each other whenever another job holds a core (measured 138 ms p50 against 40 ms for one
    # thread, same minute), and a baseline slowed that way would flatter askdesk.
    torch_threads = torch.get_num_threads()
    bare: dict[int, list[float]] = {n: [] for n in sorted({torch_threads, 1}, reverse=True)}
    fast, retrieve, ask, ask_cpu = [], [], [], []
    # In blocks, not interleaved per question: torch's OpenMP threads spin for a while after each
    # encode and would slow whatever numpy work came right after (askdesk's path has no torch).
    for lo in range(0, len(questions), 50):
        block = questions[lo:lo + 50]
        for q in block:
            t = time.perf_counter()
            vectors.search(emb.embed_query(q), 10)
            t1 = time.perf_counter()
            desk.retrieve(q)
            t2, c2 = time.perf_counter(), time.process_time()
            desk.ask(q)
            t3, c3 = time.perf_counter(), time.process_time()
            fast.append((t1 - t) * 1e3)
            retrieve.append((t2 - t1) * 1e3)
            ask.append((t3 - t2) * 1e3)
            ask_cpu.append((c3 - c2) * 1e3)
        for threads, times in bare.items():
            torch.set_num_threads(threads)
            for q in block:
                t = time.perf_counter()
                v = raw.encode([q], show_progress_bar=False)
                vectors.index.search(np.ascontiguousarray(v, dtype=np.float32), 10)
                times.append((time.perf_counter() - t) * 1e3)
        torch.set_num_threads(torch_threads)
        time.sleep(0.3)  # let the spinning threads park before the next block
    # What askdesk adds beyond encoding the question: the same asks with the vectors precomputed.
    vecs = {" ".join(q.split()): emb.embed_query(q) for q in questions}
    desk.embedder = _Precomputed(emb, vecs)
    rest = []
    for q in questions:
        t = time.perf_counter()
        desk.ask(q)
        rest.append((time.perf_counter() - t) * 1e3)
    desk.embedder = emb
    best = min(bare, key=lambda n: pct(bare[n], 50))
    out = {"questions": len(questions), "ask_p50_ms": pct(ask, 50), "ask_p95_ms": pct(ask, 95),
           "retrieve_p50_ms": pct(retrieve, 50), "bare_p50_ms": pct(bare[best], 50),
           "bare_p95_ms": pct(bare[best], 95), "bare_torch_threads": best,
           **{f"bare_torch{n}_p50_ms": pct(ts, 50) for n, ts in bare.items()},
           "askdesk_encode_search_p50_ms": pct(fast, 50), "ask_cpu_p50_ms": pct(ask_cpu, 50),
           "ask_cpu_p95_ms": pct(ask_cpu, 95), "ask_without_encode_p50_ms": pct(rest, 50),
           "ask_without_encode_p95_ms": pct(rest, 95)}
    out["ask_over_bare_p50"] = out["ask_p50_ms"] / out["bare_p50_ms"]
    out["ask_over_bare_p95"] = out["ask_p95_ms"] / out["bare_p95_ms"]
    return out


class _Precomputed:
    """An embedder whose question vectors were computed beforehand (to time the rest of `ask`)."""

    def __init__(self, inner, vecs: dict):
        self.inner, self.vecs, self.name = inner, vecs, inner.name

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed_query(self, text: str):
        v = self.vecs.get(" ".join(text.split()))
        return v if v is not None else self.inner.embed_query(text)


def cold_start(index: Path, question: str, runs: int = 3) -> dict:
    """Process start to the printed answer of `askdesk ask` on an existing index (median of ``runs``)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.run([str(ASKDESK), "ask", question], env=env(ASKDESK_INDEX=str(index)),
                           capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if p.returncode:
            raise RuntimeError(f"askdesk ask failed: {p.stderr[-500:]}")
    return {"cold_start_s": statistics.median(times), "cold_start_max_s": max(times)}


def help_time(runs: int = 5) -> dict:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([str(ASKDESK), "--help"], env=env(), check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return {"help_s": statistics.median(times)}


def probe(*args: str) -> dict:
    p = subprocess.run([sys.executable, str(BENCH / "probe.py"), *args], env=env(), capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"probe {args[0]} failed: {p.stderr[-800:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def memory(index: Path, questions: Sequence[str], model: dict) -> dict:
    """Memory of a process that opens the index and answers ``questions``, against ``model`` (`probe
    model`: the question encoder and the reader alone): peak RSS beyond it, and anonymous memory
    (RSS less file-backed pages: what the process itself holds) beyond the model's, with the
    file-backed pages (mapped index files, page cache shared with other readers) beside it."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=RESULTS, delete=False) as f:
        json.dump(list(questions), f)
    try:
        serve = probe("serve", str(index), f.name)
    finally:
        os.unlink(f.name)
    parts = probe("parts", str(index))
    return {"peak_mb": serve["peak_mb"], "beyond_model_mb": serve["peak_mb"] - model["peak_mb"],
            "anon_mb": serve["rss_anon_mb"], "anon_beyond_model_mb": serve["rss_anon_mb"] - model["rss_anon_mb"],
            "load_s": serve["load_s"], "torch_on_ask_path": serve["torch_imported"],
            "rss_file_mb": serve["rss_file_mb"], "faiss": serve["faiss"],
            "rss_steps_mb": parts["rss_steps_mb"], "array_mb": parts["array_mb"],
            "n_sentences": parts["n_sentences"], "vocab": parts["vocab"]}


def ann(index: Path, emb, config, questions: Sequence[str], *, k: int = 10, alternatives: bool = True) -> dict:
    """Approximate FAISS indexes over the same vectors: recall@k against exact search, search time,
    and `Desk.ask` with each swapped in. ``askdesk_ivf...`` is what the writer builds above
    ``Config.ann_above`` (`vectors.FaissIndex.build`); the others are the alternatives it was chosen from
    (``alternatives=False``: only exact search and askdesk's; HNSW alone takes many minutes at 1M)."""
    import faiss

    from askdesk import Desk
    from askdesk.store.vectors import FaissIndex, SegmentedVectors

    desk = Desk.open(index, config=config.replace(index=index), embedder=emb)
    snap = desk.snapshot
    (seg,) = snap.segments  # the bench's indexes are one segment (bench/corpus.py)
    xb = np.ascontiguousarray(seg.vectors.all_vectors(), dtype=np.float32)
    ids = seg.vectors.keys
    dates = seg.vectors.dates
    xq = np.stack([emb.embed_query(q) for q in questions])
    d = xb.shape[1]

    def timed(ix) -> tuple[np.ndarray, float]:
        return _timed_search(ix, xq, k)

    scores = xq @ xb.T
    kth = np.sort(scores, axis=1)[:, -k]

    def recall(found: np.ndarray) -> float:
        # Tie-aware: a hit counts when its exact score reaches the exact k-th score. Recombined
        # articles share sentences, so many chunks tie, and which of them is "the" 10th is arbitrary.
        got = np.take_along_axis(scores, np.maximum(found, 0), axis=1)
        return float(np.mean(np.sum((got >= kth[:, None] - 1e-5) & (found >= 0), axis=1) / k))

    def recall_strict(found: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(truth, found)]))

    flat = faiss.IndexFlatIP(d)
    flat.add(xb)
    truth, flat_ms = timed(flat)
    # Every dict value below is a table row in bench/run.py (recall, search time, build time).
    out: dict = {"n": int(len(xb)), "flat_search_p50_ms": flat_ms}
    t = time.perf_counter()
    shipped_index = FaissIndex.build(xb, ids, dates, ann_above=0)
    shipped, kind = shipped_index.index, shipped_index.kind
    shipped_s = time.perf_counter() - t
    out["askdesk_nlist"], out["askdesk_nprobe"] = kind["nlist"], kind["nprobe"]
    inner = faiss.extract_index_ivf(shipped)
    for v in sorted({kind["nprobe"] // 2, kind["nprobe"], kind["nprobe"] * 2}):
        inner.nprobe = v
        found, ms = timed(inner)  # rows, as FaissIndex.search_rows gets them
        out[f"askdesk_ivf{kind['nlist']}_nprobe{v}"] = {"recall_at_10": recall(found),
                                                        "recall_at_10_strict": recall_strict(found),
                                                        "search_p50_ms": ms, "build_s": shipped_s}
    inner.nprobe = kind["nprobe"]
    # A date filter: 1 row in 10 allowed, through the selector a date window becomes.
    allowed = np.zeros(len(xb), dtype=bool)
    allowed[::10] = True
    masked = np.where(allowed, scores, -np.inf)
    kth_masked = np.sort(masked, axis=1)[:, -k]
    hits = [[r for r, _ in shipped_index.search_rows(q, k, allowed=allowed)] for q in xq]
    out["askdesk_ivf_recall_at_10_one_in_ten_allowed"] = float(np.mean(
        [np.sum(masked[i, rows] >= kth_masked[i] - 1e-5) / k for i, rows in enumerate(hits)]))
    candidates = {
        "hnsw32": lambda: _hnsw(faiss, d, 32, 40),
        "ivf1024_flat": lambda: _ivf(faiss, d, xb, 1024, "Flat"),
        # askdesk's lists with 1-byte codes: a quarter of IVF,Flat's memory, half of askdesk's fp16.
        f"ivf{kind['nlist']}_sq8": lambda: _ivf(faiss, d, xb, kind["nlist"], "SQ8"),
        # IVF1024,PQ48 is no longer timed: recall@10 0.59 at 100k (run of 2026-11-27 15:10), and its
        # training took 97 s idle, 464 s at 10k on a busy machine, the longest step of the suite.
    }
    for name, make in candidates.items() if alternatives else ():
        t = time.perf_counter()
        ix = make()
        ix.add(xb)
        build_s = time.perf_counter() - t
        for knob, values in (("efSearch", (64, 128, 256)) if name.startswith("hnsw") else ("nprobe", (8, 16, 32, 64)),):
            for v in values:
                faiss.ParameterSpace().set_index_parameter(ix, knob, v)
                found, ms = timed(ix)
                out[f"{name}_{knob}{v}"] = {"recall_at_10": recall(found), "recall_at_10_strict": recall_strict(found),
                                            "search_p50_ms": ms, "build_s": build_s}
    # End to end: Desk.ask with each index in the snapshot, same ids and rows.
    texts: dict[str, list[str]] = {}

    def asks(ix, faiss_kind: dict) -> list[float]:
        other = copy.copy(snap)  # the same records, another FAISS index over the same rows
        other.vectors = SegmentedVectors([FaissIndex(ix, dates, faiss_kind)], [None])
        other.manifest = {**snap.manifest, "faiss": faiss_kind}
        swapped = Desk.over(other, config=desk.config, embedder=emb)
        for q in questions[:10]:
            swapped.ask(q)
        ts, said = [], []
        for q in questions:
            t = time.perf_counter()
            said.append(swapped.ask(q).text)
            ts.append((time.perf_counter() - t) * 1e3)
        texts[faiss_kind["kind"] if ix is not hnsw_ids else "hnsw"] = said
        return ts

    exact = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
    exact.add_with_ids(xb, ids)
    hnsw_ids = None
    swaps = [("flat", exact, {"kind": "flat"}, "exact")]
    if alternatives:
        hnsw = _hnsw(faiss, d, 32, 40)
        hnsw.hnsw.efSearch = 128
        hnsw_ids = faiss.IndexIDMap2(hnsw)
        hnsw_ids.add_with_ids(xb, ids)
        swaps.append(("hnsw", hnsw_ids, {"kind": "flat"}, "efSearch 128"))
    swaps.append(("ivf", shipped, kind, f"IVF{kind['nlist']},SQ{kind.get('vectors', 'fp16')}, nprobe {kind['nprobe']}"))
    for name, ix, faiss_kind, setting in swaps:
        ts = asks(ix, faiss_kind)
        out[f"ask_p50_{name}_ms"], out[f"ask_p95_{name}_ms"] = pct(ts, 50), pct(ts, 95)
        out[f"ask_{name}_setting"] = setting
    out["ivf_answers_same_as_flat"] = float(np.mean([a == b for a, b in zip(texts["ivf"], texts["flat"])]))
    return out


def _hnsw(faiss, d: int, m: int, ef_construction: int):
    ix = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
    ix.hnsw.efConstruction = ef_construction
    return ix


def _ivf(faiss, d: int, xb: np.ndarray, nlist: int, code: str):
    ix = faiss.index_factory(d, f"IVF{nlist},{code}", faiss.METRIC_INNER_PRODUCT)
    ix.train(xb[np.random.default_rng(0).choice(len(xb), min(len(xb), 60 * nlist), replace=False)])
    return ix


def ann_real(index: Path, questions: Sequence[str], emb, *, n: int = 100_000, k: int = 10, seed: int = 0) -> dict:
    """askdesk's approximate index on real vectors: recall@``k`` against exact search.

    Synthetic vectors (bench/corpus.py: means of a few thousand SQuAD sentences, plus noise) have
    misled this measure before, so the vectors here are a real index's own: its chunk vectors,
    and a seeded sample of ``n`` of its sentence vectors (the model's output on real text, pooled
    in context as askdesk stores them), each searched through the IVF that `FaissIndex.build` would
    ship for that many, with ``questions`` encoded by the model."""
    import faiss

    from askdesk.store import index as index_mod
    from askdesk.store.vectors import FaissIndex

    snap = index_mod.load(index)
    chunks = np.concatenate([seg.vectors.all_vectors() for seg in snap.segments]).astype(np.float32)
    sents = np.concatenate([np.asarray(seg.sentence_vectors[0:seg.sentence_vectors.shape[0]])
                            for seg in snap.segments]).astype(np.float32)
    rng = np.random.default_rng(seed)
    sents = sents[np.sort(rng.choice(len(sents), min(n, len(sents)), replace=False))]
    sents /= np.maximum(np.linalg.norm(sents, axis=1, keepdims=True), 1e-12)
    xq = np.stack([emb.embed_query(q) for q in questions]).astype(np.float32)
    out: dict = {"index": str(index), "questions": len(questions)}
    for name, xb in (("sentences", sents), ("chunks", chunks)):
        exact = faiss.IndexFlatIP(xb.shape[1])
        exact.add(xb)
        scores, truth = exact.search(xq, k)
        t = time.perf_counter()
        shipped = FaissIndex.build(xb, np.arange(len(xb)), np.zeros(len(xb), np.int32), ann_above=0)
        build_s = time.perf_counter() - t
        row: dict = {"n": int(len(xb)), "build_s": build_s, "shipped": shipped.kind}
        inner = faiss.extract_index_ivf(shipped.index)
        nprobe = shipped.kind["nprobe"]
        for v in sorted({nprobe // 2, nprobe, nprobe * 2, nprobe * 4}):
            inner.nprobe = v
            found, ms = _timed_search(inner, xq, k)
            # Tie-aware as in `ann`: a hit counts when its exact score (not its fp16 one) reaches the
            # exact k-th score.
            got = np.einsum("qd,qkd->qk", xq, xb[np.maximum(found, 0)])
            tie = float(np.mean(np.sum((got >= scores[:, -1:] - 1e-5) & (found >= 0), axis=1) / k))
            strict = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(truth, found)]))
            row[f"nprobe{v}"] = {"recall_at_10": tie, "recall_at_10_strict": strict, "search_p50_ms": ms}
        out[name] = row
    return out


def _timed_search(ix, xq: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """The rows ``ix`` finds for each of ``xq``, and the p50 ms of one question searched alone."""
    ts = []
    for q in xq:
        t = time.perf_counter()
        ix.search(q.reshape(1, -1), k)
        ts.append((time.perf_counter() - t) * 1e3)
    _, found = ix.search(xq, k)
    return found, pct(ts, 50)

