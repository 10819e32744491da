"""The Milvus store under crashes and a second writer, in real processes: writers killed with
SIGKILL (with their Milvus Lite engine) at random points, the engine a killed writer leaves behind,
a second writer on a Milvus Lite file, and two writers on a Milvus server (Milvus Lite's engine
serving TCP)."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, FakeEmbedder, write

from askdesk import Config, Desk
from askdesk.errors import IndexLockedError
from askdesk.store import build
from askdesk.store.vectors import chunk_key

if os.environ.get("ASKDESK_REQUIRE_ENGINES") != "1":
    pytest.importorskip("pymilvus", reason="pip install 'askdesk[milvus]' to test the Milvus store")

from askdesk.store import milvus_lock  # noqa: E402
from askdesk.store.milvus_collections import query_all  # noqa: E402

WRITER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from conftest import FakeEmbedder
    from askdesk import Config, Desk
    from askdesk.store import upsert

    upsert.ARTICLES_PER_BATCH = 2  # several batches a write: kills land between and inside them

    class Gated(FakeEmbedder):
        def embed_documents(self, texts, *, progress=None):
            print("embedding", flush=True)  # inside the write: the store is held from here on
            while {gate!r} and not os.path.exists({gate!r}):  # held until the test opens the gate
                time.sleep(0.02)
            return super().embed_documents(texts, progress=progress)

    cfg = Config.from_env(model="fake", refuse_below=0.0)
    desk = Desk(config=cfg, embedder=Gated())
    desk.store.live()  # connected: the engine is up
    print("started", flush=True)
    for i in range({rounds}):
        desk.sync(sys.argv[1 + i % 2], prune=True)  # each round replaces what the store holds
        print("published", i, flush=True)
""")


