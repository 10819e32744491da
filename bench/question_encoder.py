"""The question encoder: askdesk's onnxruntime graph against its numpy fallback and torch, same run.

    python bench/question_encoder.py [INDEX]   # INDEX: also time Desk.ask with each encoder on it

askdesk encodes questions with a graph it builds from the model's weights and runs in
onnxruntime on one thread (src/askdesk/bert.py); the numpy forward pass is its fallback, and
sentence-transformers' `encode` on torch (one thread, and torch's default) is the raw model.
Prints JSON: p50/p95 ms of each on 200 squad-dev questions, the ratios to onnx, the smallest
cosine between onnx's and torch's vectors, and `Desk.ask` p50/p95 with each askdesk encoder.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import corpus  # noqa: E402


def timed(fn, items) -> dict:
    for x in items[:10]:
        fn(x)
    ms = []
    for x in items:
        t = time.perf_counter()
        fn(x)
        ms.append((time.perf_counter() - t) * 1e3)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def main() -> None:
    import torch

    from askdesk import Config, Desk
    from askdesk.models.bert import BertEncoder
    from askdesk.models.embed import SentenceTransformerEmbedder, resolve_model_path

    qs = corpus.questions()[::11][:200]
    emb = SentenceTransformerEmbedder()
    onnx = emb.fast
    numpy_enc = BertEncoder(resolve_model_path(emb.name), backend="numpy")
    raw = emb.model

    def st(q: str) -> np.ndarray:
        return raw.encode([q], normalize_embeddings=True, show_progress_bar=False)[0]

    out = {"onnx_encode": timed(onnx.encode, qs), "numpy_encode": timed(numpy_enc.encode, qs)}
    default_threads = torch.get_num_threads()
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        out[f"torch{threads}_encode"] = timed(st, qs)
    torch.set_num_threads(default_threads)
    for k in [k for k in out if k != "onnx_encode"]:
        out[f"{k.split('_')[0]}_over_onnx_p50"] = round(out[k]["p50_ms"] / out["onnx_encode"]["p50_ms"], 2)
    out["min_cosine_onnx_vs_torch"] = round(min(float(onnx.encode(q) @ st(q)) for q in qs[:50]), 6)
    if len(sys.argv) > 1:
        desk = Desk.open(sys.argv[1], config=Config.from_env({}), embedder=emb)
        out["onnx_ask"] = timed(desk.ask, qs)
        numpy_emb = SentenceTransformerEmbedder(question_backend="numpy")
        numpy_desk = Desk.open(sys.argv[1], config=Config.from_env({}), embedder=numpy_emb)
        out["numpy_ask"] = timed(numpy_desk.ask, qs)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
