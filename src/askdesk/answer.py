"""Hits -> Answer: the sentences that answer the question, with numbered citations; or a refusal.

The default answerer is extractive and needs no LLM: it scores each sentence of the retrieved
chunks by meaning (MiniLM cosine), by the question's rare words it contains (IDF-weighted),
by whether it holds the kind of thing asked for (a date for "when", a number for "how much"),
and by its chunk's rank. A small logistic model, fitted on data by `bench/calibrate.py`,
turns the evidence into a confidence; below the threshold askdesk refuses.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .index import Snapshot
from .retrieve import BM25, terms
from .types import Article, Citation, Hit

REFUSAL = "The articles I have do not answer that question."

# Fitted by `python bench/calibrate.py` on squad-dev half A: its questions answerable, half B's
# absent (off-topic), and questions about the odd paragraphs of A's articles absent from an index
# of the even ones (near-topic). Held out on half B: refuses 3.2% of answerable questions, 95.6%
# of off-topic and 53% of near-topic ones (docs/quality.md).
REFUSAL_MODEL = {
    "bias": -8.476,
    "weights": {"dense": -1.67, "coverage": 3.655, "sentence_cos": 9.367, "sentence_lex": 4.17, "specifics": 1.572,
                "type": 0.116},
    "threshold": 0.288,  # leaves 3% of the fit half's answerable questions refused
}
# Sentence score weights (chosen on squad-dev with `askdesk eval qa`).
SENTENCE_WEIGHTS = {"cos": 1.0, "lex": 0.9, "type": 0.15, "rank": 0.1}

_MONTHS = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
_TYPE_PATTERNS = {
    "date": re.compile(rf"\b(?:{_MONTHS}\b|\d{{3,4}}s?\b|(?:mon|tues|wednes|thurs|fri|satur|sun)day\b|century\b|yesterday\b)", re.I),
    "number": re.compile(r"(?:[$€£¥]\s?\d|\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|hundred|thousand|million|billion|trillion|dozen|half|percent)\b)", re.I),
    "person": re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)+"),
    "place": re.compile(r"\b(?:in|at|from|to|near)\s+(?:the\s+)?[A-Z][a-z]+"),
    "quote": re.compile(r"[\"“”][^\"“”]{12,}[\"“”]"),
}


def question_type(question: str) -> str | None:
    """The kind of answer asked for: date, number, person, place, quote, or None."""
    q = question.lower().strip()
    # "What did Ishiba say about Trump?": the answer is a quotation.
    if re.search(r"\b(say|said|says|tell|told|remark|remarked|state|stated|quote|quoted|comment|comments|describe|described)\b", q) \
            and re.search(r"^(what|how)\b", q):
        return "quote"
    if re.search(r"\b(when|what (year|date|day|month|time|century|decade)|which (year|date|day|month|century))\b", q):
        return "date"
    if re.search(r"\b(how (much|many|big|large|long|far|old|often|high|tall|fast|deep)|what (percentage|percent|amount|number|size|share|price|cost|value)|what was the (deficit|surplus|total|figure))\b", q):
        return "number"
    if re.search(r"^(who|whom|whose)\b|\bwho (is|was|were|are|did)\b", q):
        return "person"
    if re.search(r"^where\b|\bwhere (is|was|did|does|do|are|were)\b|\bin which (country|city|state|region)\b", q):
        return "place"
    return None


@dataclass(frozen=True)
class _Candidate:
    article: Article
    span: tuple[int, int]
    vector_row: int
    hit_rank: int


def answer(question: str, hits: Sequence[Hit], snap: Snapshot, qvec: np.ndarray, bm25: BM25, *,
           max_citations: int = 2, refuse_below: float | None = None, refusal_model: dict | None = None):
    """Choose the answering sentences and decide whether to refuse.

    Returns:
        (text, refused, citations, related, confidence)
    """
    model = refusal_model or REFUSAL_MODEL
    if not hits:
        return REFUSAL, True, (), (), 0.0
    qterms = terms(question)
    weights = {t: bm25.idf_of(t) for t in set(qterms)}
    total = sum(weights.values()) or 1.0
    qtype = question_type(question)
    qtext_lower = question.lower()

    cands: list[_Candidate] = []
    seen = set()
    for rank, h in enumerate(hits):
        a = snap.articles[h.chunk.article_id]
        base = snap.sentence_row[a.id]
        for k, (s, e) in enumerate(snap.sentences[a.id]):
            # Keyed on the folded text: two copies of a wire story never yield the same quote twice.
            key = " ".join(a.text[s:e].lower().split())
            if s >= h.chunk.start and e <= h.chunk.end and key not in seen:
                seen.add(key)
                cands.append(_Candidate(a, (s, e), base + k, rank))
    if not cands:
        return REFUSAL, True, (), (), 0.0

    vecs = snap.sentence_vectors[[c.vector_row for c in cands]].astype(np.float32)
    cos = vecs @ qvec
    scored = []
    for c, cs in zip(cands, cos):
        sent = c.article.text[c.span[0]:c.span[1]]
        sterms = set(terms(sent + " " + c.article.title))
        lex = sum(w for t, w in weights.items() if t in sterms) / total
        typ = _type_match(qtype, sent, qtext_lower)
        score = (SENTENCE_WEIGHTS["cos"] * float(cs) + SENTENCE_WEIGHTS["lex"] * lex
                 + SENTENCE_WEIGHTS["type"] * typ + SENTENCE_WEIGHTS["rank"] / (1 + c.hit_rank))
        scored.append((score, float(cs), lex, c))
    scored.sort(key=lambda x: -x[0])

    best_chunk = hits[0].chunk
    chunk_terms = set(terms(best_chunk.text + " " + snap.articles[best_chunk.article_id].title))
    coverage = sum(w for t, w in weights.items() if t in chunk_terms) / total
    top = scored[0][3]
    top_chunk = hits[top.hit_rank].chunk
    features = {"dense": max(h.dense for h in hits), "coverage": coverage,
                "sentence_cos": scored[0][1], "sentence_lex": scored[0][2],
                "specifics": _specifics_found(question, f"{top.article.title} {top.article.date or ''} {top_chunk.text}"),
                "type": 1.0 if qtype is None else _type_match(qtype, top.article.text[top.span[0]:top.span[1]], qtext_lower)}
    confidence = _sigmoid(model["bias"] + sum(model["weights"].get(k, 0.0) * v for k, v in features.items()))

    if confidence < (model["threshold"] if refuse_below is None else refuse_below):
        related = _citations([(s, c) for s, _, _, c in _diverse(scored, 3)])
        return REFUSAL, True, (), related, confidence

    chosen = [scored[0]]
    for item in scored[1:]:
        if len(chosen) >= max_citations:
            break
        # A second sentence only when it is nearly as good and adds a different passage.
        if item[0] >= 0.9 * scored[0][0] and item[3].article.id != chosen[0][3].article.id or (
                item[3].article.id == chosen[0][3].article.id and item[0] >= 0.95 * scored[0][0]
                and abs(item[3].span[0] - chosen[0][3].span[1]) > 1):
            chosen.append(item)
    cites = _citations([(s, c) for s, _, _, c in chosen])
    text = " ".join(f"{c.sentence} [{c.n}]" for c in cites)
    return text, False, cites, (), confidence


def feature_names() -> list[str]:
    """The refusal features `answer` computes, in the order bench/calibrate.py fits them."""
    return ["dense", "coverage", "sentence_cos", "sentence_lex", "specifics", "type"]


_SPECIFIC = re.compile(r"\d[\d.,]*|(?<=\s)[A-Z][\w'’.-]*")


def specifics(question: str) -> set[str]:
    """The question's names and numbers ("2022", "Nobel", "Ishiba"): the words an answer about
    the same topic but another event, year or person lacks. The first word is skipped
    (capitalised anyway)."""
    out = set()
    for m in _SPECIFIC.finditer(" " + question.strip()):
        if m.start() == 1 and not m.group(0)[0].isdigit():
            continue  # the question's first word
        out.update(terms(m.group(0)))
    return out


def _specifics_found(question: str, text: str) -> float:
    """Share of the question's names and numbers in ``text``; 1.0 when it has none."""
    wanted = specifics(question)
    if not wanted:
        return 1.0
    have = set(terms(text))
    return sum(t in have for t in wanted) / len(wanted)


