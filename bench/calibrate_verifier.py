"""Fit the verifier's cosine threshold (askdesk.answering.verify.SUPPORT_COSINE) on rgb-news, and report.

    python bench/calibrate_verifier.py              # fit on questions 0-49, report on 50-99
    python bench/calibrate_verifier.py --show 5     # also print a few flagged examples of each kind

rgb-news (RGB en_fact, CC BY-NC-SA 4.0) gives each question several positive search snippets,
accepted answer strings, a planted wrong answer, and the positive snippets rewritten around it
(counterfactual_positive). A scripted model answers each question in one sentence, "<question>:
<answer>.", citing the positive snippets that hold the answer; each sentence goes through
`askdesk.answering.verify.check` exactly as a written answer's sentence does:

- supported: the accepted answer (the variant found in a snippet);
- planted answer (unsupported): the planted wrong answer, same citations;
- wrong passage (unsupported): the most similar *other* question with its answer, citing this
  question's snippets (a claim cited to a passage about something else);
- rewritten sentence (unsupported): a counterfactual_positive sentence holding the planted answer,
  citing all positive snippets, its own untouched original among them (meaning alone cannot
  tell them apart: only the numbers/dates/names check can).

The cosine test matters for sentences that pass the numbers/dates/names check. Its threshold is
the highest that flags at most 5% of faithful paraphrases passing that check on the fit half
(questions 0-49): the scripted supported answers, plus "paraphrase" cases (a positive snippet's
answer sentence citing the *other* snippets that hold the answer: another outlet's wording of the
same fact; many add details the others lack, so they only count where the facts check passes).
The held-out half (questions 50-99) is only reported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from askdesk.answering import verify
from askdesk.articles.chunk import split_sentences
from askdesk.config import DEFAULT_MODEL
from askdesk.models.embed import SentenceTransformerEmbedder
from askdesk.types import Article

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "rgb-news" / "rgb_en_fact.jsonl"
TARGET_PARAPHRASES_FLAGGED = 0.05  # cosine alone may flag at most 5% of faithful sentences


class Lookup:
    """An embedder over vectors computed in one batch beforehand (check() calls embed_query)."""

    def __init__(self, vectors: dict[str, np.ndarray]):
        self.vectors = vectors

    def embed_query(self, text: str) -> np.ndarray:
        return self.vectors[text]


def sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in split_sentences(text)]


def has(text: str, answers: list[str]) -> bool:
    return any(a.lower() in text.lower() for a in answers)


def scripted(question: str, answer: str) -> str:
    return f"{question.strip().rstrip('?')}: {answer}."


def found_answer(r: dict) -> str:
    """The accepted answer variant as a snippet spells it."""
    return next(a for a in r["answers"] if any(a.lower() in p.lower() for p in r["positive"]))


def cases(records: list[dict], qvecs: np.ndarray) -> list[dict]:
    """{kind, q (question index), sentence, cited (positive snippet indices)} for every case."""
    out = []
    sims = qvecs @ qvecs.T
    np.fill_diagonal(sims, -1)
    for k, r in enumerate(records):
        pos, answer, fake = r["positive"], found_answer(r), r["counterfactual_answer"]
        holding = [i for i, p in enumerate(pos) if answer.lower() in p.lower()]
        everything = list(range(len(pos)))
        out.append({"kind": "supported", "q": k, "sentence": scripted(r["question"], answer), "cited": holding})
        for i in holding:
            others = [j for j in holding if j != i]
            out += [{"kind": "paraphrase", "q": k, "sentence": s, "cited": others}
                    for s in sentences(pos[i]) if others and answer.lower() in s.lower()]
        if any(fake.lower() in p.lower() for p in pos):  # the planted answer is in the evidence: no case
            continue
        out.append({"kind": "planted answer", "q": k, "sentence": scripted(r["question"], fake), "cited": holding})
        near = records[int(np.argmax(sims[k]))]
        if not has(found_answer(near), r["answers"]):
            out.append({"kind": "wrong passage", "q": k, "sentence": scripted(near["question"], found_answer(near)),
                        "cited": everything})
        for cp in r["counterfactual_positive"]:
            for s in sentences(cp):
                if fake.lower() in s.lower():
                    out.append({"kind": "rewritten sentence", "q": k, "sentence": s, "cited": everything})
    return out


def rates(results: list[dict], t: float) -> dict[str, tuple[int, int]]:
    """kind -> (flagged, total) at threshold t; paraphrases only where the facts check passes."""
    out: dict[str, list[int]] = {}
    for c in results:
        if c["kind"] == "paraphrase" and c["missing"]:
            continue
        flagged = bool(c["missing"]) or c["score"] < t
        n = out.setdefault(c["kind"], [0, 0])
        n[0] += flagged
        n[1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--show", type=int, default=0, help="print N flagged examples of each kind (held-out half)")
    args = p.parse_args()
    records = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    emb = SentenceTransformerEmbedder(DEFAULT_MODEL)
    qvecs = emb.embed_documents([r["question"] for r in records])
    todo = cases(records, qvecs)
    passages = {}  # (question, snippet) -> Passage with its sentence vectors
    texts = sorted({c["sentence"] for c in todo} | {s for r in records for p in r["positive"] for s in sentences(p)})
    print(f"embedding {len(texts)} sentences ...", file=sys.stderr)
    vecs = dict(zip(texts, emb.embed_documents(texts)))
    for k, r in enumerate(records):
        for i, text in enumerate(r["positive"]):
            art = Article(id=f"{r['id']}-{i}", title="", text=text)
            spans = tuple(split_sentences(text))
            passages[k, i] = verify.Passage(i + 1, art, 0, len(text), spans,
                                              np.stack([vecs[text[s:e]] for s, e in spans]))
    lookup = Lookup(vecs)
    results = []
    for c in todo:
        chk = verify.check(c["sentence"], [passages[c["q"], i] for i in c["cited"]], lookup)
        results.append({**c, "score": chk.score, "missing": chk.missing})
    fit = [c for c in results if c["q"] < len(records) // 2]
    held = [c for c in results if c["q"] >= len(records) // 2]

    faithful = np.array([c["score"] for c in fit if c["kind"] in ("supported", "paraphrase") and not c["missing"]])
    grid = np.round(np.arange(0.20, 0.90, 0.01), 2)
    best = float(max(t for t in grid if np.mean(faithful < t) <= TARGET_PARAPHRASES_FLAGGED))
    print(f"threshold {best:.2f}: cosine alone flags {np.mean(faithful < best):.1%} of {len(faithful)} faithful "
          f"sentences on the fit half; askdesk uses SUPPORT_COSINE = {verify.SUPPORT_COSINE}")
    for name, part in (("fit", fit), ("held-out", held)):
        for t in sorted({best, verify.SUPPORT_COSINE}):
            r = rates(part, t)
            cells = ", ".join(f"{k}: {f}/{n}" for k, (f, n) in sorted(r.items()))
            print(f"{name:9s} t={t:.2f} flagged  {cells}")
    facts_only = rates(held, -1.0)
    print("held-out, numbers/dates/names check alone: " + ", ".join(
        f"{k}: {f}/{n}" for k, (f, n) in sorted(facts_only.items())))
    r = rates(held, verify.SUPPORT_COSINE)
    bad = [k for k in r if k not in ("supported", "paraphrase")]
    print(f"held-out summary at {verify.SUPPORT_COSINE}: "
          f"caught {sum(r[k][0] for k in bad)}/{sum(r[k][1] for k in bad)} unsupported sentences; "
          f"wrongly flagged {r['supported'][0]}/{r['supported'][1]} supported answers and "
          f"{r['paraphrase'][0]}/{r['paraphrase'][1]} fact-checked paraphrases")
    for kind in (("supported", "paraphrase", "planted answer", "wrong passage", "rewritten sentence")
                 if args.show else ()):
        print(f"\n-- {kind}, {'flagged' if kind in ('supported', 'paraphrase') else 'missed'} (held-out):")
        t = verify.SUPPORT_COSINE
        good = kind in ("supported", "paraphrase")
        pick = [c for c in held if (bool(c["missing"]) or c["score"] < t) == good and c["kind"] == kind
                and not (kind == "paraphrase" and c["missing"])]
        for c in pick[: args.show]:
            print(f"  cos {c['score']:.2f} missing {list(c['missing'])}: {c['sentence'][:150]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
