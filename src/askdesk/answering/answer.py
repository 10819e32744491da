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
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..store.lexical import LexicalIndex
from ..store.records import Snapshot
from ..text import MONTH, question_kind, terms
from ..types import Article, Citation, Hit
from . import read as read_mod

REFUSAL = "The articles I have do not answer that question."

# Fitted by `python bench/calibrate.py` on the fit parts of squad-dev (half A answerable, half B's
# questions off-topic, A's odd paragraphs asked of an index of its even ones: near-topic), rgb-news
# (answerable, and with the answering documents removed) and realtimeqa-dev (first weeks; near-topic:
# the week's question over other weeks' articles). Held out (the other parts): refuses 3.4% of
# squad's answerable questions, 95% of off-topic, 46% of near-topic; realtimeqa 12.7% answerable,
# 78% near-topic; rgb's removed-answer questions 0% (docs/quality.md).
REFUSAL_MODEL = {
    "bias": -4.822,
    "weights": {"dense": 0.463, "coverage": 1.124, "sentence_cos": 5.277, "sentence_lex": -0.402, "specifics": 0.855,
                "type": 0.327, "focus": 0.938, "sentence_specifics": -0.528},
    # Per source (squad, rgb, realtimeqa fit parts), the cut leaving 3% of its answerable
    # questions refused; their mean. The negative sentence weights are not "fewer words is
    # better": they pay back what coverage and specifics already counted for the same words.
    "threshold": 0.227,
}
FEATURES = ("dense", "coverage", "sentence_cos", "sentence_lex", "specifics", "type", "focus", "sentence_specifics")
# Sentence score weights: cos, lex, type and rank chosen on squad-dev with `askdesk eval qa`;
# period on realtimeqa-dev's fit weeks (a question that names "this week" wants this week's report:
# held-out weeks, the answer in the first sentence 0.245 -> 0.28; squad-dev, which names none, unchanged).
SENTENCE_WEIGHTS = {"cos": 1.0, "lex": 0.9, "type": 0.15, "rank": 0.1, "period": 0.3}

_TYPE_PATTERNS = {
    "date": re.compile(rf"\b(?:{MONTH}\b|\d{{3,4}}s?\b|(?:mon|tues|wednes|thurs|fri|satur|sun)day\b"
                       r"|century\b|yesterday\b)", re.I),
    "number": re.compile(r"(?:[$€£¥]\s?\d|\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve"
                         r"|twenty|thirty|forty|fifty|hundred|thousand|million|billion|trillion|dozen|half|percent)\b)",
                         re.I),
    "person": re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)+"),
    "place": re.compile(r"\b(?:in|at|from|to|near)\s+(?:the\s+)?[A-Z][a-z]+"),
    "quote": re.compile(r"[\"“”][^\"“”]{12,}[\"“”]"),
}


@dataclass(frozen=True)
class Extract:
    """What the extractive answerer decided: the text and its citations, or a refusal."""

    text: str
    refused: bool
    citations: tuple[Citation, ...]
    related: tuple[Citation, ...]  # the closest passages, when refused
    confidence: float
    features: dict[str, float] = field(default_factory=dict)  # FEATURES, as `confidence` weighed them
    short: str | None = None  # the reader's answer span in the first cited sentence, when it is short
    margin: float | None = None  # the reader's verdict on the first citation (`read.judge`); None without a reader
    readings: tuple = ()  # read.Judged of each candidate the reader read, best first (bench/calibrate_reader.py)


@dataclass(frozen=True)
class _Sentence:
    article: Article
    span: tuple[int, int]
    hit_rank: int


def features(question: str, hits: Sequence[Hit], snap: Snapshot, qvec: np.ndarray, lexical: LexicalIndex
             ) -> dict[str, float]:
    """The evidence the refusal model weighs, by name (`FEATURES`); {} when nothing was retrieved.

    dense: the best chunk cosine; coverage: the IDF share of the question's words in the best
    chunk; sentence_cos, sentence_lex: the best sentence's cosine and IDF share; specifics: the
    share of the question's names and numbers in its passage; type: whether it holds the kind
    of thing asked for (1 when the question asks for no particular kind); focus: the share of the
    question's words for what it asks in the sentence; sentence_specifics: its names and numbers
    in the sentence."""
    return _evidence(question, hits, snap, qvec, lexical)[1]


def confidence(feats: dict[str, float], model: dict | None = None) -> float:
    """The refusal model's probability that the passages hold the answer (0 for no evidence)."""
    if not feats:
        return 0.0
    model = model or REFUSAL_MODEL
    return _sigmoid(model["bias"] + sum(model["weights"].get(k, 0.0) * v for k, v in feats.items()))


