"""The reader's decisions: which sentence answers, its short answer, or that nothing here does.

Retrieval and the sentence scores (`answer._evidence`) propose candidate sentences; the reader
(`askdesk.models.reader`) reads the question with each candidate and its neighbours (one window,
`reader_window.window`, as in training) and points at the answer span or at "no answer". The window
whose best span beats its no-answer score by the most wins: the sentence holding that span is cited
first and the span is the short answer. Below `THRESHOLD` the desk refuses: the reader found no
span in what was retrieved that it would bet on, which is what a near-topic question looks like
(the article is there, the fact is not).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..articles.chunk import split_sentences
from ..models.reader import WINDOW_CHARS, window

# How the answerer judges a candidate (`judge`): a logistic model over the reader's margin and
# retrieval's own signals for that sentence (FEATURES), fitted with its refusal threshold by
# bench/calibrate_reader.py on fit parts only (training/README.md says which); docs/quality.md.
# Fitted 2026-12-07 with 2 candidates (Config.reader_candidates) on Force and Geology: there it leaves
# 8.1% of answerable questions refused and refuses 26% of the unanswerable ones; held out (the four
# other articles) 13.4% and 40%, the first cited sentence holding the answer 0.83 (margin alone:
# 10.5%, 40%, 0.80). Reading 4 or 8 candidates measured no better (4: 14.7%, 41%, 0.83) at 2x and 4x
# the reader's time. "focus" (the question's asked-about words in the sentence) and retrieval's
# sentence score carry what the reader misses; "specifics" and "type" add little.
FEATURES = ("margin", "score", "focus", "specifics", "type")
READER_MODEL = {"bias": -2.1689, "weights": {"margin": 0.1933, "score": 0.8148, "focus": 0.6416, "specifics": 0.1543,
                                             "type": -0.1548}, "threshold": -1.6785}
# The reader alone, given a passage and no retrieval (`read_passage`, `askdesk eval reader`): its own
# margin threshold, fitted the same way on the same calibration articles.
MARGIN_THRESHOLD = -3.435  # 8% of the calibration articles' answerable questions refused, given the gold paragraph
SHORT_MAX_WORDS = 12  # a longer span is a clause, not a short answer: the sentence says it better


class SpanReader(Protocol):
    """The reader seam: `askdesk.models.reader.Reader`, or a fake in unit tests."""

    def read(self, question: str, windows: Sequence[str]) -> list: ...


@dataclass(frozen=True)
class Reading:
    """The reader's best answer in one text: where the span and its sentence are, and the margin."""

    margin: float  # best span's score minus the no-answer score; higher: surer that this answers
    start: int  # the span, in the text's characters (end exclusive)
    end: int
    sentence: tuple[int, int]  # the sentence holding the span's start
    candidate: int  # which of the candidates it came from

    @property
    def answers(self) -> bool:
        """Whether the reader alone, with no retrieval score beside it, would answer from this."""
        return self.margin >= MARGIN_THRESHOLD


@dataclass(frozen=True)
class Judged:
    """One candidate as the answerer weighed it: the judgement, its features, the sentence and short answer."""

    judgement: float
    features: dict[str, float]  # FEATURES
    sentence: str
    short: str | None
    rank: int  # the candidate's place in retrieval's sentence ranking (0: its best)


def judge(features: dict[str, float], model: dict | None = None) -> float:
    """How surely a candidate answers, in logits: `READER_MODEL` over its FEATURES."""
    m = model or READER_MODEL
    return m["bias"] + sum(w * features.get(k, 0.0) for k, w in m["weights"].items())


def answers_by(judgement: float, model: dict | None = None) -> bool:
    return judgement >= (model or READER_MODEL)["threshold"]


def around(text: str, s: int, e: int) -> tuple[int, int]:
    """The window (start, end) of the sentence [s, e) of ``text``: it and its neighbours, as in training."""
    lo, hi = max(0, s - WINDOW_CHARS), min(len(text), e + WINDOW_CHARS)
    spans = split_sentences(text, lo, hi)
    # The split of a cut-out piece may differ at its edges; the sentence itself is found by overlap.
    i = next((k for k, (a, b) in enumerate(spans) if a <= s < b or s <= a < e), None)
    if i is None:
        return s, e
    return window(text, spans, i)


def read(reader: SpanReader, question: str, candidates: Sequence[tuple[str, int, int]]) -> list[Reading]:
    """The reader's readings of ``candidates`` ((text, sentence start, sentence end) each), best first.

    Candidates whose windows coincide are read once."""
    wins, seen = [], {}
    for k, (text, s, e) in enumerate(candidates):
        lo, hi = around(text, s, e)
        key = (id(text), lo, hi)
        if key not in seen:
            seen[key] = len(wins)
            wins.append((k, text, lo, hi))
    spans = reader.read(question, [t[lo:hi] for _, t, lo, hi in wins])
    out = []
    for (k, text, lo, hi), sp in zip(wins, spans):
        a, b = lo + sp.start, lo + sp.end
        sent = next(((x, y) for x, y in split_sentences(text, lo, hi) if x <= a < y), candidates[k][1:])
        out.append(Reading(sp.margin, a, b, sent, k))
    out.sort(key=lambda r: -r.margin)
    return out


def read_passage(reader: SpanReader, question: str, text: str) -> Reading | None:
    """The best reading of a whole passage (every sentence a candidate): the reader given the gold paragraph."""
    spans = split_sentences(text)
    if not spans:
        return None
    got = read(reader, question, [(text, s, e) for s, e in spans])
    return got[0] if got else None


def short_span(text: str, r: Reading) -> str | None:
    """The short answer: the span's text when it is short enough to be one."""
    span = text[r.start:r.end].strip(" ,.;:")
    return span if span and len(span.split()) <= SHORT_MAX_WORDS else None
