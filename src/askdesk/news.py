"""News-aware reading: figures that disagree between reports, quotations with their speakers
(found by `askdesk.quotes`), and answers that hold only "as of" a date. Pure functions over text
and the answerer's output: no model, no index, so every rule here is tested on small hand-written
articles. (Date phrases in questions, "last week", are read by `askdesk.text`.)

`Desk` calls `enrich` after `answer.answer()` returns.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .answer import citation
from .quotes import Quote, asked_speaker, find_quotes, same_person
from .records import Sentences
from .text import MONTH_FULL, NUMBER, SCALES, month_number, pretty_date, question_kind, stem
from .types import Answer, Article, Claim, Conflict

# User-facing sentences (tested by name).
AS_OF = "As of {date}: {text}"  # an answer about a figure that changes, dated by its cited article
QUOTE_ANSWER = "{speaker}: “{quote}” [{n}]"  # a quotation, marked as one, with the person the article names
CONFLICT = "Reports differ on {about}: {values}."
NO_QUOTE_NOTE = "No quotation from {speaker} on this was found in the articles; this is the closest passage."


# ---- figures that disagree --------------------------------------------------------------------------

@dataclass(frozen=True)
class Figure:
    """A number with its unit ("12.1 million tonnes"), or a date, in one sentence."""

    text: str  # as written, "12.1 million tonnes"
    value: float | str  # 12_100_000.0, or an ISO-ish date key for dates
    unit: str  # "tonnes", "$", "%", "date"
    subject: frozenset  # content words near it: what the figure is about
    periods: frozenset  # years, months, quarters the sentence names besides the figure
    hedged: bool  # "about", "more than": compatible with nearby values
    span: tuple[int, int]  # in the sentence


_UNITS = {"%": "%", "percent": "%", "per cent": "%", "pc": "%", "tons": "tonnes", "tonne": "tonnes", "ton": "tonnes",
          "t": "tonnes", "tonnes": "tonnes", "euros": "€", "euro": "€", "eur": "€", "dollars": "$", "dollar": "$",
          "usd": "$", "us$": "$", "pounds": "£", "yen": "¥", "persons": "people", "person": "people"}
_DATE = re.compile(rf"\b(?:(?P<m1>{MONTH_FULL})\.? (?P<d1>\d{{1,2}})(?:st|nd|rd|th)?(?:,? (?P<y1>(?:19|20)\d\d))?"
                   rf"|(?P<d2>\d{{1,2}})(?:st|nd|rd|th)? (?P<m2>{MONTH_FULL})(?:,? (?P<y2>(?:19|20)\d\d))?)\b", re.I)
_PERIOD_WORDS = re.compile(rf"\b(?:(?:19|20)\d\d|{MONTH_FULL}|q[1-4]|(?:first|second|third|fourth) quarter|"
                           r"(?:last|this|next) (?:year|month|week|quarter)|yesterday|today)\b", re.I)
_HEDGE = re.compile(r"\b(?:about|around|nearly|almost|roughly|approximately|some|over|under|more than|less than|"
                    r"fewer than|up to|at least|at most|close to|estimated|an estimated|just over|just under)\s*$",
                    re.I)
_STOP = set("""a an the of in on at to for from by with and or but as is was were are be been being has have had
this that these those it its their his her they he she we our you than then there here which who whom whose what
when where how why not no nor so such into onto over under about after before during between up down out more
most less least very also just only said says say would will could should may might can last next first new per
while amid since until each both other another some any all one two three""".split())


def find_figures(sentence: str) -> list[Figure]:
    """The numbers-with-units and the dates of one sentence (years alone and days of a date are not figures)."""
    return list(_figures(sentence))


@lru_cache(maxsize=4096)
def _figures(sentence: str) -> tuple[Figure, ...]:
    # Cached: every answer checks its passages' sentences for figures, and popular articles'
    # sentences come back question after question (~2 ms of each answer before).
    out = []
    dates = []
    for m in _DATE.finditer(sentence):
        month = month_number(m.group("m1") or m.group("m2"))
        day, year = int(m.group("d1") or m.group("d2")), m.group("y1") or m.group("y2")
        if 1 <= day <= 31:
            dates.append(m.span())
            out.append((m.span(), m.group(0), f"{year or '?'}-{month:02d}-{day:02d}", "date", False))
    for m in NUMBER.finditer(sentence):
        if any(s <= m.start("num") < e for s, e in dates):
            continue
        cur, num, scale, unit = m.group("cur"), m.group("num"), (m.group("scale") or "").lower(), m.group("unit")
        after = sentence[m.end("num"):m.end("num") + 1]
        if after == "-" or after.isalpha() and not scale and (unit or "").lower() in ("", "st", "nd", "rd", "th"):
            continue  # "90th", "Q1", "18-month"
        unit_l = (unit or "").lower()
        if unit_l in _STOP or unit_l in SCALES or cur and unit_l not in ("%", "percent", "per cent"):
            unit, unit_l = None, ""  # "$14.9 billion attempt": the dollar sign is the unit
        if not cur and not scale and unit_l != "%" and re.fullmatch(r"(?:19|20)\d\d", num):
            continue  # a year ("2019 US Open")
        norm = _UNITS.get((cur or "").lower()) or cur or _UNITS.get(unit_l) or (unit_l.rstrip("s") if unit_l else "")
        if not norm:
            continue  # a bare number: what it counts is unknown
        value = float(num.replace(",", "")) * SCALES.get(scale, 1.0)
        end = m.end("unit") if unit else (m.end("scale") if scale else m.end("num"))
        out.append(((m.start(), end), sentence[m.start():end].strip(), value, norm,
                    bool(_HEDGE.search(sentence[:m.start()]))))
    figures = []
    spans = [span for span, *_ in out]
    for (s, e), text, value, unit, hedged in out:
        rest = sentence[:s] + " " + sentence[e:]
        lo = max([b for a, b in spans if b <= s], default=0)  # the subject stops at a neighbouring figure
        hi = min([a for a, b in spans if a >= e], default=len(sentence))
        figures.append(Figure(text, value, unit, _subject(sentence[lo:hi], s - lo, e - lo),
                              frozenset(w.lower() for w in _PERIOD_WORDS.findall(rest)), hedged, (s, e)))
    return tuple(figures)


_CLAUSE = re.compile(r"[,;:()·|]|\s(?:and|but|vs\.?|versus|while|whereas)\s|\s[–—-]\s|\.\.\.|…")


def _subject(sentence: str, s: int, e: int, reach: int = 8) -> frozenset:
    """Content words of the figure's clause, up to ``reach`` each side: what the figure is about."""
    before = re.findall(r"[A-Za-z][\w'’-]+", _CLAUSE.split(sentence[:s])[-1])[-reach:]
    after = re.findall(r"[A-Za-z][\w'’-]+", _CLAUSE.split(sentence[e:])[0])[:reach]
    return frozenset(_stem(w) for w in before + after
                     if w.lower() not in _STOP and w.lower() not in SCALES and w.lower() not in _UNITS
                     and not _PERIOD_WORDS.fullmatch(w))


