"""The question encoder: askdesk's numpy MiniLM against torch on one thread, same run.

    python bench/question_encoder.py [INDEX]   # INDEX: also time Desk.ask both ways on it

The CLI encodes questions in numpy (no torch import: fast cold start); a long-running page
switches to torch once it has loaded in the background (`serve_questions_with_torch`). Prints
JSON: p50/p95 ms of each encoder on 200 squad-dev questions, and of `Desk.ask` when INDEX is given.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import corpus  # noqa: E402


def timed(fn, items) -> dict:
    for x in items[:10]:
        fn(x)
    ms = []
    for x in items:
        t = time.perf_counter()
        fn(x)
        ms.append((time.perf_counter() - t) * 1e3)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def main() -> None:
    from askdesk import Config, Desk
    from askdesk.embed import SentenceTransformerEmbedder

    qs = corpus.questions()[::11][:200]
    emb = SentenceTransformerEmbedder()
    desk = Desk.open(sys.argv[1], config=Config.from_env({}), embedder=emb) if len(sys.argv) > 1 else None
    out = {"numpy_encode": timed(emb.embed_query, qs)}
    if desk:
        out["numpy_ask"] = timed(desk.ask, qs)
    emb.serve_questions_with_torch().join()
    out["torch1_encode"] = timed(emb.embed_query, qs)
    if desk:
        out["torch1_ask"] = timed(desk.ask, qs)
    out["numpy_over_torch1_encode_p50"] = round(out["numpy_encode"]["p50_ms"] / out["torch1_encode"]["p50_ms"], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
