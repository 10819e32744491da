"""What the reader costs a question: `Desk.ask` with and without it on one index, interleaved.

    python bench/reader_speed.py INDEX_DIR QUESTIONS.json [--n 200] [--candidates 1 2 4]

QUESTIONS.json: a SQuAD file (its questions are asked in file order). Both desks open the same
index folder; each question is asked of the desk without the reader, then of each desk with it, so
the machine's load falls on all of them alike. Prints p50 and p95 in ms and their ratio to the
desk without the reader, and the cold start of a desk with the reader (its first answer, index and
models loaded in the same process).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from askdesk import Config, Desk


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("index", type=Path)
    ap.add_argument("questions", type=Path)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--candidates", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args(argv)
    qs = [q["question"] for a in json.loads(args.questions.read_text())["data"] for p in a["paragraphs"]
          for q in p["qas"]][:args.n]
    t0 = time.perf_counter()
    first = Desk.open(args.index, config=Config.from_env(reader=True, index=args.index))
    first.ask(qs[0])
    cold = time.perf_counter() - t0
    desks = {"no reader": Desk.open(args.index, config=Config.from_env(reader=False, index=args.index))}
    for n in args.candidates:
        desks[f"reader, {n} candidates"] = Desk.open(
            args.index, config=Config.from_env(reader=True, reader_candidates=n, index=args.index))
    for d in desks.values():  # models and index loaded before timing
        d.ask(qs[0])
    times: dict[str, list[float]] = {k: [] for k in desks}
    for q in qs:
        for name, d in desks.items():
            t = time.perf_counter()
            d.ask(q)
            times[name].append((time.perf_counter() - t) * 1000)
    base = np.percentile(times["no reader"], 50)
    print(f"cold start, first answer with the reader: {cold:.2f} s")
    for name, ts in times.items():
        p50, p95 = np.percentile(ts, 50), np.percentile(ts, 95)
        print(f"{name:<24} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  p50 ratio {p50 / base:.2f}x  ({len(ts)} questions)")


if __name__ == "__main__":
    main()
