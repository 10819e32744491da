"""Never lose data: real writer processes killed with SIGKILL mid-write, and two writers at once."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

from conftest import ROOT, FakeEmbedder, write

from askdesk import Config, Desk
from askdesk.store import index as index_mod

WRITER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from conftest import FakeEmbedder
    from askdesk import Config, Desk

    class Gated(FakeEmbedder):
        def embed_documents(self, texts, *, progress=None):
            print("embedding", flush=True)  # inside the write: the lock is held from here on
            while {gate!r} and not os.path.exists({gate!r}):  # held until the test opens the gate
                time.sleep(0.02)
            return super().embed_documents(texts, progress=progress)

    cfg = Config.from_env(model="fake", refuse_below=0.0)
    desk = Desk(cfg.index, config=cfg, embedder=Gated())
    print("started", flush=True)
    for i in range({rounds}):
        desk.sync(sys.argv[1 + i % 2], prune=True)  # each round replaces what the index holds
        print("published", i, flush=True)
""")


def corpora(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(8):
        write(a / f"{i}.txt", f"Story {i}\n\nThe council approved plan number {i} for the harbor district on Monday.")
    for i in range(3):
        write(b / f"{i}.txt", f"Report {i}\n\nThe mill reported output of {i} million tonnes in the third quarter.")
    return a, b


def start_writer(tmp_path, a, b, *, gate="", rounds=1000, env=None):
    """A writer process syncing a and b in turn; with ``gate`` (a path) each write waits inside
    its embedding step, holding the lock, until that file exists."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(tests=str(ROOT / "tests"), gate=str(gate), rounds=rounds))
    e = {**os.environ, "ASKDESK_INDEX": str(tmp_path / "index"), **(env or {})}
    return subprocess.Popen([sys.executable, str(script), str(a), str(b)], env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigkill_at_any_point_leaves_a_loadable_index(tmp_path):
    a, b = corpora(tmp_path)
    cfg = Config.from_env(model="fake", refuse_below=0.0)
    Desk.build(a, cfg.index, config=cfg, embedder=FakeEmbedder())
    rng = random.Random(7)
    seen = set()
    for _ in range(12):
        p = start_writer(tmp_path, a, b)
        assert p.stdout.readline().strip() == "started"
        time.sleep(rng.uniform(0.0, 0.6))
        p.send_signal(signal.SIGKILL)
        p.wait()
        desk = Desk.open(cfg.index, config=cfg, embedder=FakeEmbedder())
        n = desk.info()["n_articles"]
        assert n in (8, 3)
        seen.add(n)
        ans = desk.ask("What did the council approve?" if n == 8 else "What output did the mill report?")
        assert ans.citations and ("council" in ans.citations[0].sentence or "mill" in ans.citations[0].sentence)
    # the lock died with the process: a new writer gets it at once and finishes
    Desk(cfg.index, config=cfg, embedder=FakeEmbedder()).sync(a, prune=True)
    assert Desk.open(cfg.index, config=cfg, embedder=FakeEmbedder()).info()["n_articles"] == 8
    leftovers = sorted(p.name for p in cfg.index.iterdir() if p.name.startswith((".tmp-", "g-")))
    # what a killed writer left is gone; the live generation and the one before it (rollback) stay
    # (no previous one when every writer was killed before it published: the index was written once)
    assert leftovers == sorted({index_mod.current_generation(cfg.index), index_mod.previous_generation(cfg.index)} - {None})


def test_second_writer_fails_with_a_clear_message_and_readers_keep_answering(tmp_path):
    a, b = corpora(tmp_path)
    cfg = Config.from_env(model="fake", refuse_below=0.0)
    reader = Desk.build(b, cfg.index, config=cfg, embedder=FakeEmbedder())
    gate = tmp_path / "gate"
    p = start_writer(tmp_path, a, b, gate=gate, rounds=1)
    try:
        assert p.stdout.readline().strip() == "started"
        assert p.stdout.readline().strip() == "embedding"  # the writer holds the lock until the gate opens
        code = subprocess.run([sys.executable, "-m", "askdesk", "--model", "fake", "index", str(b)],
                              env={**os.environ, "ASKDESK_INDEX": str(cfg.index), "ASKDESK_LOCK_WAIT": "0"},
                              capture_output=True, text=True)
        assert code.returncode == 1 and "another askdesk process is writing" in code.stderr
        # the old index answers during the write
        assert "mill" in reader.ask("What output did the mill report?").citations[0].sentence
        gate.touch()
        assert p.wait(timeout=120) == 0
    finally:
        p.kill()
    assert reader.info()["n_articles"] == 8  # picked up the new generation without a restart
    assert index_mod.current_generation(cfg.index)


ADDER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    from conftest import FakeEmbedder
    from askdesk import Config, Desk

    cfg = Config.from_env(model="fake", refuse_below=0.0, merge_segments=3)  # merges happen too
    desk = Desk(cfg.index, config=cfg, embedder=FakeEmbedder())
    print("started", flush=True)
    for i in range(10_000):  # adds, updates, removals and merges, one segment or manifest at a time
        f = sys.argv[1] + f"/extra-{{i % 4}}.txt"
        if i % 5 == 4:
            gone = [a["id"] for a in desk.info()["articles"] if a["title"].startswith("Extra")]
            if gone:
                desk.remove(gone[:1])
            continue
        with open(f, "w") as fh:
            fh.write(f"Extra {{i % 4}}\\n\\nThe extra article number {{i}} says the ferry left at {{i}} o'clock.")
        desk.add([f])
""")


