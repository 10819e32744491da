"""`Desk.ask` latency of two askdesk sources on the same corpus, in alternating processes.

    python bench/ab_ask.py --before /tmp/old-checkout/src                # this checkout vs an older one
    python bench/ab_ask.py --before OLD/src --after NEW/src --rounds 4 --size 10k

An issue's "p50 stays within 1.2x of today's" needs today's code measured in the same run as the
new code: bench/run.py times one source only. Each side builds its own index of bench/run.py's
corpus at that size (cached vectors: only new chunk texts are embedded) under
bench/results/ab/, then, in a fresh process per round, asks the same questions (bench/run.py's
200) after a 10-question warm-up. The sides alternate, before first, so drift in the machine's
load falls on both; the ratio is of the medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Desk.ask p50/p95 of two askdesk sources, alternating processes.")
    ap.add_argument("--before", required=True, type=Path, help="the older source folder (its src/, holding askdesk/)")
    ap.add_argument("--after", type=Path, default=ROOT / "src", help="the newer source folder (default: this checkout)")
    ap.add_argument("--size", default="10k", help="index size in chunks (bench/run.py's corpus; default 10k)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--side", help=argparse.SUPPRESS)  # the child: measure one side
    ap.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.side:
        print(json.dumps(_measure(args.index, args.size, args.questions)))
        return 0
    for side in (args.before, args.after):
        if not (side / "askdesk" / "__init__.py").is_file():
            sys.exit(f"ab_ask: no askdesk package in {side}; give the folder that holds askdesk/ (a checkout's src)")
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for r in range(args.rounds):
        for name, src in (("before", args.before), ("after", args.after)):
            index = HERE / "results" / "ab" / f"{args.size}-{name}"
            env = {**os.environ, "PYTHONPATH": str(src.resolve())}
            out = subprocess.run([sys.executable, __file__, "--before", str(args.before), "--side", name,
                                  "--index", str(index), "--size", args.size, "--questions", str(args.questions)],
                                 env=env, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                sys.exit(f"ab_ask: the {name} side failed:\n{out.stderr[-2000:]}")
            got = json.loads(out.stdout.strip().splitlines()[-1])
            runs[name].append(got)
            print(f"round {r + 1} {name:6s} p50 {got['p50_ms']:.2f} ms  p95 {got['p95_ms']:.2f} ms  "
                  f"({got['chunks']} chunks, {got['askdesk']})", flush=True)
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("p50_ms", "p95_ms")} for k, v in runs.items()}
    print(json.dumps({"median": med, "p50_ratio": round(med["after"]["p50_ms"] / med["before"]["p50_ms"], 3),
                      "p95_ratio": round(med["after"]["p95_ms"] / med["before"]["p95_ms"], 3), "rounds": runs}))
    return 0


def _measure(index: Path, size: str, n_questions: int) -> dict:
    """One side, in this process: whichever askdesk PYTHONPATH gives."""
    import time

    import numpy as np

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(HERE))
    import askdesk
    import corpus
    from askdesk import Config, Desk
    from askdesk.models.embed import SentenceTransformerEmbedder
    from corpus import RESULTS, CachedEmbedder, parse_size, size_label

    cfg = Config.from_env({}).replace(index=index)
    emb = SentenceTransformerEmbedder()
    folder = RESULTS / "corpora" / size_label(parse_size(size))
    corpus.write_corpus(folder, parse_size(size), emb.fits)  # bench/run.py's corpus (kept when present)
    if not (index / "CURRENT").exists():
        cached = CachedEmbedder(emb)
        Desk.build(folder, index, config=cfg, embedder=cached)
        cached.save()
    questions = corpus.questions()[::11][:n_questions]  # as bench/run.py picks them
    desk = Desk.open(index, config=cfg, embedder=emb)
    for q in questions[:10]:  # first-use loads
        desk.ask(q)
    times = []
    for q in questions:
        t = time.perf_counter()
        desk.ask(q)
        times.append((time.perf_counter() - t) * 1e3)
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)),
            "chunks": desk.info()["n_chunks"], "askdesk": str(Path(askdesk.__file__).parents[1]),
            "loadavg": os.getloadavg()[0]}


if __name__ == "__main__":
    sys.exit(main())
