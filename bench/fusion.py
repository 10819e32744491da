"""Fit retrieval's fusion weights (askdesk.answering.retrieve: DENSE_WEIGHT, SENTENCE_SHARE, LENGTH_WEIGHT,
LENGTH_FREE_CHUNKS) on the fit halves of the dev sets, and report every set's held-out half.

    askdesk eval retrieval ../shared/data/squad-dev --keep-index /tmp/ix/squad          # once per set:
    askdesk eval retrieval /tmp/sets/rgb-news-qa --keep-index /tmp/ix/rgb               # keeps its index
    askdesk eval retrieval /tmp/realtimeqa-dev-evidence --keep-index /tmp/ix/rtqa
    python bench/fusion.py squad-dev=/tmp/ix/squad:../shared/data/squad-dev \\
        rgb-news=/tmp/ix/rgb:/tmp/sets/rgb-news-qa rtqa-answers=/tmp/ix/rtqa:/tmp/realtimeqa-dev \\
        --report rtqa-evidence=/tmp/ix/rtqa:/tmp/realtimeqa-dev-evidence

(rgb-news-qa is written by `bench/calibrate.py --write-sets`; realtimeqa-dev by its README.)

Splits (fixed, documented in docs/quality.md): squad-dev's first 12 articles fit, the other 12
are held out; rgb-news questions 0-49 fit, 50-99 held out; realtimeqa-dev's first 6 of its 12
weeks fit, the last 6 held out. The held-out halves are only reported, never searched.

Every query's candidates (dense top-100 and BM25 top-100: `Retriever.candidates`) and their
signals are computed once; each setting only re-ranks them (`retrieve.fuse`), so the grid takes
seconds. Chosen: the best mean gain in nDCG@10 over the weights fitted on SQuAD alone (0.6, 1.0,
no length term) across the fit halves, among settings that lose no more than 0.005 on any of them
against the best of those weights, dense alone and BM25 alone. realtimeqa's evidence judgements
(each question's own short snippet) are reported, not fitted on: they reward any penalty on
long articles, and answers often stand in long ones. Prints JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

WEEKS_FIT = ("20240105", "20240202", "20240301", "20240329", "20240426", "20240524")
GRID = {"dense_weight": (0.5, 0.6, 0.7, 0.8), "sentence_share": (0.5, 0.75, 1.0),
        "length_weight": (0.0, 0.1, 0.15, 0.2, 0.25, 0.3), "length_free_chunks": (1, 2, 3)}


def half(name: str, qid: str, rels: dict) -> str:
    """"fit" or "held" for a query of set ``name`` (the splits of the module doc)."""
    if name.startswith("rtqa"):
        return "fit" if qid.split("_")[0] in WEEKS_FIT else "held"
    if name.startswith("rgb"):
        return "fit" if int(qid) < 50 else "held"
    return "fit" if SQUAD_FIT_TITLES and next(iter(rels)).rsplit("_", 1)[0] in SQUAD_FIT_TITLES else "held"


SQUAD_FIT_TITLES: set[str] = set()


def collect(index: str, data: str, n: int = 100) -> list[dict]:
    """Per judged query: the candidates' signals, their documents, the qrels."""
    from askdesk import Desk
    from askdesk.surface.eval import read_corpus, read_jsonl, read_qrels

    desk = Desk.open(index)
    root = Path(data)
    _, doc_of = read_corpus(root)
    qrels = read_qrels(root)
    out = []
    for q in read_jsonl(root / "queries.jsonl", "queries"):
        rels = qrels.get(str(q["_id"]))
        if not rels:
            continue
        c = desk.retriever.candidates(q["text"], desk.embedder.embed_query(q["text"]), n=n)
        out.append({"qid": str(q["_id"]), "rels": rels, "docs": [doc_of[ch.article_id] for ch in c.chunks],
                    "dense": c.dense, "sentence": c.sentence, "lexical": c.lexical, "chunks": c.article_chunks,
                    "dense_rank": [k for k, _ in c.dense_hits], "lexical_rank": [k for k, _ in c.lexical_hits],
                    "keys": c.keys.tolist()})
    return out


