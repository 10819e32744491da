"""The approximate (IVF) FAISS index above Config.ann_above: what it finds, what it records, and
that reopening and adding articles keep working. Small thresholds and the fake embedder."""

import json

import numpy as np
import pytest
from conftest import write

from askdesk import Config, Desk
from askdesk.store import vectors as vectors_mod
from askdesk.store.vectors import FaissIndex, chunk_key

WORDS = [f"w{i}" for i in range(2000)]


def many_chunks(folder, n_articles=50, sentences=30, seed=0):
    """~``n_articles * sentences`` chunks of 16 tokens: one random-word sentence each."""
    rng = np.random.default_rng(seed)
    for i in range(n_articles):
        body = " ".join(" ".join(rng.choice(WORDS, 9)).capitalize() + "." for _ in range(sentences))
        write(folder / f"{i:03}.txt", f"Story {i}\n\n{body}")
    return folder


@pytest.fixture
def ivf_config(fake_config):
    return fake_config.replace(ann_above=500, chunk_tokens=16, chunk_overlap=0)


def all_vectors(seg):
    return np.stack([seg.vectors.vector(r) for r in range(len(seg.chunks))])


def chunk_vectors(snap) -> dict:
    """Every live chunk's stored vector, by chunk id, through the index's VectorIndex."""
    chunks = snap.chunks
    return dict(zip((c.id for c in chunks), snap.vectors.vectors([chunk_key(c.id) for c in chunks])))


def test_above_the_threshold_the_index_is_ivf_and_finds_exact_duplicates(tmp_path, fake, ivf_config):
    desk = Desk.build(many_chunks(tmp_path / "corpus"), ivf_config.index, config=ivf_config, embedder=fake)
    (snap,) = desk.snapshot.segments
    n = len(snap.chunks)
    assert n > 1000
    kind = desk.snapshot.manifest["faiss"]
    assert kind == snap.meta["faiss"] and kind["kind"] == "ivf" and 1 <= kind["nlist"] <= n // 39 and kind["nprobe"] == min(kind["nlist"], 32)
    vecs = all_vectors(snap)
    for r, c in list(enumerate(snap.chunks))[::97]:  # the stored vector is the chunk's embedding, in fp16
        want = fake.embed_documents([f"{snap.articles[c.article_id].title}\n{c.text}"])[0]
        np.testing.assert_array_equal(vecs[r], want.astype(np.float16).astype(np.float32))
    for r in range(0, n, 53):
        got = snap.vectors.search_rows(vecs[r], 10)
        exact = vecs @ vecs[r]
        assert got[0][1] == pytest.approx(exact.max(), abs=1e-5)  # the duplicate (or an equal twin) first
        assert exact[got[0][0]] == pytest.approx(1.0, abs=2e-3)  # unit length, to fp16's precision
        np.testing.assert_allclose([s for _, s in got], exact[[i for i, _ in got]], atol=1e-5)  # true scores


