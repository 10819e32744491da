"""The news features measured on rgb-news (RGB en_fact: 100 questions about 2004-2021 events).

    python bench/news_dates.py                 # answer quality with and without date handling
    python bench/news_dates.py --conflicts     # the conflict detector on RGB's planted wrong answers

Dates: the set has no question dates, but 578 of its 989 search snippets open with the date the
search engine printed ("Feb 7, 2021 ... "), which `askdesk.articles.ingest.dateline_date` reads as each
snippet's publication date (the other 411 stay undated). Runs, all through `askdesk.surface.eval.eval_qa`
on one cached index (docs/news.md has the table):
- ``no periods``: date phrases in questions are ignored (`news.resolve_period` switched off);
- ``periods``: the default: "in 2019" prefers snippets published in 2019 when they answer;
- ``periods, years cut``: as above, and "in 2019" is also cut from the text retrieval sees;
- ``periods + as_of``: every question asked as of the newest snippet date in the set (the data's
  own latest day, since it gives no per-question date), so undated snippets drop out.

Conflicts: for each question, sentence pairs from its positive snippets against its
counterfactual_positive snippets (RGB's copies with the answer swapped for a wrong one: a real
disagreement) and against other positive snippets and the negatives (mostly agreement or other
facts): how often `news.disagree` fires on each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from askdesk.answering import news  # noqa: E402
from askdesk.articles.chunk import split_sentences  # noqa: E402
from askdesk.articles.ingest import dateline_date  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside a clone; two levels up from a worktree under wt/.
RGB = next((p / "shared" / "data" / "rgb-news" / "rgb_en_fact.jsonl" for p in (ROOT.parent, ROOT.parent.parent)
            if (p / "shared" / "data" / "rgb-news").is_dir()),
           ROOT.parent / "shared" / "data" / "rgb-news" / "rgb_en_fact.jsonl")


def write_set(source: Path, out: Path, *, as_of: bool) -> tuple[int, int, str]:
    """rgb-news-qa as `bench/calibrate.py --write-sets` writes it; with ``as_of``, every question
    gets the newest snippet date as its question_date. Returns (dated docs, docs, newest date)."""
    from calibrate import write_rgb

    write_rgb(source, out)
    folder = out / "rgb-news-qa"
    docs = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]
    dates = [d for d in (dateline_date(doc["text"]) for doc in docs) if d]
    newest = max(dates)
    if as_of:
        qa = [json.loads(line) for line in (folder / "qa.jsonl").read_text().splitlines()]
        (folder / "qa.jsonl").write_text("".join(json.dumps({**q, "question_date": newest}) + "\n" for q in qa))
    return len(dates), len(docs), newest


def run_qa(cache: Path, limit: int | None) -> None:
    from askdesk.config import Config
    from askdesk.surface.eval import eval_qa

    cfg = Config.from_env()
    plain, dated = cache / "plain", cache / "as_of"
    n_dated, n_docs, newest = write_set(RGB, plain, as_of=False)
    write_set(RGB, dated, as_of=True)
    questions = [json.loads(line)["question"] for line in RGB.read_text().splitlines()]
    with_period = [q for q in questions if news.resolve_period(q)]
    print(f"{n_dated}/{n_docs} snippets dated by their dateline (newest {newest}); "
          f"{len(with_period)}/{len(questions)} questions name a period", file=sys.stderr)
    resolve, without = news.resolve_period, news.without_period
    runs = {}
    index = cache / "index"
    for name, folder, patch in [
        ("no periods", plain, {"resolve_period": lambda q, as_of=None: None}),
        ("periods", plain, {}),
        ("periods, years cut", plain, {"without_period": lambda q, p: without(q, p and _relative(p))}),
        ("periods + as_of", dated, {}),
    ]:
        for attr, fn in patch.items():
            setattr(news, attr, fn)
        try:
            runs[name] = eval_qa(folder / "rgb-news-qa", config=cfg, limit=limit, index_dir=index)
        finally:
            news.resolve_period, news.without_period = resolve, without
        print(name, json.dumps(runs[name]), file=sys.stderr)
    keys = ["answer_hit", "first_sentence_hit", "citation_hit", "refused_answerable", "p50_ms"]
    print("| run | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, r in runs.items():
        print(f"| {name} | " + " | ".join(str(r[k]) for k in keys) + " |")


def _relative(p: news.Period) -> news.Period:
    from dataclasses import replace

    return replace(p, relative=True)


def run_conflicts() -> None:
    rows = [json.loads(line) for line in RGB.read_text().splitlines()]

    def sentences(snippets):
        return [s[a:b] for s in snippets for a, b in split_sentences(s)]

    def rate(pairs_of):
        pairs = fired = 0
        for r in rows:
            left, right = pairs_of(r)
            for a in sentences(left):
                fa = news.find_figures(a)
                for b in sentences(right):
                    if a == b:
                        continue
                    pairs += 1
                    fb = news.find_figures(b)
                    fired += any(news.disagree(x, y) for x in fa for y in fb)
        return fired, pairs

    for name, pairs_of in [
        ("positive vs counterfactual (a planted disagreement)",
         lambda r: (r["positive"], r["counterfactual_positive"])),
        ("positive vs positive (same fact, other snippet)", lambda r: (r["positive"], r["positive"])),
        ("positive vs negative (same topic, other facts)", lambda r: (r["positive"], r["negative"])),
    ]:
        fired, pairs = rate(pairs_of)
        print(f"| {name} | {fired} / {pairs} | {fired / max(pairs, 1):.3f} |")
    # Recall where the planted value is a figure or date the detector reads at all.
    readable = [r for r in rows if any(f.text.lower() in a.lower() or a.lower() in f.text.lower()
                                       for a in r["answers"] for s in sentences(r["positive"])
                                       for f in news.find_figures(s))]
    caught = sum(any(news.disagree(x, y) for a in sentences(r["positive"])
                     for b in sentences(r["counterfactual_positive"])
                     for x in news.find_figures(a) for y in news.find_figures(b)) for r in readable)
    print(f"questions whose answer is a figure or date the detector reads: {len(readable)}; "
          f"planted disagreement caught for {caught}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conflicts", action="store_true", help="measure the conflict detector instead")
    p.add_argument("--cache", type=Path, default=Path("/tmp/askdesk-news"), help="sets and index go here")
    p.add_argument("--limit", type=int, help="only the first N questions")
    args = p.parse_args()
    if args.conflicts:
        run_conflicts()
    else:
        run_qa(args.cache, args.limit)


if __name__ == "__main__":
    main()
