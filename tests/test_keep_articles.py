"""Never lose articles: syncs, serve and rollback in real processes (the CLI and the page).

Each command runs in a subprocess of its own, as a user runs it; `fake_cli` swaps the real model
for the fake embedder so the fast tier can run them (the plumbing under test is the same).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, FakeEmbedder, break_html_reader, write

from askdesk import Config, Desk

BOOT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from conftest import FakeEmbedder
    import askdesk.desk
    askdesk.desk.SentenceTransformerEmbedder = lambda *a, **k: FakeEmbedder()  # the CLI's model, faked
    from askdesk.surface.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def fake_cli(tmp_path: Path, *args: str, cwd: Path | None = None, env: dict | None = None,
             preexec=None, wait: bool = True):
    """`askdesk ARGS` in a subprocess with the fake embedder; (code, stdout, stderr), or the process."""
    boot = tmp_path / "boot_askdesk.py"
    if not boot.exists():
        boot.write_text(BOOT.format(tests=str(ROOT / "tests")))
    e = {k: v for k, v in os.environ.items() if not k.startswith("ASKDESK_")}
    e = {**e, "ASKDESK_MODEL": "fake", "ASKDESK_REFUSE_BELOW": "0", "GRADIO_ANALYTICS_ENABLED": "False",
         "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, str(boot), *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd or tmp_path, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, preexec_fn=preexec)
    p = subprocess.run(cmd, cwd=cwd or tmp_path, env=e, capture_output=True, text=True, timeout=300, preexec_fn=preexec)
    return p.returncode, p.stdout, p.stderr


def archive(folder: Path, n: int, topic: str = "harbour") -> Path:
    for i in range(n):
        write(folder / f"{topic}-{i}.txt", f"{topic.title()} story {i}\n\nThe {topic} board approved plan {i} "
                                           f"on Monday after a long debate about the {topic} budget.")
    return folder


def n_articles(index: Path) -> int:
    return Desk.open(index, config=Config(model="fake", index=index), embedder=FakeEmbedder()).info()["n_articles"]


@pytest.fixture
def project(tmp_path):
    """A project folder with the bundled corpus (1 article), and an archive of 5 elsewhere."""
    proj = tmp_path / "project"
    shutil.copytree(ROOT / "corpus", proj / "corpus")
    return proj, archive(tmp_path / "news", 5)


def serve(tmp_path, *args, cwd):
    """`askdesk serve ARGS` on a free port; returns (process, url) once the page answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = fake_cli(tmp_path, "serve", "--port", str(port), *args, cwd=cwd, wait=False)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        assert p.poll() is None, f"serve exited with {p.returncode}:\n{p.stdout.read()}"
        assert time.monotonic() < deadline, "serve did not answer within 180 s"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return p, url
        except OSError:
            time.sleep(0.1)


def stop(p) -> str:
    p.send_signal(signal.SIGINT)
    try:
        out, _ = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return out


def page_info(url: str) -> dict:
    from gradio_client import Client

    client = Client(url, verbose=False)
    try:
        return json.loads(client.predict(api_name="/info"))
    finally:
        client.close()


def test_serve_uses_the_folder_the_index_was_built_from(tmp_path, project):
    proj, news = project
    code, out, err = fake_cli(tmp_path, "index", str(news), "--index", "myix", cwd=proj)
    assert code == 0, err
    assert "5 added, 0 updated, 0 removed, 0 unchanged" in out
    # In the project folder, whose ./corpus holds another article: the page serves the archive.
    p, url = serve(tmp_path, "--index", "myix", cwd=proj)
    try:
        assert page_info(url)["n_articles"] == 5
    finally:
        log = stop(p)
    assert f"synced with {news.resolve()}" in log and "0 added, 0 updated, 0 removed, 5 unchanged" in log
    assert n_articles(proj / "myix") == 5


