"""The Milvus store (a real Milvus Lite file) against the index folder: BM25 run by Milvus scores
as askdesk's, the same articles give the same cited answers, writes touch only what changed, an
interrupted write is finished by the next one. The fake embedder: both stores get the same vectors."""

from __future__ import annotations

import hashlib
import inspect
import os
import sys

import numpy as np
import pytest
import test_news
from conftest import CORPUS, FakeEmbedder, write

from askdesk import Config, Desk
from askdesk.articles.chunk import split_sentences
from askdesk.errors import BadInputError, IndexMismatchError, IndexMissingError, StoreUnavailableError
from askdesk.store.lexical import BM25
from askdesk.store.vectors import Window, chunk_key, day_number
from askdesk.text import terms
from askdesk.types import Article, Chunk

if os.environ.get("ASKDESK_REQUIRE_ENGINES") != "1":
    pytest.importorskip("pymilvus", reason="pip install 'askdesk[milvus]' to test the Milvus store")

from askdesk.store import milvus, milvus_collections, milvus_snapshot, milvus_write, upsert  # noqa: E402

STORY = "The harbour council approved the new ferry terminal on Monday after a long debate."


def news_corpus(folder):
    """The bundled article and a few dated stories (two disagree on a figure, one quotes its speaker)."""
    for f in CORPUS.iterdir():
        write(folder / f.name, f.read_text(encoding="utf-8"))
    write(folder / "harbor.md", "---\ntitle: Varsk port has record year\ndate: 2024-03-01\nsource: Harbor Times\n---\n"
          "The port of Varsk handled 12.1 million tonnes of cargo last year, the port authority said. "
          "Harbour master Ilse Brandt spoke after the announcement.\n\n"
          "\"The new breakwater made the difference for the fleet,\" Brandt said.\n")
    write(folder / "ledger.md", "---\ntitle: Cargo boom at Varsk\ndate: 2024-03-05\nsource: Daily Ledger\n---\n"
          "The port of Varsk handled 12.4 million tonnes of cargo last year, according to the port authority.\n\n"
          "Mayor Jan Kow welcomed the figures. \"Varsk is open for business again,\" he said.\n")
    write(folder / "mill.txt", "Mill output\n\nThe steel mill reported output of 3 million tonnes in the third quarter. "
          "Its owner plans a second furnace next year.")
    write(folder / "ferry.md", f"---\ntitle: Ferry terminal approved\ndate: 2025-01-20\n---\n{STORY}\n")
    return folder