def _evidence(question: str, hits: Sequence[Hit], snap: Snapshot, qvec: np.ndarray, lexical: LexicalIndex,
              period: tuple[str, str] | None = None):
    """(scored sentences, best first, as (score, cosine, lexical share, sentence); the features).

    ``period``: (since, until) the question names ("this week"): its articles' sentences score higher."""
    if not hits:
        return [], {}
    qterms = terms(question)
    weights = {t: lexical.idf_of(t) for t in set(qterms)}
    total = sum(weights.values()) or 1.0
    qkind = question_kind(question)
    qtype = None if qkind == "name" else qkind  # no pattern finds "a name of any sort"
    qtext_lower = question.lower()

    block = snap.sentences_in([h.chunk for h in hits])
    keep, seen = [], set()
    for i in range(len(block)):
        # Keyed on the folded text: two copies of a wire story never yield the same quote twice.
        folded = " ".join(block.text(i).lower().split())
        # A question in an article ("Has anyone died in the fires?", a Q&A heading) asks, it
        # does not answer: it is never chosen, however close its words are to the reader's.
        if folded.rstrip("\"'”’)] ").endswith("?"):
            continue
        if folded not in seen:
            seen.add(folded)
            keep.append(i)
    if not keep:
        return [], {}
    cos = block.vectors[keep] @ qvec
    scored = []
    for i, cs in zip(keep, cos):
        a, (s, e), rank = block.articles[i], block.spans[i], int(block.chunk[i])
        sent = a.text[s:e]
        sterms = set(terms(sent + " " + a.title))
        lex = sum(w for t, w in weights.items() if t in sterms) / total
        typ = _type_match(qtype, sent, qtext_lower)
        in_period = bool(period and a.date and period[0] <= a.date <= period[1])
        score = (SENTENCE_WEIGHTS["cos"] * float(cs) + SENTENCE_WEIGHTS["lex"] * lex
                 + SENTENCE_WEIGHTS["type"] * typ + SENTENCE_WEIGHTS["rank"] / (1 + rank)
                 + SENTENCE_WEIGHTS["period"] * in_period)
        scored.append((score, float(cs), lex, _Sentence(a, (s, e), rank)))
    scored.sort(key=lambda x: -x[0])

    best_chunk = hits[0].chunk
    chunk_terms = set(terms(best_chunk.text + " " + snap.article(best_chunk.article_id).title))
    top = scored[0][3]
    top_chunk = hits[top.hit_rank].chunk
    top_text = top.article.text[top.span[0]:top.span[1]]
    top_terms = set(terms(top_text))
    focus = focus_terms(question)
    focus_weight = sum(weights.get(t, 0.0) for t in focus) or 1.0
    feats = {"dense": max(h.dense for h in hits),
             "coverage": sum(w for t, w in weights.items() if t in chunk_terms) / total,
             "sentence_cos": scored[0][1], "sentence_lex": scored[0][2],
             "specifics": _specifics_found(question, f"{top.article.title} {top.article.date or ''} {top_chunk.text}"),
             "type": 1.0 if qtype is None else _type_match(qtype, top_text, qtext_lower),
             # A neighbouring fact is not an answer: the question's own words for what it asks
             # ("invest" in "How much did Japan invest?") and its names and numbers must be in the
             # sentence itself, not only somewhere in its chunk.
             "focus": sum(weights.get(t, 0.0) for t in focus & top_terms) / focus_weight if focus else 1.0,
             "sentence_specifics": _specifics_found(question,
                                                    f"{top.article.title} {top.article.date or ''} {top_text}")}
    return scored, feats


def answer(question: str, hits: Sequence[Hit], snap: Snapshot, qvec: np.ndarray, lexical: LexicalIndex, *,
           max_citations: int = 2, refuse_below: float | None = None, refusal_model: dict | None = None,
           period: tuple[str, str] | None = None, reader: read_mod.SpanReader | None = None,
           reader_candidates: int = 4) -> Extract:
    """Choose the answering sentences and decide whether to refuse.

    Args:
        question: the question as retrieval saw it.
        hits: the retrieved chunks, best first.
        snap: the index they come from (records and sentence vectors).
        qvec: the question's vector.
        lexical: the index's lexical side (for how rare each question word is).
        max_citations: sentences quoted at most.
        refuse_below: the confidence under which it refuses; None: the refusal model's threshold.
        refusal_model: another model than `REFUSAL_MODEL` (bench/calibrate.py).
        period: (since, until) of a date phrase in the question ("last week"), ISO days.
        reader: the trained reader (`read`): it reads the ``reader_candidates`` best-scored sentences,
            each with its neighbours, and decides the first citation, the short answer and the
            refusal; without one, the sentence scores and the refusal model decide.
    """
    model = refusal_model or REFUSAL_MODEL
    scored, feats = _evidence(question, hits, snap, qvec, lexical, period)
    if not scored:
        return Extract(REFUSAL, True, (), (), 0.0, feats)
    if reader is not None:
        return _read(question, scored, feats, reader, reader_candidates, max_citations, lexical)
    conf = confidence(feats, model)
    if conf < (model["threshold"] if refuse_below is None else refuse_below):
        related = _citations([(s, c) for s, _, _, c in _diverse(scored, 3)])
        return Extract(REFUSAL, True, (), related, conf, feats)

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
    return Extract(text, False, cites, (), conf, feats)


