"""`import askdesk` and `askdesk --help` stay fast: neither loads numpy, FAISS, torch or gradio."""

import subprocess
import sys

HEAVY = ("numpy", "faiss", "torch", "sentence_transformers", "gradio")


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
    from askdesk import Desk
    import askdesk

    assert askdesk.Desk is Desk and "Desk" in askdesk.__all__
    assert Desk.__module__ == "askdesk.desk"