def _stem(word: str) -> str:
    return stem(word.replace("’", "'").removesuffix("'s").removesuffix("'S"))


def disagree(a: Figure, b: Figure) -> bool:
    """Whether two figures from different reports state the same fact differently.

    Same unit; values differ (by more than 0.5% for numbers); neither hedged ("about 12 million");
    at least two words of what they are about shared, and half of the shorter list; and the
    sentences do not name different periods ("in 2023" vs "in 2024": a series, not a dispute).
    """
    if a.unit != b.unit or a.hedged or b.hedged:
        return False
    if a.unit == "date":
        (ya, da), (yb, db) = str(a.value).split("-", 1), str(b.value).split("-", 1)
        if a.value == b.value or da == db and "?" in (ya + yb):
            return False  # "7 February" and "7 February 2025" are the same day
    elif abs(a.value - b.value) <= 0.005 * max(abs(a.value), abs(b.value)):
        return False
    shared = a.subject & b.subject
    if len(shared) < 2 or len(shared) < 0.5 * min(len(a.subject), len(b.subject)):
        return False
    return not (a.periods and b.periods and a.periods != b.periods)


def _about(sentence: str, f: Figure, reach: int = 7) -> str:
    """The figure's clause with the figure left out: "The port of Varsk handled … of cargo last year"."""
    head = re.split(r"[,;:()]|\s[–—-]\s", sentence[:f.span[0]])[-1]
    tail = re.split(r"[,;:()]|\s[–—-]\s|\.\s*$", sentence[f.span[1]:])[0]
    return " ".join(head.split()[-reach:] + ["…"] + tail.split()[:reach]).strip(" ,;:.")