def config(tmp_path, **kw):
    return Config.from_env({}, model="fake", reader=False, index=tmp_path / "index", refuse_below=0.0, **kw)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same corpus in an index folder and in a Milvus Lite store."""
    d = tmp_path_factory.mktemp("pair")
    c = news_corpus(d / "corpus")
    cfg = config(d)
    folder = Desk.build(c, cfg.index, config=cfg, embedder=FakeEmbedder())
    store = Desk.build(c, config=cfg, embedder=FakeEmbedder(), store=str(d / "desk.db"))
    yield folder, store
    store.close()


QUESTIONS = [
    ("How big was Nippon Steel's bid for US Steel?", {}),
    ("What was Japan's 2024 goods trade surplus with the US?", {}),
    ("How much cargo did the port of Varsk handle?", {}),
    ("What did Kow say about Varsk?", {}),
    ("How much cargo did the port of Varsk handle?", {"since": "2024-03-02"}),
    ("What did the council approve?", {"until": "2024-12-31"}),
    ("What did the council approve?", {"as_of": "2025-06-01"}),
    ("How much cargo did the port of Varsk handle last week?", {"as_of": "2024-03-08"}),
    ("What output did the mill report?", {}),  # undated: found only without a window
]


@pytest.mark.parametrize("question,kw", QUESTIONS)
def test_both_stores_give_the_same_cited_answer(pair, question, kw):
    folder, store = pair
    a, b = folder.ask(question, **kw), store.ask(question, **kw)
    assert b.text == a.text and b.refused == a.refused
    assert [(c.article_id, c.start, c.end, c.sentence, c.quote, c.speaker) for c in b.citations] == \
        [(c.article_id, c.start, c.end, c.sentence, c.quote, c.speaker) for c in a.citations]
    assert b.conflicts == a.conflicts and b.period == a.period and b.note == a.note
    assert b.confidence == pytest.approx(a.confidence, abs=1e-6)
    if b.citations:
        c = b.citations[0]
        assert store.article(c.article_id).text[c.start:c.end] == c.sentence


def test_both_stores_retrieve_the_same_chunks_with_the_same_scores(pair):
    folder, store = pair
    for q in ("Nippon Steel bid", "ferry terminal council", "cargo tonnes Varsk", "zebra"):
        a, b = folder.retrieve(q, k=8), store.retrieve(q, k=8)
        assert [h.chunk for h in b] == [h.chunk for h in a]
        np.testing.assert_allclose([(h.score, h.dense, h.lexical) for h in b],
                                   [(h.score, h.dense, h.lexical) for h in a], atol=1e-5)


def test_info_lists_the_same_articles(pair):
    folder, store = pair
    a, b = folder.info(), store.info()
    assert b["index"].endswith("desk.db") and (b["n_articles"], b["n_chunks"]) == (a["n_articles"], a["n_chunks"])
    assert sorted(b["articles"], key=lambda x: x["id"]) == sorted(a["articles"], key=lambda x: x["id"])
    assert b["model"] == "fake" and b["corpus"]["path"] == a["corpus"]["path"]
    assert b["corpus"]["relative"] == "corpus"  # from the .db file's folder (the index folder's is ../corpus)
    for x in a["articles"]:
        assert store.article(x["id"]) == folder.article(x["id"])


# ---- BM25 run by Milvus ---------------------------------------------------------------------------

def test_bm25_run_by_milvus_scores_as_askdesks(tmp_path):
    """Milvus' BM25 function over askdesk's terms (whitespace analyzer, k1 0.9, b 0.4) against
    lexical.BM25: the same ranking and scores, the same idf, in a window and after removals."""
    paragraphs = [p for p in (CORPUS / "000_6b727eb0139704a7.txt").read_text().split("\n\n") if len(p) > 80]
    texts = paragraphs + [STORY, "Ferries ferry the ferrymen: $68.5 billion, U.S. tariffs and Isuzu's 3.2% rise."]
    arts = [Article(f"a{i:03d}", f"Story {i}", t, date=None if i % 4 == 0 else f"2025-0{1 + i % 9}-1{i % 10}")
            for i, t in enumerate(texts)]
    rng = np.random.default_rng(0)
    items = []
    for a in arts:
        c = Chunk(hashlib.sha1(a.id.encode()).hexdigest()[:16], a.id, 0, len(a.text), a.text)
        spans = split_sentences(a.text)
        items.append(milvus_write.Embedded(a, spans, [c], rng.standard_normal((1, 8)).astype(np.float32),
                                     rng.standard_normal((len(spans), 8)).astype(np.float32)))
    store = milvus.MilvusStore(str(tmp_path / "bm25.db"))
    store.create("g1", 8, "askdesk")
    store.write_articles("g1", items, "askdesk")
    lex = milvus_snapshot.MilvusLexical(store.client, store.names("g1")["chunks"])

    def check(kept):
        keys = np.array([chunk_key(e.chunks[0].id) for e in kept])
        dates = np.array([day_number(e.article.date) for e in kept], np.int32)
        ref = BM25.fit([f"{e.article.title} {e.article.text}" for e in kept], keys, dates=dates)
        for q in ("Nippon Steel bid US Steel", "ferry ferries", "tariffs $68.5 billion", "Isuzu Toyota",
                  "trade deficit Tokyo", "zebra"):
            qt = terms(q)
            for window in (None, Window("2025-02-01", "2025-06-30"), Window(None, "2025-03-31", undated=True)):
                got, want = lex.search(qt, 5, window=window), ref.search(qt, 5, window=window)
                np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-4)
                assert {k for k, s in got if s > want[-1][1] + 1e-4} == {k for k, s in want if s > want[-1][1] + 1e-4}
            np.testing.assert_allclose(lex.scores_of(qt, keys[::-1]), ref.scores_of(qt, keys[::-1]), rtol=1e-4,
                                       atol=1e-6)
            for t in qt + ["neverseen"]:
                assert lex.idf_of(t) == pytest.approx(ref.idf_of(t), rel=1e-5)
        return ref

    check(items)
    store.delete_articles("g1", [items[1].article.id, items[5].article.id])
    lex._idf.clear()
    check([e for i, e in enumerate(items) if i not in (1, 5)])  # Milvus' statistics follow the removal
    store.close()


# ---- writes ---------------------------------------------------------------------------------------

def test_writes_touch_only_what_changed_and_keep_both_stores_equal(tmp_path):
    c = news_corpus(tmp_path / "corpus")
    cfg = config(tmp_path)
    f_fake, m_fake = FakeEmbedder(), FakeEmbedder()
    folder = Desk(cfg.index, config=cfg, embedder=f_fake)
    store = Desk(config=cfg, embedder=m_fake, store=str(tmp_path / "desk.db"))

    def both(op, *args, **kw):
        a, b = getattr(folder, op)(*args, **kw), getattr(store, op)(*args, **kw)
        assert b == a, op
        snap_a, snap_b = folder.snapshot, store.snapshot
        assert sorted(x.id for x in snap_b.all_articles()) == sorted(x.id for x in snap_a.all_articles())
        keys = [chunk_key(ch.id) for ch in snap_a.chunks]  # every live chunk of the folder's segments
        assert snap_b.chunks_of(keys) == snap_a.chunks_of(keys) and len(snap_b.vectors) == len(keys)
        return b

    stats = both("sync", c)
    assert stats["added"] == 5 and m_fake.embedded == f_fake.embedded
    write(c / "new.txt", "Bridge reopens\n\nThe Varsk bridge reopened on Friday after repairs to its old deck.")
    before = m_fake.embedded
    assert both("sync", c)["added"] == 1 and m_fake.embedded - before == 2  # its one chunk and one sentence
    write(c / "mill.txt", "Mill output\n\nThe steel mill reported output of 4 million tonnes in the third quarter.")
    assert both("sync", c)["updated"] == 1
    extra = write(tmp_path / "outside" / "wire.txt", "Wire copy\n\n" + STORY)  # a near-duplicate of ferry.md
    stats = both("add", [extra])
    assert stats["added"] == 0 and "near-duplicate" in stats["skipped"][0][1]
    ferry = next(a.id for a in store.snapshot.all_articles() if a.path == "ferry.md")
    assert both("remove", [ferry])["removed"] == 1
    (c / "new.txt").unlink()
    stats = both("sync", c, prune=True)
    assert (stats["removed"], stats["added"], stats["n_articles"]) == (1, 1, 5)  # ferry.md is still in the folder
    assert both("sync", c)["embedded"] == 0  # nothing to do: nothing embedded, nothing written
    assert store.ask("How big was Nippon Steel's bid for US Steel?").text == \
        folder.ask("How big was Nippon Steel's bid for US Steel?").text
    store.close()


def test_a_new_model_embeds_every_article_again_into_a_new_generation(tmp_path):
    c = news_corpus(tmp_path / "corpus")
    cfg = config(tmp_path, store=str(tmp_path / "desk.db"))
    first = Desk.build(c, config=cfg, embedder=FakeEmbedder())
    extra = write(tmp_path / "outside" / "x.txt", "Far story\n\nThe observatory found a new comet on Tuesday.")
    first.add([extra])
    assert first.store.live()["gen"] == "g1"
    other = Desk(config=cfg.replace(model="fake2"), embedder=FakeEmbedder())
    with pytest.raises(IndexMismatchError, match="model='fake'.*askdesk index --store"):
        other.ask("What did the observatory find?")
    stats = other.sync(c)  # kept: the article added from outside the folder
    assert stats["reembedded"] and stats["kept"] == 1 and stats["n_articles"] == 6
    assert other.store.live()["gen"] == "g2" and other.info()["model"] == "fake2"
    assert "comet" in other.ask("What did the observatory find?").citations[0].sentence
    other.sync(c)  # nothing to write: the generation the rebuild replaced stays, for rollback
    assert other.store.generations() == ["g1", "g2"]
    other.remove([next(a.id for a in other.snapshot.all_articles() if "comet" in a.text)])  # a write that changes g2: what rollback brings back is g2 before it
    assert other.store.generations() == ["g2"] and other.store.live()["previous"]["gen"] == "g2"
    other.close()


def test_an_interrupted_write_is_finished_by_the_next(tmp_path, monkeypatch):
    c = news_corpus(tmp_path / "corpus")
    for i in range(6):
        write(c / f"extra{i}.txt", f"Council item {i}\n\nThe council voted on item {i} of the harbour plan, "
                                   f"number {i * 7}, on Tuesday.")
    cfg = config(tmp_path, store=str(tmp_path / "desk.db"))
    monkeypatch.setattr(upsert, "ARTICLES_PER_BATCH", 3)
    real = milvus.MilvusStore.write_articles
    calls = []

    def dies_in_the_third_batch(self, gen, items, analyzer):
        calls.append(len(items))
        if len(calls) == 3:  # articles and sentences written, then the process "dies" before its chunks
            names = self.names(gen)
            milvus_collections.put_rows(self.client, names["articles"], [r for e in items for r in milvus_write.article_rows(
                e.article, e.sentences)])
            raise KeyboardInterrupt
        return real(self, gen, items, analyzer)

    monkeypatch.setattr(milvus.MilvusStore, "write_articles", dies_in_the_third_batch)
    desk = Desk(config=cfg, embedder=FakeEmbedder())
    with pytest.raises(KeyboardInterrupt):
        desk.sync(c)
    (_, journal), = desk.store.journal()
    assert len(journal["ids"]) == 3
    # What readers see meanwhile: every chunk a search can find has its article (articles are written first).
    snap = desk.snapshot
    owners = {r["article_id"] for r in milvus_collections.query_all(desk.store.client, snap.vectors.collection, "key >= 0",
                                                         ["article_id"])}
    assert owners and owners <= {a.id for a in snap.all_articles()}
    assert not owners & set(journal["ids"])  # the interrupted batch got no chunk in
    monkeypatch.setattr(milvus.MilvusStore, "write_articles", real)
    fake = FakeEmbedder()
    stats = Desk(config=cfg, embedder=fake).sync(c)
    assert stats["n_articles"] == 11 and desk.store.journal() == []
    assert stats["added"] == 5  # the 6 of the two complete batches stayed; only the other 5 were embedded
    reference = Desk.build(c, cfg.index, config=cfg.replace(store=str(tmp_path / "index")), embedder=FakeEmbedder())
    keys = [chunk_key(ch.id) for ch in reference.snapshot.chunks]
    assert desk.snapshot.chunks_of(keys) == reference.snapshot.chunks_of(keys) and len(desk.snapshot.vectors) == len(keys)
    desk.close()


def test_a_killed_write_leaves_no_second_article_with_a_files_key(tmp_path, monkeypatch):
    """A write killed after its first new articles, before its removals, leaves two live articles
    with one key (path): the old version of an updated file, or a file of the same name in the other
    folder it was syncing to. The next sync keeps the folder's own only."""
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(4):
        write(a / f"{i}.txt", f"Story {i}\n\nThe council approved plan number {i} for the harbor on Monday.")
    for i in range(2):
        write(b / f"{i}.txt", f"Report {i}\n\nThe mill reported output of {i} million tonnes in the quarter.")
    from askdesk.articles.ingest import read_articles

    cfg = config(tmp_path, store=str(tmp_path / "desk.db"))
    desk = Desk.build(a, config=cfg, embedder=FakeEmbedder())
    monkeypatch.setattr(upsert, "ARTICLES_PER_BATCH", 1)
    real = milvus.MilvusStore.write_articles

    def killed(sync_to):
        calls = []

        def dies_in_the_second_batch(self, gen, items, analyzer):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return real(self, gen, items, analyzer)

        monkeypatch.setattr(milvus.MilvusStore, "write_articles", dies_in_the_second_batch)
        with pytest.raises(KeyboardInterrupt):
            desk.sync(sync_to, prune=True)
        monkeypatch.setattr(milvus.MilvusStore, "write_articles", real)

    killed(b)  # b/0.txt is in beside a/0.txt, the manifest still names a
    assert desk.sync(a, prune=True)["n_articles"] == 4
    assert sorted(x.id for x in desk.snapshot.all_articles()) == sorted(x.id for x in read_articles([a], root=a)[0])
    write(a / "0.txt", "Story 0\n\nThe council rejected plan number 0 for the harbor on Tuesday.")
    write(a / "4.txt", "Story 4\n\nThe council approved plan number 4 for the harbor on Monday.")
    killed(a)  # the new 0.txt is in beside the old one
    assert desk.sync(a, prune=True)["n_articles"] == 5
    assert sorted(x.id for x in desk.snapshot.all_articles()) == sorted(x.id for x in read_articles([a], root=a)[0])
    assert "rejected" in desk.ask("What did the council do with plan number 0?").citations[0].sentence
    desk.close()