def _read(question: str, scored: list, feats: dict, reader: read_mod.SpanReader, candidates: int,
          max_citations: int, lexical: LexicalIndex) -> Extract:
    """The reader's decision over the best ``candidates`` sentences (see `answer`)."""
    cands = scored[:candidates]
    readings = read_mod.read(reader, question, [(c.article.text, *c.span) for _, _, _, c in cands])
    # The reader's margin, with retrieval's own signals for the same sentence beside it
    # (`read.judge`): the judgement chooses the first citation and, against its threshold, the refusal.
    looks = _Looks(question, lexical)
    seen = []
    for r in readings:
        a = cands[r.candidate][3].article
        f = looks.features(r, a, cands[r.candidate][0])
        j = read_mod.judge(f)
        seen.append((j, r, read_mod.Judged(j, f, a.text[slice(*r.sentence)], read_mod.short_span(a.text, r),
                                           r.candidate)))
    seen.sort(key=lambda x: -x[0])
    top, best, _ = seen[0]
    judged = tuple(x[2] for x in seen)
    conf = _sigmoid(top - read_mod.READER_MODEL["threshold"])
    if not read_mod.answers_by(top):
        related = _citations([(s, c) for s, _, _, c in _diverse(scored, 3)])
        return Extract(REFUSAL, True, (), related, conf, feats, margin=top, readings=judged)
    chosen = [best]
    for j, r, _ in seen[1:]:
        if len(chosen) >= max_citations:
            break
        # A second sentence only when it is judged an answer too, nearly as surely, and is another
        # sentence (wire copies of one story are folded away by _evidence).
        same = cands[r.candidate][3].article.id == cands[best.candidate][3].article.id and r.sentence == best.sentence
        if read_mod.answers_by(j) and j >= top - SECOND_MARGIN and not same:
            chosen.append(r)
    cites = tuple(citation(n, cands[r.candidate][3].article, *r.sentence, round(_sigmoid(r.margin), 4))
                  for n, r in enumerate(chosen, start=1))
    text = " ".join(f"{c.sentence} [{c.n}]" for c in cites)
    return Extract(text, False, cites, (), conf, feats, short=judged[0].short, margin=top, readings=judged)


class _Looks:
    """Retrieval's signals for one candidate sentence, beside the reader's margin (`read.FEATURES`)."""

    def __init__(self, question: str, lexical: LexicalIndex):
        self.question = question
        self.weights = {t: lexical.idf_of(t) for t in set(terms(question))}
        self.focus = focus_terms(question)
        self.focus_weight = sum(self.weights.get(t, 0.0) for t in self.focus) or 1.0
        kind = question_kind(question)
        self.kind = None if kind == "name" else kind
        self.lower = question.lower()

    def features(self, r: read_mod.Reading, a: Article, score: float) -> dict[str, float]:
        sent = a.text[r.sentence[0]:r.sentence[1]]
        have = set(terms(sent))
        return {"margin": r.margin, "score": score,
                # "How much did Japan invest?" against a sentence about a surplus: the asked word is missing.
                "focus": (sum(self.weights.get(t, 0.0) for t in self.focus & have) / self.focus_weight
                          if self.focus else 1.0),
                "specifics": _specifics_found(self.question, f"{a.title} {a.date or ''} {sent}"),
                # Whether the span is the kind of thing asked for (a number for "how many", ...).
                "type": 1.0 if self.kind is None else _type_match(self.kind, a.text[r.start:r.end], self.lower)}


def _text(cands: list, r: read_mod.Reading) -> str:
    return cands[r.candidate][3].article.text


SECOND_MARGIN = 1.0  # logits: a second answering sentence must be about as sure as the first


# The words that ask rather than say what is asked about ("how much", "what year").
_ASKING = frozenset(terms("much many long big large old far often high tall fast deep heavy wide year date day month "
                          "time name number percentage percent amount kind type happen happened go going get"))


def focus_terms(question: str) -> set[str]:
    """The question's words for what it asks about, less its names and numbers and its asking
    words: "How much did Japan invest in the US in 2024?" -> {"invest"}."""
    return set(terms(question)) - specifics(question) - _ASKING


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


def _citations(items: list[tuple[float, _Sentence]]) -> tuple[Citation, ...]:
    return tuple(citation(n, c.article, *c.span, score) for n, (score, c) in enumerate(items, start=1))


def citation(n: int, a: Article, s: int, e: int, score: float, **extra) -> Citation:
    """Citation [n] of sentence [s, e) of ``a``, with its snippet (`snippet_span`)."""
    lo, hi = snippet_span(a.text, s, e)
    return Citation(n=n, article_id=a.id, title=a.title, date=a.date, source=a.source, url=a.url, path=a.path,
                    sentence=a.text[s:e], snippet=a.text[lo:hi], start=s, end=e, score=round(float(score), 4),
                    snippet_start=lo, **extra)


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

