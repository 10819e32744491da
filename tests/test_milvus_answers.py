"""The real model through a Milvus store (slow tier): test_answers' questions against the store,
the same cited answers as the index folder, the CLI end to end on `--store` (with and without the
Ray job), and `askdesk eval --store` measuring what the folder measures."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import test_answers
from conftest import CORPUS

from askdesk import Desk

pytestmark = pytest.mark.slow

if os.environ.get("ASKDESK_REQUIRE_ENGINES") != "1":
    pytest.importorskip("pymilvus", reason="pip install 'askdesk[milvus]' to test the Milvus store")

QUESTION = "How big was Nippon Steel's bid for US Steel?"


@pytest.fixture(scope="module")
def real_desk(real_desk, tmp_path_factory):
    """The bundled corpus in a Milvus Lite store, with the real model (the folder desk's, loaded once)."""
    d = tmp_path_factory.mktemp("milvus-real")
    desk = Desk.build(real_desk.config.corpus, config=real_desk.config, embedder=real_desk.embedder,
                      store=str(d / "desk.db"))
    desk.folder = real_desk  # for the comparison below
    yield desk
    desk.close()


# test_answers' tests, collected here with this module's real_desk: the Milvus store.
for _name, _test in inspect.getmembers(test_answers, inspect.isfunction):
    if _name.startswith("test_") and "real_desk" in inspect.signature(_test).parameters:
        globals()[_name] = _test


@pytest.mark.parametrize("question", [q for q, _ in test_answers.ANSWERABLE] + test_answers.UNANSWERABLE)
def test_the_same_cited_answer_from_both_stores(real_desk, question):
    a, b = real_desk.folder.ask(question), real_desk.ask(question)
    assert (b.text, b.refused, b.short) == (a.text, a.refused, a.short)
    assert [(c.article_id, c.sentence) for c in b.citations] == [(c.article_id, c.sentence) for c in a.citations]
    assert [c.sentence for c in b.related] == [c.sentence for c in a.related]
    assert b.confidence == pytest.approx(a.confidence, abs=1e-4)


def run(*args, env=None, timeout=900):
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "askdesk", *args], capture_output=True, text=True, env=e,
                          timeout=timeout)


def test_cli_index_and_ask_on_a_store_and_the_ray_job_gives_the_same_index(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for f in CORPUS.iterdir():
        (corpus / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    db, ray_db = str(tmp_path / "desk.db"), str(tmp_path / "ray.db")
    out = run("index", str(corpus), "--store", db)
    assert out.returncode == 0 and "1 added" in out.stdout, out.stderr
    out = run("ask", QUESTION, "--store", db)
    assert out.returncode == 0, out.stderr
    assert "$14.9 billion" in out.stdout and "Sources:\n[1] Trump and Ishiba Forge Ties" in out.stdout
    info = json.loads(run("info", "--json", "--store", db).stdout)
    assert info["index"] == db and info["n_articles"] == 1 and info["articles"][0]["date"] == "2025-02-07"

    out = run("index", str(corpus), "--ray", "--store", ray_db)  # a local Ray, started and stopped for the job
    assert out.returncode == 0 and "1 added" in out.stdout, out.stderr
    assert run("ask", QUESTION, "--store", ray_db).stdout == run("ask", QUESTION, "--store", db).stdout
    a, b = Desk.open(store=db), Desk.open(store=ray_db)
    try:
        sa, sb = a.snapshot, b.snapshot
        keys = [k for k, _ in sa.vectors.search(np.ones(sa.vectors.dim, np.float32), 1000)]  # every chunk
        assert len(keys) == info["n_chunks"] and sb.chunks_of(keys) == sa.chunks_of(keys)  # same chunks, same ids
        cos = np.sum(sa.vectors.vectors(keys) * sb.vectors.vectors(keys), axis=1)
        assert cos.min() > 0.99  # int8 layers quantize each batch's activations: not bit for bit
        assert [x.id for x in sb.all_articles()] == [x.id for x in sa.all_articles()]
    finally:
        a.close()
        b.close()


def test_cli_eval_through_a_store_measures_what_the_folder_does(tmp_path):
    from test_eval import SQUAD_DEV, write_jsonl

    if not (SQUAD_DEV / "corpus.jsonl").is_file():
        pytest.skip(f"squad-dev not found at {SQUAD_DEV}")
    docs = [json.loads(line) for line in (SQUAD_DEV / "corpus.jsonl").read_text().splitlines()[:40]]
    keep = {d["_id"] for d in docs}
    qrels = [line.split("\t") for line in (SQUAD_DEV / "qrels.tsv").read_text().splitlines()[1:]]
    wanted = {q for q, d, _ in qrels if d in keep}
    queries = [json.loads(line) for line in (SQUAD_DEV / "queries.jsonl").read_text().splitlines()]
    root = tmp_path / "squad40"
    root.mkdir()
    write_jsonl(root / "corpus.jsonl", docs)
    write_jsonl(root / "queries.jsonl", [q for q in queries if q["_id"] in wanted])
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q, d, _ in qrels if d in keep))
    db = str(tmp_path / "desk.db")
    folder = run("eval", "retrieval", str(root), "--json", "--limit", "30")
    store = run("eval", "retrieval", str(root), "--json", "--limit", "30", "--store", db)
    assert folder.returncode == 0 and store.returncode == 0, store.stderr
    a, b = json.loads(folder.stdout), json.loads(store.stdout)
    for m in ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"):
        assert abs(a[m] - b[m]) <= 0.005, (m, a[m], b[m])
    desk = Desk(store=db)  # the evaluation used collections of its own ("#eval"): the store's own stay empty
    try:
        assert not desk.indexed and Desk(store=db + "#eval").info()["n_articles"] == 40
    finally:
        desk.close()


def test_the_page_serves_a_store(tmp_path):
    """`ASKDESK_STORE=... askdesk serve` (what `make chat` runs): the page syncs the store with the
    folder, and a program asking over HTTP gets the cited answer."""
    pytest.importorskip("gradio_client")
    import socket
    import time

    from gradio_client import Client

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for f in CORPUS.iterdir():
        (corpus / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "ASKDESK_STORE": str(tmp_path / "desk.db"), "ASKDESK_CORPUS": str(corpus)}
    p = subprocess.Popen([sys.executable, "-m", "askdesk", "serve", "--port", str(port)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while True:  # until the page answers (it syncs the store first)
            assert p.poll() is None, p.stderr.read()
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:  # noqa: BLE001 - not up yet
                assert time.monotonic() < deadline, "the page did not come up"
                time.sleep(0.5)
        reply = json.loads(client.predict(QUESTION, [], api_name="/ask"))
        assert "$14.9 billion" in reply["answer"] and "$14.9 billion" in reply["citations"][0]["sentence"]
        info = json.loads(client.predict(api_name="/info"))
        assert info["n_articles"] == 1 and info["index"] == str(tmp_path / "desk.db")
        client.close()
    finally:
        p.terminate()
        p.wait(timeout=60)