# ---- errors a user can fix ------------------------------------------------------------------------

def test_errors_name_their_fix(tmp_path, monkeypatch):
    cfg = config(tmp_path, store=str(tmp_path / "none.db"))
    with pytest.raises(IndexMissingError, match=r"askdesk index corpus/ --store .*none\.db"):
        Desk(config=cfg, embedder=FakeEmbedder()).ask("What happened?")
    with pytest.raises(IndexMissingError, match=r"no index in the Milvus store .*askdesk index corpus/ --store"):
        Desk(config=cfg, embedder=FakeEmbedder()).rollback()
    with pytest.raises(BadInputError, match="must be letters"):
        Desk(config=cfg.replace(store=f"{tmp_path}/x.db#no-dashes"), embedder=FakeEmbedder()).ask("Why?")
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # as if the extra were not installed
    with pytest.raises(StoreUnavailableError, match=r"pip install 'askdesk\[milvus\]'"):
        Desk(config=cfg.replace(store=str(tmp_path / "other.db")), embedder=FakeEmbedder()).ask("Why?")


def test_a_store_given_as_a_folder_is_the_index_folder(tmp_path):
    cfg = Config.from_env({}, store=str(tmp_path / "folder"))
    assert cfg.store is None and cfg.index == tmp_path / "folder"
    assert Config.from_env({"ASKDESK_STORE": "http://milvus:19530#news"}).store == "http://milvus:19530#news"


