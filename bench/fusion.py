"""Retrieval fusion on a kept index: weighted RRF against score fusion, over a grid of weights.

    askdesk eval retrieval ../shared/data/squad-dev --keep-index /tmp/squad-index   # once, keeps the index
    python bench/fusion.py /tmp/squad-index ../shared/data/squad-dev [--dev 2631]

Every query's candidates (dense top-50 and BM25 top-50: `Retriever.candidates`, as `Desk` retrieves
them) and their signals are computed once; each variant then only re-ranks them, so the grid takes seconds.
Weights are chosen on the first ``--dev`` queries (squad-dev's first 12 articles) and reported
on the rest, which they never saw. Prints JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("index")
    ap.add_argument("data")
    ap.add_argument("--dev", type=int, default=2631)
    args = ap.parse_args()

    from askdesk import Desk
    from askdesk.eval import mrr_at_k, ndcg_at_k, read_corpus, read_jsonl, read_qrels, recall_at_k
    from askdesk.retrieve import fuse, rrf

    desk = Desk.open(args.index)
    retriever = desk.retriever
    root = Path(args.data)
    _, doc_of = read_corpus(root)
    qrels = read_qrels(root)
    queries = [q for q in read_jsonl(root / "queries.jsonl", "queries") if qrels.get(str(q["_id"]))]
    feats = []
    for i, q in enumerate(queries):
        c = retriever.candidates(q["text"], desk.embedder.embed_query(q["text"]))
        article = {int(k): ch.article_id for k, ch in zip(c.keys, c.chunks)}
        feats.append((c.keys.tolist(), c.dense, c.sentence, c.lexical, c.dense_hits, c.lexical_hits,
                      qrels[str(q["_id"])], article))
        if i % 500 == 0:
            print(f"{i}/{len(queries)}", file=sys.stderr, flush=True)

    def score(rank_fn, part: slice) -> dict:
        r5, mrr, ndcg = [], [], []
        for rows, cos, sent, lex, dense, lexical, rels, article in feats[part]:
            ranked = list(dict.fromkeys(doc_of[article[r]]
                                        for r, _ in rank_fn(rows, cos, sent, lex, dense, lexical)))[:10]
            r5.append(recall_at_k(ranked, rels, 5))
            mrr.append(mrr_at_k(ranked, rels, 10))
            ndcg.append(ndcg_at_k(ranked, rels, 10))
        return {"recall@5": round(float(np.mean(r5)), 4), "mrr@10": round(float(np.mean(mrr)), 4),
                "ndcg@10": round(float(np.mean(ndcg)), 4)}

    dev, test = slice(0, args.dev), slice(args.dev, None)
    splits = (("dev", dev), ("test", test))
    out = {"rrf 0.4/k2 (before)": {s: score(lambda r, c, st, lex, d, lx: rrf(d, lx), p) for s, p in splits}}
    grid = {}
    for w, share in itertools.product((0.4, 0.5, 0.6, 0.7, 0.8), (0.0, 0.25, 0.5, 0.75, 1.0)):
        grid[(w, share)] = score(lambda r, c, st, lex, d, lx, w=w, share=share:
                                 fuse(r, c, st, lex, dense_weight=w, sentence_share=share), dev)
    best = max(grid, key=lambda k: grid[k]["mrr@10"] + grid[k]["recall@5"])
    out["grid (dev)"] = {f"w={w} share={s}": v for (w, s), v in grid.items()}
    out["best on dev"] = {"dense_weight": best[0], "sentence_share": best[1], "dev": grid[best],
                          "test": score(lambda r, c, st, lex, d, lx: fuse(r, c, st, lex, dense_weight=best[0],
                                                                             sentence_share=best[1]), test)}
    for name, kw in (("dense alone (chunk cosine)", {"dense_weight": 1.0, "sentence_share": 0.0}),
                     ("dense alone (best sentence)", {"dense_weight": 1.0, "sentence_share": 1.0}),
                     ("bm25 alone", {"dense_weight": 0.0})):
        out[name] = {s: score(lambda r, c, st, lex, d, lx, kw=kw: fuse(r, c, st, lex, **kw), p) for s, p in splits}
    out["shipped defaults"] = {s: score(lambda r, c, st, lex, d, lx: fuse(r, c, st, lex), p) for s, p in splits}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
