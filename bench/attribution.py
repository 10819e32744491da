"""Who said it, measured: the speakers askdesk finds against a hand-annotated set of real news.

    python bench/attribution.py [--realtimeqa /tmp/realtimeqa-dev] [--part heldout|fit|all] [--before REV]
    python bench/attribution.py --speed 500     # finding statements, chars/s: the rules at REV vs now
    python bench/attribution.py --build 200     # an index of 200 articles built end to end, each way

bench/data/attribution.jsonl holds 809 sentences of 128 RealTimeQA articles (wire copy, long
articles, live blogs, evidence snippets), each with the speaker a reader gives it: a name, an
unnamed source ("anonymous: a spokesperson for the ministry"), or none (bench/data/README.md).
The text is read from a realtimeqa-dev build (its README). A sentence's prediction is the
statement of `find_statements` that overlaps it most. A named speaker is right when its words
are among the annotated name's and it ends the same ("Costa" for "Ana Costa"; "President Guy
Parmelin" is wrong); an unnamed source is right when the prediction is unnamed too.

- speaker P/R: over every sentence with a speaker, named or unnamed (a prediction of either kind
  counts; none is no prediction);
- named P/R: names only (an unnamed prediction counts as none).

The held-out third is the documents whose sha1(doc id) % 3 == 0; the rules were tuned on the
rest (``--part fit``). ``--before REV`` runs the statements of REV's quotes.py (default: the
regular expressions before issue 24) beside the current ones, on the same sentences.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import types
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data" / "attribution.jsonl"
BEFORE = "12a4001"  # the last commit with the regular-expression rules (issue 16)
SUFFIXES = {"jr", "sr", "ii", "iii", "iv"}

# The twelve wire-copy shapes of issue 24 (also tests/test_speakers.py): text, sentence, speaker.
SHAPES = [
    ('"We are ready for bigger ships," said port director Ana Costa. Container traffic grew fastest.', "Ana Costa"),
    ('"We are ready for bigger ships," said director Ana Costa.', "Ana Costa"),
    ('"We are ready for bigger ships," said Ana Costa. Container traffic grew fastest.', "Ana Costa"),
    ('"The talks went well," a spokesperson for the ministry said.', "anonymous: a spokesperson for the ministry"),
    ('Costa told reporters the port was "ready for bigger ships."', "Costa"),
    ("According to Costa, the port will double its capacity by 2027.", "Costa"),
    ('"We will not back down," Zelensky wrote on Telegram.', "Zelensky"),
    ('The mayor, Anne Hidalgo, said the games had "transformed Paris."', "Anne Hidalgo"),
    ('"It is a tragedy," said Swiss President Guy Parmelin, who visited the site on Friday.', "Guy Parmelin"),
    ('Biden called the attack "an outrage" in a statement on Sunday.', "Biden"),
    ("Speaking to CNN, Senator Chuck Schumer said Democrats would block the bill.", "Chuck Schumer"),
    ('Ana Costa has run the port since 2023. "We are ready," she said, adding that the port would hire 200 workers.',
     "Ana Costa"),
]


def heldout(doc_id: str) -> bool:
    return int(hashlib.sha1(doc_id.encode()).hexdigest(), 16) % 3 == 0


def rules_at(rev: str) -> types.ModuleType:
    """quotes.py as it was at ``rev``, loaded as its own module (its relative imports made absolute)."""
    src = subprocess.run(["git", "show", f"{rev}:src/askdesk/articles/quotes.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    src = src.replace("from ..text import", "from askdesk.text import")
    src = src.replace("from .chunk import", "from askdesk.articles.chunk import")
    mod = types.ModuleType(f"quotes_at_{rev}")
    sys.modules[mod.__name__] = mod
    exec(compile(src, f"{rev}:quotes.py", "exec"), mod.__dict__)
    return mod


def _words(name: str) -> list[str]:
    words = re.findall(r"[\w'.-]+", unicodedata.normalize("NFKC", name).lower().replace("’", "'"))
    words = [w.removesuffix("'s").strip(".'") for w in words if w not in ("the", "a", "an")]
    return [w for w in words if w and w not in SUFFIXES]


def right(pred: str | None, gold: str | None) -> bool:
    if pred is None or gold is None:
        return pred is gold
    if gold.startswith("anonymous:") or pred.startswith("anonymous:"):
        return gold.startswith("anonymous:") and pred.startswith("anonymous:")
    p, g = _words(pred), _words(gold)
    return bool(p and g) and p[-1] == g[-1] and set(p) <= set(g)


def predict(statements, span) -> str | None:
    """The speaker of the statement overlapping ``span`` most ("anonymous: ..." for an unnamed one)."""
    s, e = span
    best, most = None, 0
    for st in statements:
        overlap = min(e, st.end) - max(s, st.start)
        if overlap > most:
            best, most = st, overlap
    if best is None:
        return None
    return f"anonymous: {best.speaker}" if getattr(best, "anonymous", False) else best.speaker


def score(pairs) -> dict:
    """Speaker and named precision/recall over (predicted, annotated) pairs."""
    out = {"n": len(pairs)}
    for kind, keep in (("speaker", lambda x: x is not None), ("named", lambda x: x is not None
                                                               and not x.startswith("anonymous:"))):
        pred = [(p if keep(p) else None, g if keep(g) else None) for p, g in pairs]
        correct = sum(1 for p, g in pred if p is not None and right(p, g))
        made = sum(1 for p, _ in pred if p is not None)
        gold = sum(1 for _, g in pred if g is not None)
        out[kind] = {"precision": round(correct / made, 3) if made else None,
                     "recall": round(correct / gold, 3) if gold else None, "right": correct, "predicted": made,
                     "annotated": gold}
    return out


def load_docs(folder: Path, ids: set[str] | None = None) -> dict[str, dict]:
    docs = {}
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if ids is None or d["_id"] in ids:
                docs[d["_id"]] = d
    return docs


def sample(folder: Path, n: int) -> list[dict]:
    """N articles spread over the corpus in id order (every k-th): evidence snippets, then search results."""
    docs = sorted(load_docs(folder).values(), key=lambda d: d["_id"])
    return docs[::max(1, len(docs) // n)][:n]


def accuracy(args, finders) -> dict:
    items = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    items = [x for x in items if args.part == "all" or heldout(x["doc"]) == (args.part == "heldout")]
    docs = load_docs(args.realtimeqa, {x["doc"] for x in items})
    for x in items:
        s, e = x["span"]
        if hashlib.sha1(docs[x["doc"]]["text"][s:e].encode()).hexdigest()[:10] != x["sha1"]:
            raise SystemExit(f"{x['doc']} {x['span']}: the text differs from the annotated one; rebuild realtimeqa-dev")
    out = {"part": args.part, "documents": len({x["doc"] for x in items})}
    for label, find in finders.items():
        found = {d: find(docs[d]["text"]) for d in {x["doc"] for x in items}}
        pairs = [(predict(found[x["doc"]], x["span"]), x["speaker"]) for x in items]
        out[label] = score(pairs)
        shapes = [(predict(find(t), (0, len(t))), gold) for t, gold in SHAPES]
        out[label]["shapes_right"] = sum(right(p, g) for p, g in shapes)
        if args.errors and label == "after":
            for x, (p, g) in zip(items, pairs):
                if not right(p, g):
                    text = docs[x["doc"]]["text"][x["span"][0]:x["span"][1]]
                    print(f"{x['doc']} {x['span']} gold={g!r} pred={p!r}\n    {text[:160]}", file=sys.stderr)
    return out


def speed(args, finders) -> dict:
    """Finding every article's statements, old rules and new, interleaved per article, on N articles."""
    docs = sample(args.realtimeqa, args.speed)
    spent = dict.fromkeys(finders, 0.0)
    finders["after"]("warm up: load the parser")
    for d in docs:
        for label, find in finders.items():
            t = time.perf_counter()
            find(d["text"])
            spent[label] += time.perf_counter() - t
    chars = sum(len(d["text"]) for d in docs)
    return {"articles": len(docs), "chars": chars, **{f"{k}_s": round(v, 2) for k, v in spent.items()},
            **{f"{k}_chars_per_s": round(chars / v) for k, v in spent.items()}}


