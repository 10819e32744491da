"""The question encoder: a BERT with mean pooling (all-MiniLM-L6-v2's architecture), no torch.

Answering a question needs one short forward pass. Torch and sentence-transformers cost seconds
to import and run a one-question pass at ~21 ms on this CPU; the same weights run as an ONNX
graph in onnxruntime take ~9 ms on one thread, and import in ~0.3 s. The graph is built here
from the model's own safetensors at load time (written by `onnx_graph`, without the onnx
package's second of imports; nothing exported, nothing cached on disk), so
a CLI's cold start and a server's answers use the same encoder and the same vectors. A plain
numpy forward pass, the readable reference the graph mirrors, runs when onnxruntime is missing.
Both match sentence-transformers to float32 rounding (tests/test_embed.py).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

_DENSE = ("dense.weight", "query.weight", "key.weight", "value.weight")


class BertEncoder:
    def __init__(self, path: str, max_tokens: int = 256, *, backend: str = "auto"):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        p = Path(path)
        cfg = json.loads((p / "config.json").read_text())
        self.heads = int(cfg["num_attention_heads"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.layers = int(cfg["num_hidden_layers"])
        # Dense weights stored transposed, so every product is a plain contiguous x @ W.
        w = {k.removeprefix("bert."): (np.ascontiguousarray(v.T) if k.endswith(_DENSE) else v)
             for k, v in load_file(str(p / "model.safetensors")).items()}
        self.dim = int(w["embeddings.word_embeddings.weight"].shape[1])
        self.tokenizer = Tokenizer.from_file(str(p / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)
        self.counter = Tokenizer.from_file(str(p / "tokenizer.json"))  # untruncated, for fits()
        self.counter.no_padding()
        self.counter.no_truncation()
        self.session = _onnx_session(w, self.heads, self.layers, self.eps) if backend != "numpy" else None
        # The session holds its own copy of the weights; keep ours only for the numpy path.
        self.w = None if self.session is not None else w
        self.backend = "onnx" if self.session is not None else "numpy"

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
        """The L2-normalized float32 vector of ``text`` (truncated to the window)."""
        enc = self.tokenizer.encode(text)
        ids, types = np.asarray(enc.ids, dtype=np.int64), np.asarray(enc.type_ids, dtype=np.int64)
        if self.session is not None:
            return self.session.run(None, {"ids": ids, "types": types})[0][0]
        # Matrices this small run fastest on one BLAS thread; more threads only contend
        # with each other (and with the web server) for 2 cores.
        with _one_blas_thread():
            return self._numpy(ids, types)

    def _numpy(self, ids: np.ndarray, types: np.ndarray) -> np.ndarray:
        w, n = self.w, len(ids)
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


def _onnx_session(w: dict[str, np.ndarray], heads: int, layers: int, eps: float):
    """An onnxruntime session running `BertEncoder._numpy`'s computation, or None without onnxruntime."""
    try:
        return onnx_session(w, heads, layers, eps, head="mean")
    except ImportError:
        logger.info("onnxruntime not installed; questions are encoded in numpy (about 2x slower)")
        return None
    except Exception as err:  # noqa: BLE001 - any failure: the numpy path gives the same vectors
        logger.warning("onnxruntime could not load the question encoder (%s); encoding in numpy", err)
        return None


