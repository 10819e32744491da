"""The reader's questions, scored: who said what about what, follow-ups, near-topic refusals.

    python bench/conversations.py [--realtimeqa /tmp/realtimeqa-dev] [--cache DIR] [--json]

bench/data/conversations.jsonl holds 18 conversations (67 turns) written for askdesk without
running it (bench/data/README.md): over the bundled article, and over six RealTimeQA topics,
each with its week's search results and 11-17 same-topic articles of other weeks. Their text
is not in this repository (RealTimeQA states no licence): the documents are referenced by id
and read from a realtimeqa-dev folder built as its README says; without one, only the bundled
conversations run.

Each conversation gets an index of its own articles (real model, kept in --cache), and its
questions are asked in order through `Desk.ask` with the earlier ones as history, as the page
asks them. A turn is right when an expected phrase is in the answer and in a cited sentence
(quotations: in the quote or its sentence); a near-topic turn is right when refused. Reported
per kind and per split: "fit" conversations were used to choose askdesk's speaker and refusal
settings, the "heldout" third never.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data" / "conversations.jsonl"


def articles_for(conv: dict, realtimeqa: Path | None) -> list | None:
    """The conversation's articles (the bundled one, RealTimeQA docs by id), or None when missing."""
    from askdesk.articles.ingest import read_article

    out = [read_article(p, root=ROOT / "corpus") for p in sorted((ROOT / "corpus").glob("*.txt"))] \
        if conv["corpus"].get("bundled") else []
    ids = conv["corpus"].get("realtimeqa") or []
    if ids:
        if realtimeqa is None:
            return None
        docs, doc_of = _corpus(realtimeqa)
        by_doc = {d: a for a, d in ((a, doc_of[a.id]) for a in docs)}
        out += [by_doc[i] for i in ids]
    return out


_CORPUS: dict = {}


def _corpus(folder: Path):
    from askdesk.surface.eval import read_corpus

    if folder not in _CORPUS:
        _CORPUS[folder] = read_corpus(folder)
    return _CORPUS[folder]


def right(turn: dict, answer) -> bool:
    if turn["kind"] == "near_topic":
        return answer.refused
    if answer.refused:
        return False
    said = answer.text.lower()
    cited = [(c.sentence + " " + (c.quote or "")).lower() for c in answer.citations]
    return any(p.lower() in said and any(p.lower() in c for c in cited) for p in turn["expect"])


def run(realtimeqa: Path | None, cache: Path, config=None) -> dict:
    from askdesk import Config, Desk

    config = config or Config.from_env()
    rows = []
    for line in DATA.read_text().splitlines():
        conv = json.loads(line)
        arts = articles_for(conv, realtimeqa)
        if arts is None:
            print(f"skipped {conv['id']}: needs --realtimeqa", file=sys.stderr)
            continue
        desk = Desk.build(arts, cache / conv["id"], config=config, prune=True)
        history: list[str] = []
        for turn in conv["turns"]:
            a = desk.ask(turn["q"], history=history)
            rows.append({"conversation": conv["id"], "split": conv["split"], "kind": turn["kind"], "q": turn["q"],
                         "right": right(turn, a), "refused": a.refused, "answer": a.text, "note": a.note})
            history.append(turn["q"])
    return summarize(rows)


def summarize(rows: list[dict]) -> dict:
    table: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        for split in (r["split"], "all"):
            table[split][r["kind"]].append(r["right"])
            table[split]["answerable" if r["kind"] != "near_topic" else "near-topic refused"].append(r["right"])
            table[split]["every turn"].append(r["right"])
    out = {split: {k: {"right": round(sum(v) / len(v), 3), "n": len(v)} for k, v in kinds.items()}
           for split, kinds in table.items()}
    return {"scores": out, "turns": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--realtimeqa", type=Path, help="a realtimeqa-dev folder (its corpus.jsonl)")
    ap.add_argument("--cache", type=Path, default=ROOT / "bench" / "results" / "conversations",
                    help="where each conversation's index is kept")
    ap.add_argument("--json", action="store_true", help="print every turn too")
    ap.add_argument("--wrong", action="store_true", help="print the turns answered wrong")
    args = ap.parse_args()
    res = run(args.realtimeqa, args.cache)
    if args.json:
        print(json.dumps(res, indent=1))
        return
    for split, kinds in res["scores"].items():
        print(f"{split}: " + ", ".join(f"{k} {v['right']:.2f} ({v['n']})" for k, v in sorted(kinds.items())))
    if args.wrong:
        for r in res["turns"]:
            if not r["right"]:
                print(f"\n[{r['conversation']} {r['kind']}] {r['q']}\n  -> {r['answer'][:300]}" +
                      (f"\n  note: {r['note']}" if r["note"] else ""))


if __name__ == "__main__":
    main()
