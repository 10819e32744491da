"""Live news: what one add, one removal and a watched file cost at 1k and 100k chunks, in one run.

    python bench/live.py [--big 100k] [--small 1k] [--adds 50] [--questions 60]

Prints a table (and --json). Each number is measured in this run, so the ratios hold on a shared
machine; the milliseconds are upper bounds. The model is loaded and warm before anything is timed
(the watcher's and the page's case). Indexes are bench/corpus.py's synthetic ones (SQuAD dev text,
CC BY-SA 4.0), copied so that each run starts from the same files; added articles are news
passages from RGB (../shared/data/rgb-news, see its README and licence), one record's passages an
article, titled by its question, as .txt files.

- add: `Desk.add` of one article (read, embed, write a segment and a manifest, publish), then the
  first `Desk.ask` after it (the reader loads the new segment); each the median of --reps.
- remove: `Desk.remove` of one article (a manifest with the deletion list).
- ask after adds: `Desk.ask` p50 over --questions SQuAD questions with the --adds single-article
  segments beside the big one (merge_segments=0: no merge), and again after `Desk.optimize()`.
- watched: a file written into a folder under `askdesk watch`'s Watcher until `Desk.ask` about it
  cites it (the reader polls, as a user asking again would).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import corpus as bench_corpus  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def article_file(folder: Path, para: dict, i: int) -> Path:
    f = folder / f"new-{i:04d}.txt"
    f.write_text(f"Title: {para['title']} (live {i})\nDate: 2025-06-01\n\n{para['text']}\n", encoding="utf-8")
    return f


def news_articles() -> list[dict]:
    """RGB's news passages, one record an article: {"title", "text", "question"}."""
    out = []
    for line in open(ROOT.parent / "shared" / "data" / "rgb-news" / "rgb_en_fact.jsonl", encoding="utf-8"):
        d = json.loads(line)
        passages = [x.strip() for x in d.get("positive", []) if len(x.strip()) > 40][:4]
        if passages:
            out.append({"title": d["question"][:1].upper() + d["question"][1:], "text": "\n\n".join(passages),
                        "question": d["question"] + "?"})
    return out


def copy_index(src: Path, dst: Path) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock", ".bench.json"))
    return dst


def adds_and_removes(desks: dict, work: Path, paras, questions, *, reps: int) -> dict:
    """One add then one remove of the same article in each index in turn (interleaved, so a slow
    spell of the shared machine hits every size alike); medians, and the same without the model's
    time (the embedder timed apart: what the index itself costs)."""
    out = {name: {"add_s": [], "add_index_only_s": [], "first_ask_after_add_s": [], "remove_s": []} for name in desks}
    files = work / "files"
    files.mkdir(exist_ok=True)
    for r in range(reps):
        f = article_file(files, paras[r], r)
        for name, desk in desks.items():
            emb = desk.embedder
            spent = [0.0]
            inner = emb.embed_spans  # what the writer runs the model through (embed.embed_with_spans)

            def timed_model(texts, spans, *, progress=None, inner=inner, spent=spent):
                t = time.perf_counter()
                try:
                    return inner(texts, spans, progress=progress)
                finally:
                    spent[0] += time.perf_counter() - t

            emb.embed_spans = timed_model
            try:
                t, stats = timed(lambda f=f, desk=desk: desk.add([f]))
            finally:
                del emb.embed_spans
            assert stats["added"] == 1, stats
            o = out[name]
            o["add_s"].append(t)
            o["add_index_only_s"].append(t - spent[0])
            o["first_ask_after_add_s"].append(timed(lambda r=r, desk=desk: desk.ask(questions[1 + r % 5]))[0])
            aid = next(a.id for a in desk.snapshot.with_path(str(f.resolve())))
            o["remove_s"].append(timed(lambda aid=aid, desk=desk: desk.remove([aid]))[0])
            desk.ask(questions[0])
    res = {name: {k: statistics.median(v) for k, v in o.items()} for name, o in out.items()}
    big, small = list(out)[-1], list(out)[0]
    for k in ("add_s", "add_index_only_s"):  # each add against the same add to the small index, right before it
        res[big][k.replace("_s", "_paired_ratio")] = statistics.median(
            b / s for b, s in zip(out[big][k], out[small][k]))
    return res


def ask_after_adds(desk, work: Path, paras, questions, *, adds: int, first: int) -> dict:
    """`Desk.ask` p50 with ``adds`` one-article segments beside the big one, then after `optimize`;
    two rounds each, alternated (segmented, merged, segmented again by rollback, merged again)."""
    files = work / "files-adds"
    files.mkdir(exist_ok=True)
    for i in range(adds):
        desk.add([article_file(files, paras[first + i], first + i)])
    out = {"segments_after_adds": len(desk.snapshot.segments)}

    def p50() -> float:
        for q in questions[:5]:
            desk.ask(q)
        return 1000 * statistics.median([timed(lambda q=q: desk.ask(q))[0] for q in questions])

    seg1 = p50()
    out["optimize_s"], merged = timed(desk.optimize)
    out["segments_after_optimize"] = merged["segments"]
    mer1 = p50()
    out["ask_p50_segmented_ms"] = seg1
    out["ask_p50_merged_ms"] = mer1
    return out


