"""`askdesk rollback` on a Milvus store (a real Milvus Lite file), as on the folder: the state before
the last write comes back, row for row, and answers as it did; a second rollback undoes the first;
with nothing earlier kept, one line and nothing changed; a write or a rollback killed midway loses
nothing. The folder index, put through the same steps, is the oracle for the answers."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from conftest import FakeEmbedder, write
from test_keep_articles import fake_cli
from test_milvus import config, news_corpus

from askdesk import Desk
from askdesk.errors import BadInputError, IndexMissingError

if os.environ.get("ASKDESK_REQUIRE_ENGINES") != "1":
    pytest.importorskip("pymilvus", reason="pip install 'askdesk[milvus]' to test the Milvus store")

from askdesk.store import milvus, milvus_collections, milvus_rollback, upsert  # noqa: E402

QUESTIONS = ["How much cargo did the port of Varsk handle?", "What did the council approve?",
             "What output did the mill report?", "How big was Nippon Steel's bid for US Steel?",
             "When did the Varsk lighthouse reopen?"]
LIGHTHOUSE = "Lighthouse reopens\n\nThe Varsk lighthouse reopened on Sunday after a storm broke its lamp in March."


def answers(desk: Desk) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(a.text, [(c.article_id, c.sentence) for c in a.citations]) for a in map(desk.ask, QUESTIONS)]


def rows(desk: Desk) -> dict[str, list]:
    """Every row of the live generation, every field written (vectors as their float32 bytes)."""
    names = desk.store.names(desk.store.live()["gen"])
    out = {}
    for kind, fields in milvus_rollback.FIELDS.items():
        got = milvus_collections.query_all(desk.store.client, names[kind], "part >= 0" if kind == "articles"
                                           else "key >= 0", fields)
        out[kind] = sorted(tuple((k, np.asarray(v, np.float32).tobytes() if k in ("vector", "_v") else v)
                                 for k, v in sorted(r.items())) for r in got)
    return out


def changed_copy(c, to):
    """The corpus with one article removed, one updated and one added."""
    shutil.copytree(c, to)
    (to / "ferry.md").unlink()
    write(to / "mill.txt", "Mill output\n\nThe steel mill reported output of 4 million tonnes in the third quarter.")
    write(to / "lighthouse.txt", LIGHTHOUSE)
    return to


def test_rollback_brings_back_the_answers_before_the_last_write_as_the_folder_does(tmp_path):
    c = news_corpus(tmp_path / "corpus")
    cfg = config(tmp_path)
    folder = Desk.build(c, cfg.index, config=cfg, embedder=FakeEmbedder())
    store = Desk.build(c, config=cfg, embedder=FakeEmbedder(), store=str(tmp_path / "desk.db"))
    built, built_rows = answers(store), rows(store)
    assert built == answers(folder)
    extra = write(tmp_path / "outside" / "lighthouse.txt", LIGHTHOUSE)
    for desk in (folder, store):
        assert desk.add([extra])["added"] == 1
    added = answers(store)
    assert added == answers(folder) and "lighthouse" in added[-1][1][0][1]  # the add changed an answer

    for expect, n in ((built, 5), (added, 6), (built, 5)):  # back, forward again (undoing it), back
        back, r = folder.rollback(), store.rollback()
        assert (r["n_articles"], r["n_chunks"]) == (back["n_articles"], back["n_chunks"]) and r["n_articles"] == n
        assert answers(store) == answers(folder) == expect
    assert rows(store) == built_rows  # row for row, as built
    assert r["created"] == store.info()["created"] and r["generation"] == r["replaced"] == "g1"
    with pytest.raises(BadInputError):  # the added article is gone from the store, not just unanswered
        store.article(added[-1][1][0][0])
    assert len(store.store.generations("u")) == 1  # the last write's undo only
    store.close()


@pytest.mark.parametrize("in_row", [milvus_rollback.ADDED_IN_ROW, 0])  # added ids in the live row, or in the undo set
def test_a_sync_that_removes_updates_and_adds_is_undone_row_for_row(tmp_path, monkeypatch, in_row):
    monkeypatch.setattr(milvus_rollback, "ADDED_IN_ROW", in_row)
    c = news_corpus(tmp_path / "corpus")
    cfg = config(tmp_path, store=str(tmp_path / "desk.db"))
    desk = Desk.build(c, config=cfg, embedder=FakeEmbedder())
    before, before_live = rows(desk), desk.store.live()
    stats = desk.sync(changed_copy(c, tmp_path / "changed"), prune=True)
    assert (stats["added"], stats["updated"], stats["removed"]) == (1, 1, 1)
    after, after_answers = rows(desk), answers(desk)
    assert after != before
    desk.rollback()
    assert rows(desk) == before and desk.store.live()["manifest"] == before_live["manifest"]
    assert "ferry terminal" in desk.ask("What did the council approve?").citations[0].sentence  # removed, back whole
    desk.rollback()
    assert rows(desk) == after and answers(desk) == after_answers
    assert len(desk.store.generations("u")) == 1 and desk.store.generations() == ["g1"]
    desk.close()


def test_a_rebuild_is_rolled_back_to_the_generation_it_replaced(tmp_path):
    c = news_corpus(tmp_path / "corpus")
    cfg = config(tmp_path, store=str(tmp_path / "desk.db"))
    first = Desk.build(c, config=cfg, embedder=FakeEmbedder())
    built = answers(first)
    first.close()
    small = cfg.replace(chunk_tokens=32, chunk_overlap=8)
    rebuilt = Desk.build(c, config=small, embedder=FakeEmbedder())  # other chunking: every article embedded again
    assert rebuilt.store.live()["gen"] == "g2" and rebuilt.store.generations() == ["g1", "g2"]
    r = rebuilt.rollback()
    assert (r["generation"], r["replaced"]) == ("g1", "g2")
    assert rebuilt.info()["chunk_tokens"] == 200 and answers(rebuilt) == built  # the old chunking's generation
    assert rebuilt.rollback()["generation"] == "g2" and rebuilt.info()["chunk_tokens"] == 32
    rebuilt.close()


def test_nothing_to_roll_back_to_is_one_line_and_changes_nothing(tmp_path):
    c = news_corpus(tmp_path / "corpus")
    store = str(tmp_path / "desk.db")
    code, out, err = fake_cli(tmp_path, "index", str(c), "--store", store)
    assert code == 0, err
    desk = Desk(config=config(tmp_path, store=store), embedder=FakeEmbedder())
    before, live = rows(desk), desk.store.live()
    with pytest.raises(IndexMissingError, match="keeps no earlier state to roll back to"):
        desk.rollback()
    desk.close()
    code, out, err = fake_cli(tmp_path, "rollback", "--store", store)
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 1 and len(lines) == 1 and "keeps no earlier state to roll back to" in lines[0], err
    desk = Desk(config=config(tmp_path, store=store), embedder=FakeEmbedder())
    assert rows(desk) == before and desk.store.live() == live  # not even a new "live" row
    desk.close()

    assert fake_cli(tmp_path, "add", str(write(tmp_path / "outside" / "lighthouse.txt", LIGHTHOUSE)),
                    "--store", store)[0] == 0
    code, out, err = fake_cli(tmp_path, "rollback", "--store", store)
    assert code == 0 and out.count("\n") == 1, err
    assert out.startswith(f"{store} is back to the generation written {live['manifest']['created']} (5 articles")
    code, out, err = fake_cli(tmp_path, "ask", QUESTIONS[-1], "--store", store)
    assert code == 0 and "lighthouse" not in out.lower(), out


def test_a_killed_write_and_a_killed_rollback_lose_nothing(tmp_path, monkeypatch):
    c = news_corpus(tmp_path / "corpus")
    cfg = config(tmp_path, store=str(tmp_path / "desk.db"))
    desk = Desk.build(c, config=cfg, embedder=FakeEmbedder())
    before, built = rows(desk), answers(desk)
    changed = changed_copy(c, tmp_path / "changed")
    for i in range(4):
        write(changed / f"item{i}.txt", f"Council item {i}\n\nThe council voted on item {i} of the plan on Tuesday.")
    monkeypatch.setattr(upsert, "ARTICLES_PER_BATCH", 2)
    real = milvus.MilvusStore.write_articles

    def killed_write():
        calls = []

        def dies_in_the_second_batch(self, gen, items, analyzer):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return real(self, gen, items, analyzer)

        monkeypatch.setattr(milvus.MilvusStore, "write_articles", dies_in_the_second_batch)
        with pytest.raises(KeyboardInterrupt):
            desk.sync(changed, prune=True)
        monkeypatch.setattr(milvus.MilvusStore, "write_articles", real)
        assert rows(desk) != before  # its first batch is in

    killed_write()
    desk.rollback()  # the killed write, undone: the store as it was before it
    assert rows(desk) == before and answers(desk) == built
    killed_write()
    desk.sync(changed, prune=True)  # finished by the next write ...
    after = rows(desk)
    desk.rollback()  # ... whose rollback goes back to before the killed one
    assert rows(desk) == before and answers(desk) == built

    desk.sync(changed, prune=True)
    assert rows(desk) == after
    real_delete = milvus.MilvusStore.delete_articles

    def dies_deleting(self, gen, ids):
        raise KeyboardInterrupt  # a rollback killed after writing the rows back, before deleting the added ones

    monkeypatch.setattr(milvus.MilvusStore, "delete_articles", dies_deleting)
    with pytest.raises(KeyboardInterrupt):
        desk.rollback()
    monkeypatch.setattr(milvus.MilvusStore, "delete_articles", real_delete)
    assert [j for _, j in desk.store.journal() if "restore" in j]
    desk.sync(c)  # the next write finishes the rollback (then finds the original folder's articles all there)
    assert desk.store.journal() == [] and rows(desk) == before and answers(desk) == built
    desk.rollback()  # and a second rollback still undoes it
    assert rows(desk) == after
    desk.close()
