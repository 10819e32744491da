"""Fit askdesk's refusal model on squad-dev, rgb-news and realtimeqa-dev, and write the QA sets.

    python bench/calibrate.py --realtimeqa /tmp/realtimeqa-dev   # fit REFUSAL_MODEL; held-out rates
    python bench/calibrate.py --refit                              # fit again from the saved features
    python bench/calibrate.py --write-sets /tmp/sets               # QA folders for `askdesk eval qa`

Each question is put through `Desk.evidence` (what `Desk.ask` rests on: the same reading,
retrieval, dates and features), on an index where its answer is present (answerable) or absent:

- squad-dev, split by article in file order into halves A (fit) and B (held out). On index A,
  A's questions are answerable and B's absent ("off-topic"). Index "A-even" holds the even
  paragraphs of A's articles: questions about the odd ones are absent there ("near-topic": same
  article, names and dates, another fact), unless their answer also occurs in an even paragraph.
- rgb-news: questions 0-49 fit, 50-99 held out; answerable on rgb-news-qa, near-topic on
  rgb-news-absent (the same questions' negative snippets only: same event, no answer).
- realtimeqa-dev: its first 6 weeks fit, the last 6 held out; answerable on its own index, asked
  as of each question's date; near-topic on "rtqa-near": its corpus less every evidence snippet
  and every document holding any question's answer string (questions that had one).

The model is a logistic regression over `askdesk.answering.answer.FEATURES` fitted on the fit halves, each
of the seven (set, kind) groups weighing the same; the threshold leaves TARGET_REFUSED_ANSWERABLE
of the fit halves' answerable questions refused (averaged over the three sources). Indexes are
built once into --cache (rtqa: pass --realtimeqa-index to reuse a kept one).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from askdesk.answering import answer as answer_mod
from askdesk.config import Config
from askdesk.desk import Desk
from askdesk.surface import eval as eval_mod

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TARGET_REFUSED_ANSWERABLE = 0.03
WEEKS_FIT = ("20240105", "20240202", "20240301", "20240329", "20240426", "20240524")


def squad_halves(squad: Path):
    """(articles, questions, half of each article id, half of each question) from squad.json."""
    articles, doc_of, questions = eval_mod.read_squad(squad)
    titles = list(dict.fromkeys(d.rsplit("_", 1)[0] for d in doc_of.values()))  # "Fresno,_California_3"
    first = set(titles[: len(titles) // 2])
    half_of_doc = {aid: "A" if d.rsplit("_", 1)[0] in first else "B" for aid, d in doc_of.items()}
    half_of_id = {d: half_of_doc[aid] for aid, d in doc_of.items()}
    half_of_q = [half_of_id[next(iter(q["gold_docs"]))] for q in questions]
    return articles, questions, half_of_doc, half_of_q


def _even(doc_id: str) -> bool:
    return int(doc_id.rsplit("_", 1)[1]) % 2 == 0  # "Fresno,_California_3" -> paragraph 3


def squad_groups(squad: Path, cache: Path, config: Config, limit: int | None):
    """[(group name, fit|held, desk, [(question, as_of)], label)] of squad-dev."""
    articles, questions, half_of_doc, half_of_q = squad_halves(squad)
    full = cache / "squad-full"
    Desk.build(articles, full, config=config, prune=True)
    desks = {}
    for name in ("A", "B", "A-even", "B-even"):  # copies of the full index synced down: nothing embedded twice
        target = cache / f"squad-{name}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(full, target)
        keep = [a for a in articles if half_of_doc[a.id] == name[0] and (len(name) == 1 or _even(a.path))]
        desks[name] = Desk.build(keep, target, config=config, prune=True)
    even_text: dict[str, str] = {}
    for a in articles:
        if _even(a.path):
            title = a.path.rsplit("_", 1)[0]
            even_text[title] = even_text.get(title, "") + " " + a.text.lower()
    step = max(1, len(questions) // limit) if limit else 1
    picked = range(0, len(questions), step)
    out = []
    for half, other, part in (("A", "B", "fit"), ("B", "A", "held")):
        mine = [i for i in picked if half_of_q[i] == half]
        out.append(("squad answerable", part, desks[half], [(questions[i]["question"], None) for i in mine], 1))
        theirs = [i for i in picked if half_of_q[i] == other]
        out.append(("squad off-topic", part, desks[half], [(questions[i]["question"], None) for i in theirs], 0))
        near = []
        for i in mine:
            doc = next(iter(questions[i]["gold_docs"]))
            if not _even(doc) and not any(a.lower() in even_text.get(doc.rsplit("_", 1)[0], "")
                                          for a in questions[i]["answers"]):
                near.append((questions[i]["question"], None))
        out.append(("squad near-topic", part, desks[f"{half}-even"], near, 0))
    return out


def rgb_groups(sets: Path, cache: Path, config: Config):
    out = []
    for name, label in (("rgb-news-qa", 1), ("rgb-news-absent", 0)):
        articles, _, questions = eval_mod.read_qa_folder(sets / name)
        desk = Desk.build(articles, cache / name, config=config, prune=True)
        for part, keep in (("fit", lambda q: int(q["id"]) < 50), ("held", lambda q: int(q["id"]) >= 50)):
            out.append((f"rgb {'answerable' if label else 'near-topic'}", part, desk,
                        [(q["question"], None) for q in questions if keep(q)], label))
    return out


def rtqa_near(folder: Path, out: Path) -> Path:
    """The realtimeqa-dev near-topic set (module doc), written into ``out``."""
    norm = lambda t: " ".join(re.sub(r"[^\w ]", " ", t.lower()).split())  # noqa: E731
    docs = eval_mod.read_jsonl(folder / "corpus.jsonl", "corpus")
    qa = eval_mod.read_jsonl(folder / "qa.jsonl", "qa")
    texts = {d["_id"]: f" {norm(d['text'])} " for d in docs}
    drop = {d["_id"] for d in docs if d["_id"].startswith("ev-")}
    kept = []
    for q in qa:
        answers = [a for a in (norm(x) for x in q["answers"]) if len(a) > 2]
        holders = {i for i, t in texts.items() if any(f" {a} " in t for a in answers)}
        if holders:
            drop |= holders
            kept.append({**q, "answers": []})
    out.mkdir(parents=True, exist_ok=True)
    (out / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs if d["_id"] not in drop))
    (out / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in kept))
    return out


def rtqa_groups(folder: Path, cache: Path, config: Config, index: Path | None):
    out = []
    near = rtqa_near(folder, cache / "rtqa-near-set")
    for name, data, label, ix in (("answerable", folder, 1, index or cache / "rtqa"),
                                  ("near-topic", near, 0, cache / "rtqa-near")):
        articles, _, questions = eval_mod.read_qa_folder(data)
        desk = Desk.build(articles, ix, config=config, prune=True)
        for part in ("fit", "held"):
            mine = [q for q in questions if (q["id"].split("_")[0] in WEEKS_FIT) == (part == "fit")]
            out.append((f"rtqa {name}", part, desk, [(q["question"], q.get("date")) for q in mine], label))
    return out


def features(groups) -> dict:
    data = {}
    t0 = time.perf_counter()
    for name, part, desk, qs, label in groups:
        x = []
        for q, as_of in qs:
            f = desk.evidence(q, as_of=as_of).extract.features
            x.append([f.get(n, 0.0) for n in answer_mod.FEATURES] if f else [0.0] * len(answer_mod.FEATURES))
        data[f"{part}:{name}"] = (np.array(x, dtype=float).reshape(-1, len(answer_mod.FEATURES)),
                                  np.full(len(x), label))
        print(f"{part}:{name}: {len(qs)} questions, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return data


def fit(data: dict) -> dict:
    """Logistic regression on the fit groups, each weighing the same; see the module doc."""
    from sklearn.linear_model import LogisticRegression

    fit_groups = {k: v for k, v in data.items() if k.startswith("fit:") and len(v[1])}
    x = np.concatenate([v[0] for v in fit_groups.values()])
    y = np.concatenate([v[1] for v in fit_groups.values()])
    w = np.concatenate([np.full(len(v[1]), 1.0 / len(v[1])) for v in fit_groups.values()])
    lr = LogisticRegression(C=10.0, max_iter=5000).fit(x, y, sample_weight=w * len(w))
    model = {"bias": round(float(lr.intercept_[0]), 3),
             "weights": {n: round(float(c), 3) for n, c in zip(answer_mod.FEATURES, lr.coef_[0])}, "threshold": 0.5}
    # The threshold: per source, the quantile leaving the target share of its answerable refused; their mean.
    cuts = [float(np.quantile(confidence(model, v[0]), TARGET_REFUSED_ANSWERABLE))
            for k, v in fit_groups.items() if "answerable" in k]
    model["threshold"] = round(float(np.mean(cuts)), 3)
    return model


def confidence(model: dict, x: np.ndarray) -> np.ndarray:
    w = np.array([model["weights"].get(n, 0.0) for n in answer_mod.FEATURES])
    return 1 / (1 + np.exp(-(model["bias"] + x @ w)))


def report(data: dict) -> None:
    model = fit(data)
    print("REFUSAL_MODEL =", json.dumps(model))
    def refused(m: dict, x: np.ndarray) -> float:
        return float((confidence(m, x) < m["threshold"]).mean()) if len(x) else float("nan")

    for key, (x, _) in data.items():
        print(f"{key:32s} refused {refused(model, x):.3f} "
              f"(current model {refused(answer_mod.REFUSAL_MODEL, x):.3f}), n={len(x)}")


def refit(cache: Path) -> None:
    """Fit again from the features a previous run saved (e.g. after changing the target rate)."""
    d = np.load(cache / "features.npz")
    report({k[2:]: (d[k], d["y_" + k[2:]]) for k in d.files if k.startswith("x_")})


def calibrate(args) -> None:
    config = Config.from_env()
    args.cache.mkdir(parents=True, exist_ok=True)
    sets = args.cache / "sets"
    write_sets(args.rgb, args.squad, sets)
    groups = squad_groups(args.squad, args.cache, config, args.limit) + rgb_groups(sets, args.cache, config)
    if args.realtimeqa:
        groups += rtqa_groups(args.realtimeqa, args.cache, config, args.realtimeqa_index)
    data = features(groups)
    np.savez(args.cache / "features.npz", **{f"x_{k}": v[0] for k, v in data.items()},
             **{f"y_{k}": v[1] for k, v in data.items()})
    report(data)


def write_sets(rgb: Path, squad: Path, out: Path) -> None:
    """The QA folders of docs/quality.md: rgb-news-qa, rgb-news-absent and squad-absent-b."""
    write_rgb(rgb, out)
    articles, questions, half_of_doc, half_of_q = squad_halves(squad)
    # The held-out direction of the calibration: index B; B's questions answerable, A's absent.
    corpus = [{"_id": a.path, "title": a.title, "text": a.text} for a in articles if half_of_doc[a.id] == "B"]
    qa = [{"id": q["id"], "question": q["question"], "answers": q["answers"] if h == "B" else []}
          for q, h in zip(questions, half_of_q)]
    _write_set(out / "squad-absent-b", corpus, qa, [(q["id"], d) for q, h in zip(questions, half_of_q) if h == "B"
                                                    for d in sorted(q["gold_docs"])])
    print(f"wrote {out}/squad-absent-b ({len(corpus)} paragraphs, {len(qa)} questions)")


def write_rgb(source: Path, out: Path) -> None:
    """rgb-news-qa (positives + negatives, qrels on positives; also a BEIR retrieval set) and
    rgb-news-absent (negatives only: every question unanswerable)."""
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    docs = {kind: [] for kind in ("positive", "negative")}
    for r in rows:
        for kind in docs:
            docs[kind] += [{"_id": f"{r['id']}-{kind[:3]}-{j}", "title": "", "text": t} for j, t in enumerate(r[kind])]
    qa = [{"id": str(r["id"]), "question": r["question"], "answers": r["answers"]} for r in rows]
    _write_set(out / "rgb-news-qa", docs["positive"] + docs["negative"], qa,
               [(str(r["id"]), f"{r['id']}-pos-{j}") for r in rows for j in range(len(r["positive"]))])
    # Without the positives nothing should answer; drop a question if some other snippet still does.
    negatives = [d["text"].lower() for d in docs["negative"]]
    absent = [{**q, "answers": []} for q in qa
              if not any(a.lower() in t for a in q["answers"] for t in negatives)]
    _write_set(out / "rgb-news-absent", docs["negative"], absent, [])
    print(f"wrote {out}/rgb-news-qa ({len(qa)} questions) and {out}/rgb-news-absent ({len(absent)} questions)")


def _write_set(folder: Path, corpus: list[dict], qa: list[dict], qrels: list[tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in corpus))
    (folder / "qa.jsonl").write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in qa))
    if qrels:  # with queries.jsonl the folder is also a BEIR set for `askdesk eval retrieval`
        (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q["id"], "text": q["question"]}) + "\n"
                                                      for q in qa))
        (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--squad", type=Path, default=DATA / "squad-dev" / "squad.json", help="SQuAD v1.1 JSON file")
    p.add_argument("--rgb", type=Path, default=DATA / "rgb-news" / "rgb_en_fact.jsonl", help="rgb_en_fact.jsonl")
    p.add_argument("--realtimeqa", type=Path, help="a realtimeqa-dev folder (its README builds it)")
    p.add_argument("--realtimeqa-index", type=Path, help="a kept index of it (askdesk eval ... --keep-index)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/askdesk-calibrate"), help="where the indexes are kept")
    p.add_argument("--limit", type=int, help="squad: every n-th question so that about this many are used")
    p.add_argument("--write-sets", type=Path, metavar="OUT", help="write the QA folders into OUT and exit")
    p.add_argument("--refit", action="store_true", help="fit from the features the last run saved in --cache")
    args = p.parse_args()
    if args.write_sets:
        write_sets(args.rgb, args.squad, args.write_sets)
        return
    if args.refit:
        refit(args.cache)
        return
    calibrate(args)


if __name__ == "__main__":
    main()