def watched(index: Path, work: Path, cfg, emb, paras, n: int = 5) -> list[float]:
    """Seconds from a file landing in a watched folder to `Desk.ask` answering from it."""
    from askdesk import Desk
    from askdesk.articles.watch import Watcher

    ix = copy_index(index, work / "ix-watch")
    folder = work / "watched"
    folder.mkdir(exist_ok=True)
    writer = Desk(ix, config=cfg.replace(index=ix, corpus=folder), embedder=emb)  # as `askdesk watch` sets it
    writer.merge_in_background = True
    reader = Desk(ix, config=cfg.replace(index=ix), embedder=emb)
    reader.ask("warm up")
    writer.snapshot  # loaded, as `askdesk watch` has it after its first sync  # noqa: B018
    lines: list[str] = []
    w = Watcher(writer, folder, log=lines.append)
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    while not any(line.startswith("watching") for line in lines):
        time.sleep(0.01)
    out = []
    for i in range(n):
        para = paras[-1 - i]  # not among the ones added above
        question = para["question"]
        start = time.perf_counter()
        article_file(folder, para, 900 + i)
        while True:
            ans = reader.ask(question)
            if any(c.path == f"new-{900 + i:04d}.txt" for c in ans.citations + ans.related):
                break
            if time.perf_counter() - start > 60:
                raise SystemExit(f"not answered from the watched file within 60 s: {lines[-5:]}")
            time.sleep(0.02)
        out.append(time.perf_counter() - start)
    w.stop.set()
    t.join(timeout=30)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", default="100k")
    ap.add_argument("--small", default="1k")
    ap.add_argument("--adds", type=int, default=50)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--questions", type=int, default=60)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from askdesk import Config
    from askdesk.models.embed import SentenceTransformerEmbedder

    cfg = Config.from_env({})
    emb = SentenceTransformerEmbedder(cfg.model, batch_size=cfg.batch_size, max_wordpieces=cfg.max_wordpieces,
                                      quantize=cfg.int8)
    emb.embed_documents(["warm up"])
    emb.embed_query("warm up")
    paras = news_articles()
    questions = bench_corpus.questions(args.questions)
    results: dict = {"load_average": os.getloadavg()[0]}
    sizes = {"small": bench_corpus.parse_size(args.small), "big": bench_corpus.parse_size(args.big)}
    for n in sizes.values():
        index = bench_corpus.RESULTS / f"synthetic-{bench_corpus.size_label(n)}"
        bench_corpus.build_synthetic(index, n, bench_corpus.CachedEmbedder(emb), cfg)
    from askdesk import Desk

    with tempfile.TemporaryDirectory(dir=bench_corpus.RESULTS) as tmp:
        work = Path(tmp)
        desks = {}
        for name, n in sizes.items():
            ix = copy_index(bench_corpus.RESULTS / f"synthetic-{bench_corpus.size_label(n)}", work / f"ix-{name}")
            desks[name] = Desk(ix, config=cfg.replace(index=ix, merge_segments=0), embedder=emb)
            desks[name].ask(questions[0])  # loaded and warm
            results[name] = {"chunks": desks[name].info()["n_chunks"]}
        for name, r in adds_and_removes(desks, work, paras, questions, reps=args.reps).items():
            results[name].update(r)
        results["big"].update(ask_after_adds(desks["big"], work, paras, questions, adds=args.adds,
                                             first=args.reps))
        print(json.dumps(results), flush=True)
        index = bench_corpus.RESULTS / f"synthetic-{bench_corpus.size_label(sizes['big'])}"
        results["watched_s"] = watched(index, work, cfg, emb, paras)
    results["load_average_end"] = os.getloadavg()[0]
    b, s = results["big"], results["small"]
    rows = [
        ("add one article (median; ratio: median of paired adds)", f"{b['add_s']:.3f} s", f"{s['add_s']:.3f} s",
         f"{b['add_paired_ratio']:.2f}x", "<= 2 s, <= 1.1x"),
        ("  the same, less the model's time", f"{1000 * b['add_index_only_s']:.1f} ms",
         f"{1000 * s['add_index_only_s']:.1f} ms", f"{b['add_index_only_paired_ratio']:.2f}x", ""),
        ("first ask after the add", f"{1000 * b['first_ask_after_add_s']:.0f} ms",
         f"{1000 * s['first_ask_after_add_s']:.0f} ms", "", ""),
        ("remove one article (median)", f"{b['remove_s']:.3f} s", f"{s['remove_s']:.3f} s", "", "<= 1 s"),
        (f"ask p50, {b.get('segments_after_adds')} segments vs merged", f"{b['ask_p50_segmented_ms']:.1f} ms",
         f"{b['ask_p50_merged_ms']:.1f} ms (merged)", f"{b['ask_p50_segmented_ms'] / b['ask_p50_merged_ms']:.2f}x",
         "<= 1.2x"),
        ("file lands -> answered (median of 5)", f"{statistics.median(results['watched_s']):.2f} s", "", "", "<= 5 s"),
        ("optimize (merge all)", f"{b['optimize_s']:.1f} s", "", "", ""),
    ]
    print(f"\n| measure | {b['chunks']:,} chunks | {s['chunks']:,} chunks | ratio | target |\n|---|---:|---:|---:|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"\nload average {results['load_average']:.1f} at the start, {results['load_average_end']:.1f} at the end")
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
