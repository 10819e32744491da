"""Memory probes, each run in a fresh process so its peak RSS is its own.

    python bench/probe.py model                       # the question encoder and the reader: the model baseline
    python bench/probe.py serve INDEX QUESTIONS.json  # Desk.open + answer the questions
    python bench/probe.py parts INDEX                 # what the loaded index is made of

Prints one JSON object. Peak RSS is VmHWM from /proc/self/status (ru_maxrss as a fallback); it
counts the pages of memory-mapped files (lexical.npz; sentences.npy too before it was read with
pread) that were read, so `rss_file_mb` says how much of the RSS is those (page cache, shared
with other readers; ~26 MB of it are shared libraries).
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
    """What a serving process loads besides the index: the question encoder as `Desk` runs it
    (onnxruntime, no torch) and the reader, each used once."""
    from askdesk.models.embed import SentenceTransformerEmbedder
    from askdesk.models.reader import shared

    emb = SentenceTransformerEmbedder()
    emb.fast  # noqa: B018 - the onnxruntime encoder `Desk` loads for questions
    emb.embed_query("What did the minister announce?")
    shared().read("What did the minister announce?", ["The minister announced a new port on Monday."])
    return {"peak_mb": status_mb("VmHWM"), "rss_mb": status_mb("VmRSS"), "rss_anon_mb": status_mb("RssAnon"),
            "rss_file_mb": status_mb("RssFile"), "torch_imported": "torch" in sys.modules}


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
            "rss_anon_mb": status_mb("RssAnon"), "rss_file_mb": status_mb("RssFile"),
            "load_s": load_s, "questions": len(qs), "torch_imported": "torch" in sys.modules,
            "faiss": desk.snapshot.manifest.get("faiss", {"kind": "flat"})}


def parts(index: str) -> dict:
    """RSS after loading, and the bytes of the big arrays."""
    import faiss  # counted before the index, so the library is not billed to the data
    import numpy as np

    from askdesk.store import index as index_mod

    steps = {"imports": status_mb("VmRSS")}
    snap = index_mod.load(index)  # BM25's postings are memory-mapped by the load itself
    steps["snapshot"] = status_mb("VmRSS")
    # Sizes of the parts, whether held (FAISS, article text) or read on demand (sentence vectors,
    # by pread; BM25 postings, memory-mapped; see rss_file_mb of `serve`).
    (seg,) = snap.segments  # the bench's indexes are one segment (bench/corpus.py)
    vectors, lexical = seg.vectors, seg.lexical
    inner = faiss.downcast_index(vectors.index.index)  # Flat: 4 bytes a dimension; IVF fp16: 2
    code_size = faiss.extract_index_ivf(inner).code_size if vectors.kind["kind"] == "ivf" else vectors.dim * 4
    arrays = {"faiss_vectors": len(vectors) * code_size,
              "sentence_vectors_mapped": seg.sentence_vectors.nbytes,
              "bm25_postings_mapped": sum(np.asarray(a).nbytes for a in (lexical.indptr, lexical.docs, lexical.tfs)),
              "bm25_vocab": sum(len(w) + 1 for w in lexical.vocab),
              "article_text": sum(sys.getsizeof(a.text) for a in snap.articles.values())}
    steps["rss_anon"], steps["rss_file"] = status_mb("RssAnon"), status_mb("RssFile")
    return {"rss_steps_mb": steps, "array_mb": {k: v / 2**20 for k, v in arrays.items()},
            "n_chunks": len(snap.chunks), "n_articles": len(snap.articles),
            "n_sentences": int(seg.sentence_vectors.shape[0]), "vocab": len(lexical.vocab),
            "peak_mb": status_mb("VmHWM"), "numpy": np.__version__}


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    out = {"model": model, "serve": serve, "parts": parts}[mode](*rest)
    print(json.dumps(out))