def test_serve_with_another_folder_keeps_the_archive_and_says_how_to_prune(tmp_path, project):
    proj, news = project
    assert fake_cli(tmp_path, "index", str(news), "--index", "myix", cwd=proj)[0] == 0
    p, url = serve(tmp_path, "--index", "myix", "--corpus", "corpus", cwd=proj)
    try:
        assert page_info(url)["n_articles"] == 6  # the archive's 5 and the bundled one
    finally:
        log = stop(p)
    assert "1 added, 0 updated, 0 removed, 5 unchanged" in log
    assert "kept 5 articles that are not in corpus; `askdesk index corpus --prune` removes them" in log
    # only the explicit flag removes them, and says how many
    code, out, err = fake_cli(tmp_path, "index", "corpus", "--index", "myix", "--prune", cwd=proj)
    assert code == 0 and "0 added, 0 updated, 5 removed, 1 unchanged" in out, out + err
    assert n_articles(proj / "myix") == 1
    # ... and rollback brings them back; a second rollback undoes the first
    code, out, err = fake_cli(tmp_path, "rollback", "--index", "myix", cwd=proj)
    assert code == 0 and "(6 articles," in out, out + err
    assert n_articles(proj / "myix") == 6
    assert fake_cli(tmp_path, "rollback", "--index", "myix", cwd=proj)[0] == 0
    assert n_articles(proj / "myix") == 1


def test_sync_follows_deletions_in_its_own_folder_and_keeps_added_files(tmp_path, project):
    proj, news = project
    assert fake_cli(tmp_path, "index", str(news), "--index", "ix", cwd=proj)[0] == 0
    outside = write(tmp_path / "elsewhere" / "ferry.txt", "Ferry news\n\nThe ferry to Brask runs again from May.")
    code, out, err = fake_cli(tmp_path, "add", str(outside), "--index", "ix", cwd=proj)
    assert code == 0 and "1 added" in out, err
    (news / "harbour-0.txt").unlink()  # the user deletes a story from the archive folder
    code, out, err = fake_cli(tmp_path, "index", "--index", "ix", cwd=proj)  # no folder given: the recorded one
    assert code == 0 and "0 added, 0 updated, 1 removed, 5 unchanged" in out, out + err
    assert "kept 1 article that is not in" in out  # the added file is not in the folder, and stays
    paths = {a["path"] for a in Desk.open(proj / "ix", config=Config(model="fake"), embedder=FakeEmbedder()).info()["articles"]}
    assert str(outside.resolve()) in paths and "harbour-0.txt" not in paths and "harbour-1.txt" in paths


def test_the_same_file_name_in_two_folders_is_two_articles(tmp_path):
    a, b = archive(tmp_path / "a", 2), tmp_path / "b"
    write(b / "harbour-0.txt", "Mill story\n\nThe mill reported output of 3 million tonnes.")
    cfg = Config(model="fake", index=tmp_path / "ix", refuse_below=0.0)
    desk = Desk.build(a, cfg.index, config=cfg, embedder=FakeEmbedder())
    stats = desk.sync(b)
    assert (stats["added"], stats["updated"], stats["removed"], stats["kept"]) == (1, 0, 0, 2)
    titles = sorted(x["title"] for x in desk.info()["articles"])
    assert titles == ["Harbour story 0", "Harbour story 1", "Mill story"]


def test_latin1_articles_are_read_and_reported_once(tmp_path):
    corpus = tmp_path / "corpus"
    write(corpus / "good.txt", "Good\n\nA good article about the harbour.")
    (corpus / "latin.txt").write_bytes("Café Brask reopens\n\nThe café in Brask reopened; its owner, "
                                       "Zoë Ménard, said the façade cost 12,000 euros.".encode("cp1252"))
    (corpus / "bin.txt").write_bytes(b"\x89PNG\x00\x00\x01")
    code, out, err = fake_cli(tmp_path, "index", str(corpus), "--index", "ix")
    assert code == 0 and "2 added" in out, err
    lines = err.strip().splitlines()
    # one line per file, not a logged warning and a "skipped" line
    assert [line for line in lines if "bin.txt" in line] == [f"skipped {corpus / 'bin.txt'}: 'bin.txt' looks binary, not text"]
    assert [line for line in lines if "latin.txt" in line] == ["read latin.txt as cp1252 (it is not UTF-8)"]
    desk = Desk.open(tmp_path / "ix", config=Config(model="fake", refuse_below=0.0), embedder=FakeEmbedder())
    art = next(a for a in desk.info()["articles"] if a["path"] == "latin.txt")
    assert art["title"] == "Café Brask reopens" and art["encoding"] == "cp1252"
    assert "Zoë Ménard" in desk.article(art["id"]).text