# ---- the news layer on the store: test_news's desk tests, run against a Milvus store ----------------

@pytest.fixture(scope="module")
def news_desk(tmp_path_factory):
    d = tmp_path_factory.mktemp("news")
    made = test_news.news_desk.__wrapped__(d, FakeEmbedder())  # test_news's own articles (in a folder index)
    desk = Desk.build(made.config.corpus, config=made.config, embedder=FakeEmbedder(), store=str(d / "news.db"))
    yield desk
    desk.close()


for _name, _test in inspect.getmembers(test_news, inspect.isfunction):
    if _name.startswith("test_") and "news_desk" in inspect.signature(_test).parameters:
        globals()[_name] = _test  # collected here, with this module's news_desk: the Milvus store


# ---- the page on a store ----------------------------------------------------------------------------

def test_the_page_serves_a_store_from_empty_to_answering(tmp_path, monkeypatch):
    """`ui.open_desk` with ASKDESK_STORE: an empty store starts the page empty, an upload writes the
    store, the next question is answered from it; reopened, the page syncs the store with its folder."""
    pytest.importorskip("gradio")
    from askdesk import desk as desk_mod
    from askdesk.surface import ui

    monkeypatch.setattr(desk_mod, "SentenceTransformerEmbedder", lambda *a, **k: FakeEmbedder())
    (tmp_path / "corpus").mkdir()
    cfg = config(tmp_path, corpus=tmp_path / "corpus", store=str(tmp_path / "desk.db"))
    desk = ui.open_desk(cfg)
    fns = {f.name: f.fn for f in ui.build_ui(desk, desk.config).fns.values()}
    _box, chat, _sources, _asked = fns["respond"]("When did the harbour open?", [], [])
    assert chat[-1]["content"] == ui.EMPTY_INDEX_NOTE
    up = write(tmp_path / "up" / "harbour.txt", "Harbour news\n\nThe harbour of Varsk opened in 1901 after six years.")
    *_, (status, index, _files) = fns["add_files"]([str(up)], progress=lambda *a, **k: None)
    assert "Added <b>1</b> new" in status and '<span id="n-articles">1</span>' in index
    _box, chat, sources, _asked = fns["respond"]("When did the harbour of Varsk open?", [], [])
    assert "1901" in chat[-1]["content"] and "Harbour news" in sources
    assert desk.store.recorded_corpus() is None  # an upload adds to the folder; it syncs nothing
    desk.close()
    write(tmp_path / "corpus" / "mill.txt", "Mill output\n\nThe steel mill reported output of 3 million tonnes.")
    again = ui.open_desk(cfg)
    assert again.indexed and again.info()["n_articles"] == 2 and again.store.uri == cfg.store
    again.close()


