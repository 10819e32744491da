"""A written answer -> its sentences, each checked against the passages it cites.

A sentence is supported only when it cites an existing passage, every number, date and name in
it appears in one of its cited passages ("$14.9 billion", "14.9 billion" and "14.9bn" are one
number), and its meaning is close to one of their sentences: cosine at least SUPPORT_COSINE
between its embedding and the best cited sentence's, which is its evidence.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..articles.chunk import split_sentences
from ..types import Article, Citation, Claim
from .answer import REFUSAL, citation

logger = logging.getLogger(__name__)

# Fitted by `python bench/calibrate_verifier.py` on rgb-news for all-MiniLM-L6-v2: the highest cosine
# that flags at most 5% of faithful sentences (held out: 291/299 unsupported caught, 6/50 supported flagged).
SUPPORT_COSINE = 0.53


@dataclass(frozen=True, eq=False)
class Passage:
    """One numbered passage the LLM reads: a span of an article, its sentences and their vectors."""

    n: int
    article: Article
    start: int
    end: int
    spans: tuple[tuple[int, int], ...]  # sentence spans in article.text, inside [start, end)
    vectors: np.ndarray | None = None  # (len(spans), dim) from the index; None: embedded when verifying

    @property
    def text(self) -> str:
        return self.article.text[self.start:self.end]


_CITE = re.compile(r"\[\s*(?:passages?\s*)?(\d+(?:\s*(?:,|;|-|–|and)\s*(?:passages?\s*)?\d+)*)\s*\]", re.I)
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?:st|nd|rd|th)?"
                     r"(?:\s*(trillion|billion|million|thousand|tn|bn|mn)\b)?", re.I)
_SCALE = {"trillion": 1e12, "tn": 1e12, "billion": 1e9, "bn": 1e9, "million": 1e6, "mn": 1e6, "thousand": 1e3}
_WORD = re.compile(r"[^\W\d_][\w'’]*")
# A passage's "fourth season" supports a sentence's "season 4".
_NUMBER_WORDS = {w: float(i) for words in (
    "zero one two three four five six seven eight nine ten eleven twelve".split(),
    "_ first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth".split())
    for i, w in enumerate(words)}
# Capitalised only because they open a sentence or a clause: not names to look up.
_COMMON = set("""a about after again against all also although among an and another any are as at be because
before both but by can could despite during each either even every few for from had has have he her here his
how however i if in into is it its just many may meanwhile more moreover most much my neither no nor not of on
once one only or other our over overall per several she since so some such than that the their them then there
these they this those though thus to today under unlike until up upon was we were what when where whether which
while who whom whose why will with within without would yes yet you your according additionally furthermore
finally instead""".split())


@dataclass(frozen=True)
class Check:
    """The verdict on one sentence against the passages it cites."""

    supported: bool
    score: float  # best cosine with a cited passage's sentence
    missing: tuple[str, ...]  # numbers, dates and names found in no cited passage
    evidence: tuple[int, int] | None  # (passage n, sentence index) of the best match
    best: dict  # passage n -> (sentence index, cosine)


def check(sentence: str, cited: Sequence[Passage], embedder, *, threshold: float = SUPPORT_COSINE) -> Check:
    """Is ``sentence`` (cite markers removed) supported by the ``cited`` passages?"""
    if not cited:
        return Check(False, 0.0, (), None, {})
    words: set[str] = set()
    numbers: set[float] = set()
    for p in cited:
        hay = " ".join((p.article.title, p.text, _date_words(p.article.date)))
        hay_words = _words(hay)
        words |= hay_words
        numbers |= {v for _, *pair in _numbers(hay) for v in pair}
        numbers |= {_NUMBER_WORDS[w] for w in hay_words if w in _NUMBER_WORDS}
    missing = [shown for shown, *pair in _numbers(sentence) if not set(pair) & numbers]
    missing += [w for w in _names(sentence) if not _found(w, words)]
    q = embedder.embed_query(sentence)
    best = {}
    for p in cited:
        sims = _embedded(p, embedder).vectors @ q
        best[p.n] = (int(np.argmax(sims)), float(np.max(sims)))
    n = max(best, key=lambda k: best[k][1])
    score = best[n][1]
    return Check(not missing and score >= threshold, score, tuple(missing), (n, best[n][0]), best)


def verify(text: str, passages: Sequence[Passage], embedder, *, threshold: float = SUPPORT_COSINE) -> list[Claim]:
    """Each sentence of a written answer, its citations, and whether they back it.

    Cites to passage numbers that do not exist are dropped; a sentence citing nothing is unsupported.
    """
    return [s for s, _ in _verify(text, {p.n: p for p in passages}, embedder, threshold)]


def _verify(text: str, by_n: dict[int, Passage], embedder, threshold: float) -> list[tuple[Claim, Check]]:
    claims: list[list] = []  # [sentence, cites]
    for s, e in split_sentences(text):
        raw = text[s:e]
        lead = re.match(rf"(?:\s*(?:{_CITE.pattern}))+", raw, re.I)
        if lead and claims:  # "... billion. [2]": a marker split off the sentence it closes
            claims[-1][1] += _cites(lead.group())
            raw = raw[lead.end():]
        clean = _tidy(_CITE.sub(" ", raw))
        if not re.search(r"[^\W\d_]", clean):  # "[2]." or a list number "1." on its own
            if claims:
                claims[-1][1] += _cites(raw)
            continue
        claims.append([clean, _cites(raw)])
    cited = {n for _, cites in claims for n in cites}
    by_n = {n: _embedded(p, embedder) if n in cited else p for n, p in by_n.items()}  # each embedded once
    out = []
    for clean, cites in claims:
        valid = list(dict.fromkeys(n for n in cites if n in by_n))
        c = check(clean, [by_n[n] for n in valid], embedder, threshold=threshold)
        if not c.supported:
            logger.debug("unsupported (cos %.2f, missing %s): %r", c.score, c.missing, clean)
        evidence = _sentence(by_n[c.evidence[0]], c.evidence[1]) if c.evidence else None
        out.append((Claim(clean, tuple(valid), c.supported, evidence), c))
    return out


def carries(sentence: str, short: str) -> bool:
    """Does ``sentence`` state the short answer ``short``: each of its numbers (in any notation:
    "$14.9bn" carries "$14.9 billion") and names, or, when it has neither, its words?"""
    have = {v for _, *pair in _numbers(sentence) for v in pair}
    words = _words(sentence)
    have |= {_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS}
    numbers = _numbers(short)
    keys = _names(short) or ([] if numbers else [w for w in _words(short) if w not in _COMMON])
    return all(set(pair) & have for _, *pair in numbers) and all(_found(w, words) for w in keys)


def compose(raw: str, passages: Sequence[Passage], embedder, *,
            threshold: float = SUPPORT_COSINE) -> tuple[str, tuple[Claim, ...], tuple[Citation, ...]] | None:
    """A model's reply -> (text, sentences, citations), renumbered in order of first citation.

    Returns None when the model declined (the refusal sentence) or wrote nothing.
    """
    text = re.sub(r"<think>.*?(?:</think>|$)", "", raw, flags=re.S).strip()  # reasoning models think aloud
    norm = lambda t: " ".join(re.sub(r"[^\w ]", " ", t.lower()).split())  # noqa: E731
    if not text or norm(text) == norm(REFUSAL) or (text.startswith(REFUSAL) and not _CITE.search(text)):
        return None
    by_n = {p.n: p for p in passages}
    checked = _verify(text, by_n, embedder, threshold)
    order = list(dict.fromkeys(n for s, _ in checked for n in s.cites))
    new = {old: i for i, old in enumerate(order, 1)}
    sentences = tuple(dataclasses.replace(s, cites=tuple(new[n] for n in s.cites)) for s, _ in checked)
    text = _CITE.sub(lambda m: "".join(f"[{new[n]}]" for n in dict.fromkeys(_cites(m.group())) if n in new), text)
    text = re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", text)).strip()
    citations = []
    for old in order:  # each passage quoted at its sentence closest to a claim it backs (else to any claim)
        _, score, idx = max((c.supported, c.best[old][1], c.best[old][0]) for _, c in checked if old in c.best)
        p = by_n[old]
        citations.append(citation(new[old], p.article, *p.spans[idx], score))
    return text, sentences, tuple(citations)


def _cites(marked: str) -> list[int]:
    out = []
    for m in _CITE.finditer(marked):
        for a, b in re.findall(r"(\d+)(?:\s*[-–]\s*(\d+))?", m.group(1)):
            out += range(int(a), int(b) + 1) if b and 0 <= int(b) - int(a) <= 20 else [int(a)]
    return out


def _tidy(text: str) -> str:
    text = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s+", "", text)  # list bullets
    return re.sub(r"\s+([.,;:!?])", r"\1", " ".join(text.split()))


def _numbers(text: str) -> list[tuple[str, float, float]]:
    """(as written, value, value with its scale word): "$14.9 billion" -> ("14.9 billion", 14.9, 1.49e10)."""
    out = []
    for m in _NUMBER.finditer(text):
        whole, frac, scale = m.groups()
        v = float(whole.replace(",", "") + (frac or ""))
        out.append((m.group(), float(f"{v:.9g}"), float(f"{v * _SCALE.get((scale or '').lower(), 1.0):.9g}")))
    return out


def _undot(text: str) -> str:
    return re.sub(r"\b(?:[A-Z]\.){2,}", lambda m: m.group().replace(".", ""), text)  # "U.S." -> "US"


def _stem(word: str) -> str:
    return re.sub(r"['’]s?$", "", word)


def _words(text: str) -> set[str]:
    return {_stem(w).lower() for w in _WORD.findall(_undot(text))}


def _names(sentence: str) -> list[str]:
    """Capitalised words (names, places, months, acronyms), less sentence openers and function words."""
    out = []
    for i, m in enumerate(_WORD.finditer(_undot(sentence))):
        w = _stem(m.group())
        low = w.lower()
        if not w[0].isupper() or len(w) < 2 or low in _COMMON:
            continue
        if i == 0 and w[1:].islower() and low.endswith(("ly", "ing", "ed")):  # "Currently", "Following"
            continue
        out.append(w)
    return out


def _found(word: str, words: set[str]) -> bool:
    """In ``words``, or sharing a stem with one of them ("Japanese" ~ "Japan", "Chinese" ~ "China")."""
    w = word.lower()
    if w in words:
        return True
    return any(len(p := os.path.commonprefix([w, x])) >= 4 and len(p) >= min(len(w), len(x)) - 1 for x in words)


def _date_words(date: str | None) -> str:
    """"2025-02-07" -> "2025-02-07 Friday February 7 2025 Feb", so a date line can support a sentence."""
    try:
        d = dt.date.fromisoformat((date or "")[:10])
    except ValueError:
        return date or ""
    return f"{date} {d:%A %B} {d.day} {d.year} {d:%b}"


def _embedded(p: Passage, embedder) -> Passage:
    """``p`` with sentence vectors (the index's, or embedded now)."""
    if p.vectors is not None:
        return p
    return dataclasses.replace(p, vectors=embedder.embed_documents([p.article.text[s:e] for s, e in p.spans]))


def _sentence(p: Passage, i: int) -> str:
    s, e = p.spans[i]
    return p.article.text[s:e]
