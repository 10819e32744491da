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


def test_a_text_whose_key_ends_in_a_zero_byte_is_found_again_and_the_rows_stay_in_step(tmp_path):
    """numpy's "S20" strings dropped a digest's trailing zero byte: that text was never found
    again, was stored twice, and every row after it shifted."""
    sys.path.insert(0, str(ROOT / "bench"))
    from corpus import CachedEmbedder

    a = CachedEmbedder(_Counting(), tmp_path)
    zero = next("z" * n for n in range(1, 5000) if a._key("z" * n).endswith(b"\0"))
    texts = ["x" * n for n in range(1, 30)] + [zero]
    a.embed_documents(texts)
    b = CachedEmbedder(_Counting(), tmp_path)
    assert b.embed_documents(texts)[:, 0].tolist() == [len(t) for t in texts] and b.misses == 0
    b.embed_documents(["w" * n for n in range(1, 9)])  # more rows after it, saved again
    c = CachedEmbedder(_Counting(), tmp_path)
    again = texts + ["w" * n for n in range(1, 9)]
    assert c.embed_documents(again)[:, 0].tolist() == [len(t) for t in again] and c.misses == 0

