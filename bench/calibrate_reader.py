"""Fit how the answerer judges the reader's candidates (`askdesk.answering.read.READER_MODEL`), report it held out.

    python bench/calibrate_reader.py training/data/heldout-squad2.json [--candidates 8] [--cache FILE]

The file is what `training/prepare.py` writes: the SQuAD 2.0 questions of the six squad-dev
articles no weight was trained on. Two of them (`CALIBRATE`) fit the model; the other four are only
reported. Every question is asked of one desk whose index holds all six articles' paragraphs, so an
unanswerable question meets its own paragraph (the article is there, the fact is not: the near-topic
case) and an answerable one must first be found among ~300 paragraphs.

The model is a logistic regression over `read.FEATURES` of each candidate the reader read (label:
the question is answerable and the candidate's sentence holds a gold answer), fitted on the
calibration part; its threshold is the highest judgement that leaves at most `MAX_REFUSED` of that
part's answerable questions refused. The reader's margin alone, fitted the same way, is printed
beside it, and so is the reader alone on the gold paragraph (`MARGIN_THRESHOLD`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from askdesk import Config, Desk
from askdesk.answering import read as read_mod
from askdesk.surface.eval import normalize_answer, read_squad, token_f1

CALIBRATE = ("Force", "Geology")
MAX_REFUSED = 0.08  # answerable questions refused on the calibration part (target: <= 0.10 held out)


def collect(desk: Desk, questions: list[dict]) -> list[dict]:
    rows = []
    for q in questions:
        x = desk.evidence(q["question"]).extract
        golds = [g for g in (normalize_answer(a) for a in q["answers"]) if g]
        rows.append({"title": q["title"], "answerable": bool(golds), "cands": [
            {"f": j.features, "rank": j.rank, "gold": any(g in normalize_answer(j.sentence) for g in golds),
             "short_f1": max((token_f1(j.short, a) for a in q["answers"]), default=0.0) if j.short else None}
            for j in x.readings]})
    return rows


def fit(rows: list[dict], names: tuple[str, ...], n: int) -> dict:
    """Logistic regression (L2, plain gradient descent) over the named features of every candidate."""
    xs, ys = [], []
    for r in rows:
        for c in r["cands"]:
            if c["rank"] < n:
                xs.append([c["f"][k] for k in names])
                ys.append(float(r["answerable"] and c["gold"]))
    x, y = np.asarray(xs), np.asarray(ys)
    mu, sd = x.mean(0), x.std(0) + 1e-9
    z = (x - mu) / sd
    w, b = np.zeros(len(names)), 0.0
    for _ in range(3000):
        p = 1 / (1 + np.exp(-(z @ w + b)))
        w -= 0.1 * (z.T @ (p - y) / len(y) + 1e-3 * w)
        b -= 0.1 * float(np.mean(p - y))
    weights = {k: round(float(wi / si), 4) for k, wi, si in zip(names, w, sd)}
    return {"bias": round(float(b - sum(wi * mi / si for wi, mi, si in zip(w, mu, sd))), 4), "weights": weights}


def decide(rows: list[dict], model: dict, n: int) -> list[tuple[float, bool, float | None]]:
    """(judgement, its sentence holds the answer, short F1) of each question's best candidate."""
    out = []
    for r in rows:
        cands = [c for c in r["cands"] if c["rank"] < n]
        if not cands:
            out.append((-99.0, False, None))
            continue
        best = max(cands, key=lambda c: read_mod.judge(c["f"], model))
        out.append((read_mod.judge(best["f"], model), best["gold"], best["short_f1"]))
    return out


def with_threshold(rows: list[dict], model: dict, n: int) -> dict:
    got = sorted(j for (j, _, _), r in zip(decide(rows, model, n), rows) if r["answerable"])
    return {**model, "threshold": round(float(got[int(MAX_REFUSED * len(got))]), 4) if got else 0.0}


def report(rows: list[dict], model: dict, n: int, name: str) -> dict:
    d = decide(rows, model, n)
    t = model["threshold"]
    ans = [x for x, r in zip(d, rows) if r["answerable"]]
    no = [x for x, r in zip(d, rows) if not r["answerable"]]
    answered = [x for x in ans if x[0] >= t]
    shorts = [x[2] for x in answered if x[2] is not None]
    out = {"part": name, "candidates": n, "n_answerable": len(ans), "n_unanswerable": len(no),
           "answerable_refused": round(1 - len(answered) / max(1, len(ans)), 3),
           "unanswerable_refused": round(float(np.mean([x[0] < t for x in no])), 3) if no else None,
           "first_sentence_hit": round(float(np.mean([x[1] for x in answered])), 3) if answered else None,
           "short_coverage": round(len(shorts) / max(1, len(answered)), 3),
           "short_f1": round(float(np.mean(shorts)), 3) if shorts else None}
    print(json.dumps(out))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("squad2", type=Path, help="training/data/heldout-squad2.json (training/prepare.py)")
    ap.add_argument("--index", type=Path, help="keep the index here (default: a temporary folder)")
    ap.add_argument("--candidates", type=int, default=8, help="sentences read per question (fits use <= this)")
    ap.add_argument("--cache", type=Path, help="keep the readings here, and reuse them when the file exists")
    args = ap.parse_args(argv)
    articles, _, questions = read_squad(args.squad2)
    data = json.loads(args.squad2.read_text())["data"]
    title_of = {q["id"]: a["title"] for a in data for p in a["paragraphs"] for q in p["qas"]}
    text_of = {q["id"]: p["context"] for a in data for p in a["paragraphs"] for q in p["qas"]}
    for q in questions:
        q["title"] = title_of[q["id"]]
    if args.cache and args.cache.exists():
        rows, alone = json.loads(args.cache.read_text())
    else:
        config = Config.from_env(reader_candidates=args.candidates)
        with tempfile.TemporaryDirectory() as tmp:
            desk = Desk.build(articles, args.index or Path(tmp) / "index", config=config, prune=True)
            rows = collect(desk, questions)
            # The reader alone on the gold paragraph (`askdesk eval reader`): its own margin threshold.
            alone = sorted(read_mod.read_passage(desk.reader, q["question"], text_of[q["id"]]).margin
                           for q in questions if q["title"] in CALIBRATE and q["answers"])
        if args.cache:
            args.cache.write_text(json.dumps([rows, alone]))
    print(f"-- the reader alone: MARGIN_THRESHOLD = {alone[int(MAX_REFUSED * len(alone))]:.3f}")
    cal = [r for r in rows if r["title"] in CALIBRATE]
    held = [r for r in rows if r["title"] not in CALIBRATE]
    for n in sorted({2, 4, 6, args.candidates}):
        for names in (("margin",), read_mod.FEATURES):
            model = with_threshold(cal, fit(cal, names, n), n)
            print(f"-- {n} candidates, {'+'.join(names)}: {json.dumps(model)}")
            report(cal, model, n, "calibration")
            report(held, model, n, "held out")
    report(held, read_mod.READER_MODEL, args.candidates, "held out, shipped READER_MODEL")


if __name__ == "__main__":
    main()