def test_an_article_whose_reader_fails_to_load_keeps_its_indexed_version_and_the_sync_goes_on(
        tmp_path, monkeypatch, capsys, fake):
    from askdesk import desk as desk_mod
    from askdesk.surface import cli

    monkeypatch.setattr(desk_mod, "SentenceTransformerEmbedder", lambda *a, **k: fake)
    monkeypatch.chdir(tmp_path)  # a relative folder, as a user types it
    page = ("<html><head><title>Varsk harbour reopens</title></head><body><article><p>The harbour of Varsk "
            "reopened on Monday after an 18-month renovation that cost {} million euros, the port authority "
            "said, and the fleet returned to the inner basin.</p></article></body></html>")
    write(tmp_path / "corpus" / "a.html", page.format(42))
    write(tmp_path / "corpus" / "b.txt", "Mill story\n\nThe mill in Orm hired 40 workers on Wednesday.")
    assert cli.main(["--model", "fake", "index", "corpus", "--index", "ix"]) == 0
    capsys.readouterr()

    write(tmp_path / "corpus" / "a.html", page.format(45))  # changed, but unreadable this time
    write(tmp_path / "corpus" / "c.txt", "Ferry story\n\nThe ferry to Brask runs again from 9 June.")
    break_html_reader(monkeypatch)
    assert cli.main(["--model", "fake", "index", "corpus", "--index", "ix"]) == 0
    out, err = capsys.readouterr()
    assert "1 added, 0 updated, 0 removed, 2 unchanged; index holds 3 articles" in out
    assert err.strip().splitlines() == [
        f"skipped {Path('corpus') / 'a.html'}: 'a.html' cannot be read: its reader fails to load "
        "(lxml.html.clean module is now a separate project lxml_html_clean. Install lxml[html-clean] or "
        "lxml_html_clean directly.); run `pip install lxml_html_clean`"]
    desk = Desk.open(tmp_path / "ix", config=Config(model="fake", refuse_below=0.0), embedder=fake)
    kept = next(a for a in desk.info()["articles"] if a["path"] == "a.html")
    assert "42 million euros" in desk.article(kept["id"]).text  # the indexed version, not removed


def _tmpfs(path: Path, size: str):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        return None
    return lambda: subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("limit", ["full tmpfs", "ulimit -f"])
def test_a_full_disk_leaves_the_index_intact_and_says_what_to_free(tmp_path, limit):
    where = tmp_path / "disk"
    preexec, unmount = None, None
    if limit == "full tmpfs":
        unmount = _tmpfs(where, "400k")
        if unmount is None:
            pytest.skip("mounting a tmpfs needs root (CI runs as root); the ulimit case covers the rest")
    else:
        where.mkdir()

        def preexec():  # files over 300 KB fail with EFBIG instead of killing the process
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
    try:
        index = where / "ix"
        assert fake_cli(tmp_path, "index", str(archive(tmp_path / "news", 3)), "--index", str(index))[0] == 0
        before = sorted(p.name for p in index.iterdir())
        big = write(tmp_path / "big" / "almanac.txt", "Almanac of Orm\n\n" + "\n".join(
            f"In {1600 + i % 400} the harvest in the valley of Orm yielded {i * 7} tonnes of barley and rye."
            for i in range(4000)))  # ~360 KB of text: no room for a generation holding it
        code, out, err = fake_cli(tmp_path, "add", str(big), "--index", str(index), preexec=preexec)
        assert code == 1 and "Traceback" not in err, err
        line = err.strip()
        assert len(line.splitlines()) == 1 and str(index) in line and "unchanged" in line
        assert ("disk is full" if limit == "full tmpfs" else "file size limit") in line
        assert "free space" in line
        assert sorted(p.name for p in index.iterdir()) == before  # the half-written generation is gone already
        assert n_articles(index) == 3
    finally:
        if unmount:
            unmount()
