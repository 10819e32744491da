"""The VectorIndex contract: every implementation (FAISS exact, FAISS IVF, Milvus through a
Milvus Lite file) against a brute-force numpy oracle, with date windows, adds and removals."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

from askdesk.store.vectors import FaissIndex, SegmentedVectors, Window, day_number

DIM = 24


def _flat(vecs, keys, dates, where):
    return FaissIndex.build(vecs, keys, dates, ann_above=10**9)


def _ivf(vecs, keys, dates, where):
    return FaissIndex.build(vecs, keys, dates, ann_above=0)  # IVF from MIN_IVF (1,000) vectors on


def _segmented(vecs, keys, dates, where=None):
    """Three segments as the index folder holds them (an IVF one and two small exact ones), with a
    deleted row in the first whose key is live again in the last (an article written again)."""
    n = len(vecs)
    if n < 3:
        return SegmentedVectors([_flat(vecs, keys, dates, None)], [None])
    a, b = max(1, n * 7 // 10), max(2, n * 9 // 10)
    parts = [FaissIndex.build(vecs[:a], keys[:a], dates[:a], ann_above=0), _flat(vecs[a:b], keys[a:b], dates[a:b], None),
             _flat(np.concatenate([vecs[b:], vecs[:1]]), np.concatenate([keys[b:], keys[:1]]),
                   np.concatenate([dates[b:], dates[:1]]), None)]
    live = np.ones(a, bool)
    live[0] = False
    return SegmentedVectors(parts, [live, None, None])


def _faiss_again(index, tmp_path):
    path = tmp_path / "vectors.faiss"
    path.write_bytes(index.to_bytes().tobytes())
    return FaissIndex.load(path, index.kind, index.dates)


_names = itertools.count()


def _milvus(vecs, keys, dates, where):
    """The chunks collection of a Milvus store, in a Milvus Lite file shared by the tests (collections of their own)."""
    from askdesk.store.milvus import MilvusStore
    from askdesk.store.milvus_snapshot import MilvusVectors

    store = MilvusStore(f"{where}#t{next(_names)}")
    store.create("g1", DIM, "askdesk", parts=("chunks",))
    index = MilvusVectors(store.client, store.names("g1")["chunks"], DIM)
    index.add(keys, vecs, dates)
    index.store = store
    return index


def _milvus_again(index, tmp_path):
    from askdesk.store.milvus import MilvusStore
    from askdesk.store.milvus_snapshot import MilvusVectors

    index.store.close()  # stops the engine: the file is read again from disk
    store = MilvusStore(index.store.uri)
    return MilvusVectors(store.client, store.names("g1")["chunks"], DIM)


IMPLEMENTATIONS = {"faiss-flat": _flat, "faiss-ivf": _ivf, "segmented": _segmented, "milvus-lite": _milvus}
# A generation's segments are written one FAISS file each (tests/test_segments.py): no reopen here.
REOPEN = {"faiss-flat": _faiss_again, "faiss-ivf": _faiss_again, "segmented": None, "milvus-lite": _milvus_again}


REQUIRE_ENGINES = os.environ.get("ASKDESK_REQUIRE_ENGINES") == "1"  # CI: a missing extra fails, never skips


@pytest.fixture(scope="session")
def milvus_file(tmp_path_factory):
    if not REQUIRE_ENGINES:
        pytest.importorskip("pymilvus", reason="pip install 'askdesk[milvus]' to run the Milvus contract")
    return tmp_path_factory.mktemp("milvus") / "contract.db"


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def make(request):
    where = request.getfixturevalue("milvus_file") if request.param.startswith("milvus") else None
    build = IMPLEMENTATIONS[request.param]
    made = lambda vecs, keys, dates: build(vecs, keys, dates, where)  # noqa: E731
    made.again = REOPEN[request.param]
    return made


def data(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    keys = rng.choice(2**60, n, replace=False).astype(np.int64)  # content-hash keys: large, unordered
    days = np.array([day_number(f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}") for i in range(n)], np.int32)
    days[::10] = 0  # every tenth article undated
    return vecs, keys, days


def stored(vecs):
    return vecs.astype(np.float16).astype(np.float32)  # IVF keeps fp16; exact for the flat one within 1e-3


def oracle(vecs, keys, q, k, mask=None):
    scores = vecs @ q
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(keys[i]), float(scores[i])) for i in order if np.isfinite(scores[i])]


def recall(got, want):
    return len({k for k, _ in got} & {k for k, _ in want}) / max(len(want), 1)


def test_search_matches_the_numpy_oracle(make):
    vecs, keys, days = data()
    index = make(vecs, keys, days)
    assert len(index) == len(vecs) and index.dim == DIM
    rng = np.random.default_rng(1)
    hits = []
    for _ in range(20):
        q = vecs[rng.integers(len(vecs))] + 0.3 * rng.standard_normal(DIM).astype(np.float32)
        q /= np.linalg.norm(q)
        got, want = index.search(q, 10), oracle(vecs, keys, q, 10)
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
        scores = dict(zip(keys.tolist(), (vecs @ q).tolist()))
        np.testing.assert_allclose([s for _, s in got], [scores[k] for k, _ in got], atol=2e-3)  # true scores
        hits.append(recall(got, want))
    assert np.mean(hits) >= 0.95  # exact: 1.0; IVF: approximate, but not by much


def test_a_window_keeps_only_its_dates(make):
    vecs, keys, days = data()
    index = make(vecs, keys, days)
    q = vecs[7]
    for window in (Window("2025-03-01", "2025-03-31"), Window(None, "2025-02-10"), Window("2025-11-01", None),
                   Window("2025-03-01", "2025-03-31", undated=True)):
        mask = window.mask(days)
        got = index.search(q, 20, window=window)
        allowed = set(keys[mask].tolist())
        assert got and all(k in allowed for k, _ in got)
        assert recall(got, oracle(vecs, keys, q, 20, mask)) >= 0.9
    assert index.search(q, 5, window=Window("2030-01-01", None)) == []
    undated = index.search(q, 5, window=Window("2030-01-01", None, undated=True))
    assert undated and all(days[list(keys).index(k)] == 0 for k, _ in undated)


def test_vectors_come_back_by_key(make):
    vecs, keys, days = data(1200)
    index = make(vecs, keys, days)
    pick = [5, 1100, 3, 3]
    np.testing.assert_allclose(index.vectors(keys[pick]), stored(vecs[pick]), atol=1e-3)
    assert index.vectors([]).shape == (0, DIM)
    with pytest.raises(KeyError):
        index.vectors([12345])


def test_add_and_remove(make):
    vecs, keys, days = data(1500)
    index = make(vecs[:1200], keys[:1200], days[:1200])
    index.add(keys[1200:], vecs[1200:], days[1200:])
    assert len(index) == 1500
    assert index.search(vecs[1300], 1)[0][0] == keys[1300]  # a new vector is its own nearest neighbour
    gone = keys[[1300, 10, 500]]
    index.remove(list(gone) + [424242])  # an unknown key is ignored
    assert len(index) == 1497
    assert not {k for k, _ in index.search(vecs[1300], 10)} & set(gone.tolist())
    np.testing.assert_allclose(index.vectors([keys[11]]), stored(vecs[[11]]), atol=1e-3)
    assert index.search(vecs[11], 1)[0][0] == keys[11]
    window = Window("2025-05-01", "2025-05-31")  # dates follow their vectors through adds and removals
    kept = np.setdiff1d(np.arange(1500), [1300, 10, 500])
    for k, _ in index.search(vecs[40], 50, window=window):
        assert window.mask(days[kept][keys[kept] == k])[0]


def test_written_and_read_back_it_answers_the_same(make, tmp_path):
    vecs, keys, days = data(1500)
    index = make(vecs, keys, days)
    if make.again is None:
        pytest.skip("segments are written one FAISS file each (tests/test_segments.py)")
    before = {r: index.search(vecs[r], 5) for r in (0, 77, 1499)}
    window = Window("2025-03-01", "2025-03-31")
    in_window = index.search(vecs[3], 5, window=window)
    again = make.again(index, tmp_path)
    assert len(again) == 1500
    for r in (0, 77, 1499):
        assert again.search(vecs[r], 5) == before[r]
    assert again.search(vecs[3], 5, window=window) == in_window  # the dates were stored too
    np.testing.assert_allclose(again.vectors(keys[[5, 9]]), stored(vecs[[5, 9]]), atol=1e-3)


def test_an_empty_index_finds_nothing(make):
    index = make(np.zeros((0, DIM), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int32))
    assert len(index) == 0 and index.search(np.ones(DIM, np.float32), 5) == []