def build(args, finders) -> dict:
    """Index N articles end to end with the real embedder, once with each way of finding statements
    (old first, then new, then old again: the mean of the two old builds is the baseline)."""
    from askdesk import Config, Desk

    docs = sample(args.realtimeqa, args.build)
    runs: dict[str, list[float]] = {k: [] for k in finders}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        for i, d in enumerate(docs):
            (corpus / f"{i:04d}.txt").write_text(f"{d['title'] or d['_id']}\n\n{d['text']}", encoding="utf-8")
        for n, label in enumerate(["before", "after", "before"]):
            _use(finders[label])
            cfg = Config.from_env({}, corpus=corpus, index=Path(tmp) / f"index{n}")
            t = time.perf_counter()
            Desk.build(corpus, cfg.index, config=cfg)
            runs[label].append(time.perf_counter() - t)
    base = sum(runs["before"]) / len(runs["before"])
    return {"articles": len(docs), "build_s": {k: [round(x, 1) for x in v] for k, v in runs.items()},
            "ratio": round(runs["after"][0] / base, 3)}


def _use(find) -> None:
    """Every loaded askdesk module that imported find_statements calls ``find`` instead."""
    for name, mod in list(sys.modules.items()):
        if name.startswith("askdesk.") and hasattr(mod, "find_statements") and name != "askdesk.articles.quotes":
            mod.find_statements = find


def main(argv=None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--realtimeqa", type=Path, default=Path("/tmp/realtimeqa-dev"))
    ap.add_argument("--part", choices=["heldout", "fit", "all"], default="heldout")
    ap.add_argument("--before", default=BEFORE, help="the commit whose quotes.py is the baseline")
    ap.add_argument("--errors", action="store_true", help="print the sentences the current rules get wrong")
    ap.add_argument("--speed", type=int, default=0, metavar="N", help="time finding statements on N articles")
    ap.add_argument("--build", type=int, default=0, metavar="N", help="time index builds of N articles")
    args = ap.parse_args(argv)
    if not (args.realtimeqa / "corpus.jsonl").is_file():
        raise SystemExit(f"no corpus.jsonl in {str(args.realtimeqa)!r}: build it as "
                         "../shared/data/realtimeqa-dev/README.md says")
    from askdesk.articles import quotes

    old = rules_at(args.before)
    finders = {"before": old.find_statements, "after": quotes.find_statements}
    if args.build:
        out = build(args, finders)
    elif args.speed:
        out = speed(args, finders)
    else:
        out = accuracy(args, finders)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