# ---- putting it into the answer ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Scored:
    """One sentence of a retrieved chunk, and how close it is to the question (cosine)."""

    article: Article
    start: int
    end: int
    score: float


QUOTE_MARGIN = 0.15  # a quotation replaces the answerer's sentence when its cosine is within this of it
_NOW_Q = re.compile(r"\b(?:latest|current|currently|now|so far|to date|still|yet|recent|recently|as of|at present|"
                    r"at the moment|these days|nowadays|today|this (?:week|month|year))\b", re.I)
_NOW_S = re.compile(r"\b(?:currently|now|so far|to date|as of|at present|latest|stands? at|standing at)\b", re.I)


def time_dependent(question: str, sentence: str) -> bool:
    """Whether the answer holds only as of a date: "latest", "so far", a figure "currently" at a level."""
    if _NOW_Q.search(question):
        return True
    return bool(_NOW_S.search(sentence) and any(f.unit != "date" for f in find_figures(sentence)))


def enrich(answer: Answer, sentences: Sentences, scores: np.ndarray, *, max_quotes: int = 2) -> Answer:
    """The news layer over an answer: quotations and speakers, disagreeing figures, "as of".

    Args:
        answer: what the answerer (or the LLM) returned; refusals come back unchanged.
        sentences: the sentences of the retrieved chunks (`Retriever.sentences`) ...
        scores: ... and each one's cosine to the question.
        max_quotes: quotations given for a "What did X say" question.
    """
    if answer.refused or not answer.citations:
        return answer
    passages = [_Scored(a, s, e, float(x)) for a, (s, e), x in zip(sentences.articles, sentences.spans, scores)]
    quotes: dict[str, list[Quote]] = {}
    for p in passages:
        if p.article.id not in quotes:
            quotes[p.article.id] = find_quotes(p.article.text)
    if answer.generator == "extractive" and question_kind(answer.question) == "quote":
        answer = _answer_with_quotes(answer, passages, quotes, max_quotes)
    cites = []
    for c in answer.citations:  # every cited attributed quotation is marked, whatever was asked
        q = next((q for q in quotes.get(c.article_id, ()) if q.speaker and q.start < c.end and c.start < q.end), None)
        cites.append(dataclasses.replace(c, quote=q.text, speaker=q.speaker) if q else c)
    answer = dataclasses.replace(answer, citations=tuple(cites))
    answer = _with_conflicts(answer, passages)
    first = answer.citations[0]
    if first.date and time_dependent(answer.question, first.sentence):
        answer = dataclasses.replace(answer, text=AS_OF.format(date=pretty_date(first.date), text=answer.text),
                                     as_of=first.date)
    return answer