def _type_match(qtype: str | None, sentence: str, question_lower: str) -> float:
    if qtype is None:
        return 0.0
    for m in _TYPE_PATTERNS[qtype].finditer(sentence):
        # The thing asked for is new information, not a word the question already has.
        if m.group(0).lower().strip() not in question_lower:
            return 1.0
    return 0.0


def _diverse(scored: list, n: int) -> list:
    out, arts = [], set()
    for item in scored:
        if item[3].article.id not in arts:
            out.append(item)
            arts.add(item[3].article.id)
        if len(out) == n:
            break
    return out


def _citations(items: list[tuple[float, _Candidate]]) -> tuple[Citation, ...]:
    out = []
    for n, (score, c) in enumerate(items, start=1):
        a = c.article
        s, e = c.span
        snip_s, snip_e = snippet_span(a.text, s, e)
        out.append(Citation(n=n, article_id=a.id, title=a.title, date=a.date, source=a.source, url=a.url,
                            path=a.path, sentence=a.text[s:e], snippet=a.text[snip_s:snip_e], start=s, end=e,
                            score=round(float(score), 4), snippet_start=snip_s))
    return tuple(out)


def snippet_span(text: str, s: int, e: int, reach: int = 240) -> tuple[int, int]:
    """A snippet around the sentence: up to ``reach`` characters each side, cut at sentence ends."""
    lo = max(0, s - reach)
    if lo > 0:
        cut = max(text.rfind(". ", lo, s), text.rfind("\n", lo, s))
        lo = cut + 1 if cut >= 0 else lo
    hi = min(len(text), e + reach)
    if hi < len(text):
        cut = max(text.rfind(". ", e, hi), text.rfind("\n", e, hi))
        hi = cut + 1 if cut > e else hi
    while lo < s and text[lo].isspace():
        lo += 1
    return lo, max(hi, e)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# -- short answers ----------------------------------------------------------------------------
