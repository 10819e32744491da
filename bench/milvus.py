"""The Milvus store (a Milvus Lite file) against the index folder at 100k chunks, each number with
its baseline from the same run (issue 17). Stages, each its own command (results merged into
bench/results/milvus.json):

    python bench/milvus.py prepare        # the 100k folder index (bench/corpus.py) and a copy in Milvus Lite
    python bench/milvus.py ask            # Desk.ask / Desk.retrieve p50, p95, the two interleaved; sentence vectors
                                          # read from the store against embedded at question time
    python bench/milvus.py add            # adding one article, three rounds, alternating (on copies)
    python bench/milvus.py cold           # cold start (`askdesk ask` in a fresh process) and peak memory
    python bench/milvus.py squad          # squad-dev recall@5, MRR@10: folder, store, store with Milvus' English
                                          # analyzer, question-time sentence vectors
    python bench/milvus.py ray            # the Ray job's throughput against Desk.build, into a folder and a store

The 100k index is bench/corpus.py's synthetic one (real text and sentence vectors, chunk vectors
made from them); `prepare` copies it into the store with `upsert.copy`, vectors as they are. The
folder index is FAISS IVF (fp16) at that size; the store searches exactly (FLAT), as Milvus Lite
offers no other index but IVF_FLAT.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402
from corpus import RESULTS  # noqa: E402

OUT = RESULTS / "milvus.json"
INDEX = RESULTS / "indexes" / "100k"
STORE = RESULTS / "milvus" / "100k.db"
SQUAD = corpus.DATA
PY = sys.executable


def pct(xs, p: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))], 2)


def save(key: str, value) -> None:
    res = json.loads(OUT.read_text()) if OUT.is_file() else {}
    res[key] = {**value, "at": time.strftime("%Y-%m-%d %H:%M"), "loadavg": [round(x, 2) for x in os.getloadavg()]}
    OUT.write_text(json.dumps(res, indent=1))
    print(key, json.dumps(res[key]), flush=True)


def size_mb(path: Path) -> float:
    if path.is_file():
        return round(path.stat().st_size / 1e6, 1)
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


def setup():
    from askdesk import Config
    from askdesk.models.embed import SentenceTransformerEmbedder

    return Config.from_env({}, index=INDEX), SentenceTransformerEmbedder()


def questions(n: int) -> list[str]:
    return corpus.questions()[::11][:n]  # spread over the articles, as bench/run.py


# ---- stages ----------------------------------------------------------------------------------------

def prepare(args) -> None:
    from askdesk import Desk
    from askdesk.store import upsert
    from askdesk.store.milvus import MilvusStore

    cfg, emb = setup()
    corpus.build_synthetic(INDEX, 100_000, corpus.CachedEmbedder(emb), cfg)
    store = MilvusStore(str(STORE))
    if store.live() is None:
        t = time.perf_counter()
        n = upsert.copy(Desk.open(INDEX, config=cfg, embedder=emb).snapshot, store,
                        progress=lambda d, total, desc: d % 5000 < 256 and print(f"  {desc} {d}/{total}", flush=True))
        save("prepare", {"chunks": n, "copy_s": round(time.perf_counter() - t, 1), "store_mb": size_mb(STORE),
                         "folder_mb": size_mb(INDEX)})
    store.close()


def ask(args) -> None:
    from askdesk import Desk
    from askdesk.store.milvus import MilvusStore

    cfg, emb = setup()
    qs = questions(args.questions)

    def desks():
        return Desk.open(INDEX, config=cfg, embedder=emb), Desk.open(config=cfg, embedder=emb, store=str(STORE))

    def interleaved(what: str) -> tuple[dict, int]:
        """Each question to both desks, which goes first alternating: both see the same machine load."""
        folder, store = desks()
        for q in qs[:10]:  # warm up: the encoder, first-use loads
            getattr(folder, what)(q), getattr(store, what)(q)
        times: dict[str, list[float]] = {"folder": [], "store": []}
        same = 0
        for i, q in enumerate(qs):
            pairs = (("folder", folder), ("store", store))
            got = {}
            for name, desk in (pairs if i % 2 else pairs[::-1]):
                t = time.perf_counter()
                got[name] = getattr(desk, what)(q)
                times[name].append((time.perf_counter() - t) * 1e3)
            same += (got["folder"].text == got["store"].text if what == "ask" else
                     [h.chunk.id for h in got["folder"]] == [h.chunk.id for h in got["store"]])
        store.close()
        return {f"{name}_{what}_{p}_ms": pct(v, q) for name, v in times.items()
                for p, q in (("p50", 50), ("p95", 95))}, same

    out, same = interleaved("ask")
    more, same_hits = interleaved("retrieve")  # fresh desks: nothing cached from the asks
    out.update(more)
    out.update({"questions": len(qs), "same_answer": same, "same_top5_chunks": same_hits,
                "folder_vectors": Desk.open(INDEX, config=cfg, embedder=emb).snapshot.manifest.get("faiss")})
    # Sentence vectors embedded at question time instead of read from the store (the alternative).
    store = Desk.open(config=cfg, embedder=emb, store=str(STORE))
    late = Desk(config=cfg, embedder=emb, store=str(STORE))
    late.store = MilvusStore(str(STORE), sentences="question")
    lt, lsame = [], 0
    n_late = min(len(qs), args.late_questions)
    for q in qs[:n_late]:
        t = time.perf_counter()
        a = late.ask(q)
        lt.append((time.perf_counter() - t) * 1e3)
        lsame += a.text == store.ask(q).text
    out.update({"question_time_sentences_ask_p50_ms": pct(lt, 50), "question_time_sentences_ask_p95_ms": pct(lt, 95),
                "question_time_sentences_questions": n_late, "question_time_sentences_same_answer": lsame})
    store.close()
    save("ask", out)


def _new_articles(n: int, emb) -> list[tuple[str, str]]:
    paras = corpus.paragraphs(emb.fits)
    return corpus.variations(paras, n, seed=4242, blocks=(2, 4))


def add(args) -> None:
    from askdesk import Desk

    cfg, emb = setup()
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        shutil.copytree(INDEX, tmp / "index", symlinks=True)
        shutil.copytree(STORE, tmp / "store.db") if STORE.is_dir() else shutil.copy2(STORE, tmp / "store.db")
        copy_s = time.perf_counter() - t
        files = []
        for i, (title, text) in enumerate(_new_articles(2 * args.rounds, emb)):
            files.append(tmp / "new" / f"{i}.txt")
            files[-1].parent.mkdir(exist_ok=True)
            files[-1].write_text(f"{title}\n\n{text}\n")
        folder = Desk.open(tmp / "index", config=cfg.replace(index=tmp / "index"), embedder=emb)
        store = Desk.open(config=cfg, embedder=emb, store=str(tmp / "store.db"))
        emb.embed_documents(["warm up the model"])
        times: dict[str, list[float]] = {"folder": [], "store": []}
        for r in range(args.rounds):
            pairs = (("folder", folder), ("store", store))
            for name, desk in (pairs if r % 2 else pairs[::-1]):
                f = files[2 * r + (name == "store")]
                t = time.perf_counter()
                stats = desk.add([f])
                times[name].append(time.perf_counter() - t)
                assert stats["added"] == 1, stats
                desk.ask("What was added last?")  # the write is visible to the next question
        store.close()
    save("add", {"folder_add_s": [round(x, 1) for x in times["folder"]],
                 "store_add_s": [round(x, 2) for x in times["store"]],
                 "folder_add_median_s": round(statistics.median(times["folder"]), 1),
                 "store_add_median_s": round(statistics.median(times["store"]), 2), "copies_s": round(copy_s, 1)})


def cold(args) -> None:
    q = questions(1)[0]
    env = {**os.environ, "ASKDESK_INDEX": str(INDEX)}
    times: dict[str, list[float]] = {"folder": [], "store": []}
    for r in range(args.rounds):
        for name in (("folder", "store") if r % 2 else ("store", "folder")):
            where = ["--index", str(INDEX)] if name == "folder" else ["--store", str(STORE)]
            t = time.perf_counter()
            p = subprocess.run([PY, "-m", "askdesk", "ask", q, *where], env=env, capture_output=True, text=True)
            times[name].append(time.perf_counter() - t)
            assert p.returncode == 0, p.stderr[-800:]
    qfile = RESULTS / "milvus-questions.json"
    qfile.write_text(json.dumps(questions(50)))
    model = _json([PY, str(Path(__file__).parent / "probe.py"), "model"])
    folder = _json([PY, str(Path(__file__).parent / "probe.py"), "serve", str(INDEX), str(qfile)])
    store = _json([PY, __file__, "probe-store", str(STORE), str(qfile)])
    save("cold", {"folder_cold_s": round(statistics.median(times["folder"]), 2),
                  "store_cold_s": round(statistics.median(times["store"]), 2),
                  "folder_cold_runs_s": [round(x, 2) for x in times["folder"]],
                  "store_cold_runs_s": [round(x, 2) for x in times["store"]],
                  "model_only_peak_mb": round(model["peak_mb"]), "folder_peak_mb": round(folder["peak_mb"]),
                  "folder_beyond_model_mb": round(folder["peak_mb"] - model["peak_mb"]),
                  "store_peak_mb": round(store["peak_mb"]), "store_engine_peak_mb": round(store["engine_peak_mb"]),
                  "store_beyond_model_mb": round(store["peak_mb"] + store["engine_peak_mb"] - model["peak_mb"]),
                  "store_load_s": round(store["load_s"], 2), "folder_load_s": round(folder["load_s"], 2)})


def _json(cmd: list[str]) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
    if p.returncode:
        raise RuntimeError(f"{cmd[1:3]} failed: {p.stderr[-800:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def probe_store(db: str, qfile: str) -> None:
    """In a fresh process: open the store, answer the questions; peak RSS of this process and of
    its Milvus Lite engine (a child process)."""
    from probe import status_mb

    from askdesk import Desk

    qs = json.load(open(qfile))
    t = time.perf_counter()
    desk = Desk.open(store=db)
    load_s = time.perf_counter() - t
    for q in qs:
        desk.ask(q)
    engine = 0.0
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmHWM:"):
                    engine += int(line.split()[1]) / 1024
    print(json.dumps({"peak_mb": status_mb("VmHWM"), "engine_peak_mb": engine, "load_s": load_s}))


def squad(args) -> None:
    """`askdesk eval retrieval` on squad-dev: the folder, the store (the real command, built through
    the store's writer), the store with Milvus' English analyzer (a copy of the folder's vectors),
    and sentence vectors embedded at question time (on a subset)."""
    from askdesk import Desk
    from askdesk.store import upsert
    from askdesk.store.milvus import MilvusStore
    from askdesk.surface import eval as ev

    kept, db = RESULTS / "squad-index", RESULTS / "milvus" / "squad.db"
    out = {}
    for name, extra in (("folder", ["--keep-index", str(kept)]), ("store", ["--store", str(db)])):
        t = time.perf_counter()
        p = subprocess.run([PY, "-m", "askdesk", "eval", "retrieval", str(SQUAD), "--json", *extra],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-800:]
        r = json.loads(p.stdout)
        out[name] = {k: r[k] for k in ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "n_queries",
                                       "query_p50_ms", "index_s")}
        out[name]["wall_s"] = round(time.perf_counter() - t)
    english = MilvusStore(f"{db}#english", analyzer="english")
    if english.live() is None:
        upsert.copy(Desk.open(kept).snapshot, english)
    english.close()
    p = subprocess.run([PY, "-m", "askdesk", "eval", "retrieval", str(SQUAD), "--json", "--store",
                        f"{db}#english"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-800:]
    r = json.loads(p.stdout)
    out["store_english_analyzer"] = {k: r[k] for k in ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")}
    # Question-time sentence vectors, against stored ones on the same queries.
    articles, doc_of = ev.read_corpus(SQUAD)
    qrels = ev.read_qrels(SQUAD)
    queries = [q for q in ev.read_jsonl(SQUAD / "queries.jsonl", "queries") if qrels.get(str(q["_id"]))]
    queries = queries[::max(1, len(queries) // args.late_queries)][:args.late_queries]
    _, emb = setup()
    stored = Desk(store=f"{db}#eval", embedder=emb)
    late = Desk(store=f"{db}#eval", embedder=emb)
    late.store = MilvusStore(f"{db}#eval", sentences="question")
    for name, desk in (("stored_sentences_subset", stored), ("question_time_sentences_subset", late)):
        r5, mrr, ms = [], [], []
        for q in queries:
            t = time.perf_counter()
            hits = desk.retrieve(str(q["text"]), k=ev.RETRIEVE_CHUNKS)
            ms.append((time.perf_counter() - t) * 1e3)
            ranked = list(dict.fromkeys(doc_of[h.chunk.article_id] for h in hits))[:10]
            r5.append(ev.recall_at_k(ranked, qrels[str(q["_id"])], 5))
            mrr.append(ev.mrr_at_k(ranked, qrels[str(q["_id"])], 10))
        out[name] = {"recall@5": round(statistics.mean(r5), 4), "mrr@10": round(statistics.mean(mrr), 4),
                     "n_queries": len(queries), "retrieve_p50_ms": pct(ms, 50)}
    stored.close()
    out["store_db_mb"] = size_mb(db)
    save("squad", out)


def ray(args) -> None:
    """The same articles embedded four ways, alternating: Desk.build and the Ray job, into a folder and a store."""
    from askdesk import Desk

    cfg, emb = setup()
    folder = RESULTS / "corpora" / f"ray-{args.articles}"
    corpus.write_corpus(folder, args.articles, emb.fits)
    emb.embed_documents(["warm up the model"])
    out = {"articles": args.articles}
    for how in ("local", "ray"):
        for where in ("folder", "store"):
            with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
                c = cfg.replace(index=Path(tmp) / "index", ray="local" if how == "ray" else "")
                kw = {"store": str(Path(tmp) / "s.db")} if where == "store" else {}
                t = time.perf_counter()
                desk = Desk.build(folder, config=c, embedder=emb, **kw)
                s = time.perf_counter() - t
                n = desk.info()["n_chunks"]
                desk.close()
            out[f"{how}_{where}_s"] = round(s, 1)
            out[f"{how}_{where}_chunks_per_s"] = round(n / s, 1)
            out["chunks"] = n
            print(how, where, round(s, 1), flush=True)
    save("ray", out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=["prepare", "ask", "add", "cold", "squad", "ray", "probe-store"])
    ap.add_argument("rest", nargs="*")
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--late-questions", type=int, default=10, help="asks with question-time sentence vectors")
    ap.add_argument("--late-queries", type=int, default=300, help="squad queries with question-time sentence vectors")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--articles", type=int, default=400, help="articles in the Ray job's timed build")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    STORE.parent.mkdir(parents=True, exist_ok=True)
    if args.stage == "probe-store":
        probe_store(*args.rest)
        return
    {"prepare": prepare, "ask": ask, "add": add, "cold": cold, "squad": squad, "ray": ray}[args.stage](args)


if __name__ == "__main__":
    main()