def _answer_with_quotes(answer: Answer, passages: Sequence[_Scored], quotes: dict[str, list[Quote]],
                        max_quotes: int) -> Answer:
    asked = asked_speaker(answer.question)
    first = answer.citations[0]
    wanted = [q for q in quotes.get(first.article_id, ()) if q.start < first.end and first.start < q.end and q.speaker
              and (asked is None or same_person(q.speaker, asked))]
    if wanted:  # the answerer already cites such a quotation: say it as one
        q = wanted[0]
        text = " ".join(QUOTE_ANSWER.format(speaker=q.speaker, quote=q.text.rstrip(", "), n=c.n) if c is first
                        else f"{c.sentence} [{c.n}]" for c in answer.citations)
        return dataclasses.replace(answer, text=text)
    cited_score = max((p.score for p in passages if p.article.id == first.article_id and p.start == first.start),
                      default=0.0)
    topic = {_stem(w) for w in re.findall(r"\w+", answer.question.split(" about ", 1)[-1]) if w.lower() not in _STOP}
    scored = []
    for p in passages:
        for q in quotes.get(p.article.id, ()):
            if not (p.start <= q.start < p.end) or not q.speaker or (asked and not same_person(q.speaker, asked)):
                continue
            words = {_stem(w) for w in re.findall(r"\w+", p.article.text[q.passage[0]:q.passage[1]])}
            bonus = 0.1 * len(topic & words) / len(topic) if topic and " about " in answer.question else 0.0
            scored.append((p.score + bonus, p, q))
    scored.sort(key=lambda x: -x[0])
    if not scored or scored[0][0] < cited_score - QUOTE_MARGIN:
        return dataclasses.replace(answer, note=NO_QUOTE_NOTE.format(speaker=asked)) if asked else answer
    chosen, seen = [], set()
    for score, p, q in scored:
        if (p.article.id, q.start) not in seen and len(chosen) < max_quotes and score >= scored[0][0] - 0.05:
            seen.add((p.article.id, q.start))
            chosen.append((score, p, q))
    cites = []
    for n, (score, p, q) in enumerate(chosen, 1):
        spans = [(x.start, x.end) for x in passages if x.article.id == p.article.id
                 and x.start < q.passage[1] and q.passage[0] < x.end]
        s, e = min([q.passage[0]] + [a for a, _ in spans]), max([q.passage[1]] + [b for _, b in spans])
        cites.append(citation(n, p.article, s, e, score, quote=q.text, speaker=q.speaker))
    text = " ".join(QUOTE_ANSWER.format(speaker=c.speaker, quote=c.quote.rstrip(", "), n=c.n) for c in cites)
    sentences = tuple(Claim(c.sentence, (c.n,), True, c.sentence) for c in cites)
    return dataclasses.replace(answer, text=text, citations=tuple(cites), sentences=sentences)


def _with_conflicts(answer: Answer, passages: Sequence[_Scored]) -> Answer:
    cites = list(answer.citations)
    found = []
    for c in answer.citations:
        for f in find_figures(c.sentence):
            values = [{"value": f.text, "citation": c.n}]
            for p in passages:
                if p.article.id == c.article_id or len(values) >= 3:
                    continue
                sent = p.article.text[p.start:p.end]
                g = next((g for g in find_figures(sent) if disagree(f, g)), None)
                if g is None or any(v["value"] == g.text for v in values):
                    continue
                other = next((x for x in cites if x.article_id == p.article.id and x.start == p.start), None)
                if other is None:
                    other = citation(len(cites) + 1, p.article, p.start, p.end, p.score)
                    cites.append(other)
                values.append({"value": g.text, "citation": other.n})
            if len(values) > 1 and not any(n == c.n and v == f.text for x in found for v, n in x.values):
                found.append(Conflict(_about(c.sentence, f), tuple((v["value"], v["citation"]) for v in values)))
    if not found:
        return answer
    by_n = {c.n: c for c in cites}

    def said(value: str, n: int) -> str:
        where = ", ".join(filter(None, (by_n[n].source or by_n[n].title, pretty_date(by_n[n].date))))
        return f"{value} ({where}) [{n}]"

    lines = [CONFLICT.format(about=re.sub(r"^(The|A|An) ", lambda m: m.group(0).lower(), x.about),
                             values=" vs ".join(said(v, n) for v, n in x.values)) for x in found]
    return dataclasses.replace(answer, text=" ".join([answer.text, *lines]), citations=tuple(cites),
                               conflicts=tuple(found))