def test_sigkill_during_segment_writes_and_merges_leaves_a_loadable_index(tmp_path):
    a, _ = corpora(tmp_path)
    cfg = Config.from_env(model="fake", refuse_below=0.0)
    Desk.build(a, cfg.index, config=cfg, embedder=FakeEmbedder())
    script = tmp_path / "adder.py"
    script.write_text(ADDER.format(tests=str(ROOT / "tests")))
    rng = random.Random(11)
    for _ in range(12):
        p = subprocess.Popen([sys.executable, str(script), str(tmp_path / "extra")], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "ASKDESK_INDEX": str(cfg.index)})
        (tmp_path / "extra").mkdir(exist_ok=True)
        assert p.stdout.readline().strip() == "started"
        time.sleep(rng.uniform(0.0, 0.8))
        p.send_signal(signal.SIGKILL)
        p.wait()
        desk = Desk.open(cfg.index, config=cfg, embedder=FakeEmbedder())
        info = desk.info()
        titles = [x["title"] for x in info["articles"]]
        assert sum(t.startswith("Story") for t in titles) == 8  # the built articles are all there, every time
        assert len(titles) == len(set(a["id"] for a in info["articles"])) <= 12
        assert "council" in desk.ask("What did the council approve?").citations[0].sentence
        assert desk.snapshot.manifest["n_chunks"] == len(desk.snapshot.chunks)
    Desk(cfg.index, config=cfg, embedder=FakeEmbedder()).sync(a)  # a writer after the kills cleans up
    live, prev = index_mod.current_generation(cfg.index), index_mod.previous_generation(cfg.index)
    kept = {live, prev} - {None}
    assert sorted(p.name for p in cfg.index.iterdir() if p.name.startswith((".tmp-", "g-"))) == sorted(kept)
    listed = {e["name"] for g in kept for e in index_mod.read_manifest(cfg.index / g)["segments"]}
    assert {p.name for p in cfg.index.iterdir() if p.name.startswith("s-")} == listed


WATCHER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from conftest import FakeEmbedder
    import askdesk.desk

    class Gated(FakeEmbedder):
        def embed_documents(self, texts, *, progress=None):
            if any("gated" in t for t in texts):
                print("embedding", flush=True)  # inside the watched add: the lock is held from here on
                while not os.path.exists({gate!r}):
                    time.sleep(0.02)
            return super().embed_documents(texts, progress=progress)

    askdesk.desk.SentenceTransformerEmbedder = lambda *a, **k: Gated()
    from askdesk.surface.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigkill_during_a_watched_add_leaves_the_last_good_index_and_the_next_watch_catches_up(tmp_path):
    a, _ = corpora(tmp_path)
    cfg = Config.from_env(model="fake", refuse_below=0.0)
    Desk.build(a, cfg.index, config=cfg, embedder=FakeEmbedder())
    script = tmp_path / "watcher.py"
    script.write_text(WATCHER.format(tests=str(ROOT / "tests"), gate=str(tmp_path / "gate")))
    env = {**os.environ, "ASKDESK_INDEX": str(cfg.index), "ASKDESK_MODEL": "fake", "ASKDESK_REFUSE_BELOW": "0",
           "PYTHONUNBUFFERED": "1"}

    def watcher():
        p = subprocess.Popen([sys.executable, str(script), "watch", str(a), "--no-feeds"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env)
        for line in p.stdout:
            if " watching " in line:  # after its catch-up sync
                return p
        raise AssertionError(f"the watcher ended: {p.wait()}")

    p = watcher()
    write(a / "late.txt", "Late story\n\nThe gated article says the tunnel opened at dawn.")
    for line in p.stdout:  # wait until the watcher is inside its write (holding the lock)
        if line.strip() == "embedding":
            break
    p.send_signal(signal.SIGKILL)
    p.wait()
    desk = Desk.open(cfg.index, config=cfg, embedder=FakeEmbedder())
    assert desk.info()["n_articles"] == 8 and "Late story" not in {x["title"] for x in desk.info()["articles"]}
    (tmp_path / "gate").touch()
    p = watcher()  # its catch-up sync indexes the file the killed one did not
    try:
        assert desk.info()["n_articles"] == 9
        assert "tunnel" in desk.ask("When did the tunnel open?").citations[0].sentence
    finally:
        p.kill()
        p.wait()
