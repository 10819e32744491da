"""Load: simultaneous users asking through the running chat page's API.

Starts `python app.py` on a free loopback port with ASKDESK_INDEX/ASKDESK_CORPUS pointing at a
benchmark index, connects one `gradio_client.Client` per user (each its own session), releases
them together, and has each ask a few questions in one conversation (the chat history goes back
in with each question, as the page does). Latency is submit to final answer, per question.

    python bench/load.py --index bench/results/indexes/10k --corpus bench/results/corpora/10k

With ``--concurrency N`` the page is started with ``askdesk.ui.ASK_CONCURRENCY = N`` (patched
in the server process; the shipped value is what `app.py` uses).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: Path, corpus: Path, port: int, concurrency: int | None, log: Path, *,
                 torch_questions: bool = True) -> subprocess.Popen:
    from measure import env

    if concurrency is None and torch_questions:
        cmd = [sys.executable, str(ROOT / "app.py")]
    else:
        cmd = [sys.executable, "-c", "import sys, askdesk.ui as u; c = int(sys.argv[1]); "
                                     "u.ASK_CONCURRENCY = c or u.ASK_CONCURRENCY; u.ASK_TORCH_QUESTIONS = sys.argv[2] == '1'; "
                                     "sys.exit(u.main([]))", str(concurrency or 0), str(int(torch_questions))]
    e = env(ASKDESK_INDEX=str(index), ASKDESK_CORPUS=str(corpus), GRADIO_SERVER_NAME="127.0.0.1",
            GRADIO_SERVER_PORT=str(port))
    return subprocess.Popen(cmd, cwd=ROOT, env=e, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the page exited with {proc.returncode} before serving")
        try:
            urllib.request.urlopen(url, timeout=2).read(100)
            return time.perf_counter() - t0
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the page did not answer within {timeout:.0f} s")


def run(index: Path, corpus: Path, questions: list[str], *, users: int = 20, per_user: int = 3,
        concurrency: int | None = None, log: Path | None = None, torch_questions: bool = True,
        settle_s: float = 15.0) -> dict:
    from gradio_client import Client

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = log or ROOT / "bench" / "results" / f"load-server-{concurrency or 'default'}.log"
    proc = start_server(index, corpus, port, concurrency, log, torch_questions=torch_questions)
    try:
        ready_s = wait_ready(url, proc)
        time.sleep(settle_s)  # the page loads its torch question encoder in the background first
        clients = [Client(url, verbose=False) for _ in range(users)]
        api, n_inputs = _ask_endpoint(clients[0])
        no_dates = [None] * (n_inputs - 2)  # the page's date fields (since, until, as of), left empty
        lat: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        gate = threading.Barrier(users)

        def user(i: int) -> None:
            chat: list = []
            gate.wait()
            for j in range(per_user):
                q = questions[(i * per_user + j) % len(questions)]
                t = time.perf_counter()
                try:
                    out = clients[i].predict(q, chat, *no_dates, api_name=api)
                    chat = out[1]
                    ok = isinstance(chat, list) and chat and chat[-1].get("role") == "assistant" \
                        and "⚠️" not in str(chat[-1].get("content"))
                    with lock:
                        lat.append((time.perf_counter() - t) * 1e3)
                        if not ok:
                            errors.append(f"bad reply: {str(chat[-1])[:200] if chat else chat!r}")
                except Exception as e:  # noqa: BLE001 - every failure counts as an error
                    with lock:
                        errors.append(f"{type(e).__name__}: {str(e)[:200]}")

        server_cpu0, client_cpu0 = _cpu_s(proc.pid), time.process_time()
        t0 = time.perf_counter()
        threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        wall = time.perf_counter() - t0
        server_cpu, client_cpu = _cpu_s(proc.pid) - server_cpu0, time.process_time() - client_cpu0
        for c in clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"users": users, "per_user": per_user, "torch_questions": torch_questions,
            "concurrency": concurrency or _shipped_concurrency(),
            "api_name": api, "requests": len(lat), "errors": len(errors), "error_samples": errors[:3],
            "p50_ms": float(np.percentile(lat, 50)) if lat else None,
            "p95_ms": float(np.percentile(lat, 95)) if lat else None,
            "max_ms": max(lat) if lat else None, "wall_s": wall,
            "throughput_qps": len(lat) / wall if wall else None, "server_ready_s": ready_s,
            # CPU per answer: the page's process, and the 20 clients (which share the 2 cores here)
            "server_cpu_ms_per_answer": server_cpu * 1e3 / max(len(lat), 1),
            "client_cpu_ms_per_answer": client_cpu * 1e3 / max(len(lat), 1)}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    import os

    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ask_endpoint(client) -> tuple[str, int]:
    """The ask event's api_name and its number of inputs: (question, chat, then the date fields)."""
    info = client.view_api(print_info=False, return_format="dict")
    for name, spec in info["named_endpoints"].items():
        if name.lstrip("/").startswith("respond") and len(spec["parameters"]) >= 2:
            return name, len(spec["parameters"])
    raise RuntimeError(f"no ask endpoint among {list(info['named_endpoints'])}")


def _shipped_concurrency() -> int:
    import askdesk.ui

    return askdesk.ui.ASK_CONCURRENCY


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--per-user", type=int, default=3)
    ap.add_argument("--concurrency", type=int)
    ap.add_argument("--numpy-questions", action="store_true", help="keep the page on the numpy question encoder")
    args = ap.parse_args()
    from corpus import questions

    print(json.dumps(run(Path(args.index), Path(args.corpus), questions(400)[::7], users=args.users,
                         per_user=args.per_user, concurrency=args.concurrency,
                         torch_questions=not args.numpy_questions), indent=2))


if __name__ == "__main__":
    main()
