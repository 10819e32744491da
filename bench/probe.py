"""Memory probes, each run in a fresh process so its peak RSS is its own.

    python bench/probe.py model                       # the question encoder alone: the model baseline
    python bench/probe.py serve INDEX QUESTIONS.json  # Desk.open + answer the questions
    python bench/probe.py serve-mmap INDEX QUESTIONS.json  # the same with sentences.npy memory-mapped
    python bench/probe.py parts INDEX                 # what the loaded index is made of

Prints one JSON object. Peak RSS is VmHWM from /proc/self/status (ru_maxrss as a fallback).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def status_mb(field: str) -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def model() -> dict:
    from askdesk.embed import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder()
    emb.embed_query("What did the minister announce?")
    return {"peak_mb": status_mb("VmHWM"), "rss_mb": status_mb("VmRSS"),
            "torch_imported": "torch" in sys.modules}


def serve(index: str, questions: str) -> dict:
    from askdesk import Desk

    qs = json.load(open(questions))
    t = time.perf_counter()
    desk = Desk.open(index)
    load_s = time.perf_counter() - t
    after_load = status_mb("VmRSS")
    for q in qs:
        desk.ask(q)
    return {"peak_mb": status_mb("VmHWM"), "rss_mb": status_mb("VmRSS"), "rss_after_load_mb": after_load,
            "load_s": load_s, "questions": len(qs), "torch_imported": "torch" in sys.modules}


def serve_mmap(index: str, questions: str) -> dict:
    """`serve` with sentences.npy memory-mapped: the proposed index.load change, simulated here."""
    import numpy as np

    load = np.load

    def mapped(file, *args, **kwargs):
        if str(file).endswith("sentences.npy"):
            kwargs["mmap_mode"] = "r"
        return load(file, *args, **kwargs)

    np.load = mapped
    return serve(index, questions)


def parts(index: str) -> dict:
    """RSS after each step of loading, and the bytes of the big arrays."""
    import numpy as np

    from askdesk import index as index_mod
    from askdesk.retrieve import BM25

    import faiss  # noqa: F401 - counted before the index, so the library is not billed to the data

    steps = {"imports": status_mb("VmRSS")}
    snap = index_mod.load(index)
    steps["snapshot"] = status_mb("VmRSS")
    BM25.from_arrays(snap.lexical)
    steps["bm25"] = status_mb("VmRSS")
    arrays = {"faiss_vectors": snap.faiss_index.ntotal * snap.faiss_index.d * 4,
              "sentence_vectors": snap.sentence_vectors.nbytes,
              "bm25_postings": sum(v.nbytes for k, v in snap.lexical.items() if k != "vocab"),
              "bm25_vocab": snap.lexical["vocab"].nbytes,
              "article_text": sum(len(a.text) for a in snap.articles.values()),
              "chunk_text": sum(len(c.text) for c in snap.chunks)}
    return {"rss_steps_mb": steps, "array_mb": {k: v / 2**20 for k, v in arrays.items()},
            "n_chunks": len(snap.chunks), "n_articles": len(snap.articles),
            "n_sentences": int(snap.sentence_vectors.shape[0]), "vocab": int(len(snap.lexical["vocab"])),
            "vocab_dtype": str(snap.lexical["vocab"].dtype), "peak_mb": status_mb("VmHWM"),
            "numpy": np.__version__}


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    out = {"model": model, "serve": serve, "serve-mmap": serve_mmap, "parts": parts}[mode](*rest)
    print(json.dumps(out))
