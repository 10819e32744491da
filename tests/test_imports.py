"""`import askdesk` and `askdesk --help` stay fast: neither loads numpy, FAISS, torch or gradio."""

import subprocess
import sys

HEAVY = ("numpy", "faiss", "torch", "sentence_transformers", "gradio", "pymilvus", "ray")


def loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout.split()
    return {m for m in HEAVY if m in out}


def test_import_askdesk_loads_nothing_heavy():
    assert loaded_after("import askdesk") == set()
    assert loaded_after("from askdesk import Config, Answer, Citation, Article, AskdeskError") == set()


def test_help_loads_nothing_heavy():
    code = "import sys; sys.argv = ['askdesk', '--help']\nfrom askdesk.cli import main\ntry: main()\nexcept SystemExit: pass"
    assert loaded_after(code) == set()


def test_desk_is_still_importable_from_the_package():
    import askdesk
    from askdesk import Desk

    assert askdesk.Desk is Desk and "Desk" in askdesk.__all__
    assert Desk.__module__ == "askdesk.desk"


# The pipeline, top down: a module imports only from those above it (types, text, config and
# errors from anywhere; the package's __init__ re-exports the public names).
PIPELINE = ["chunk", "quotes", "ingest", "bert", "embed", "vectors", "lexical", "records", "segment", "index", "selection",
            "build", "merge", "milvus", "upsert", "rayjob", "retrieve", "answer", "short", "dialog", "news", "verify",
            "generate", "respond", "desk", "eval", "render", "feeds", "watch", "ui", "cli"]
ANYWHERE = {"types", "text", "config", "errors"}


def _imports(path):
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            for name in ([node.module.split(".")[0]] if node.module else [a.name for a in node.names]):
                yield name, node.lineno


def test_data_flows_down_the_pipeline():
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "askdesk"
    modules = {p.stem for p in src.glob("*.py")} - {"__init__"}
    assert modules == set(PIPELINE) | ANYWHERE, "a new module: give it its place in PIPELINE"
    upward = []
    for p in sorted(src.glob("*.py")):
        for name, line in _imports(p):
            if name not in modules or name in ANYWHERE or p.stem == "__init__":
                continue
            if p.stem in ANYWHERE or PIPELINE.index(name) >= PIPELINE.index(p.stem):
                upward.append(f"{p.name}:{line} imports {name}")
    assert upward == []


def test_bench_uses_only_public_names_of_askdesk():
    """bench/ measures through the public API: no `desk._current()`, no `askdesk.x._helper`."""
    import ast
    from pathlib import Path

    private = []
    for p in sorted((Path(__file__).resolve().parents[1] / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                private.append(f"{p.name}:{node.lineno} {ast.unparse(node)}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("askdesk"):
                private += [f"{p.name}:{node.lineno} {a.name}" for a in node.names if a.name.startswith("_")]
    assert private == []
