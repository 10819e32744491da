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
    code = "import sys; sys.argv = ['askdesk', '--help']\nfrom askdesk.surface.cli import main\ntry: main()\nexcept SystemExit: pass"
    assert loaded_after(code) == set()


def test_desk_is_still_importable_from_the_package():
    import askdesk
    from askdesk import Desk

    assert askdesk.Desk is Desk and "Desk" in askdesk.__all__
    assert Desk.__module__ == "askdesk.desk"


WINGS = ("articles", "store", "answering", "surface", "models")


def test_imports_point_one_way():
    """The layers contract in pyproject.toml (surface -> Desk -> answering -> store -> articles -> models)."""
    from pathlib import Path

    lint = Path(sys.executable).with_name("lint-imports")
    p = subprocess.run([str(lint)], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 0, p.stdout[-3000:]
    assert "2 kept, 0 broken" in p.stdout


def test_every_wing_says_what_it_owns_and_may_import():
    import importlib

    for wing in WINGS:
        doc = importlib.import_module(f"askdesk.{wing}").__doc__ or ""
        assert "May import" in doc, wing


def test_no_module_over_500_lines():
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "askdesk"
    long = {str(p.relative_to(src)): n for p in src.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}


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
