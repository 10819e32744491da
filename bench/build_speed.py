"""Where the index build's time goes, and two ways to beat the raw-encode baseline.

    python bench/build_speed.py [--articles 300] [--quality 500]

A build runs the model over every chunk *and* every sentence (the answerer's sentence vectors),
so it does about twice the model work of the raw baseline (one encode per article). Measured
here on the same texts, in the same process, as ratios to the raw encode:

- ``askdesk_texts``: what `Desk.build` embeds (chunks with their title line, then sentences);
- ``late_pooling``: one pass per chunk; each sentence's vector is the mean of the chunk's token
  vectors inside the sentence (the chunk vector is unchanged: same mean pooling);
- ``int8``: torch dynamic int8 quantization of the Linear layers (raw encode of the same texts);
- ``int8_late_pooling``: both.

``--quality N`` also runs askdesk's own evaluations on squad-dev (`askdesk.surface.eval`), first N
questions: answer quality with standalone vs late-pooled sentence vectors, and retrieval
recall@5 with fp32 vs int8 vectors. Prints JSON; writes bench/results/build_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import corpus  # noqa: E402
from corpus import DATA, RESULTS  # noqa: E402


class _Wrapped:
    """An Embedder that hands everything to ``inner``; subclasses replace what they measure."""

    dim = property(lambda self: self.inner.dim)

    def fits(self, text):
        return self.inner.fits(text)

    def embed_query(self, text):
        return self.inner.embed_query(text)

    def embed_documents(self, texts, *, progress=None):
        return self.inner.embed_documents(texts, progress=progress)


class LatePooling(_Wrapped):
    """An askdesk Embedder that embeds each chunk once and pools its sentences from the chunk's tokens.

    It relies on the order `Desk` embeds in (an article's chunks, then its sentences) and on chunk
    texts holding a title line ("\\n"), which sentences never do. A sentence found in no chunk of
    its article is embedded on its own. Bench only: the real change belongs in desk.py.
    """

    def __init__(self, inner, model=None):
        self.inner, self.name, self.model = inner, inner.name, model or inner.model
        self.standalone = 0

    def embed_documents(self, texts, *, progress=None):
        chunk_idx = [i for i, t in enumerate(texts) if "\n" in t]
        out = np.zeros((len(texts), self.dim), np.float32)
        tokens = {}
        if chunk_idx:
            feats = self.model.encode([texts[i] for i in chunk_idx], output_value=None, batch_size=32,
                                      show_progress_bar=False)
            for i, f in zip(chunk_idx, feats):
                v = f["sentence_embedding"].float().numpy()
                out[i] = v / np.linalg.norm(v)
                tokens[i] = f["token_embeddings"].float().numpy()
        tok = self.model.tokenizer
        offsets = {}
        alone, current = [], []
        for i, t in enumerate(texts):
            if i in tokens:
                if current and "\n" not in texts[i - 1]:
                    current = []  # a chunk after a sentence starts the next article
                current.append(i)
                continue
            for c in current:
                at = texts[c].find(t)
                if at < 0:
                    continue
                if c not in offsets:
                    offsets[c] = tok(texts[c], return_offsets_mapping=True, truncation=True,
                                     max_length=256)["offset_mapping"]
                span = [k for k, (s, e) in enumerate(offsets[c]) if e > s and s >= at and e <= at + len(t)]
                if span:
                    v = tokens[c][span].mean(0)
                    out[i] = v / np.linalg.norm(v)
                    break
            else:
                alone.append(i)
        if alone:
            self.standalone += len(alone)
            out[alone] = self.inner.embed_documents([texts[i] for i in alone])
        if progress:
            progress(len(texts))
        return out


class Int8(_Wrapped):
    """The same model with its Linear layers dynamically quantized to int8: askdesk's own
    embedder with ``quantize=True`` (what ``Config.int8`` builds)."""

    def __init__(self, inner):
        from askdesk.models.embed import SentenceTransformerEmbedder

        self.inner = SentenceTransformerEmbedder(inner.name, batch_size=inner.batch_size, quantize=True)
        self.name, self.model = inner.name, self.inner.model
        if not self.inner.int8_active:
            raise SystemExit("torch quantized no layer on this machine: the int8 runs would measure fp32")


def speed(n: int, emb) -> dict:
    from askdesk.articles.chunk import split_sentences
    from askdesk.articles.ingest import read_articles

    folder = RESULTS / "corpora" / "1k"
    corpus.write_corpus(folder, 1000, emb.fits)
    articles, _ = read_articles([folder], root=folder)
    articles = articles[:n]
    raw_texts = [a.text for a in articles]
    build_texts = []
    for a in articles:
        build_texts.append(f"{a.title}\n{a.text}")
        build_texts.extend(a.text[s:e] for s, e in split_sentences(a.text))
    int8 = Int8(emb)
    model = emb.model
    model.encode(["warm up"] * 8, show_progress_bar=False)
    int8.model.encode(["warm up"] * 8, show_progress_bar=False)
    runs = {
        "raw": lambda: model.encode(raw_texts, show_progress_bar=False),
        "askdesk_texts": lambda: emb.embed_documents(build_texts),
        "late_pooling": lambda: LatePooling(emb).embed_documents(build_texts),
        "int8_raw": lambda: int8.model.encode(raw_texts, show_progress_bar=False),
        "int8_late_pooling": lambda: LatePooling(int8, int8.model).embed_documents(build_texts),
    }
    out = {"articles": n, "texts_askdesk_embeds": len(build_texts)}
    for name, fn in runs.items():
        t = time.perf_counter()
        fn()
        out[f"{name}_s"] = time.perf_counter() - t
    t = time.perf_counter()
    model.encode(raw_texts, show_progress_bar=False)  # raw again: drift on a shared machine shows here
    out["raw_again_s"] = time.perf_counter() - t
    raw = (out["raw_s"] + out["raw_again_s"]) / 2
    for name in runs:
        out[f"{name}_over_raw_time"] = out[f"{name}_s"] / raw
    return out


def quality(n: int, emb) -> dict:
    from askdesk import Config
    from askdesk.surface.eval import eval_qa, eval_retrieval

    cfg = Config.from_env({})
    cached = corpus.CachedEmbedder(emb)
    out = {"qa_standalone": eval_qa(DATA / "squad.json", config=cfg, limit=n, embedder=cached),
           "qa_late_pooling": eval_qa(DATA / "squad.json", config=cfg, limit=n, embedder=LatePooling(emb))}
    cached.save()
    out["retrieval_fp32"] = eval_retrieval(DATA, config=cfg, limit=n, embedder=corpus.CachedEmbedder(emb))
    out["retrieval_int8"] = eval_retrieval(DATA, config=cfg, limit=n, embedder=Int8(emb))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="index build: where the time goes, and faster variants")
    ap.add_argument("--articles", type=int, default=300)
    ap.add_argument("--quality", type=int, default=0, help="also evaluate quality on the first N SQuAD questions")
    ap.add_argument("--no-speed", action="store_true")
    args = ap.parse_args()
    from askdesk.models.embed import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder()
    res = {} if args.no_speed else {"speed": speed(args.articles, emb)}
    if not args.no_speed:
        print(json.dumps(res["speed"], indent=2), flush=True)
    if args.quality:
        res["quality"] = quality(args.quality, emb)
        print(json.dumps(res["quality"], indent=2), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "build_speed.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
