"""Core benchmark: index build against the raw model, ask latency against the bare minimum,
cold start and `--help` time. Prints a table and writes JSON; every ratio is measured in the
same run, because absolute times drift on a shared machine.

    python bench/core.py [--docs N] [--questions N] [--out bench/results/core.json]

Articles are SQuAD dev paragraphs (../shared/data/squad-dev, CC BY-SA 4.0), each under the
model's 256-wordpiece window, so the raw baseline truncates nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "squad-dev"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def load(n_docs: int, n_questions: int):
    docs = [json.loads(line) for line in open(DATA / "corpus.jsonl")][:n_docs]
    ids = {d["_id"] for d in docs}
    qrels = {}
    for line in list(open(DATA / "qrels.tsv"))[1:]:
        q, d, _ = line.split("\t")
        if d in ids:
            qrels[q] = d
    qs = [json.loads(line)["text"] for line in open(DATA / "queries.jsonl")
          if json.loads(line)["_id"] in qrels][:n_questions]
    return docs, qs


def pct(xs, p):
    return float(np.percentile(xs, p))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "core.json"))
    args = ap.parse_args()

    from askdesk import Config, Desk
    from askdesk.models.embed import SentenceTransformerEmbedder
    from askdesk.types import Article

    docs, questions = load(args.docs, args.questions)
    articles = [Article(id=d["_id"], title=d["title"], text=d["text"], path=d["_id"]) for d in docs]
    emb = SentenceTransformerEmbedder()
    emb.model.encode(["warm up"], show_progress_bar=False)
    res: dict = {"docs": len(docs), "questions": len(questions)}

    # Raw baseline: one encode() of every article's text, default settings.
    t = time.perf_counter()
    emb.model.encode([d["text"] for d in docs], show_progress_bar=False)
    res["raw_encode_s"] = time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config.from_env({}, index=Path(tmp) / "index")
        t = time.perf_counter()
        desk = Desk.build(articles, cfg.index, config=cfg, embedder=emb)
        res["build_s"] = time.perf_counter() - t
        res["n_chunks"] = desk.info()["n_chunks"]
        res["build_throughput_ratio"] = res["raw_encode_s"] / res["build_s"]

        vectors = desk.snapshot.vectors
        for q in questions[:10]:
            desk.ask(q)
        bare, full = [], []
        for q in questions:
            t = time.perf_counter()
            vectors.search(emb.embed_query(q), 10)
            bare.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            desk.ask(q)
            full.append((time.perf_counter() - t) * 1000)
        res.update(ask_p50_ms=pct(full, 50), ask_p95_ms=pct(full, 95), bare_p50_ms=pct(bare, 50),
                   bare_p95_ms=pct(bare, 95), ask_over_bare_p50=pct(full, 50) / pct(bare, 50))

        env = {**os.environ, "ASKDESK_INDEX": str(cfg.index)}
        cold = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "askdesk", "ask", questions[0]], env=env, check=True,
                           capture_output=True)
            cold.append(time.perf_counter() - t)
        res["cold_start_s"] = statistics.median(cold)
        helps = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "askdesk", "--help"], check=True, capture_output=True)
            helps.append(time.perf_counter() - t)
        res["help_s"] = statistics.median(helps)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    width = max(map(len, res))
    for k, v in res.items():
        print(f"{k:<{width}}  {v:.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
