"""Memory of answers on many threads, as the page's worker pool gives them: one malloc heap per thread or two.

    python bench/thread_memory.py [--answers 1600] [--threads 40] [--at-once 2]

Gradio runs the page's answers on a pool of up to 40 worker threads, ``ASK_CONCURRENCY`` (2) at a
time, on whichever threads are free, and glibc gives each new thread a heap (arena) of its own, up
to 8 per core, each keeping the pages of its busiest moment. A desk over the soak's starting folder
(100 SQuAD dev paragraphs, ``../shared/data/squad-dev``, built once) answers ``--answers``
questions in 8 rounds, each run its own process, in this order:

- ``one thread``: all on one thread (the floor);
- ``threads, glibc's heaps``: on a pool of ``--threads`` threads, ``--at-once`` answers at a time,
  glibc's default heaps;
- ``threads, two heaps``: the same after `askdesk.desk.limit_malloc_arenas(2)`, as the page does.

Prints JSON: per run, anonymous memory (RssAnon) after the warm-up, after each round and after a
final `malloc_trim`, the seconds the rounds took, and the growth of each against glibc's heaps.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import soak  # noqa: E402  (its articles and questions)
from write_memory import rss_anon_mb  # noqa: E402

RUNS = {"one thread": (1, False), "threads, glibc's heaps": (None, False), "threads, two heaps": (None, True)}


def build(root: Path) -> list[str]:
    """The soak's starting folder (100 squad-dev articles) indexed in ``root``; their questions."""
    from askdesk import Config, Desk

    initial, questions, _, _ = soak.sources(soak.data_dir(), 100)
    corpus = root / "corpus"
    corpus.mkdir(parents=True)
    for story in initial:
        (corpus / f"{story.key}.md").write_text(soak.markdown(story), encoding="utf-8")
    Desk.build(corpus, root / "index", config=Config.from_env({}, corpus=corpus, index=root / "index"))
    return questions


def one(root: Path, threads: int, cap: bool, answers: int, at_once: int) -> dict:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import askdesk.desk as desk_mod
    from askdesk import Config, Desk

    capped = desk_mod.limit_malloc_arenas(2) if cap else False  # before any thread of ours starts
    questions = json.loads((root / "questions.json").read_text())
    desk = Desk.open(root / "index", config=Config.from_env({}, index=root / "index"))
    for q in questions[:20]:
        desk.ask(q)
    rng = random.Random(0)
    slots = threading.Semaphore(at_once)  # gradio's concurrency limit: the pool is bigger than the answers at once

    def answer(q: str):
        with slots:
            return desk.ask(q)

    out = {"threads": threads, "at_once": min(at_once, threads), "two_heaps": capped,
           "start_mb": round(rss_anon_mb()), "rounds_mb": []}
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(8):
            list(pool.map(answer, [rng.choice(questions) for _ in range(answers // 8)]))
            out["rounds_mb"].append(round(rss_anon_mb()))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    desk_mod.release_memory()
    out["trimmed_mb"] = round(rss_anon_mb())
    out["growth_mb"] = out["rounds_mb"][-1] - out["start_mb"]
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--answers", type=int, default=1600)
    ap.add_argument("--threads", type=int, default=40)
    ap.add_argument("--at-once", type=int, default=2, help="answers at a time (the page's ASK_CONCURRENCY)")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # a run's own process: ROOT MODE
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        threads, cap = RUNS[args.one[1]]
        print(json.dumps(one(Path(args.one[0]), threads or args.threads, cap, args.answers, args.at_once)))
        return
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}  # glibc's default where asked for
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "questions.json").write_text(json.dumps(build(root)))
        res = {}
        for mode in RUNS:
            got = subprocess.run([sys.executable, __file__, "--one", str(root), mode, "--answers", str(args.answers),
                                  "--threads", str(args.threads), "--at-once", str(args.at_once)],
                                 env=env, check=True, capture_output=True, text=True)
            res[mode] = json.loads(got.stdout.strip().splitlines()[-1])
            print(mode, res[mode], file=sys.stderr, flush=True)
    base = res["threads, glibc's heaps"]["growth_mb"]
    for r in res.values():
        r["growth_vs_glibc_heaps"] = round(r["growth_mb"] / base, 2) if base else None
    print(json.dumps({"answers": args.answers, "loadavg": [round(x, 2) for x in os.getloadavg()], **res}, indent=1))


if __name__ == "__main__":
    main()
