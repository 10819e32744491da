"""Shared fixtures: an isolated ASKDESK_* environment per test, a fake embedder for the fast
tier, and (slow tier) one real-model index of the bundled corpus per session."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "corpus"
SEED = CORPUS / "000_6b727eb0139704a7.txt"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# A run started in the background (nohup, `cmd &`, some CI runners) inherits SIGINT ignored, and so
# would every process the tests start: the Ctrl-C tests need it as a terminal gives it (Python's
# KeyboardInterrupt here; a handler, unlike "ignored", is reset to the default in a child).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


class FakeEmbedder:
    """Deterministic hashed bag-of-words vectors: texts sharing words are close.

    Honest for unit tests of the plumbing (ids, offsets, fusion, persistence); it knows no
    synonyms, so meaning-level behaviour is tested with the real model in the slow tier.
    """

    name = "fake"
    dim = 64

    def __init__(self):
        self.calls = 0
        self.embedded = 0

    def fits(self, text: str) -> bool:
        return len(text.split()) <= 400

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for w in re.findall(r"\w+", text.lower()):
            h = int(hashlib.md5(w.encode()).hexdigest()[:8], 16)
            v[h % self.dim] += 1.0
        n = np.linalg.norm(v)
        return v / n if n else v

    def embed_documents(self, texts, *, progress=None):
        self.calls += 1
        self.embedded += len(texts)
        out = np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)
        if progress:
            progress(len(texts))
        return out

    def embed_query(self, text):
        return self._vec(text)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path, request):
    """No test sees the developer's ASKDESK_* settings, and each gets its own index folder.

    The fast tier answers without the trained reader (its fake embedder's sentences are no text a
    reader could judge); the slow tier answers with it, as users do."""
    for k in list(os.environ):
        if k.startswith("ASKDESK_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("ASKDESK_INDEX", str(tmp_path / "index"))
    monkeypatch.setenv("ASKDESK_LOCK_WAIT", "0")
    if "slow" not in request.keywords:
        monkeypatch.setenv("ASKDESK_READER", "0")


@pytest.fixture
def fake():
    return FakeEmbedder()


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A private copy of the bundled corpus."""
    d = tmp_path / "corpus"
    shutil.copytree(CORPUS, d)
    return d


@pytest.fixture
def fake_config(tmp_path):
    from askdesk import Config

    # The refusal threshold is calibrated for MiniLM; with the fake, answers are never refused
    # and refusal is tested with the real model (slow tier).
    return Config.from_env(model="fake", corpus=tmp_path / "corpus", index=tmp_path / "index", refuse_below=0.0)


@pytest.fixture(scope="session")
def real_desk(tmp_path_factory):
    """The bundled corpus indexed with the real MiniLM model (built once per session)."""
    from askdesk import Config, Desk

    d = tmp_path_factory.mktemp("real")
    shutil.copytree(CORPUS, d / "corpus")
    cfg = Config.from_env({}, corpus=d / "corpus", index=d / "index")
    return Desk.build(d / "corpus", d / "index", config=cfg)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# What `import trafilatura` raises after a stock pip 23.2 install (lxml_html_clean never installed).
LXML_SPLIT = ("lxml.html.clean module is now a separate project lxml_html_clean.\n"
              "Install lxml[html-clean] or lxml_html_clean directly.")


def break_html_reader(monkeypatch, error: BaseException | None = None) -> None:
    """Make `import trafilatura` fail with ``error`` (default: lxml's ImportError) until the test ends."""
    import sys

    class Fails:
        def find_spec(self, name, path=None, target=None):
            if name == "trafilatura":
                raise error or ImportError(LXML_SPLIT)
            return None

    monkeypatch.delitem(sys.modules, "trafilatura", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Fails(), *sys.meta_path])
