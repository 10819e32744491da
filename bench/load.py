"""Load: simultaneous users asking through the running chat page's API.

Starts the page (`askdesk serve`, what `python app.py` runs) on a free loopback port with
ASKDESK_INDEX/ASKDESK_CORPUS pointing at a benchmark index, connects one `gradio_client.Client` per
user (each its own session), releases them together, and has each ask a few questions in one
conversation. Latency is submit to final answer, per question. Three endpoints can be measured:

- ``chat``: the page's own event (``/respond``), what a browser user does: the chat history goes
  back in with each question and comes back with the answer added, plus the sources panel.
- ``ask``: the JSON endpoint for programs (``/ask``) through gradio_client: question and earlier
  questions in, the answer's JSON out.
- ``ask-http``: the same endpoint over plain HTTP, as curl or a new user's script asks it (POST
  ``/gradio_api/call/ask``, then its event stream), one connection per user.

A saturated page tells a question when to retry (HTTP 503 with Retry-After and "busy: ..."; the
chat's reply "busy: ..."; docs/api.md). Those replies are counted as ``told_to_retry``, apart from
the errors (a dropped or failed request) and from the latency figures, which are answers only. The
user moves on to its next question at once (no think time), or with ``--every S`` asks one every S
seconds. gradio_client raises a bare
``QueueError`` for any 503, without the seconds: that stays an error; ``ask-http`` tells them apart.

    python bench/load.py --index bench/results/indexes/10k --corpus bench/results/corpora/10k

Comparisons run in one go, interleaved, because absolute timings drift on a shared machine:
every ``--src`` (a source tree, e.g. ``/work/main/src`` for before and ``src`` for after) and
every ``--concurrency`` gets its own page, all started first, then each round measures each page
and endpoint in turn (the order reversed every other round). The summary gives the median of
the rounds; every run is listed too.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
ENDPOINTS = {"chat": "/respond", "ask": "/ask", "ask-http": "/ask"}
RETRY = "told to retry"  # what `ask` below returns for a busy reply
MAX_TRIES = 10  # with --retry: a question told to retry this many times is given up (counted as told, not an error)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: Path, corpus: Path, port: int, concurrency: int | None, log: Path, *,
                 src: Path | None = None) -> subprocess.Popen:
    """The page from source tree ``src`` (default: this checkout), ASK_CONCURRENCY patched if given."""
    from measure import env

    cmd = [sys.executable, "-c", "import sys, askdesk.surface.ui as u, askdesk.surface.cli as cli; "
                                 "c = int(sys.argv[1]); u.ASK_CONCURRENCY = c or u.ASK_CONCURRENCY; "
                                 "sys.exit(cli.main(['serve']))",
           str(concurrency or 0)]
    e = env(ASKDESK_INDEX=str(index), ASKDESK_CORPUS=str(corpus), GRADIO_SERVER_NAME="127.0.0.1",
            GRADIO_SERVER_PORT=str(port), PYTHONPATH=str(Path(src or ROOT / "src").resolve()))
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


def wait_quiet(pid: int, *, busy_below: float = 0.05, timeout: float = 90) -> float:
    """Wait until process ``pid`` uses under ``busy_below`` of a core over one second.

    A page may still be warming up after it serves (the background torch question encoder did,
    for ~10 s); measuring then would charge that to the answers. Returns the seconds waited.
    """
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        c = _cpu_s(pid)
        time.sleep(1.0)
        if _cpu_s(pid) - c < busy_below:
            break
    return time.perf_counter() - t0


def measure(url: str, pid: int, endpoint: str, questions: list[str], *, users: int = 20,
            per_user: int = 3, spy: Path | None = None, retry: bool = False, every: float | None = None) -> dict:
    """``users`` fresh clients released together on one page, each asking ``per_user`` questions.

    ``every``: each user asks a question every this many seconds (the users' first questions spread
    evenly over the first period, as real users do not start together), or at once when its
    answer came later than that; None: the next question as soon as the answer came (no think time).

    ``retry``: a user told to retry waits the seconds it was told (the chat's reply: 1 s) and asks
    the same question again, up to MAX_TRIES times; else it moves on to its next question at once.
    """
    import httpx
    from gradio_client import Client

    # Each gradio_client request builds a new httpx client, and each loads the CA bundle into a
    # new SSL context: ~33 ms CPU here, twice per question, on the cores the page needs. Plain
    # http on loopback uses no TLS; one context shared by all clients keeps the same verification
    # for https and takes the clients from ~78 to ~7 ms CPU per question.
    tls = ssl.create_default_context()
    plain = endpoint == "ask-http"
    clients = [Client(url, verbose=False, ssl_verify=tls) for _ in range(1 if plain else users)]
    sessions = [httpx.Client(base_url=url, timeout=600, verify=tls) for _ in range(users)] if plain else []
    api = ENDPOINTS[endpoint]
    spec = clients[0].view_api(print_info=False, return_format="dict")["named_endpoints"].get(api)
    if spec is None:
        return {"endpoint": endpoint, "skipped": f"the page has no {api} endpoint"}
    no_dates = [None] * (len(spec["parameters"]) - 2)  # the date fields (since, until, as of), left empty
    lat: list[float] = []
    errors: list[str] = []
    told: list[int] = []  # the Retry-After seconds of each busy reply (0: the chat's, which has no header)
    last_told = [1] * users  # each user's last Retry-After
    answered: list[str] = []
    lock = threading.Lock()
    gate = threading.Barrier(users)

    def ask(i: int, q: str, chat: list, asked: list[str]) -> tuple[list, str | None]:
        """One question; the chat to send next, and what was wrong with the reply (None if fine, RETRY if busy)."""
        if endpoint == "chat":
            out = clients[i].predict(q, chat, *no_dates, api_name=api)
            said = str(out[1][-1].get("content")) if isinstance(out[1], list) and out[1] else ""
            if said.startswith("busy:"):
                told.append(0)
                return chat, RETRY  # the question stays unanswered: the next one goes on the chat before it
            chat = out[1]
            ok = isinstance(chat, list) and chat and chat[-1].get("role") == "assistant" and "⚠️" not in said
            return chat, None if ok else f"bad reply: {str(chat[-1])[:200] if chat else chat!r}"
        if plain:
            r = sessions[i].post("/gradio_api/call/ask", json={"data": [q, asked, *no_dates]})
            if r.status_code == 503 and r.headers.get("retry-after", "").isdigit() \
                    and str(r.json().get("error", "")).startswith("busy:"):
                told.append(int(r.headers["retry-after"]))
                last_told[i] = int(r.headers["retry-after"])
                return chat, RETRY
            r.raise_for_status()
            stream = sessions[i].get(f"/gradio_api/call/ask/{r.json()['event_id']}").text
            data = re.search(r"^event: complete\ndata: (.*)$", stream, re.M)
            if not data:
                return chat, f"no answer: {stream[-200:]}"
            reply = json.loads(json.loads(data.group(1))[0])
        else:
            reply = json.loads(clients[i].predict(q, asked, *no_dates, api_name=api))
        return chat, None if "answer" in reply and "citations" in reply else f"bad reply: {str(reply)[:200]}"

    def user(i: int) -> None:
        chat: list = []
        asked: list[str] = []
        gate.wait()
        start = time.perf_counter() + (i * every / users if every else 0.0)
        for j in range(per_user):
            q = questions[(i * per_user + j) % len(questions)]
            if every:
                time.sleep(max(0.0, start + j * every - time.perf_counter()))
            for _ in range(MAX_TRIES if retry else 1):
                t = time.perf_counter()
                try:
                    chat, problem = ask(i, q, chat, asked)
                except Exception as e:  # noqa: BLE001 - every failure counts as an error
                    with lock:
                        errors.append(f"{type(e).__name__}: {str(e)[:200]}")
                    break
                if problem == RETRY:  # neither an answer nor an error; not in the latency figures
                    if retry:
                        time.sleep(last_told[i])  # as told
                    continue
                asked.append(q)
                with lock:
                    lat.append((time.perf_counter() - t) * 1e3)
                    if problem:
                        errors.append(problem)
                    else:
                        answered.append(q)
                break

    spies = _spy(spy, {"server": pid, "client": os.getpid()}) if spy else []
    server_cpu0, client_cpu0 = _cpu_s(pid), time.process_time()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    wall = time.perf_counter() - t0
    server_cpu, client_cpu = _cpu_s(pid) - server_cpu0, time.process_time() - client_cpu0
    for s in spies:
        s.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        s.wait(timeout=60)
    for c in [*clients, *sessions]:
        try:
            c.close()
        except Exception:  # noqa: BLE001
            pass
    n = max(len(lat), 1)
    return {"endpoint": endpoint, "api_name": api, "users": users, "per_user": per_user, "every_s": every,
            "requests": len(answered) + len(told) + len(errors), "answered": len(answered), "told_to_retry": len(told),
            "retry_after_s_p50": float(np.percentile(told, 50)) if told else None,
            "retry_after_s_max": max(told, default=None), "errors": len(errors), "error_samples": errors[:3],
            "p50_ms": float(np.percentile(lat, 50)) if lat else None,
            "p95_ms": float(np.percentile(lat, 95)) if lat else None,
            "max_ms": max(lat) if lat else None, "wall_s": wall,
            "throughput_qps": len(lat) / wall if wall else None,  # answers (and errors) a second
            # CPU per answer: the page's process, and the clients (which share the 2 cores here)
            "server_cpu_ms_per_answer": server_cpu * 1e3 / n, "client_cpu_ms_per_answer": client_cpu * 1e3 / n}


def run(index: Path, corpus: Path, questions: list[str], *, users: int = 20, per_user: int = 3,
        endpoints: tuple[str, ...] = ("chat", "ask"), srcs: tuple[Path | None, ...] = (None,),
        concurrencies: tuple[int | None, ...] = (None,), rounds: int = 1, spy: Path | None = None,
        retry: bool = False, every: float | None = None) -> dict:
    """Every (source tree, concurrency) page measured on every endpoint, ``rounds`` times, interleaved."""
    pages = []
    try:
        for i, (src, conc) in enumerate(itertools.product(srcs, concurrencies)):
            port = free_port()
            name = f"{src or 'this tree'} c={conc or 'shipped'}"
            log = ROOT / "bench" / "results" / f"load-server-{i}.log"
            pages.append({"name": name, "url": f"http://127.0.0.1:{port}/", "log": log,
                          "proc": start_server(index, corpus, port, conc, log, src=src)})
        for p in pages:
            p["ready_s"] = wait_ready(p["url"], p["proc"])
        for p in pages:
            p["quiet_s"] = wait_quiet(p["proc"].pid)
        runs = []
        for r in range(rounds):
            order = [(p, e) for p in pages for e in endpoints]
            for p, e in order if r % 2 == 0 else order[::-1]:
                out = measure(p["url"], p["proc"].pid, e, questions, users=users, per_user=per_user,
                              spy=spy / f"{len(runs)}-{e}" if spy else None, retry=retry, every=every)
                runs.append({"page": p["name"], "round": r, **out})
                print(json.dumps(_short(runs[-1])), file=sys.stderr, flush=True)
    finally:
        for p in pages:
            p["proc"].terminate()
        for p in pages:
            try:
                p["proc"].wait(timeout=20)
            except subprocess.TimeoutExpired:
                p["proc"].kill()
    summary = []
    for p, e in itertools.product(pages, endpoints):
        rs = [x for x in runs if x["page"] == p["name"] and x["endpoint"] == e and "skipped" not in x]
        if rs:
            med = {k: round(statistics.median(x[k] for x in rs), 1) for k in
                   ("p50_ms", "p95_ms", "max_ms", "throughput_qps", "server_cpu_ms_per_answer",
                    "client_cpu_ms_per_answer")}
            summary.append({"page": p["name"], "endpoint": e, "rounds": len(rs),
                            "told_to_retry": sum(x["told_to_retry"] for x in rs),
                            "errors": sum(x["errors"] for x in rs), **med})
    return {"users": users, "per_user": per_user, "every_s": every, "rounds": rounds,
            "shipped_concurrency": _shipped_concurrency(),
            "pages": [{k: p[k] for k in ("name", "ready_s", "quiet_s")} for p in pages],
            "summary": summary, "runs": runs}


def _short(run: dict) -> dict:
    keep = ("page", "round", "endpoint", "skipped", "told_to_retry", "errors", "p50_ms", "p95_ms", "throughput_qps",
            "server_cpu_ms_per_answer", "client_cpu_ms_per_answer")
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in run.items() if k in keep}


def _spy(folder: Path, pids: dict[str, int]) -> list[subprocess.Popen]:
    """py-spy sampling each of ``pids`` into ``folder/<name>.txt`` (raw stacks), for one run only."""
    import shutil

    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    folder.mkdir(parents=True, exist_ok=True)
    spies = [subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                               "--output", str(folder / f"{name}.txt")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for name, pid in pids.items()]
    time.sleep(1.0)  # attached before the users are released
    return spies


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _shipped_concurrency() -> int:
    import askdesk.surface.ui

    return askdesk.surface.ui.ASK_CONCURRENCY


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--per-user", type=int, default=3)
    ap.add_argument("--retry", action="store_true", help="a user told to retry waits the seconds it was told and "
                                                         f"asks again (up to {MAX_TRIES} times); else it moves on")
    ap.add_argument("--every", type=float, help="each user asks a question every this many seconds (default: the "
                                                "next one as soon as its answer came, no think time)")
    ap.add_argument("--rounds", type=int, default=1, help="measure every page and endpoint this many times")
    ap.add_argument("--endpoint", action="append", choices=sorted(ENDPOINTS),
                    help="chat (the page's event), ask (the JSON endpoint, gradio_client) and/or ask-http (the "
                         "same over plain HTTP); default chat and ask")
    ap.add_argument("--src", action="append", type=Path,
                    help="serve the page from this source tree (repeat to compare; default this checkout's src)")
    ap.add_argument("--concurrency", action="append", type=int, help="ASK_CONCURRENCY for the page (repeatable)")
    ap.add_argument("--py-spy", type=Path, help="sample page and clients with py-spy into this folder")
    args = ap.parse_args()
    from corpus import questions

    print(json.dumps(run(Path(args.index), Path(args.corpus), questions(400)[::7], users=args.users,
                         per_user=args.per_user, endpoints=tuple(args.endpoint or ("chat", "ask")), retry=args.retry,
                         every=args.every,
                         srcs=tuple(args.src or [None]), concurrencies=tuple(args.concurrency or [None]),
                         rounds=args.rounds, spy=args.py_spy), indent=2))


if __name__ == "__main__":
    main()
