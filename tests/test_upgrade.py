"""Format upgrades without re-embedding, on a real format-2 index: tests/fixtures/index-format2 was
written by askdesk at f951dbe (the last revision of format 2) with the fake embedder, from the three
articles beside it (see its README.md). The next write converts it; a reader refuses it with the
command that does."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from conftest import ROOT, FakeEmbedder, write

from askdesk import Config, Desk
from askdesk.errors import IndexMismatchError
from askdesk.store import index as index_mod
from askdesk.store import upgrade
from askdesk.store.lexical import BM25
from askdesk.store.vectors import FaissIndex
from askdesk.text import terms

FIXTURE = ROOT / "tests" / "fixtures" / "index-format2"


class NoEmbedding(FakeEmbedder):
    """The fake's query vectors; any document text sent to the model fails the test."""

    def embed_documents(self, texts, *, progress=None):
        assert not texts, f"{len(texts)} texts sent to the model: {texts[:1]!r}"
        return super().embed_documents(texts, progress=progress)


@pytest.fixture
def old(tmp_path):
    """A copy of the format-2 index and its corpus; (index folder, its generation's folder)."""
    shutil.copytree(FIXTURE, tmp_path / "fmt2")
    index = tmp_path / "fmt2" / "index"
    return index, index / index_mod.current_generation(index)


def config(index):
    return Config.from_env(model="fake", index=index, refuse_below=0.0)


def test_the_fixture_is_format_2():
    index = FIXTURE / "index"
    (gen,) = [p for p in index.iterdir() if p.name.startswith("g-")]
    m = json.loads((gen / "manifest.json").read_text())
    assert m["format_version"] == 2 and m["n_articles"] == 3 and m["model"] == "fake"
    assert not (gen / "segment.json").exists() and not (gen / "hashes.npy").exists()
    assert all("statements" not in json.loads(line) for line in (gen / "articles.jsonl").read_text().splitlines())


def test_a_reader_refuses_it_and_names_the_command_that_converts_it(old):
    index, _ = old
    with pytest.raises(IndexMismatchError, match=r"format 2 is older than this askdesk's \(3\); upgrade it with: askdesk "
                                                 r"index --index .* \(rewrites its 3 articles in format 3 without "
                                                 r"embedding them again\)"):
        Desk.open(index, config=config(index), embedder=NoEmbedding())
    assert json.loads((index / index_mod.current_generation(index) / "manifest.json").read_text())["format_version"] == 2


def test_the_next_write_converts_it_without_embedding_and_says_so(old, caplog):
    index, gen = old
    desk = Desk(index, config=config(index), embedder=NoEmbedding())
    with caplog.at_level(logging.WARNING):
        stats = desk.sync()  # the folder it records (../corpus), its files as they were
    assert [r.getMessage() for r in caplog.records if r.name.startswith("askdesk")] == [
        "index upgraded from format 2 to 3 (3 articles, no re-embedding)"]
    assert (stats["unchanged"], stats["added"], stats["embedded"], stats["reembedded"]) == (3, 0, 0, False)

    snap = desk.snapshot
    (seg,) = snap.segments
    assert snap.manifest["format_version"] == 3 and seg.meta["format_version"] == 3
    # The records and vectors are the format-2 files', row for row (the fixture's: this sync's own
    # publish made the upgrade's generation the one before it, and the format-2 one went).
    gen = FIXTURE / "index" / gen.name
    old_articles = [json.loads(line) for line in (gen / "articles.jsonl").read_text().splitlines()]
    assert [(a.id, a.title, a.date, a.path) for a in snap.all_articles()] == [
        (r["id"], r["title"], r["date"], r["path"]) for r in old_articles]
    assert [seg.sentences[r["id"]] for r in old_articles] == [[tuple(s) for s in r["sentences"]] for r in old_articles]
    assert [(c.id, c.start, c.end) for c in snap.chunks] == [
        (r["id"], r["start"], r["end"]) for r in map(json.loads, (gen / "chunks.jsonl").read_text().splitlines())]
    was = FaissIndex.load(gen / "vectors.faiss", {"kind": "flat"}, np.zeros(3, np.int32))
    np.testing.assert_array_equal(seg.vectors.keys, was.keys)
    np.testing.assert_array_equal(seg.vectors.all_vectors(), was.all_vectors())
    np.testing.assert_array_equal(np.asarray(seg.sentence_vectors), np.load(gen / "sentences.npy"))
    # BM25 fitted again from the chunk text scores as the format-2 postings did (terms are unchanged since).
    before = BM25.load(gen)
    for q in ("ferry pier cost", "mill reopened workers", "storm road"):
        np.testing.assert_allclose(seg.lexical.scores_of(terms(q), seg.lexical.keys),
                                   before.scores_of(terms(q), before.keys), rtol=1e-6)
    # Statements were found when the segment was written (format 2 stored none): read from its file.
    rows = {json.loads(line)["title"]: json.loads(line)["statements"]
            for line in (seg.path / "articles.jsonl").read_text().splitlines()}
    assert any(r[0] == "Ana Costa" for r in rows["Orm harbour board approves new ferry pier"])

    again = Desk.open(index, config=config(index), embedder=NoEmbedding())  # a reader opens it now
    a = again.ask("When does work on the ferry pier start?")
    assert "April" in a.citations[0].sentence and a.citations[0].title == "Orm harbour board approves new ferry pier"
    assert again.ask("Who said the pier will carry twice as many passengers?").citations[0].speaker == "Ana Costa"


