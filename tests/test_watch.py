"""`askdesk watch`: a folder changing under a running watcher (in-process and as the real command).

No fixed sleeps: each test waits for the state it expects, with a deadline.
"""

from __future__ import annotations

import queue
import signal
import threading
import time

import pytest
from conftest import write
from test_keep_articles import fake_cli

from askdesk import Desk
from askdesk.articles.watch import Watcher, is_article

DEADLINE_S = 60


def wait_for(check, what: str, timeout: float = DEADLINE_S):
    """Poll ``check()`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def titles(desk) -> set[str]:
    return {a["title"] for a in desk.info()["articles"]}


@pytest.fixture
def watched(tmp_path, fake, fake_config):
    """A Watcher over tmp_path/corpus in a thread, with its log lines; stopped at the end."""
    corpus = tmp_path / "corpus"
    write(corpus / "seed.txt", "Seed story\n\nThe seed article says the harbour opened in May.")
    desk = Desk(fake_config.index, config=fake_config, embedder=fake)
    lines: list[str] = []
    w = Watcher(desk, corpus, quiet=0.3, log=lines.append)
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    wait_for(lambda: any(line.startswith("watching") for line in lines), "the watcher to start")
    yield desk, corpus, w, lines
    w.stop.set()
    t.join(timeout=30)
    assert not t.is_alive(), "the watcher did not stop when asked"


def test_new_changed_and_deleted_files_follow_the_folder(watched):
    desk, corpus, w, lines = watched
    assert titles(desk) == {"Seed story"}  # the catch-up sync at start
    f = write(corpus / "sub" / "ferry.md", "Ferry returns\n\nThe ferry to Brask runs again from 3 May.")
    wait_for(lambda: "Ferry returns" in titles(desk), "the new file to be indexed")
    # Its line is logged after the write is published: waited for, not read at once.
    wait_for(lambda: "added sub/ferry.md (Ferry returns)" in lines, "the new file's line")
    assert "3 May" in desk.ask("When does the ferry to Brask run again?").citations[0].sentence
    f.write_text("Ferry returns\n\nThe ferry to Brask runs again from 9 June, later than planned.")
    wait_for(lambda: "updated sub/ferry.md (Ferry returns)" in lines, "the change to be indexed")
    assert "9 June" in desk.ask("When does the ferry to Brask run again?").citations[0].sentence
    assert desk.info()["n_articles"] == 2
    f.unlink()
    wait_for(lambda: "removed sub/ferry.md (Ferry returns)" in lines, "the deletion to be followed")
    assert titles(desk) == {"Seed story"}
    write(corpus / ".hidden.txt", "Hidden\n\nNot an article of the corpus.")  # ignored, as a sync ignores it
    write(corpus / "notes.json", "{}")
    write(corpus / "after.txt", "After\n\nA later story about the mill.")
    wait_for(lambda: "After" in titles(desk), "the next file")
    assert "Hidden" not in titles(desk) and not any("notes.json" in line for line in lines)


def test_an_unreadable_file_is_skipped_with_its_reason_and_read_again_when_it_changes(watched):
    desk, corpus, w, lines = watched
    bad = corpus / "broken.txt"
    bad.write_bytes(b"\x89PNG\x00\x00\x01binary")
    wait_for(lambda: any(line.startswith(f"skipped {bad}: 'broken.txt' looks binary") for line in lines),
             "the skip line")
    assert "(read again when it changes)" in next(line for line in lines if line.startswith("skipped"))
    bad.write_text("Broken no more\n\nThe file was fixed and now tells of the new bridge.")
    wait_for(lambda: "Broken no more" in titles(desk), "the fixed file to be indexed")


def test_a_copy_of_many_files_is_one_write(tmp_path, fake, fake_config):
    corpus = tmp_path / "corpus"
    write(corpus / "seed.txt", "Seed story\n\nThe seed article.")
    desk = Desk(fake_config.index, config=fake_config.replace(merge_segments=0), embedder=fake)
    lines: list[str] = []
    w = Watcher(desk, corpus, quiet=5.0, log=lines.append)  # a quiet period far longer than any gap in the copy
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: any(line.startswith("watching") for line in lines), "the watcher to start")
        before = len(desk.snapshot.segments)
        for i in range(120):
            write(corpus / "batch" / f"{i:03}.txt", f"Batch story {i}\n\nThe council approved plan {i} on Monday.")
        # the batch's last line comes after its write (and its count): waited on, not the index itself
        wait_for(lambda: any(line.startswith("index holds 121 articles") for line in lines), "all 120 files indexed")
        assert desk.info()["n_articles"] == 121 and w.batches == 1 and len(desk.snapshot.segments) == before + 1
        assert sum(line.startswith("added batch/") for line in lines) == 120
    finally:
        w.stop.set()
        t.join(timeout=30)


def test_a_file_that_lands_the_moment_watching_is_said_is_indexed(tmp_path, fake, fake_config):
    """The watches are in place before the "watching" line: a file written from inside that log call,
    before the watcher waits for its first event, is not missed (no sleep can hide a late watch here)."""
    corpus = tmp_path / "corpus"
    write(corpus / "seed.txt", "Seed story\n\nThe seed article.")
    desk = Desk(fake_config.index, config=fake_config, embedder=fake)
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if line.startswith("watching"):  # the watcher's own thread, between the sync and its first wait
            write(corpus / "early" / "dawn.txt", "Dawn story\n\nThe dawn story says the ferry left at five.")

    w = Watcher(desk, corpus, quiet=0.2, log=log)
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: any(line.startswith("watching") for line in lines), "the watcher to start")
        wait_for(lambda: "Dawn story" in titles(desk), "the file written as the watcher started")
        assert titles(desk) == {"Seed story", "Dawn story"}
    finally:
        w.stop.set()
        t.join(timeout=30)
    assert not t.is_alive(), "the watcher did not stop when asked"


def test_is_article_follows_the_indexers_rules(tmp_path):
    assert is_article(tmp_path / "a" / "b.md", tmp_path) and is_article(tmp_path / "x.HTML", tmp_path)
    assert not is_article(tmp_path / ".a.txt.123.part", tmp_path) and not is_article(tmp_path / ".git" / "x.txt", tmp_path)
    assert not is_article(tmp_path / "x.pdf", tmp_path) and not is_article("/elsewhere/x.txt", tmp_path)


def read_lines(proc) -> queue.Queue:
    """The process's output lines, read by a thread (a pipe read never blocks the test)."""
    out: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            out.put(line.rstrip("\n"))
        out.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return out


