"""The embedding job on a real local Ray (Ray Data, an actor pool): into a Milvus store and into an
index folder it builds the index a local build does, with the model passes on Ray's workers."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from conftest import FakeEmbedder, write

from askdesk import Config, Desk
from askdesk.store.vectors import chunk_key

if os.environ.get("ASKDESK_REQUIRE_ENGINES") != "1":
    pytest.importorskip("ray", reason="pip install 'askdesk[ray]' to test the Ray job")
    pytest.importorskip("pymilvus", reason="pip install 'askdesk[milvus]' to test the Ray job into a store")

from test_milvus import news_corpus  # noqa: E402

from askdesk.store import rayjob  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """One Ray for the module (as a cluster would be: the job joins it and leaves it running)."""
    import ray

    assert rayjob._connect("local")  # as `--ray` starts it (on a busy machine a start may time out: tried three times)
    yield ray
    ray.shutdown()


def same_index(a: Desk, b: Desk) -> None:
    sa, sb = a.snapshot, b.snapshot
    assert sorted(x.id for x in sb.all_articles()) == sorted(x.id for x in sa.all_articles())
    keys = [chunk_key(ch.id) for ch in sa.chunks] if hasattr(sa, "chunks") else None
    assert keys and sb.chunks_of(keys) == sa.chunks_of(keys) and len(sb.vectors) == len(keys)
    np.testing.assert_allclose(sb.vectors.vectors(keys), sa.vectors.vectors(keys), atol=1e-6)
    chunks = sa.chunks_of(keys)
    np.testing.assert_allclose(sb.sentences_in(chunks).vectors, sa.sentences_in(chunks).vectors, atol=1e-3)


def test_the_ray_job_builds_what_a_local_build_does(tmp_path, local_ray):
    c = news_corpus(tmp_path / "corpus")
    cfg = Config.from_env({}, model="fake", reader=False, index=tmp_path / "index", refuse_below=0.0, ray="auto")
    local = Desk.build(c, tmp_path / "local", config=cfg.replace(ray=""), embedder=FakeEmbedder())

    reports, here = [], FakeEmbedder()
    store = Desk.build(c, config=cfg, embedder=here, store=str(tmp_path / "desk.db"),
                       progress=lambda done, total, desc: reports.append((done, total, desc)))
    assert here.embedded == 0  # every model pass ran in a Ray actor, on its own copy of the embedder
    n_chunks = store.info()["n_chunks"]
    assert reports[0] == (0, 5, "articles (0 chunks)") and reports[-1] == (5, 5, f"articles ({n_chunks} chunks)")
    same_index(local, store)

    here = FakeEmbedder()
    folder = Desk.build(c, tmp_path / "ray-index", config=cfg, embedder=here)
    assert here.embedded == 0
    same_index(local, folder)

    q = "How big was Nippon Steel's bid for US Steel?"
    assert store.ask(q).text == folder.ask(q).text == local.ask(q).text

    write(c / "new.txt", "Bridge reopens\n\nThe Varsk bridge reopened on Friday after repairs to its old deck.")
    stats = store.sync(c)  # an update through Ray embeds only the new article
    assert (stats["added"], stats["embedded"]) == (1, local.sync(c)["embedded"]) and stats["embedded"] <= 2
    same_index(local, store)
    store.close()


def test_statements_are_found_on_the_workers_and_written_as_found(tmp_path, local_ray, monkeypatch):
    """Each article's statements (the spaCy parse) are found in the Ray task that plans it; the writer
    in this process stores them as they came and parses nothing."""
    from askdesk.articles import quotes
    from askdesk.store import milvus_write, upsert

    found, parsed = quotes.find_statements, []

    def counted(text):
        parsed.append(text)
        return found(text)

    # This process's every name for it (the writer's, the store's reader's, the job's): the workers are
    # other processes, with their own askdesk, so their calls are not counted.
    for m in [m for name, m in sys.modules.items() if name.startswith("askdesk")]:
        if getattr(m, "find_statements", None) is found:
            monkeypatch.setattr(m, "find_statements", counted)

    c = news_corpus(tmp_path / "corpus")
    cfg = Config.from_env({}, model="fake", reader=False, index=tmp_path / "index", refuse_below=0.0, ray="auto")
    store = Desk.build(c, config=cfg, embedder=FakeEmbedder(), store=str(tmp_path / "desk.db"))
    articles = store.snapshot.all_articles()
    stored = {a.id: store.snapshot.statements_of(a.id) for a in articles}
    assert parsed == []  # neither written nor read back by parsing here
    assert len(articles) == 5
    for a in articles:
        assert stored[a.id] == tuple(found(a.text)), a.title
    assert {"Ilse Brandt", "Jan Kow"} <= {st.speaker for sts in stored.values() for st in sts}

    # The counting sees the writer's parse: an article that comes without its statements is parsed here, once.
    a = articles[0]
    here = next(upsert.local_embedding(cfg, FakeEmbedder())([a]))
    assert here.statements is None and parsed == []
    milvus_write.rows_of(here, "askdesk")
    assert parsed == [a.text]
    store.close()


def test_actors_take_a_gpu_each_when_the_cluster_has_gpus(local_ray, monkeypatch):
    cfg = Config.from_env({})
    monkeypatch.setattr(local_ray, "cluster_resources", lambda: {"CPU": 64.0, "GPU": 4.0})
    pool = rayjob._pool(cfg)
    assert (pool["compute"].min_size, pool["num_gpus"], pool["fn_constructor_kwargs"]["device"]) == (4, 1, "cuda")
    pool = rayjob._pool(cfg.replace(device="cpu"))  # told to stay on the CPU: one actor per two cores
    assert (pool["compute"].min_size, pool.get("num_gpus"), pool["num_cpus"]) == (32, None, 1)
    monkeypatch.setattr(local_ray, "cluster_resources", lambda: {"CPU": 2.0})
    assert rayjob._pool(cfg)["compute"].min_size == 1  # this machine: one actor (two stalled the pipeline)
