"""askdesk's benchmark suite: one command, a table, and bench/results/latest.json.

    python bench/run.py                     # 1k, 10k, 100k chunks, load test, peers, ANN
    python bench/run.py --sizes 1k,10k      # chosen sizes
    python bench/run.py --quick             # smoke run: 1k only, fewer questions, no load/peers/ANN, no docs
    python bench/run.py --quick --sizes 100 --data tests/fixtures/squad-mini   # the smoke test's run

What it measures, each ratio timed in the same run (absolute times drift on a shared machine):
- index build throughput of `Desk.build` on a folder of articles against one raw
  `SentenceTransformer.encode` of every article's text (articles fit the 256-wordpiece window);
- `Desk.ask` latency p50/p95 against the bare minimum (raw encode of the question + one FAISS search);
- cold start of `askdesk ask` (subprocess) and `askdesk --help`;
- peak RSS of a process that opens each index and answers, and that minus the model alone;
- 20 simultaneous users through the chat page's API (`bench/load.py`, at 10k);
- LlamaIndex and LangChain on the same corpus and model (`bench/peers.py`, in its own venv);
- approximate FAISS indexes against exact search at 100k (recall@10, latency).

Corpora and embeddings are cached under bench/results/ (git-ignored): the first 10k run embeds
~15k texts (~10 minutes here); later runs reuse the vectors. The table also goes into
docs/benchmarks.md, and a summary into README.md (between `<!-- bench:latest -->` markers). See that file for the
method and docs/scaling.md for what comes past 100k.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure  # noqa: E402
from report import DOC, README, render, summary, targets, write_doc  # noqa: E402

import corpus  # noqa: E402
from corpus import RESULTS, ROOT, parse_size, size_label  # noqa: E402

PEERS_PYTHON = "/tmp/peers-venv/bin/python"
REAL_TEXT_MAX = 10_000  # sizes up to this are real articles embedded by the real model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="askdesk benchmarks: build, ask, cold start, memory, load, peers.")
    ap.add_argument("--sizes", help="index sizes in chunks (default 1k,10k,100k; 1k with --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1k, 50 questions, 200-article build, "
                    "no load test, peers or ANN")
    ap.add_argument("--data", type=Path, default=corpus.DATA,
                    help=f"SQuAD set in the BEIR layout: corpus.jsonl, queries.jsonl (default {corpus.DATA})")
    ap.add_argument("--questions", type=int, default=200, help="questions per latency measurement")
    ap.add_argument("--build-articles", type=int, default=1000, help="articles in the timed build (and the peers)")
    ap.add_argument("--no-build", action="store_true", help="skip the timed build (and so the peers)")
    ap.add_argument("--no-load", action="store_true", help="skip the 20-user load test")
    ap.add_argument("--no-peers", action="store_true", help="skip LlamaIndex and LangChain")
    ap.add_argument("--no-ann", action="store_true", help="skip the approximate-index comparison")
    ap.add_argument("--users", type=int, default=20, help="simultaneous users in the load test")
    ap.add_argument("--load-concurrency", default="", help="also load-test with these ASK_CONCURRENCY values, e.g. 1,4")
    ap.add_argument("--real-vectors", type=Path, metavar="INDEX",
                    help="an askdesk index of real text (e.g. the realtimeqa-dev index `askdesk eval qa --keep-index` "
                    "kept): the shipped IVF's recall on its vectors (measure.ann_real)")
    ap.add_argument("--real-questions", type=Path, metavar="JSONL",
                    help="questions for --real-vectors, one JSON object a line with 'question' or 'text' "
                    "(default: the bench's SQuAD questions)")
    ap.add_argument("--peers-python", default=PEERS_PYTHON, help=f"python of the peers' venv (default {PEERS_PYTHON})")
    ap.add_argument("--out", default=str(RESULTS / "latest.json"))
    ap.add_argument("--no-docs", action="store_true",
                    help="do not rewrite the tables in docs/benchmarks.md and README.md (implied by --quick)")
    args = ap.parse_args(argv)
    corpus.DATA = args.data  # read by corpus.paragraphs and corpus.questions
    if args.quick:
        args.sizes, args.questions, args.build_articles = args.sizes or "1k", 50, 200
        args.no_load = args.no_peers = args.no_ann = True
        args.no_docs = True  # a smoke run never replaces the full run's tables
    sizes = [parse_size(s) for s in (args.sizes or "1k,10k,100k").split(",") if s.strip()]
    RESULTS.mkdir(parents=True, exist_ok=True)

    from askdesk import Config
    from askdesk.models.embed import SentenceTransformerEmbedder

    cfg = Config.from_env({})
    emb = SentenceTransformerEmbedder()
    qs = corpus.questions()[::11][: args.questions]  # spread over the articles
    res: dict = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "argv": sys.argv[1:],
                 "machine": _machine(), "loadavg_start": os.getloadavg(), "sizes": {},
                 "config": {"int8": cfg.int8, "ann_above": cfg.ann_above}}
    t_all = time.perf_counter()

    build_folder = None
    if not args.no_build:
        build_folder = RESULTS / "corpora" / size_label(args.build_articles)
        corpus.write_corpus(build_folder, args.build_articles, emb.fits)
        _say(f"build: {args.build_articles} articles, raw encode then Desk.build")
        res["build"] = measure.build(build_folder, emb, cfg)
        _say(_fmt(res["build"]))
        _save(res, args.out)
        if not args.no_peers:  # right after askdesk's build, so both see the same machine load
            _say("peers: LlamaIndex and LangChain")
            res["peers"] = peers(build_folder, res["build"], qs, args.peers_python, cfg, emb)
            _say(json.dumps(res["peers"]))

    res.update(measure.help_time())
    res["model"] = measure.probe("model")  # the question encoder and the reader, as a serving process loads them
    res["model_only_mb"] = res["model"]["peak_mb"]
    for n in sizes:
        label = size_label(n)
        index = RESULTS / "indexes" / label
        _say(f"{label}: preparing the index")
        r: dict = {}
        if n <= REAL_TEXT_MAX:
            folder = RESULTS / "corpora" / label
            corpus.write_corpus(folder, n, emb.fits)
            r.update(measure.ensure_index(folder, index, emb, cfg))
            r["vectors"] = "real"
        else:
            from corpus import CachedEmbedder

            corpus.build_synthetic(index, n, CachedEmbedder(emb), cfg)
            r["vectors"] = "synthetic"
        _say(f"{label}: latency")
        r.update(measure.latency(index, emb, cfg, qs))
        _say(f"{label}: cold start and memory")
        r.update(measure.cold_start(index, qs[0], runs=1 if args.quick else 3))
        r.update(measure.memory(index, qs[:50], res["model"]))
        from askdesk import Desk

        r["chunks"] = Desk.open(index, config=cfg.replace(index=index), embedder=emb).info()["n_chunks"]
        res["sizes"][label] = r
        if n >= 50_000 and not args.no_ann:
            _say(f"{label}: approximate indexes against exact search")
            try:
                r["ann"] = measure.ann(index, emb, cfg, qs, alternatives=n < 500_000)
            except Exception as e:  # noqa: BLE001 - one failed experiment must not lose the run
                r["ann_error"] = f"{type(e).__name__}: {e}"[:500]
                _say(f"ANN failed: {r['ann_error']}")
        _save(res, args.out)
        _say(_fmt({k: v for k, v in r.items() if not isinstance(v, dict)}))

    if args.real_vectors and not args.no_ann:
        _say(f"ANN on real vectors: {args.real_vectors}")
        real_qs = qs
        if args.real_questions:
            rows = [json.loads(line) for line in args.real_questions.read_text().splitlines() if line.strip()]
            real_qs = [r.get("question") or r["text"] for r in rows]
        res["ann_real"] = measure.ann_real(args.real_vectors, real_qs, emb)
        _save(res, args.out)

    if not args.no_load:
        import load

        label = "10k" if "10k" in res["sizes"] else next(iter(res["sizes"]))
        res["load"] = []
        for conc in [None] + [int(c) for c in args.load_concurrency.split(",") if c.strip()]:
            _say(f"load: {args.users} users at {label}, ASK_CONCURRENCY={conc or 'shipped'}")
            try:
                # The chat event (what a browser user does), which the target is judged on.
                r = load.run(RESULTS / "indexes" / label, _corpus_of(label), qs, users=args.users,
                             concurrencies=(conc,), endpoints=("chat",))
                out = {**r["summary"][0], "users": r["users"], "per_user": r["per_user"],
                       "concurrency": conc or r["shipped_concurrency"]}
            except Exception as e:  # noqa: BLE001 - recorded; the rest of the run goes on
                _say(f"load test failed: {type(e).__name__}: {e}")
                continue
            out["size"] = label
            res["load"].append(out)
            _say(_fmt(out))
            _save(res, args.out)
        if "100k" in res["sizes"]:
            res["load_100k"] = load_100k(load, qs)

    res["loadavg_end"] = os.getloadavg()
    res["total_s"] = time.perf_counter() - t_all
    res["targets"] = targets(res)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    table = render(res)
    print("\n" + table)
    if not args.no_docs:
        write_doc(table)
        write_doc(summary(res), README)
    print(f"\nwrote {args.out}" + ("" if args.no_docs else f", {DOC.relative_to(ROOT)} and README.md"))
    return 0


def peers(folder: Path, build: dict, questions: list[str], python: str, cfg, emb) -> dict:
    """The peers' index and query times on ``folder``, as ratios to askdesk's ``build`` of the same
    folder and its query latency, measured right after them."""
    from askdesk.articles.ingest import read_articles

    if not Path(python).exists():
        return {"error": f"{python} not found; create the peers' venv as docs/benchmarks.md shows"}
    articles, _ = read_articles([folder], root=folder)
    spec = {"docs": [{"title": a.title, "text": a.text} for a in articles], "questions": questions, "k": cfg.top_k}
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=RESULTS, delete=False) as f:
        json.dump(spec, f)
    out: dict = {}
    try:
        for name in ("llamaindex", "langchain"):
            p = subprocess.run([python, str(ROOT / "bench" / "peers.py"), f.name, name], env=measure.env(),
                               capture_output=True, text=True)
            try:
                out[name] = json.loads(p.stdout.strip().splitlines()[-1])[name]
            except (IndexError, ValueError, KeyError):
                out[name] = {"error": f"exit {p.returncode}: {p.stderr[-300:]}"}
    finally:
        os.unlink(f.name)
    b = build
    index = RESULTS / "indexes" / folder.name
    measure.ensure_index(folder, index, emb, cfg)  # the cached benchmark index: no model work once cached
    lat = measure.latency(index, emb, cfg, questions)
    out["askdesk"] = {"index_s": b["build_s"], "raw_encode_s": b["raw_encode_s"],
                      "retrieve_p50_ms": lat["retrieve_p50_ms"], "ask_p50_ms": lat["ask_p50_ms"]}
    for name in ("llamaindex", "langchain"):
        p = out[name]
        if "error" not in p:
            p["index_over_askdesk"] = p["index_s"] / b["build_s"]
            p["query_over_askdesk_retrieve"] = p["query_p50_ms"] / lat["retrieve_p50_ms"]
            p["query_over_askdesk_ask"] = p["query_p50_ms"] / lat["ask_p50_ms"]
    return out


# Issue 26's load at 100k chunks, reader on, over plain HTTP (`POST /gradio_api/call/ask`):
# (name, users, questions each, seconds between a user's questions or None: no think time).
LOAD_100K = (("50 users, no think time", 50, 3, None), ("50 users, one question every 5 s", 50, 12, 5.0),
             ("100 users, no think time", 100, 2, None))


def _corpus_of(label: str) -> Path:
    """The page's corpus folder for an index: its articles' folder (1k, 10k), or an empty one for
    the synthetic indexes, which have none (nothing to sync)."""
    folder = RESULTS / "corpora" / label
    if not folder.is_dir():
        folder = RESULTS / "corpora" / "empty"
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def load_100k(load, qs: list[str]) -> list[dict]:
    """Each `LOAD_100K` scenario on one fresh page over the 100k index."""
    empty = _corpus_of("100k")
    out = []
    for name, users, per_user, every in LOAD_100K:
        _say(f"load at 100k: {name}")
        try:
            r = load.run(RESULTS / "indexes" / "100k", empty, qs, users=users, per_user=per_user,
                         endpoints=("ask-http",), every=every)
        except Exception as e:  # noqa: BLE001 - recorded; the rest of the run goes on
            out.append({"name": name, "error": f"{type(e).__name__}: {e}"[:300]})
            continue
        run = r["runs"][0]
        out.append({"name": name, "users": users, "per_user": per_user, "every_s": every,
                    **{k: run.get(k) for k in ("requests", "answered", "told_to_retry", "errors", "p50_ms", "p95_ms",
                                               "max_ms", "throughput_qps", "server_cpu_ms_per_answer")}})
        _say(_fmt(out[-1]))
    return out


def _save(res: dict, out: str) -> None:
    """Partial results after each phase, so a crash late in a long run loses nothing measured."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(res, indent=2))


def _machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version()}


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _fmt(d: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items()
                     if not isinstance(v, (dict, list)))


if __name__ == "__main__":
    sys.exit(main())
