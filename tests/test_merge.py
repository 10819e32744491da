"""Merges off the writer lock: a merge builds and writes its segment from a snapshot while writers
go on (in this process and in others), and its commit keeps what they did: the segments they added,
the articles they removed or replaced (deleted from the merged segment). A merge that cannot be
reconciled is dropped; one killed midway leaves the last good generation and no litter."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import threading
from types import SimpleNamespace

import pytest
from conftest import ROOT, write

from askdesk import Desk
from askdesk.store import index as index_mod
from askdesk.store import merge as merge_mod

WAIT = 120  # seconds a step may take on a loaded machine before the test fails instead of hanging


def story(folder, i, topic="harbour"):
    return write(folder / f"{topic}-{i}.txt", f"{topic.title()} story {i}\n\nThe {topic} board approved plan {i} on "
                                              f"Monday after a debate about the {topic} budget of {i * 7} million.")


@pytest.fixture
def desk(tmp_path, fake, fake_config):
    for i in range(6):
        story(tmp_path / "corpus", i)
    return Desk.build(tmp_path / "corpus", fake_config.index, config=fake_config, embedder=fake)


@pytest.fixture
def gate(monkeypatch):
    """Holds every merge in this process after it has written its segment (the slow part, done off
    the lock), until the test sets ``gate.go``; ``gate.built`` is set when one is held there."""
    built, go = threading.Event(), threading.Event()
    real = merge_mod.write_segment

    def held(*args, **kw):
        out = real(*args, **kw)
        built.set()
        assert go.wait(WAIT), "the test never let the merge finish"
        return out

    monkeypatch.setattr(merge_mod, "write_segment", held)
    yield SimpleNamespace(built=built, go=go)
    go.set()  # a failed test must not leave a merge thread waiting


class Running:
    """``fn`` in a thread of its own; `result` waits for it and re-raises what it raised."""

    def __init__(self, fn):
        self.done, self.value, self.error = threading.Event(), None, None

        def run():
            try:
                self.value = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the test by result()
                self.error = e
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, what: str):
        assert self.done.wait(WAIT), f"{what} did not finish in {WAIT} s"
        if self.error is not None:
            raise self.error
        return self.value


def workspaces(index_dir):
    return sorted(p.name for p in index_dir.iterdir() if p.name.startswith(index_mod.MERGING))


def listed_segments(index_dir):
    names = set()
    for g in (index_mod.current_generation(index_dir), index_mod.previous_generation(index_dir)):
        if g is not None:
            names |= {e["name"] for e in index_mod.read_manifest(index_dir / g)["segments"]}
    return names


def test_writes_during_a_merge_do_not_wait_and_are_kept(desk, gate, tmp_path, fake, fake_config):
    for i in range(2):
        desk.add([story(tmp_path / "more", i, "ferry")])
    before = [s.name for s in desk.snapshot.segments]
    ids = {a.title: a.id for a in desk.snapshot.all_articles()}
    merging = Running(desk.optimize)
    assert gate.built.wait(WAIT)
    assert workspaces(desk.index_dir)  # the merged segment is written, beside the live ones, not yet listed
    other = Desk(fake_config.index, config=fake_config, embedder=fake)  # a second writer of the same folder
    updated = tmp_path / "corpus" / "harbour-3.txt"

    def writes():
        desk.add([story(tmp_path / "more", 5, "mill")])
        desk.remove([ids["Harbour story 2"]])  # an article of a segment being merged
        other.remove([ids["Ferry story 1"]])
        updated.write_text("Harbour story 3\n\nThe harbour board rejected plan 3 after a short debate.")
        return desk.update([updated])  # replaced: the old version is deleted, the new one is a new segment

    wrote = Running(writes)
    assert wrote.result("the writes during the merge")["updated"] == 1
    assert not merging.done.is_set()  # the merge still waits: the writes did not wait for it
    # the three being merged (less "Ferry story 1"'s, removed whole), the mill, the new harbour 3
    assert len(desk.snapshot.segments) == 4 and desk.snapshot.manifest["n_articles"] == 7
    gate.go.set()
    out = merging.result("the merge")

    assert (out["merges"], out["segments_before"]) == (1, 3)
    snap = desk.snapshot
    m = snap.manifest
    assert len(snap.segments) == 3 and snap.segments[0].name not in before  # merged, then the two written since
    assert [s.meta["n_articles"] for s in snap.segments] == [8, 1, 1]
    gone = {ids["Harbour story 2"], ids["Ferry story 1"], ids["Harbour story 3"]}
    assert set(m["segments"][0]["deleted"]) == gone and not any(e["deleted"] for e in m["segments"][1:])
    assert m["n_articles"] == 7 and m["n_chunks"] == len(snap.chunks) == 7
    assert sorted(a.title for a in snap.all_articles()) == [
        "Ferry story 0", "Harbour story 0", "Harbour story 1", "Harbour story 3", "Harbour story 4",
        "Harbour story 5", "Mill story 5"]
    assert not gone & set(snap.articles) and all(c.article_id not in gone for c in snap.chunks)
    assert "mill" in desk.ask("What did the mill board approve?").citations[0].sentence.lower()
    assert "rejected" in desk.ask("What did the harbour board do with plan 3?").citations[0].sentence
    fresh = Desk.open(fake_config.index, config=fake_config, embedder=fake)  # what is on disk, counts checked
    assert fresh.info()["n_articles"] == 7 and fresh.info()["segments"] == 3
    assert not workspaces(desk.index_dir)
    assert {p.name for p in desk.index_dir.iterdir() if p.name.startswith("s-")} == listed_segments(desk.index_dir)
    desk.rollback()  # the merge kept the generation before the last write as the one to roll back to
    assert desk.info()["n_articles"] == 7 and "Harbour story 3" in {a.title for a in desk.snapshot.all_articles()}


ADD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from conftest import FakeEmbedder
    from askdesk import Config, Desk

    cfg = Config.from_env(model="fake", refuse_below=0.0)  # ASKDESK_LOCK_WAIT=0: refused if the lock is held
    print(Desk(cfg.index, config=cfg, embedder=FakeEmbedder()).add(sys.argv[1:])["added"], flush=True)
""")


