"""Adding one article to an index of ~1,000 against a full rebuild of the same, in one run.

    python bench/incremental.py [--docs 1000]

Articles are SQuAD dev paragraphs (../shared/data/squad-dev, CC BY-SA 4.0).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "squad-dev"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1000)
    args = ap.parse_args()
    from askdesk import Config, Desk

    docs = [json.loads(line) for line in open(DATA / "corpus.jsonl")][: args.docs + 1]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        for d in docs[:-1]:
            (corpus / f"{d['_id']}.txt").write_text(f"{d['title']}\n\n{d['text']}\n")
        extra = Path(tmp) / "extra.txt"
        extra.write_text(f"{docs[-1]['title']}\n\n{docs[-1]['text']}\n")
        cfg = Config.from_env({}, index=Path(tmp) / "index", corpus=corpus)
        desk = Desk(cfg.index, config=cfg)
        desk.embedder.embed_documents(["warm up"])
        t = time.perf_counter()
        desk.sync(corpus)
        full = time.perf_counter() - t
        t = time.perf_counter()
        stats = desk.add([extra])
        one = time.perf_counter() - t
        t = time.perf_counter()
        desk.embedder.embed_documents([extra.read_text()])
        raw_one = time.perf_counter() - t
    print(json.dumps({"articles": len(docs) - 1, "full_rebuild_s": round(full, 2), "add_one_s": round(one, 3),
                      "embed_one_article_raw_s": round(raw_one, 3), "rebuild_over_add": round(full / one, 1),
                      "embedded_on_add": stats["embedded"]}, indent=2))


if __name__ == "__main__":
    main()