def corpora(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(8):
        write(a / f"{i}.txt", f"Story {i}\n\nThe council approved plan number {i} for the harbor district on Monday.")
    for i in range(3):
        write(b / f"{i}.txt", f"Report {i}\n\nThe mill reported output of {i} million tonnes in the third quarter.")
    return a, b


def start_writer(tmp_path, store, a, b, *, gate="", rounds=1000):
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(tests=str(ROOT / "tests"), gate=str(gate), rounds=rounds))
    env = {**os.environ, "ASKDESK_STORE": store, "ASKDESK_INDEX": str(tmp_path / "index")}
    # Its own process group: the kill takes the Milvus Lite engine (a child process) down with it.
    return subprocess.Popen([sys.executable, str(script), str(a), str(b)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def expected_chunks(folders, cfg):
    """Chunks per article id, as the writer plans them (the fake embedder's word count decides fits)."""
    from askdesk.articles.ingest import read_articles

    arts = [x for f in folders for x in read_articles([f], root=f)[0]]
    p = build.plan(arts, None, cfg, FakeEmbedder().fits)
    return {x.id: len(p.chunks[x.id]) for x in arts}, {x.id: len(p.sentences[x.id]) for x in arts}


def test_sigkill_at_any_point_leaves_a_store_that_answers_and_the_next_write_repairs(tmp_path):
    a, b = corpora(tmp_path)
    store = str(tmp_path / "desk.db")
    cfg = Config.from_env({}, model="fake", reader=False, refuse_below=0.0, index=tmp_path / "index", store=store)
    want_chunks, want_sentences = expected_chunks([a, b], cfg)
    Desk.build(a, config=cfg, embedder=FakeEmbedder()).close()
    rng = random.Random(17)
    journals = 0
    for _ in range(10):
        p = start_writer(tmp_path, store, a, b)
        assert p.stdout.readline().strip() == "started", p.stderr.read()
        time.sleep(rng.uniform(0.0, 1.2))  # a random point: before, inside or between writes
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()  # the writer is gone; its engine, killed too, may still be exiting with the file's lock held
        desk = Desk(config=cfg, embedder=FakeEmbedder())  # opened at once, as a restart would: it waits for that engine
        snap = desk.snapshot
        names = desk.store.names(snap.gen)
        batches = desk.store.journal()
        journals += bool(batches)
        pending = {i for _, b in batches for i in b["ids"]}
        arts = {x.id: x for x in snap.all_articles()}
        chunks, sentences = {}, {}
        for r in query_all(desk.store.client, names["chunks"], "key >= 0", ["article_id"]):
            chunks[r["article_id"]] = chunks.get(r["article_id"], 0) + 1
        for r in query_all(desk.store.client, names["sentences"], "key >= 0", ["article_id"]):
            sentences[r["article_id"]] = sentences.get(r["article_id"], 0) + 1
        assert set(chunks) <= set(arts)  # no chunk a search can find lacks its article
        for aid in set(arts) - pending:  # outside the interrupted batch every article is whole
            assert (chunks.get(aid, 0), sentences.get(aid, 0)) == (want_chunks[aid], want_sentences[aid])
        for aid in set(chunks) - pending:  # and answers cite it
            c = desk.ask(f"What happened in {arts[aid].title}?").citations[0]
            assert desk.article(c.article_id).text[c.start:c.end] == c.sentence
        desk.close()
    # The next write finishes what the last kill left and gives exactly the folder's articles.
    desk = Desk(config=cfg, embedder=FakeEmbedder())
    desk.sync(a, prune=True)
    assert desk.store.journal() == []
    reference = Desk.build(a, tmp_path / "reference", config=cfg.replace(store=str(tmp_path / "reference")),
                           embedder=FakeEmbedder())
    keys = [chunk_key(ch.id) for ch in reference.snapshot.chunks]
    assert desk.snapshot.chunks_of(keys) == reference.snapshot.chunks_of(keys) and len(desk.snapshot.vectors) == 8
    assert desk.info()["n_articles"] == 8
    desk.close()


def test_a_second_process_is_refused_a_milvus_lite_file_with_the_reason(tmp_path):
    a, b = corpora(tmp_path)
    store = str(tmp_path / "desk.db")
    cfg = Config.from_env({}, model="fake", reader=False, refuse_below=0.0, index=tmp_path / "index", store=store)
    Desk.build(b, config=cfg, embedder=FakeEmbedder()).close()
    gate = tmp_path / "gate"
    p = start_writer(tmp_path, store, a, b, gate=gate, rounds=1)
    try:
        assert p.stdout.readline().strip() == "started"
        assert p.stdout.readline().strip() == "embedding"  # the writer holds the file
        other = subprocess.run([sys.executable, "-m", "askdesk", "--model", "fake", "index", str(b),
                                "--store", store], capture_output=True, text=True, env={**os.environ})
        lines = [x for x in other.stderr.splitlines() if x.strip()]
        assert other.returncode == 1 and len(lines) == 1 and "Traceback" not in other.stderr, other.stderr
        assert f"is open in another process (pid {p.pid};" in lines[0] and "http://" in lines[0]
        gate.touch()
        assert p.wait(timeout=120) == 0
    finally:
        os.killpg(p.pid, signal.SIGKILL) if p.poll() is None else None
    desk = Desk(config=cfg, embedder=FakeEmbedder())  # the writer is gone: the file opens, its write complete
    assert desk.info()["n_articles"] == 8
    desk.close()


def engine_of(pid: int) -> int:
    """The Milvus Lite engine a process started (its child named milvus)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            name, rest = stat.read_text().rsplit(")", 1)
            if rest.split()[1] == str(pid) and name.endswith("(milvus"):
                return int(stat.parent.name)
    raise AssertionError(f"no Milvus Lite engine under pid {pid}")


def stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` has stopped (SIGSTOP reaches them one by one)."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError):
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(s in "tT" for s in states)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds and stops the engine through /proc")
@pytest.mark.parametrize("holding", [True, False], ids=["holding-the-lock", "between-locks"])
def test_the_engine_a_killed_writer_left_is_waited_for_then_named(tmp_path, monkeypatch, holding):
    """`kill -9` of a writer leaves its engine finishing a write, SQLite's lock on the file held (a
    killed process group's engine holds it as long as it takes to exit). A new engine started then
    fails ("database is locked"): this was the durability test's rare 'is open in another process'.
    Started while the old one holds no lock, it would run beside it. Here that engine is stopped in
    either state, so the moment lasts as long as the test needs."""
    a, b = corpora(tmp_path)
    store = tmp_path / "desk.db"
    cfg = Config.from_env({}, model="fake", reader=False, refuse_below=0.0, index=tmp_path / "index",
                          store=str(store))
    Desk.build(a, config=cfg, embedder=FakeEmbedder()).close()
    p = start_writer(tmp_path, str(store), a, b)
    engine = None
    try:
        assert p.stdout.readline().strip() == "started", p.stderr.read()
        engine = engine_of(p.pid)
        deadline = time.monotonic() + 60
        while True:  # the writer writes without pause: its engine holds SQLite's lock most of the time
            os.kill(engine, signal.SIGSTOP)
            while not stopped(engine):
                assert time.monotonic() < deadline, "the engine did not stop"
                time.sleep(0.005)
            if (milvus_lock.holder(store) == engine) == holding:
                break
            os.kill(engine, signal.SIGCONT)
            assert time.monotonic() < deadline, f"the engine was never stopped {'with' if holding else 'without'} the lock"
        os.kill(p.pid, signal.SIGKILL)  # the writer alone, as `kill -9 PID` does: its engine stays, holding the file
        p.wait()

        # An engine that does not stop: after the wait, one line naming it and what ends it.
        monkeypatch.setattr(milvus_lock, "ORPHAN_WAIT_S", 0.2)
        with pytest.raises(IndexLockedError) as refused:
            Desk(config=cfg, embedder=FakeEmbedder()).info()
        assert f"engine (pid {engine})" in str(refused.value) and f"`kill {engine}`" in str(refused.value)
        assert "\n" not in str(refused.value)
        assert milvus_lock.engines(store) == [engine]  # nothing was started beside it

        # An engine that stops (the usual case): the open waits for it, then the store answers.
        monkeypatch.setattr(milvus_lock, "ORPHAN_WAIT_S", 120.0)
        waiting, opened = threading.Event(), {}
        handler = logging.Handler()
        handler.emit = lambda record: waiting.set() if "waiting for the Milvus Lite engine" in record.getMessage() \
            else None
        log = logging.getLogger(milvus_lock.__name__)
        log.addHandler(handler)
        monkeypatch.setattr(log, "level", logging.INFO)
        desk = Desk(config=cfg, embedder=FakeEmbedder())

        def open_it():
            try:
                opened["n"] = desk.info()["n_articles"]
            except Exception as e:  # noqa: BLE001 - reported by the assertion below
                opened["error"] = e

        t = threading.Thread(target=open_it)
        t.start()
        try:
            assert waiting.wait(60), "the open did not wait for the engine"
            assert t.is_alive()  # it is waiting, not refused
            os.kill(engine, signal.SIGCONT)  # it finishes its request, finds its writer gone and stops
            t.join(120)
        finally:
            log.removeHandler(handler)
        assert not t.is_alive() and "error" not in opened, opened
        assert opened["n"] > 0
        desk.sync(a, prune=True)  # the next write finishes what the killed one left
        assert desk.info()["n_articles"] == 8 and desk.store.journal() == []
        desk.close()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        if engine is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(engine, signal.SIGKILL)
                os.kill(engine, signal.SIGCONT)


@pytest.fixture
def milvus_server(tmp_path):
    """Milvus Lite's engine serving a file over TCP on 127.0.0.1: a Milvus server for several processes."""
    from milvus_lite.server import Server
    from pymilvus import MilvusClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Server(str(tmp_path / "server.db"), address=f"127.0.0.1:{port}")
    assert server.init() and server.start()
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:  # until it answers
        try:
            MilvusClient(uri=uri, timeout=2).list_collections()
            break
        except Exception:  # noqa: BLE001
            assert time.monotonic() < deadline, "the Milvus server did not start"
            time.sleep(0.2)
    yield uri
    server.stop()


def test_two_writers_on_a_server_one_is_refused_naming_the_other_and_readers_keep_answering(tmp_path, milvus_server):
    a, b = corpora(tmp_path)
    cfg = Config.from_env({}, model="fake", reader=False, refuse_below=0.0, index=tmp_path / "index", store=milvus_server)
    reader = Desk.build(b, config=cfg, embedder=FakeEmbedder())
    gate = tmp_path / "gate"
    p = start_writer(tmp_path, milvus_server, a, b, gate=gate, rounds=1)
    try:
        assert p.stdout.readline().strip() == "started"
        assert p.stdout.readline().strip() == "embedding"  # the writer holds the lease
        other = subprocess.run([sys.executable, "-m", "askdesk", "--model", "fake", "--store", milvus_server,
                                "index", str(b)], capture_output=True, text=True,
                               env={**os.environ, "ASKDESK_LOCK_WAIT": "0"})
        lines = [x for x in other.stderr.splitlines() if x.strip()]
        assert other.returncode == 1 and len(lines) == 1, other.stderr
        assert f"pid {p.pid} on {socket.gethostname()}" in lines[0] and "refused, never interleaved" in lines[0]
        with pytest.raises(Exception, match="pid"):  # in this process too, through the API
            Desk(config=cfg.replace(lock_wait=0.0), embedder=FakeEmbedder()).sync(b)
        # Readers are not writers: this process answers from the store while the write goes on.
        assert "mill" in reader.ask("What output did the mill report?").citations[0].sentence
        gate.touch()
        assert p.wait(timeout=120) == 0
    finally:
        os.killpg(p.pid, signal.SIGKILL) if p.poll() is None else None
    assert reader.info()["n_articles"] == 8  # the other process's write, seen without reopening
    assert "council" in reader.ask("What did the council approve?").citations[0].sentence
    assert reader.store.get_meta("writer") is None  # the lease went with the write
    reader.close()
