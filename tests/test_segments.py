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


def sentence_ranges(chunks, sentences, sentence_row):
    """The reference: per chunk, the rows (in the sentence vectors) of the sentences wholly inside it, as [lo, hi).

    An article's sentences are sorted and do not overlap, so they form a contiguous range.
    """
    from bisect import bisect_left, bisect_right

    lo = np.zeros(len(chunks), dtype=np.int64)
    hi = np.zeros(len(chunks), dtype=np.int64)
    bounds: dict[str, tuple[list[int], list[int]]] = {}
    for i, c in enumerate(chunks):
        if c.article_id not in bounds:
            spans = sentences[c.article_id]
            bounds[c.article_id] = ([s for s, _ in spans], [e for _, e in spans])
        starts, ends = bounds[c.article_id]
        base = sentence_row[c.article_id]
        first = bisect_left(starts, c.start)
        lo[i] = base + first
        hi[i] = base + max(bisect_right(ends, c.end), first)
    return lo, hi


def test_chunk_sentence_ranges_in_arrays_match_the_loop_on_random_articles():
    """`SentenceSpans.ranges` (what a loaded segment uses) against `sentence_ranges` (the reference
    loop), on articles with no sentences, gaps between sentences, and chunks that start or end
    inside a sentence or past the last one."""
    from askdesk.store.records import SentenceRows, SentenceSpans
    from askdesk.types import Chunk

    rng = np.random.default_rng(7)
    position, first, spans, chunks, art = {}, [0], [], [], []
    for p in range(300):
        aid = f"a{p}"
        position[aid] = p
        at, mine = 0, []
        for _ in range(int(rng.integers(0, 9))):
            s = at + int(rng.integers(0, 4))
            at = s + int(rng.integers(1, 30))
            mine.append((s, at))
        spans += mine
        first.append(first[-1] + len(mine))
        for _ in range(int(rng.integers(0, 5))):
            s = int(rng.integers(0, at + 5))
            e = s + int(rng.integers(0, 60))
            chunks.append(Chunk(f"c{len(chunks)}", aid, s, e, ""))
            art.append(p)
    starts = np.asarray(first, np.int64)
    arr = np.asarray(spans, np.int32).reshape(-1, 2)
    sents, rows = SentenceSpans(position, starts, arr), SentenceRows(position, starts, arr)
    want_lo, want_hi = sentence_ranges(chunks, sents, rows)
    lo, hi = sents.ranges(np.asarray(art), np.asarray([c.start for c in chunks]), np.asarray([c.end for c in chunks]))
    assert len(chunks) > 300 and (want_hi > want_lo).any() and (want_hi == want_lo).any()
    assert lo.tolist() == want_lo.tolist() and hi.tolist() == want_hi.tolist()


def loaded_both_ways(seg_path, monkeypatch):
    """The segment read line by line, and read from its columns (as a large one is)."""
    from askdesk.store import segment as segment_mod

    lines = segment_mod.load_segment(seg_path, "run X")
    monkeypatch.setattr(segment_mod, "ARTICLES_IN_MEMORY", 0)
    return lines, segment_mod.load_segment(seg_path, "run X")


def test_a_segment_opened_from_its_columns_reads_as_one_parsed_line_by_line(desk, tmp_path, monkeypatch):
    from askdesk.store.records import StoredArticles, StoredChunks

    desk.add([write(tmp_path / "more" / "port.txt", 'Port story\n\n"We are ready for bigger ships," said port '
                    'director Ana Costa. Container traffic grew fastest in March.')])
    desk.optimize()  # one segment of every article, written with its columns
    (seg,) = desk.snapshot.segments
    assert all((seg.path / n).is_file() for n in ("articles.npy", "chunks.npy", "spans.npy"))
    lines, cols = loaded_both_ways(seg.path, monkeypatch)
    assert isinstance(cols.articles, StoredArticles) and isinstance(cols.chunks, StoredChunks)
    assert not isinstance(lines.articles, StoredArticles)
    assert list(cols.articles) == list(lines.articles) and cols.position == lines.position
    assert [cols.articles[a] for a in cols.articles] == [lines.articles[a] for a in lines.articles]
    assert list(cols.chunks) == list(lines.chunks) and len(cols) == len(lines) == 7
    assert cols.chunks[1:3] == lines.chunks[1:3] and [c.text for c in cols.chunks] == [c.text for c in lines.chunks]
    assert all(cols.sentences[a] == lines.sentences[a] for a in lines.articles)
    for x, y in zip(cols.bounds, lines.bounds):
        assert x.tolist() == y.tolist()
    assert dict(cols.statements) == dict(lines.statements)
    port = next(a for a in cols.articles if cols.articles[a].title == "Port story")
    assert [s.speaker for s in cols.statements[port]] == ["Ana Costa"]
    np.testing.assert_array_equal(cols.vectors.dates, lines.vectors.dates)
    # And a desk over it answers as one over the lines.
    question = "What did the harbour board approve on Monday?"
    by_lines = desk.ask(question)
    monkeypatch.setattr("askdesk.store.segment.ARTICLES_IN_MEMORY", 0)
    again = Desk.open(desk.index_dir, config=desk.config, embedder=desk.embedder)
    assert isinstance(again.snapshot.segments[0].articles, StoredArticles)
    got = again.ask(question)
    assert (got.text, got.citations, got.refused) == (by_lines.text, by_lines.citations, by_lines.refused)
    assert got.citations and "harbour" in got.citations[0].sentence.lower()


def test_a_segment_without_columns_is_read_line_by_line(desk, monkeypatch):
    (seg,) = desk.snapshot.segments
    meta = json.loads((seg.path / "segment.json").read_text())
    for n in ("articles.npy", "chunks.npy", "spans.npy"):  # as a segment written before them
        del meta["files"][n]
        (seg.path / n).unlink()
    (seg.path / "segment.json").write_text(json.dumps(meta))
    lines, again = loaded_both_ways(seg.path, monkeypatch)
    assert type(again.articles) is dict and list(again.chunks) == list(lines.chunks)


def test_columns_that_disagree_with_the_lines_are_refused_with_what_to_run(desk, monkeypatch):
    from askdesk.errors import IndexCorruptError
    from askdesk.store import segment as segment_mod

    (seg,) = desk.snapshot.segments
    arts = np.load(seg.path / "articles.npy")
    arts["id"][-1] = "0" * len(arts["id"][-1])
    with open(seg.path / "articles.npy", "wb") as f:  # the same size: only the content disagrees
        np.save(f, arts, allow_pickle=False)
    monkeypatch.setattr(segment_mod, "ARTICLES_IN_MEMORY", 0)
    with pytest.raises(IndexCorruptError, match="does not match its columns.*run X"):
        segment_mod.load_segment(seg.path, "run X")
