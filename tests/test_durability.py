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
from askdesk import index as index_mod

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
    assert leftovers == sorted({index_mod.current_generation(cfg.index), index_mod.previous_generation(cfg.index)})


def test_second_writer_fails_with_a_clear_message_and_readers_keep_answering(tmp_path):
    a, b = corpora(tmp_path)
    cfg = Config.from_env(model="fake", refuse_below=0.0)
    reader = Desk.build(b, cfg.index, config=cfg, embedder=FakeEmbedder())
    gate = tmp_path / "gate"
    p = start_writer(tmp_path, a, b, gate=gate, rounds=1)
    try:
        assert p.stdout.readline().strip() == "started"
        assert p.stdout.readline().strip() == "embedding"  # the writer holds the lock until the gate opens
        code = subprocess.run([sys.executable, "-m", "askdesk.cli", "--model", "fake", "index", str(b)],
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