def ndcg(rows: list[dict], rank) -> float:
    from askdesk.surface.eval import ndcg_at_k

    return float(np.mean([ndcg_at_k(list(dict.fromkeys(r["docs"][i] for i in rank(r)))[:10], r["rels"], 10)
                          for r in rows])) if rows else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="+", help="name=INDEX:DATA (a kept index and its BEIR folder), fitted on")
    ap.add_argument("--report", nargs="*", default=[], help="name=INDEX:DATA sets only reported, never fitted on")
    args = ap.parse_args()

    from askdesk.answering import retrieve

    data, reported = {}, {}
    for spec in [*args.sets, *args.report]:
        name, _, rest = spec.partition("=")
        index, _, folder = rest.partition(":")
        rows = collect(index, folder)
        if name.startswith("squad"):
            titles = list(dict.fromkeys(next(iter(r["rels"])).rsplit("_", 1)[0] for r in rows))
            SQUAD_FIT_TITLES.update(titles[: len(titles) // 2])
        into = reported if spec in args.report else data
        into[name] = {p: [r for r in rows if half(name, r["qid"], r["rels"]) == p] for p in ("fit", "held")}
        print(f"{name}: {len(into[name]['fit'])} fit, {len(into[name]['held'])} held-out queries", file=sys.stderr)

    def fused(**w):
        def rank(r):
            order = retrieve.fuse(range(len(r["docs"])), r["dense"], r["sentence"], r["lexical"],
                                  article_chunks=r["chunks"], length_weight=w["length_weight"],
                                  dense_weight=w["dense_weight"], sentence_share=w["sentence_share"])
            return [i for i, _ in order][:50]
        return rank

    def listed(which):  # one retriever's own list
        return lambda r: [r["keys"].index(k) for k in r[which]]

    def scores(rank, part, sets=None):
        return {name: ndcg(d[part], rank) for name, d in (sets or data).items()}

    shipped = {"dense_weight": retrieve.DENSE_WEIGHT, "sentence_share": retrieve.SENTENCE_SHARE,
               "length_weight": retrieve.LENGTH_WEIGHT, "length_free_chunks": retrieve.LENGTH_FREE_CHUNKS}
    before = {"dense_weight": 0.6, "sentence_share": 1.0, "length_weight": 0.0,  # the weights fitted on SQuAD alone
              "length_free_chunks": 1}
    base = {"before (no length term)": before, "dense alone": "dense_rank", "bm25 alone": "lexical_rank"}
    fit_base = {k: scores(listed(v) if isinstance(v, str) else fused(**v), "fit") for k, v in base.items()}
    floor = {n: max(s[n] for s in fit_base.values()) - 0.005 for n in data}
    tried = []
    for values in itertools.product(*GRID.values()):
        w = dict(zip(GRID, values))
        retrieve.LENGTH_FREE_CHUNKS = w["length_free_chunks"]
        s = scores(fused(**w), "fit")
        ok = all(s[n] >= floor[n] for n in data)
        # Sets from one source (realtimeqa's evidence and answer judgements) share one vote.
        group = {n: n.split("-")[0] for n in data}
        before_fit = fit_base["before (no length term)"]
        votes = {g: [s[n] - before_fit[n] for n in data if group[n] == g] for g in group.values()}
        gain = float(np.mean([np.mean(v) for v in votes.values()]))
        tried.append((ok, gain, w, s))
    ok, gain, best, fit_scores = max(tried, key=lambda t: (t[0], t[1]))
    retrieve.LENGTH_FREE_CHUNKS = best["length_free_chunks"]
    out = {"chosen": best, "within the 0.005 floor everywhere": ok, "mean fit gain": round(gain, 4),
           "fit": {"chosen": fit_scores, **fit_base},
           "held out": {"chosen": scores(fused(**best), "held"),
                        **{k: scores(listed(v) if isinstance(v, str) else fused(**v), "held")
                           for k, v in base.items()}},
           "shipped now": shipped,
           "reported only": {part: {"chosen": scores(fused(**best), part, reported),
                                    **{k: scores(listed(v) if isinstance(v, str) else fused(**v), part, reported)
                                       for k, v in base.items()}} for part in ("fit", "held")} if reported else {}}
    print(json.dumps(out, indent=1, default=lambda x: round(float(x), 4)))


if __name__ == "__main__":
    main()
