"""Memory over time while articles arrive one at a time: what a server's writes leave behind.

    python bench/write_memory.py [--articles 200] [--realtimeqa /tmp/realtimeqa-dev]

A desk on 50 realtimeqa-dev articles takes the next N one file at a time (`Desk.add`, as
`askdesk watch` and the page do) and answers 5 questions after each; anonymous memory (RssAnon:
RSS less file-backed pages) is printed every 25 articles. Two runs, each its own process: askdesk
as shipped, and the same with `desk.release_memory` turned off (the freed memory of each write left
in malloc's heaps, as before issue 27's fix). Prints JSON: per run the memory at the start, every
25 articles and the change, and the ratio of the two changes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path


def rss_anon_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon"):
                return int(line.split()[1]) / 1024
    return 0.0


def run(folder: Path, n: int, trim: bool, root: Path) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import askdesk.desk as desk_mod
    from askdesk import Config, Desk

    if not trim:
        desk_mod.release_memory = lambda: None
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        docs = [json.loads(line) for _, line in zip(range(n + 50), f)]
    qs = [json.loads(line)["question"] for line in open(folder / "qa.jsonl", encoding="utf-8")]
    corpus = root / "corpus"
    corpus.mkdir(parents=True)
    for i, d in enumerate(docs[:50]):
        (corpus / f"{i:04d}.txt").write_text(f"{d['title'] or d['_id']}\n\n{d['text']}", encoding="utf-8")
    cfg = Config.from_env({}, corpus=corpus, index=root / "index")
    desk = Desk.build(corpus, cfg.index, config=cfg)
    for q in qs[:20]:
        desk.ask(q)
    rng = random.Random(1)
    out = {"start_mb": round(rss_anon_mb()), "every_25": []}
    for j, d in enumerate(docs[50:50 + n]):
        p = corpus / f"{50 + j:04d}.txt"
        p.write_text(f"{d['title'] or d['_id']}\n\n{d['text']}", encoding="utf-8")
        desk.add([p])
        for q in rng.sample(qs, 5):
            desk.ask(q)
        if j % 25 == 24:
            out["every_25"].append(round(rss_anon_mb()))
            print(("trim" if trim else "no trim"), j + 1, out["every_25"][-1], file=sys.stderr, flush=True)
    out["end_mb"] = out["every_25"][-1] if out["every_25"] else out["start_mb"]
    out["change"] = round(out["end_mb"] / out["start_mb"] - 1, 3)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--articles", type=int, default=200)
    ap.add_argument("--realtimeqa", type=Path, default=Path("/tmp/realtimeqa-dev"))
    ap.add_argument("--one", choices=["trim", "no-trim"], help=argparse.SUPPRESS)  # a run's own process
    args = ap.parse_args(argv)
    if not (args.realtimeqa / "corpus.jsonl").is_file():
        raise SystemExit(f"no corpus.jsonl in {str(args.realtimeqa)!r}: build it as "
                         "../shared/data/realtimeqa-dev/README.md says")
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run(args.realtimeqa, args.articles, args.one == "trim", Path(tmp))))
        return
    res = {}
    for mode in ("no-trim", "trim"):
        got = subprocess.run([sys.executable, __file__, "--one", mode, "--articles", str(args.articles),
                              "--realtimeqa", str(args.realtimeqa)], check=True, capture_output=True, text=True)
        res[mode] = json.loads(got.stdout.strip().splitlines()[-1])
    base = res["no-trim"]["end_mb"] - res["no-trim"]["start_mb"]
    res["growth_ratio"] = round((res["trim"]["end_mb"] - res["trim"]["start_mb"]) / base, 3) if base else None
    print(json.dumps({"articles": args.articles, "loadavg": [round(x, 2) for x in os.getloadavg()], **res}, indent=1))


if __name__ == "__main__":
    main()
