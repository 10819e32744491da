"""The benchmark's embedding cache (bench/corpus.py `CachedEmbedder`): vectors stay with their texts
when several bench runs share it."""

import sys

from conftest import ROOT


class _Counting:
    """A stand-in model: each text's vector is its length, so a vector tells which text it belongs to."""

    name = "counting"
    dim = 2

    def embed_documents(self, texts, progress=None):
        import numpy as np

        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


def test_two_bench_processes_saving_the_embedding_cache_keep_every_vector_with_its_text(tmp_path):
    """Two bench runs at once once left the cache's keys and vectors out of step (two files written
    one after the other); each save now merges under a lock and replaces one file whole."""
    sys.path.insert(0, str(ROOT / "bench"))
    from corpus import CachedEmbedder

    a, b = CachedEmbedder(_Counting(), tmp_path), CachedEmbedder(_Counting(), tmp_path)  # both loaded before any save
    a.embed_documents(["x" * n for n in range(1, 40)])
    b.embed_documents(["y" * n for n in range(1, 60)])
    c = CachedEmbedder(_Counting(), tmp_path)
    texts = ["x" * n for n in range(1, 40)] + ["y" * n for n in range(1, 60)]
    assert c.embed_documents(texts)[:, 0].tolist() == [len(t) for t in texts]
    assert (c.hits, c.misses) == (len(texts), 0)
