"""`askdesk ask` from the shell, process start to the printed answer: two askdesk sources on one index.

    python bench/cold_start.py --before /tmp/old-checkout/src --index bench/results/indexes/100k
    python bench/cold_start.py --before OLD/src --after NEW/src --index DIR --rounds 5 [--json]

Every CLI question pays the cold start (the interpreter, the imports, the index opened, the
question encoder and the reader loaded, one answer), so it is timed as a user meets it: a fresh
`python -m askdesk ask` process per round, ``PYTHONPATH`` set to the side's source folder. Both
sides read the same index folder (an older askdesk ignores files it does not know, such as a
segment's columns), the sides alternate, before first, so drift in the machine's load falls on
both; the ratio is of the medians. Each side's answer text is printed once, so a faster side
that answers differently shows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "When did the Normans conquer England?"


def ask(src: Path, index: Path, question: str) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(src), "ASKDESK_INDEX": str(index), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "askdesk", "ask", question], env=env, capture_output=True, text=True)
    took = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(f"askdesk ask failed with {src}: {p.stderr[-800:]}")
    return took, p.stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="askdesk ask cold start of two sources on one index, alternating.")
    ap.add_argument("--before", required=True, type=Path, help="the older source folder (its src/, holding askdesk/)")
    ap.add_argument("--after", type=Path, default=ROOT / "src", help="the newer source folder (default: this checkout)")
    ap.add_argument("--index", required=True, type=Path, help="an index folder both sides read")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--question", default=QUESTION)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    times: dict[str, list[float]] = {"before": [], "after": []}
    answers: dict[str, str] = {}
    ask(args.after, args.index, args.question)  # the files into the page cache, for both sides alike
    for _ in range(args.rounds):
        for side in ("before", "after"):
            took, out = ask(getattr(args, side), args.index, args.question)
            times[side].append(took)
            answers.setdefault(side, out)
    res = {side: {"median_s": round(statistics.median(t), 3), "min_s": round(min(t), 3), "max_s": round(max(t), 3)}
           for side, t in times.items()}
    res["ratio_after_before"] = round(res["after"]["median_s"] / res["before"]["median_s"], 3)
    res["same_answer"] = answers["before"] == answers["after"]
    res["loadavg_end"] = os.getloadavg()
    if args.json:
        print(json.dumps(res))
    else:
        for side in ("before", "after"):
            r = res[side]
            print(f"{side:>6}: median {r['median_s']:.2f} s (min {r['min_s']:.2f}, max {r['max_s']:.2f})")
        print(f"after / before: {res['ratio_after_before']:.2f}; same answer: {res['same_answer']}; "
              f"load average at the end {res['loadavg_end'][0]:.1f}")
        if not res["same_answer"]:
            print("--- before ---\n" + answers["before"] + "--- after ---\n" + answers["after"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