def expect(lines: queue.Queue, seen: list[str], pattern: str, timeout: float = DEADLINE_S) -> str:
    """The first output line (from now on) containing ``pattern``; fails after ``timeout`` s."""
    end = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.01, end - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"no line with {pattern!r} within {timeout} s; got:\n" + "\n".join(seen))
        if line is None:
            pytest.fail(f"the process ended before printing {pattern!r}:\n" + "\n".join(seen))
        seen.append(line)
        if pattern in line:
            return line


def test_the_watch_command_indexes_a_dropped_file_and_stops_cleanly_on_ctrl_c(tmp_path):
    corpus = tmp_path / "corpus"
    write(corpus / "seed.txt", "Seed story\n\nThe seed article says the harbour opened in May.")
    p = fake_cli(tmp_path, "watch", str(corpus), "--index", "ix", "--no-feeds", wait=False)
    seen: list[str] = []
    try:
        lines = read_lines(p)
        expect(lines, seen, "1 added, 0 updated, 0 removed")  # the catch-up sync
        expect(lines, seen, f"watching {corpus}")
        write(corpus / "mill.txt", "Mill reopens\n\nThe mill in Orm reopened on Tuesday with 40 workers.")
        expect(lines, seen, "added mill.txt (Mill reopens)")
        expect(lines, seen, "index holds 2 articles")
        code, out, err = fake_cli(tmp_path, "ask", "How many workers does the mill in Orm have?", "--index", "ix")
        assert code == 0 and "40 workers" in out, err
        p.send_signal(signal.SIGINT)
        expect(lines, seen, "stopped watching")
        assert p.wait(timeout=30) == 0
        assert not any("Traceback" in line for line in seen), "\n".join(seen)
    finally:
        p.kill()
        p.wait()


def test_a_batch_that_meets_another_writer_is_written_when_the_index_is_free(watched):
    from askdesk.store import index as index_mod

    desk, corpus, w, lines = watched
    with index_mod.lock(desk.index_dir):  # another writer holds the index (lock_wait is 0 in the tests)
        write(corpus / "late.txt", "Late story\n\nThe late story says the tunnel opened at dawn.")
        wait_for(lambda: any(line.startswith("could not index 1 changed file yet") for line in lines),
                 "the watcher to meet the lock")
        assert "Late story" not in titles(desk)
    wait_for(lambda: "Late story" in titles(desk), "the batch to be written once the lock is free")
    # Its line is logged after the write is published: waited for, not read at once.
    wait_for(lambda: "added late.txt (Late story)" in lines, "the batch's line")