def test_another_process_writes_while_a_background_merge_runs(desk, gate, tmp_path, fake_config):
    desk.config = fake_config.replace(merge_segments=3)
    desk.merge_in_background = True  # as the page and `askdesk watch` merge
    desk.add([story(tmp_path / "more", 0, "ferry")])
    desk.add([story(tmp_path / "more", 1, "ferry")])  # the third segment of tier 0: a merge starts
    assert gate.built.wait(WAIT)
    script = tmp_path / "add.py"
    script.write_text(ADD.format(tests=str(ROOT / "tests")))
    p = subprocess.run([sys.executable, str(script), str(story(tmp_path / "more", 2, "mill"))], capture_output=True,
                       text=True, timeout=WAIT)
    assert (p.returncode, p.stdout.strip()) == (0, "1"), p.stderr[-2000:]
    assert desk.info()["n_articles"] == 9 and desk.info()["segments"] == 4
    gate.go.set()
    desk.wait_for_merges(WAIT)
    assert not desk._merging.is_alive()
    snap = desk.snapshot
    assert [s.meta["n_articles"] for s in snap.segments] == [8, 1]  # the three merged, the other process's kept
    assert snap.manifest["n_articles"] == 9 and not workspaces(desk.index_dir)
    assert "mill" in desk.ask("What did the mill board approve?").citations[0].sentence.lower()


def test_a_merge_that_cannot_be_reconciled_is_dropped_in_one_line(desk, gate, caplog):
    (seg,) = desk.snapshot.segments
    aid = next(a.id for a in seg.articles.values() if a.title == "Harbour story 2")
    desk.remove([aid])
    merging = Running(desk.optimize)
    assert gate.built.wait(WAIT)
    desk.rollback()  # the article the merge leaves out is live again
    live = index_mod.current_generation(desk.index_dir)
    gate.go.set()
    with caplog.at_level(logging.WARNING, logger="askdesk.store.merge"):
        out = merging.result("the merge")
    assert out["merges"] == 0
    dropped = [r.getMessage() for r in caplog.records if r.name == "askdesk.store.merge"]
    assert len(dropped) == 1 and "dropped" in dropped[0] and "live again" in dropped[0]
    assert index_mod.current_generation(desk.index_dir) == live and aid in desk.snapshot.articles
    assert not workspaces(desk.index_dir)
    assert {p.name for p in desk.index_dir.iterdir() if p.name.startswith("s-")} == listed_segments(desk.index_dir)


KILLED = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from conftest import FakeEmbedder
    from askdesk import Config, Desk
    from askdesk.store import merge

    real = merge.write_segment

    def held(*args, **kw):
        out = real(*args, **kw)
        print("written", flush=True)
        sys.stdin.read()  # until the test kills this process
        return out

    merge.write_segment = held
    cfg = Config.from_env(model="fake", refuse_below=0.0)
    Desk(cfg.index, config=cfg, embedder=FakeEmbedder()).optimize()
""")


def test_a_merge_killed_midway_leaves_the_last_generation_and_its_workspace_goes(desk, tmp_path, fake, fake_config):
    desk.add([story(tmp_path / "more", 0, "ferry")])
    live = index_mod.current_generation(desk.index_dir)
    script = tmp_path / "merge.py"
    script.write_text(KILLED.format(tests=str(ROOT / "tests")))
    p = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "written", p.stderr.read()[-2000:] if p.poll() is not None else ""
        (work,) = workspaces(desk.index_dir)
        assert any(q.name.startswith("s-") for q in (desk.index_dir / work).iterdir())
        desk.add([story(tmp_path / "more", 1, "ferry")])  # its garbage collection leaves a running merge's folder
        assert workspaces(desk.index_dir) == [work]
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    after_add = index_mod.current_generation(desk.index_dir)
    assert after_add != live
    again = Desk.open(fake_config.index, config=fake_config, embedder=fake)
    assert again.info()["n_articles"] == 8 and again.info()["segments"] == 3  # nothing of the merge is live
    desk.add([story(tmp_path / "more", 2, "ferry")])  # the next writer removes what the killed merge left
    assert not workspaces(desk.index_dir)
    assert desk.optimize()["segments"] == 1 and desk.info()["n_articles"] == 9