def test_the_upgrade_is_one_publish_that_rollback_undoes(old):
    index, gen = old
    with index_mod.lock(index):
        assert upgrade.upgrade(index, want={"model": "fake"}) == {"from": 2, "to": 3, "n_articles": 3}
        assert upgrade.upgrade(index, want={"model": "fake"}) is None  # the current format: nothing to do
    assert index_mod.previous_generation(index) == gen.name
    desk = Desk.open(index, config=config(index), embedder=NoEmbedding())
    assert desk.info()["n_articles"] == 3 and desk.info()["segments"] == 1
    desk.rollback()  # the format-2 generation was kept, whole
    assert index_mod.current_generation(index) == gen.name
    with pytest.raises(IndexMismatchError, match="format 2 is older"):
        Desk.open(index, config=config(index), embedder=NoEmbedding())


def test_after_the_upgrade_only_new_text_is_embedded(old, tmp_path):
    index, _ = old
    fake = FakeEmbedder()
    desk = Desk(index, config=config(index), embedder=fake)
    stats = desk.add([write(tmp_path / "more" / "bridge.txt", "Bridge news\n\nThe Orm bridge reopens in June.")])
    assert (stats["added"], stats["unchanged"], stats["reembedded"]) == (1, 3, False)
    assert fake.embedded == stats["embedded"] <= 2  # the new article's chunk (and a lone sentence), nothing else
    assert desk.info()["n_articles"] == 4 and desk.snapshot.manifest["format_version"] == 3


def test_a_format_2_index_that_cannot_be_read_is_embedded_again_keeping_every_article(old, caplog):
    index, gen = old
    (gen / "sentences.npy").write_bytes((gen / "sentences.npy").read_bytes()[:100])  # truncated
    fake = FakeEmbedder()
    desk = Desk(index, config=config(index), embedder=fake)
    with caplog.at_level(logging.WARNING):
        stats = desk.sync()
    assert any("could not be converted" in r.getMessage() and "sentences.npy" in r.getMessage()
               for r in caplog.records)
    assert stats["reembedded"] and stats["n_articles"] == 3 and fake.embedded > 0
    assert desk.snapshot.manifest["format_version"] == 3


def test_another_model_is_not_converted_but_embedded_again(old):
    index, _ = old
    cfg = config(index).replace(model="fake-2")
    stats = Desk(index, config=cfg, embedder=FakeEmbedder()).sync()
    assert stats["reembedded"] and stats["n_articles"] == 3
    assert Desk.open(index, config=cfg, embedder=FakeEmbedder()).info()["model"] == "fake-2"



def test_a_milvus_store_of_an_older_layout_goes_through_its_step_without_embedding(tmp_path, monkeypatch, caplog):
    """The store has had one layout since it came to askdesk, so `STORE_STEPS` is empty: here the
    step the next layout will add is stood in for, and the writer runs it before it writes."""
    pytest.importorskip("pymilvus", reason="pip install 'askdesk[milvus]' to test the Milvus store")
    from askdesk.store import milvus

    corpus = tmp_path / "corpus"
    write(corpus / "pier.txt", "Pier news\n\nThe Orm harbour board approved a new ferry pier on Monday.")
    write(corpus / "mill.txt", "Mill news\n\nThe paper mill in Brask reopened on Wednesday with 120 workers.")
    cfg = Config.from_env({}, model="fake", reader=False, index=tmp_path / "index", refuse_below=0.0,
                          store=str(tmp_path / "desk.db"))
    desk = Desk.build(corpus, config=cfg, embedder=FakeEmbedder())
    live = desk.store.live()
    older = milvus.FORMAT - 1
    desk.store.set_live(live["gen"], {**live["manifest"], "format": older})  # as the older askdesk left it
    seen = []

    def step(store, row):  # a step rewrites the rows its layout changed, in place; returns the manifest
        seen.append((row["gen"], row["manifest"]["format"]))
        return row["manifest"]

    monkeypatch.setitem(upgrade.STORE_STEPS, older, step)
    with caplog.at_level(logging.WARNING):
        stats = Desk(config=cfg, embedder=NoEmbedding()).sync(corpus)
    assert seen == [(live["gen"], older)]
    assert f"index upgraded from format {older} to {milvus.FORMAT} (2 articles, no re-embedding)" in [
        r.getMessage() for r in caplog.records]
    assert (stats["reembedded"], stats["unchanged"], stats["embedded"]) == (False, 2, 0)
    assert desk.store.live()["gen"] == live["gen"] and desk.store.live()["manifest"]["format"] == milvus.FORMAT
    assert "pier" in desk.ask("What did the harbour board approve?").citations[0].sentence
    desk.close()
