"""Fit how the answerer judges the reader's candidates (`askdesk.answering.read.READER_MODEL`), report it held out.

    python bench/calibrate_reader.py training/data/heldout-squad2.json [--candidates 8] [--cache FILE]
        [--news /tmp/realtimeqa-dev --news-index DIR --news-cache FILE]

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

With ``--news`` (a built realtimeqa-dev folder, its index kept by `askdesk eval qa --keep-index`),
real news joins the fit: its first half of weeks (`NEWS_FIT_WEEKS`) is added to the calibration
part, its second half is only reported. Every realtimeqa question is answerable, but for many the
answer is in none of the sentences read; refusing those is honest, so on news the threshold is held
to `MAX_REFUSED` of the questions whose answer is in a sentence read ("reachable"), and the report
gives, over all questions, the share answered with the answer's sentence first, answered wrongly,
and refused.
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
NEWS_FIT_WEEKS = 6  # realtimeqa-dev's first six weeks fit, the last six are reported
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


def collect_news(desk: Desk, questions: list[dict], n: int) -> list[dict]:
    """As `collect`, for realtimeqa's questions, each asked as of its own date."""
    rows = []
    for q in questions:
        x = desk.evidence(q["question"], as_of=q["question_date"].replace("/", "-")).extract
        golds = [g for g in (normalize_answer(a) for a in q["answers"]) if g]
        rows.append({"title": "news", "week": q["week"], "answerable": True, "cands": [
            {"f": j.features, "rank": j.rank, "gold": any(g in normalize_answer(j.sentence) for g in golds),
             "short_f1": max((token_f1(j.short, a) for a in q["answers"]), default=0.0) if j.short else None}
            for j in x.readings if j.rank < n]})
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


def reachable(r: dict, n: int) -> bool:
    """Could the reader have answered: a SQuAD answerable question, or a news question whose answer
    is in a sentence it read."""
    return r["answerable"] and (r["title"] != "news" or any(c["gold"] for c in r["cands"] if c["rank"] < n))


def with_threshold(rows: list[dict], model: dict, n: int) -> dict:
    got = sorted(j for (j, _, _), r in zip(decide(rows, model, n), rows) if reachable(r, n))
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
    if any(r["title"] == "news" for r in rows):
        reach = [x for x, r in zip(d, rows) if reachable(r, n)]
        out.update({"n_reachable": len(reach),
                    "reachable_refused": round(float(np.mean([x[0] < t for x in reach])), 3) if reach else None,
                    "answered_right": round(float(np.mean([x[0] >= t and x[1] for x in ans])), 3),
                    "answered_wrong": round(float(np.mean([x[0] >= t and not x[1] for x in ans])), 3)})
    print(json.dumps(out))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("squad2", type=Path, help="training/data/heldout-squad2.json (training/prepare.py)")
    ap.add_argument("--index", type=Path, help="keep the index here (default: a temporary folder)")
    ap.add_argument("--candidates", type=int, default=8, help="sentences read per question (fits use <= this)")
    ap.add_argument("--cache", type=Path, help="keep the readings here, and reuse them when the file exists")
    ap.add_argument("--news", type=Path, help="a built realtimeqa-dev folder: real news joins the fit")
    ap.add_argument("--news-index", type=Path, help="its index, kept by `askdesk eval qa --keep-index`")
    ap.add_argument("--news-cache", type=Path, help="keep the news readings here, and reuse them")
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
    news_fit, news_held = [], []
    if args.news:
        news_fit, news_held = news_parts(args, read_mod.READER_MODEL)
    for n in sorted({2, 4, 6, args.candidates}):
        for names in (("margin",), read_mod.FEATURES):
            model = with_threshold(cal + news_fit, fit(cal + news_fit, names, n), n)
            print(f"-- {n} candidates, {'+'.join(names)}: {json.dumps(model)}")
            report(cal, model, n, "calibration")
            report(held, model, n, "held out")
            if news_fit:
                report(news_fit, model, n, "news, fit weeks")
                report(news_held, model, n, "news, held-out weeks")
    report(held, read_mod.READER_MODEL, args.candidates, "held out, shipped READER_MODEL")
    if news_fit:
        report(news_held, read_mod.READER_MODEL, args.candidates, "news held-out weeks, shipped READER_MODEL")


def news_parts(args, model: dict) -> tuple[list[dict], list[dict]]:
    if args.news_cache and args.news_cache.exists():
        rows = json.loads(args.news_cache.read_text())
    else:
        if not args.news_index:
            raise SystemExit("--news needs --news-index: the index `askdesk eval qa --keep-index DIR` kept")
        questions = [json.loads(line) for line in (args.news / "qa.jsonl").read_text().splitlines() if line.strip()]
        desk = Desk.open(args.news_index, config=Config.from_env(reader_candidates=args.candidates))
        rows = collect_news(desk, questions, args.candidates)
        if args.news_cache:
            args.news_cache.write_text(json.dumps(rows))
    weeks = sorted({r["week"] for r in rows})
    fit_weeks = set(weeks[:NEWS_FIT_WEEKS])
    return [r for r in rows if r["week"] in fit_weeks], [r for r in rows if r["week"] not in fit_weeks]


if __name__ == "__main__":
    main()
