"""Index format 3: immutable segments plus deletions. A write costs what it changes, scores stay
those of one index, merges change nothing a reader sees, rollback and garbage collection hold."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conftest import write

from askdesk import Desk
from askdesk.store import index as index_mod
from askdesk.store.lexical import BM25, SegmentedBM25
from askdesk.store.vectors import chunk_key
from askdesk.text import terms


def story(folder, i, topic="harbour"):
    return write(folder / f"{topic}-{i}.txt", f"{topic.title()} story {i}\n\nThe {topic} board approved plan {i} on "
                                              f"Monday after a debate about the {topic} budget of {i * 7} million.")


@pytest.fixture
def desk(tmp_path, fake, fake_config):
    for i in range(6):
        story(tmp_path / "corpus", i)
    return Desk.build(tmp_path / "corpus", fake_config.index, config=fake_config, embedder=fake)


def files_of(path):
    return {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in path.iterdir()}


def test_an_add_writes_one_small_segment_and_leaves_the_others_untouched(desk, tmp_path, fake):
    (seg,) = desk.snapshot.segments
    before = files_of(seg.path)
    fake.embedded = 0
    stats = desk.add([story(tmp_path / "more", 99, "ferry")])
    assert (stats["added"], stats["unchanged"], stats["n_articles"]) == (1, 6, 7)
    old, new = desk.snapshot.segments
    assert old is seg  # the reader kept the loaded segment: only the new one was read
    assert files_of(seg.path) == before  # not rewritten, not even touched
    assert new.meta["n_articles"] == 1 and 1 <= fake.embedded <= 3  # its chunk (and a lone sentence or two)
    assert [a.title for a in new.articles.values()] == ["Ferry story 99"]
    assert "ferry" in desk.ask("What did the ferry board approve?").citations[0].sentence.lower()


def test_a_removal_writes_only_a_manifest(desk):
    (seg,) = desk.snapshot.segments
    aid = next(a.id for a in seg.articles.values() if a.title == "Harbour story 2")
    stats = desk.remove([aid])
    assert stats["removed"] == 1 and stats["n_articles"] == 5
    snap = desk.snapshot
    assert [s.name for s in snap.segments] == [seg.name]
    assert snap.manifest["segments"][0]["deleted"] == [aid] and snap.manifest["n_articles"] == 5
    assert sorted(p.name for p in desk.index_dir.iterdir() if p.name.startswith("s-")) == [seg.name]
    assert aid not in snap.articles and all(c.article_id != aid for c in snap.chunks)
    for q in ("plan 2", "budget of 14 million"):  # neither search finds a deleted chunk
        assert all(desk.snapshot.chunks_of([k])[0].article_id != aid
                   for k, _ in snap.vectors.search(desk.embedder.embed_query(q), 10))
        assert all(snap.chunks_of([k])[0].article_id != aid for k, _ in snap.lexical.search(terms(q), 10))


def test_an_update_deletes_the_old_version_and_writes_the_new(desk, tmp_path):
    f = tmp_path / "corpus" / "harbour-3.txt"
    f.write_text("Harbour story 3\n\nThe harbour board rejected plan 3 after a short debate.")
    stats = desk.sync()
    assert (stats["added"], stats["updated"], stats["removed"], stats["unchanged"]) == (0, 1, 0, 5)
    snap = desk.snapshot
    assert len(snap.segments) == 2 and len(snap.manifest["segments"][0]["deleted"]) == 1
    assert "rejected" in desk.ask("What did the harbour board do with plan 3?").citations[0].sentence
    f.unlink()
    stats = desk.sync()
    assert stats["removed"] == 1 and stats["n_articles"] == 5
    assert len(desk.snapshot.segments) == 1  # the segment that held only that article is gone from the list


def test_bm25_over_segments_scores_as_one_index_of_the_live_chunks():
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(40)]
    texts = [" ".join(rng.choice(words, rng.integers(3, 12))) for _ in range(90)]
    keys = np.arange(90, dtype=np.int64) * 977 + 5
    cuts = [(0, 50), (50, 80), (80, 90)]
    parts = [BM25.fit(texts[a:b], keys[a:b]) for a, b in cuts]
    dead = {3, 17, 55, 81}
    live = [np.array([i not in dead for i in range(a, b)]) for a, b in cuts]
    seg = SegmentedBM25(parts, live)
    kept = [i for i in range(90) if i not in dead]
    one = BM25.fit([texts[i] for i in kept], keys[kept])
    for q in (["w1", "w7"], ["w3"], ["w0", "w11", "w39"], ["nothing"]):
        np.testing.assert_allclose(seg.scores_of(q, keys[kept]), one.scores_of(q, keys[kept]), rtol=1e-5)
        assert [k for k, _ in seg.search(q, 10)] == [k for k, _ in one.search(q, 10)]
        assert seg.idf_of(q[0]) == pytest.approx(one.idf_of(q[0]))
    assert len(seg) == len(one) and seg.avgdl == pytest.approx(float(np.mean(one.doc_len)), rel=1e-6)
    merged = BM25.merge(parts, live)  # a segment merge renumbers the postings: the same index as a fit
    for q in (["w1", "w7"], ["w3"]):
        np.testing.assert_allclose(merged.scores_of(q, keys[kept]), one.scores_of(q, keys[kept]), rtol=1e-6)
    with pytest.raises(KeyError):
        seg.scores_of(["w1"], [keys[3]])  # a deleted chunk is not in the index


def test_optimize_merges_everything_and_answers_the_same(desk, tmp_path):
    for i in range(3):
        desk.add([story(tmp_path / "more", i, f"topic{i}")])
    desk.remove([next(a.id for a in desk.snapshot.all_articles() if a.title == "Harbour story 1")])
    questions = ["What did the topic1 board approve?", "What is the harbour budget of 21 million?", "plan 4"]
    before = [desk.ask(q).to_dict() for q in questions]
    ranked = [[h.chunk.id for h in desk.retrieve(q, k=8)] for q in questions]
    assert len(desk.snapshot.segments) == 4
    out = desk.optimize()
    assert (out["segments_before"], out["segments"], out["merges"]) == (4, 1, 1) and out["expunged"] == 1
    snap = desk.snapshot
    assert len(snap.segments) == 1 and not any(snap.deleted) and snap.manifest["n_articles"] == 8
    for q, b, r in zip(questions, before, ranked):
        after = desk.ask(q).to_dict()
        assert [h.chunk.id for h in desk.retrieve(q, k=8)] == r
        assert (after["answer"], after["citations"]) == (b["answer"], b["citations"])
    assert desk.optimize()["merges"] == 0  # nothing left to do


def test_a_full_size_tier_is_merged_after_the_write_that_fills_it(desk, tmp_path, fake_config):
    desk.config = fake_config.replace(merge_segments=3)
    desk.add([story(tmp_path / "more", 0, "ferry")])
    assert len(desk.snapshot.segments) == 2  # tier 0 holds 2 < 3
    desk.add([story(tmp_path / "more", 1, "ferry")])
    assert len(desk.snapshot.segments) == 1 and desk.info()["n_articles"] == 8
    # the merge kept the generation before the write as the one to roll back to
    desk.rollback()
    assert desk.info()["n_articles"] == 7


def test_rollback_and_garbage_collection_keep_what_a_kept_generation_lists(desk, tmp_path):
    first = [s.name for s in desk.snapshot.segments]
    desk.add([story(tmp_path / "more", 1, "ferry")])
    second = [s.name for s in desk.snapshot.segments]
    desk.rollback()
    assert [s.name for s in desk.snapshot.segments] == first and desk.info()["n_articles"] == 6
    desk.rollback()  # undoes the rollback: the add's segment was kept for it
    assert [s.name for s in desk.snapshot.segments] == second
    desk.optimize()
    desk.add([story(tmp_path / "more", 2, "ferry")])
    live, prev = index_mod.current_generation(desk.index_dir), index_mod.previous_generation(desk.index_dir)
    listed = {e["name"] for g in (live, prev)
              for e in json.loads((desk.index_dir / g / "manifest.json").read_text())["segments"]}
    on_disk = {p.name for p in desk.index_dir.iterdir() if p.name.startswith("s-")}
    assert on_disk == listed and not set(second) & listed


def test_an_index_of_format_2_is_upgraded_keeping_every_article(desk, tmp_path, fake, fake_config):
    """A format-2 generation (one folder with articles.jsonl and the rest) whose vectors are gone:
    it cannot be converted (tests/test_upgrade.py converts a whole one), so `askdesk index` embeds
    its articles again and keeps them all, the one from outside the folder too."""
    outside = write(tmp_path / "elsewhere" / "mill.txt", "Mill news\n\nThe mill in Orm reopened in May.")
    desk.add([outside])
    arts = desk.snapshot.all_articles()
    old = desk.index_dir / "g-20250101T000000000000-00000000"
    old.mkdir()
    with open(old / "articles.jsonl", "w") as f:
        for a in arts:
            f.write(json.dumps({**a.__dict__, "sentences": [], "sentence_row": 0}) + "\n")
    (old / "manifest.json").write_text(json.dumps({"format_version": 2, "model": "fake", "n_articles": len(arts),
                                                   "corpus": desk.snapshot.manifest["corpus"]}))
    (desk.index_dir / "CURRENT").write_text(old.name + "\n")
    for s in desk.index_dir.glob("s-*"):
        shutil.rmtree(s)
    with pytest.raises(Exception, match=r"older than this askdesk's \(3\)"):
        Desk.open(fake_config.index, config=fake_config, embedder=fake)
    fresh = Desk(fake_config.index, config=fake_config, embedder=fake)
    stats = fresh.sync()
    assert stats["reembedded"] and stats["n_articles"] == 7 and stats["removed"] == 0
    assert fresh.snapshot.manifest["format_version"] == 3
    assert "mill" in fresh.ask("When did the mill in Orm reopen?").citations[0].sentence


def test_a_near_duplicate_of_an_indexed_article_is_skipped(desk, tmp_path):
    copy = write(tmp_path / "wire" / "copy.txt", "Harbour story 4, again\n\nThe harbour board approved plan 4 on "
                                                 "Monday after a debate about the harbour budget of 28 million.")
    stats = desk.add([copy])
    assert stats["added"] == 0 and stats["skipped"] == [(str(copy.resolve()), "near-duplicate of harbour-4.txt")]


def test_a_reader_sees_a_new_segment_on_its_next_question_and_keeps_its_segments(desk, tmp_path, fake, fake_config):
    reader = Desk.open(fake_config.index, config=fake_config, embedder=fake)
    (seg,) = reader.snapshot.segments
    desk.add([story(tmp_path / "more", 5, "ferry")])
    assert "ferry" in reader.ask("What did the ferry board approve?").citations[0].sentence.lower()
    assert reader.snapshot.segments[0] is seg


def test_chunks_and_sentences_are_found_by_key_across_segments(desk, tmp_path):
    desk.add([story(tmp_path / "more", 7, "ferry")])
    snap = desk.snapshot
    chunks = snap.chunks
    keys = [chunk_key(c.id) for c in chunks]
    assert snap.chunks_of(keys[::-1]) == chunks[::-1]
    block = snap.sentences_in(chunks[::-1])
    assert set(block.chunk.tolist()) == set(range(len(chunks)))
    assert all(block.text(i) in chunks[::-1][block.chunk[i]].text for i in range(len(block)))
    np.testing.assert_allclose(np.linalg.norm(block.vectors, axis=1), 1.0, atol=2e-3)
    # Rows of two segments in one request: each sentence keeps its own vector and span.
    for j, c in enumerate(chunks[::-1]):
        alone = snap.sentences_in([c])
        mine = np.flatnonzero(block.chunk == j)
        assert [block.spans[i] for i in mine] == list(alone.spans)
        np.testing.assert_array_equal(block.vectors[mine], alone.vectors)
    # The same request again is the block already read (the answerer and the news layer share it).
    assert snap.sentences_in(chunks[::-1]) is snap.sentences_in(chunks[::-1])
    assert not snap.sentences_in(chunks).vectors.flags.writeable
    assert os.path.isdir(snap.segments[1].path)