def test_an_index_folder_copied_into_a_store_answers_the_same(pair, tmp_path):
    folder, _ = pair
    store = milvus.MilvusStore(str(tmp_path / "copy.db"))
    assert upsert.copy(folder.snapshot, store) == folder.info()["n_chunks"]  # nothing embedded: the vectors move
    copied = Desk(config=folder.config, embedder=FakeEmbedder(), store=store.uri)
    for q, kw in QUESTIONS:
        assert copied.ask(q, **kw).text == folder.ask(q, **kw).text
    with pytest.raises(BadInputError, match="already holds an index"):
        upsert.copy(folder.snapshot, store)
    stats = copied.sync(folder.config.corpus)  # and it takes writes as a store built by askdesk does
    assert stats["embedded"] == 0 and stats["unchanged"] == folder.info()["n_articles"]
    copied.close()


def test_a_chunk_with_more_sentences_than_its_row_holds_gives_the_rest_its_own_vector(tmp_path, monkeypatch):
    monkeypatch.setattr(milvus_collections, "SENTENCE_BYTES", 3 * 64 * 2)  # 3 float16 vectors of 64 dimensions
    c = tmp_path / "corpus"
    write(c / "list.txt", "Results\n\nAlpha won. Beta lost. Gamma drew. Delta won. Epsilon lost.")
    cfg = config(tmp_path)
    folder = Desk.build(c, cfg.index, config=cfg, embedder=FakeEmbedder())
    store = Desk.build(c, config=cfg, embedder=FakeEmbedder(), store=str(tmp_path / "desk.db"))
    keys = [chunk_key(ch.id) for ch in folder.snapshot.chunks]
    chunks = folder.snapshot.chunks_of(keys)
    a, b = folder.snapshot.sentences_in(chunks), store.snapshot.sentences_in(chunks)
    assert len(a) == len(b) == 5 and b.spans == a.spans
    np.testing.assert_allclose(b.vectors[:3], a.vectors[:3], atol=1e-3)  # stored in the row
    np.testing.assert_allclose(b.vectors[3:], np.repeat(store.snapshot.vectors.vectors(keys), 2, axis=0), atol=1e-6)
    store.close()