def onnx_session(w: dict[str, np.ndarray], heads: int, layers: int, eps: float, *, head: str,
                 int8: dict[str, tuple[np.ndarray, np.ndarray]] | None = None):
    """An onnxruntime session of a BERT over one sequence (inputs ``ids``, ``types``, int64, shape (n,)).

    ``head="mean"``: output ``vec``, the L2-normalized mean of the last layer (the question encoder).
    ``head="span"``: outputs ``start`` and ``end``, shape (n,), from ``qa.weight`` (2, dim) and
    ``qa.bias`` (the reader). ``int8`` maps a dense layer's name to its (int8 weights, per-column
    scales): those products run as onnxruntime's DynamicQuantizeMatMul (about 2x faster here).
    Raises ImportError without onnxruntime.
    """
    import onnxruntime as ort

    from . import onnx_graph as g

    int8 = int8 or {}
    nodes, inits, big = [], [], {}

    def const(name: str, value) -> str:
        arr = np.asarray(value)
        if arr.nbytes < 4096:  # shapes and axes stay in the graph, where shape inference reads them
            inits.append(g.tensor(name, arr))
            return name
        # Weights are handed to onnxruntime as arrays, not copied into the protobuf and parsed
        # back (that took 0.5 s and three extra copies of 90 MB).
        inits.append(g.external_tensor(name, arr, "askdesk-weights"))
        big[name] = np.ascontiguousarray(arr)
        return name

    def op(kind: str, *inputs: str, domain: str | None = None, **attrs) -> str:
        out = f"t{len(nodes)}"
        nodes.append(g.node(kind, list(inputs), [out], domain=domain, **attrs))
        return out

    def dense(x: str, pre: str, weight: np.ndarray | None = None, bias: np.ndarray | None = None) -> str:
        b = const(pre + ".b", w[pre + ".bias"] if bias is None else bias)
        if pre in int8:
            q, scale = int8[pre]
            return op("DynamicQuantizeMatMul", x, const(pre + ".q", q), const(pre + ".s", scale),
                      const(pre + ".z", np.zeros_like(scale, dtype=np.int8)), b, domain="com.microsoft")
        wt = const(pre + ".w", w[pre + ".weight"] if weight is None else weight)
        return op("Add", op("MatMul", x, wt), b)

    def norm(x: str, pre: str) -> str:
        return op("LayerNormalization", x, const(pre + ".g", w[pre + ".weight"]),
                  const(pre + ".beta", w[pre + ".bias"]), axis=-1, epsilon=eps)

    e = "embeddings."
    dim = w[e + "word_embeddings.weight"].shape[1]
    d = dim // heads
    positions = op("Slice", const("pos", w[e + "position_embeddings.weight"]), const("zero", np.array([0])),
                   op("Shape", "ids"), const("axis0", np.array([0])))
    x = op("Add", op("Add", op("Gather", const("words", w[e + "word_embeddings.weight"]), "ids"), positions),
           op("Gather", const("types_w", w[e + "token_type_embeddings.weight"]), "types"))
    x = norm(x, e + "LayerNorm")
    heads_shape = const("heads_shape", np.array([-1, heads, d]))
    flat_shape = const("flat_shape", np.array([-1, dim]))
    thirds = const("thirds", np.array([dim, dim, dim]))
    for i in range(layers):
        pre = f"encoder.layer.{i}."
        a = pre + "attention.self."
        if a + "qkv" in int8:  # already fused, and the scale folded, when the weights were quantized
            qkv = dense(x, a + "qkv")
        else:
            # One product for query, key and value; the 1/sqrt(d) of the scores folded into the query weights.
            qkv_w = np.concatenate([w[a + "query.weight"] / np.sqrt(d), w[a + "key.weight"], w[a + "value.weight"]], 1)
            qkv_b = np.concatenate([w[a + "query.bias"] / np.sqrt(d), w[a + "key.bias"], w[a + "value.bias"]])
            qkv = dense(x, a + "qkv", qkv_w.astype(np.float32), qkv_b.astype(np.float32))
        split = g.node("Split", [qkv, thirds], [a + "q", a + "k", a + "v"], axis=1)
        nodes.append(split)
        q = op("Transpose", op("Reshape", a + "q", heads_shape), perm=[1, 0, 2])  # (heads, n, d)
        k = op("Transpose", op("Reshape", a + "k", heads_shape), perm=[1, 2, 0])  # (heads, d, n)
        v = op("Transpose", op("Reshape", a + "v", heads_shape), perm=[1, 0, 2])
        att = op("Softmax", op("MatMul", q, k), axis=-1)
        ctx = op("Reshape", op("Transpose", op("MatMul", att, v), perm=[1, 0, 2]), flat_shape)
        x = norm(op("Add", x, dense(ctx, pre + "attention.output.dense")), pre + "attention.output.LayerNorm")
        inner = op("Gelu", dense(x, pre + "intermediate.dense"), approximate="none")
        x = norm(op("Add", x, dense(inner, pre + "output.dense")), pre + "output.LayerNorm")
    if head == "mean":
        pooled = op("ReduceMean", x, const("axis0_", np.array([0])), keepdims=1)
        nodes.append(g.node("LpNormalization", [pooled], ["vec"], axis=1, p=2))
        outputs = [g.value_info("vec", g.FLOAT, [1, dim])]
    else:
        qa_w = const("qa.w", np.ascontiguousarray(w["qa.weight"].T))
        logits = op("Add", op("MatMul", x, qa_w), const("qa.b", w["qa.bias"]))
        nodes.append(g.node("Split", [logits, const("halves", np.array([1, 1]))], ["start2", "end2"], axis=1))
        nodes.append(g.node("Squeeze", ["start2", const("axis1", np.array([1]))], ["start"]))
        nodes.append(g.node("Squeeze", ["end2", "axis1"], ["end"]))
        outputs = [g.value_info(n, g.FLOAT, ["n"]) for n in ("start", "end")]
    # IR version 9: what opset 20 needs; older onnxruntimes reject newer IR versions.
    model = g.model(nodes, f"askdesk-bert-{head}", [g.value_info("ids", g.INT64, ["n"]),
                                                    g.value_info("types", g.INT64, ["n"])],
                    outputs, inits, [("", 20), ("com.microsoft", 1)], ir_version=9)
    opts = ort.SessionOptions()
    # One thread per question: a server answers several at once on 2 cores, and a pass this
    # small gains little from a second thread while another question waits for it.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_external_initializers(list(big), [ort.OrtValue.ortvalue_from_numpy(a) for a in big.values()])
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


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