def test_allowed_mask_filters_inside_the_ivf_search(tmp_path, fake, ivf_config):
    (snap,) = Desk.build(many_chunks(tmp_path / "corpus"), ivf_config.index, config=ivf_config,
                         embedder=fake).snapshot.segments
    n = len(snap.chunks)
    vecs = all_vectors(snap)
    rng = np.random.default_rng(1)
    allowed = rng.random(n) < 0.2
    for r in np.flatnonzero(allowed)[::31]:
        got = snap.vectors.search_rows(vecs[r], 10, allowed=allowed)
        assert len(got) == 10 and all(allowed[i] for i, _ in got)
        assert got[0][1] == pytest.approx(1.0, abs=2e-3)
    # Three rows allowed: the search probes every list, so all three come back, best first.
    few = np.zeros(n, dtype=bool)
    few[[5, n // 2, n - 1]] = True
    got = snap.vectors.search_rows(vecs[5], 10, allowed=few)
    assert sorted(i for i, _ in got) == [5, n // 2, n - 1]
    assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    assert snap.vectors.search_rows(vecs[5], 10, allowed=np.zeros(n, dtype=bool)) == []


def test_ivf_index_reopens_and_takes_an_added_article(tmp_path, fake, ivf_config):
    corpus = many_chunks(tmp_path / "corpus")
    first = Desk.build(corpus, ivf_config.index, config=ivf_config, embedder=fake)
    before = first.snapshot
    reopened = Desk.open(ivf_config.index, config=ivf_config, embedder=fake)
    snap = reopened.snapshot
    assert snap.manifest["faiss"] == before.manifest["faiss"]
    q = snap.segments[0].vectors.vector(7)
    assert snap.vectors.search(q, 5) == before.vectors.search(q, 5)

    new = write(tmp_path / "new.txt", "Harbor\n\nThe harbor authority bought twelve new cranes from Finland.")
    fake.embedded = 0
    stats = reopened.add([new])
    assert stats["added"] == 1 and fake.embedded <= 3  # old chunk vectors came back out of the IVF index
    after = reopened.snapshot
    assert after.manifest["faiss"]["kind"] == "ivf" and len(after.chunks) == len(snap.chunks) + 1
    # the IVF segment is kept as it was; the article is a small exact segment beside it
    assert [s.name for s in after.segments[:1]] == [s.name for s in snap.segments]
    assert after.segments[1].meta["faiss"] == {"kind": "flat"} and len(after.segments[1].chunks) == 1
    old_vecs = chunk_vectors(snap)
    new_vecs = chunk_vectors(after)
    assert all(np.array_equal(new_vecs[cid], v) for cid, v in old_vecs.items())
    answer = reopened.ask("What did the harbor authority buy?")
    assert answer.citations and "cranes" in answer.citations[0].sentence


def centroids(seg):
    ivf = faiss_ivf(seg)
    return ivf.quantizer.reconstruct_n(0, ivf.nlist)


def faiss_ivf(seg):
    import faiss

    return faiss.extract_index_ivf(seg.vectors.index)


def test_a_merge_keeps_the_ivf_lists_until_the_corpus_grows_half_again(tmp_path, fake, ivf_config):
    corpus = many_chunks(tmp_path / "corpus", n_articles=40)
    desk = Desk.build(corpus, ivf_config.index, config=ivf_config, embedder=fake)
    (first,) = desk.snapshot.segments
    n = len(first.chunks)
    assert first.meta["faiss"]["trained_on"] == n

    desk.add([write(tmp_path / "one.txt", "Harbor\n\nThe harbor authority bought twelve new cranes from Finland.")])
    assert desk.optimize()["segments"] == 1
    (after,) = desk.snapshot.segments
    assert len(after.chunks) == n + 1
    np.testing.assert_array_equal(centroids(after), centroids(first))  # no k-means for one article
    assert after.meta["faiss"] == first.meta["faiss"]
    assert "cranes" in desk.ask("What did the harbor authority buy?").citations[0].sentence
    vecs = all_vectors(after)
    for r in range(0, n, 61):  # every vector still lands in a list the search probes
        assert after.vectors.search_rows(vecs[r], 1)[0][1] == pytest.approx(1.0, abs=2e-3)

    desk.add([many_chunks(tmp_path / "more", n_articles=25, seed=5)])  # +60%: past RETRAIN_RATIO
    desk.optimize()
    (grown,) = desk.snapshot.segments
    assert len(grown.chunks) > vectors_mod.RETRAIN_RATIO * n
    assert grown.meta["faiss"]["trained_on"] == len(grown.chunks)
    assert grown.meta["faiss"]["nlist"] == vectors_mod.ivf_shape(len(grown.chunks))[0]


def test_at_or_below_the_threshold_the_index_stays_exact(tmp_path, fake, fake_config):
    desk = Desk.build(many_chunks(tmp_path / "corpus", n_articles=5), fake_config.index,
                      config=fake_config.replace(chunk_tokens=16, chunk_overlap=0), embedder=fake)
    assert desk.snapshot.manifest["faiss"] == {"kind": "flat"}


def test_build_faiss_picks_the_kind_by_size():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(3000, dtype=np.int64) * 7919
    dates = np.zeros(3000, np.int32)
    assert FaissIndex.build(x, ids, dates, ann_above=3000).kind == {"kind": "flat"}
    assert FaissIndex.build(x[:900], ids[:900], dates[:900], ann_above=0).kind == {"kind": "flat"}  # too few
    built = FaissIndex.build(x, ids, dates, ann_above=2999)
    index, kind = built.index, built.kind
    assert kind == {"kind": "ivf", "nlist": 76, "nprobe": 32, "vectors": "fp16", "trained_on": 3000}  # min(4 * sqrt(3000), 3000 // 39)
    assert vectors_mod.ivf_shape(100_002) == (1264, 158)  # 4 * sqrt(n) lists, an eighth of them probed
    assert vectors_mod.ivf_shape(1_000_000) == (4000, 500)
    assert vectors_mod.ivf_shape(10_000) == (256, 32)  # at least 32 probed
    assert vectors_mod.ivf_shape(2000) == (51, 32)  # at most n / 39 lists
    import faiss

    ivf = faiss.extract_index_ivf(index)
    assert faiss_kind_name(index) == "IndexIVFScalarQuantizer" and ivf.code_size == 16 * 2  # 2 bytes a dim
    np.testing.assert_array_equal(index.reconstruct(int(ids[123])), x[123].astype(np.float16).astype(np.float32))
    # Exactly what the next generation gets back from all_vectors(): fp16 -> fp16 loses nothing.
    again = FaissIndex.build(built.all_vectors(), ids, dates, ann_above=2999)
    np.testing.assert_array_equal(again.all_vectors(), built.all_vectors())


def faiss_kind_name(index) -> str:
    import faiss

    return type(faiss.downcast_index(index.index)).__name__


def test_an_ivf_flat_index_from_before_fp16_still_opens(tmp_path, fake, ivf_config):
    import faiss

    desk = Desk.build(many_chunks(tmp_path / "corpus"), ivf_config.index, config=ivf_config, embedder=fake)
    (snap,) = desk.snapshot.segments
    vecs = fake.embed_documents([f"{snap.articles[c.article_id].title}\n{c.text}" for c in snap.chunks])
    kind = {k: v for k, v in snap.meta["faiss"].items() if k != "vectors"}  # as written then
    old = faiss.index_factory(vecs.shape[1], f"IDMap2,IVF{kind['nlist']},Flat", faiss.METRIC_INNER_PRODUCT)
    old.train(vecs)
    old.add_with_ids(vecs, np.array([chunk_key(c.id) for c in snap.chunks], dtype=np.int64))
    faiss.extract_index_ivf(old).make_direct_map()
    faiss.write_index(old, str(snap.path / "vectors.faiss"))
    m = json.loads((snap.path / "segment.json").read_text())
    m["faiss"], m["files"]["vectors.faiss"] = kind, (snap.path / "vectors.faiss").stat().st_size
    (snap.path / "segment.json").write_text(json.dumps(m))
    (reopened,) = Desk.open(ivf_config.index, config=ivf_config, embedder=fake).snapshot.segments
    assert faiss_kind_name(reopened.vectors.index) == "IndexIVFFlat"
    np.testing.assert_array_equal(reopened.vectors.vector(7), vecs[7])  # float32, exact
    got = reopened.vectors.search_rows(vecs[7], 5)
    assert got[0][1] == pytest.approx(1.0, abs=1e-5) and vecs[got[0][0]] @ vecs[7] == pytest.approx(1.0, abs=1e-5)


def test_ann_above_comes_from_the_environment():
    assert Config.from_env({"ASKDESK_ANN_ABOVE": "1234"}).ann_above == 1234
    assert Config().ann_above == 50_000
    with pytest.raises(Exception, match="ann_above"):
        Config(ann_above=-1)


def test_an_index_written_with_fewer_probes_searches_as_many_as_a_new_one():
    """The probes are a search setting: an index whose manifest says a 32nd of its lists (written
    before real vectors were measured) is searched with an eighth, as one written today."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20_000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    built = FaissIndex.build(x, np.arange(20_000, dtype=np.int64), np.zeros(20_000, np.int32), ann_above=0)
    assert built.kind["nlist"] == 512 and built.kind["nprobe"] == 64
    import faiss

    old = FaissIndex(built.index, built.dates, {**built.kind, "nprobe": 16})
    assert faiss.extract_index_ivf(old.index).nprobe == 64
    assert [r for r, _ in old.search_rows(x[7], 5)] == [r for r, _ in built.search_rows(x[7], 5)]