def test_an_article_longer_than_a_row_comes_back_whole(tmp_path):
    text = " ".join(f"Sentence number {i} of the long report says the harbour grew by {i} percent." for i in range(700))
    c = tmp_path / "corpus"
    write(c / "long.txt", "A long report\n\n" + text)
    store = Desk.build(c, config=config(tmp_path), embedder=FakeEmbedder(), store=str(tmp_path / "desk.db"))
    (a,) = store.snapshot.all_articles()
    assert len(a.text) > 3 * milvus_write.PIECE and store.article(a.id).text.endswith(text[-200:])
    assert "612 percent" in store.ask("By how much did the harbour grow according to sentence number 612?").text
    store.close()


def test_a_store_of_another_layout_is_refused_and_index_brings_it_up_to_date(tmp_path):
    c = news_corpus(tmp_path / "corpus")
    cfg = config(tmp_path, store=str(tmp_path / "desk.db"))
    desk = Desk.build(c, config=cfg, embedder=FakeEmbedder())
    live = desk.store.live()
    desk.store.set_live(live["gen"], {**live["manifest"], "format": 0})  # as an older askdesk wrote it
    with pytest.raises(IndexMismatchError, match="layout 0.*askdesk index --store"):
        Desk(config=cfg, embedder=FakeEmbedder()).ask("What did the council approve?")
    stats = Desk(config=cfg, embedder=FakeEmbedder()).sync(c)
    assert stats["reembedded"] and stats["n_articles"] == 5 and desk.store.live()["gen"] == "g2"
    desk.close()
