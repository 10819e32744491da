"""News-aware reading: figures that disagree between reports, quotations with their speakers
(found by `askdesk.articles.quotes`), and answers that hold only "as of" a date. Pure functions over text
and the answerer's output: no model, no index, so every rule here is tested on small hand-written
articles. (Date phrases in questions, "last week", are read by `askdesk.text`.)

`Desk` calls `enrich` after `answer.answer()` returns.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..articles.quotes import Statement, find_statements, speaker_matches
from ..store.records import Sentences
from ..text import MONTH_FULL, NUMBER, SCALES, month_number, pretty_date, stem, terms, verb_base
from ..types import Answer, Article, Citation, Conflict
from .answer import citation, specifics

# User-facing sentences (tested by name).
AS_OF = "As of {date}: {text}"  # an answer about a figure that changes, dated by its cited article
QUOTE_ANSWER = "{speaker}: “{quote}” [{n}]"  # a quotation, marked as one, with the person the article names
CONFLICT = "Reports differ on {about}: {values}."


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


_NOW_Q = re.compile(r"\b(?:latest|current|currently|now|so far|to date|still|yet|recent|recently|as of|at present|"
                    r"at the moment|these days|nowadays|today|this (?:week|month|year))\b", re.I)
_NOW_S = re.compile(r"\b(?:currently|now|so far|to date|as of|at present|latest|stands? at|standing at)\b", re.I)


def time_dependent(question: str, sentence: str) -> bool:
    """Whether the answer holds only as of a date: "latest", "so far", a figure "currently" at a level."""
    if _NOW_Q.search(question):
        return True
    return bool(_NOW_S.search(sentence) and any(f.unit != "date" for f in find_figures(sentence)))


def enrich(answer: Answer, sentences: Sentences, scores: np.ndarray, statements: Statements | None = None) -> Answer:
    """The news layer over an answer: quotations and speakers, disagreeing figures, "as of".

    Args:
        answer: what the answerer (or the LLM) returned; refusals come back unchanged.
        sentences: the sentences of the retrieved chunks (`Retriever.sentences`) ...
        scores: ... and each one's cosine to the question.
        statements: an article's statements as its index stores them (`Snapshot.statements_of`);
            by default found from its text (and cached).
    """
    statements = statements or _found
    if answer.refused or not answer.citations:
        return answer
    passages = [_Scored(a, s, e, float(x)) for a, (s, e), x in zip(sentences.articles, sentences.spans, scores)]
    cites = []
    for c in answer.citations:  # every cited attributed quotation is marked, whatever was asked
        if c.speaker:  # already a statement's citation (`who_said`)
            cites.append(c)
            continue
        a = next((p.article for p in passages if p.article.id == c.article_id), None)
        q = next((st for st in statements(a) if st.quote and not st.anonymous  # an unnamed source names nobody
                  and st.start < c.end and c.start < st.end), None) if a else None
        cites.append(dataclasses.replace(c, quote=q.quote, speaker=q.speaker) if q else c)
    answer = dataclasses.replace(answer, citations=tuple(cites))
    answer = _with_conflicts(answer, passages)
    first = answer.citations[0]
    if first.date and time_dependent(answer.question, first.sentence):
        answer = dataclasses.replace(answer, text=AS_OF.format(date=pretty_date(first.date), text=answer.text),
                                     as_of=first.date)
    return answer


# ---- who said what about what ------------------------------------------------------------------------

NOT_QUOTED_NOTE = "No article quotes {speaker}{on}."
QUOTED_ELSEWHERE_NOTE = "No article quotes {speaker} on {about}; the passages quote {speaker} on: {topics}."
# A statement answers "what did X say about Y" when Y's names and numbers ("Toyota") stand in it or
# the sentence either side, and its sentence is this close to Y: the cosine of sentence and Y plus
# ABOUT_WORDS times the share of Y's words in it. Chosen on the conversation set's fit
# conversations (bench/conversations.py): right statements score 0.32-0.9 ("LUMA's president on
# getting the power back" 0.32), while a statement missing Y's name does not count at all.
ABOUT_MIN = 0.3
ABOUT_WORDS = 0.3
SECOND_STATEMENT = 0.1  # a second statement is quoted when it ranks within this of the first
FAR_SPECIFICS = 0.7  # a statement whose article names Y's specifics only paragraphs away
QUOTE_BONUS = 0.1  # a quotation over reported speech of about the same match


Statements = Callable[[Article], Sequence[Statement]]  # an article's statements


@lru_cache(maxsize=4096)
def statements_of(article_id: str, text: str) -> tuple[Statement, ...]:
    """The article's statements (`quotes.find_statements`), found once per article: for passages
    from no index (an index stores them: `Snapshot.statements_of`)."""
    return tuple(find_statements(text))


def _found(a: Article) -> tuple[Statement, ...]:
    return statements_of(a.id, a.text)


Said = tuple[str, tuple[Citation, ...], tuple[Citation, ...], str | None]  # text, citations, related, note


def who_said(speaker: str, about: str | None, about_vec: np.ndarray | None, sentences: Sentences,
             scores: np.ndarray, *, asked_about: bool = True, max_quotes: int = 2,
             statements: Statements | None = None) -> Said:
    """The answer to "What did X say (about Y)?" from X's statements in the retrieved passages.

    X's statements (quoted, or reported: "Ishiba reiterated ...") are ranked by how close their
    sentences are to the question (``scores``), how close they are to Y (``about_vec``) and how
    many of Y's words they hold, a quotation first. When the question itself asks about Y
    (``asked_about``; a follow-up that only carries the topic over does not), X's best statement
    must also be close to Y, else it refuses and says what X is quoted on. ``statements``: an
    article's statements as its index stores them (default: found from its text, cached).

    Returns:
        (text, citations, related, note): text "" means refused: none of the passages quotes X, or
        none quotes X on Y (then ``related`` lists what they do quote X on, and ``note`` says so).
    """
    # Y's words and each sentence's, irregular past forms taken to their verbs ("the meeting" /
    # "when I met with him").
    about_terms = {verb_base(t) for t in terms(about)} if about else set()
    required = specifics(about) if about else set()
    best: dict[tuple[str, int], tuple[float, float, Statement, Article]] = {}  # rank, match to Y, ...
    for i, (a, (s, e)) in enumerate(zip(sentences.articles, sentences.spans)):
        for st in (statements or _found)(a):
            if st.start < e and s < st.end and speaker_matches(st.speaker, speaker, a.text):
                words = {verb_base(t) for t in terms(a.text[s:e])}
                share = len(about_terms & words) / len(about_terms) if about_terms else 0.0
                match = (float(sentences.vectors[i] @ about_vec) + ABOUT_WORDS * share
                         if about_vec is not None else 1.0) * _specifics_near(required, a, st)
                rank = float(scores[i]) + ABOUT_WORDS * share + (QUOTE_BONUS if st.quote else 0.0)
                key = (a.id, st.start)
                if key not in best or rank > best[key][0]:
                    best[key] = (rank, match, st, a)
    on = f" on {about}" if about and asked_about else ""
    if not best:
        return "", (), (), NOT_QUOTED_NOTE.format(speaker=speaker, on=on)
    ranked = sorted(best.values(), key=lambda x: -x[0])
    if asked_about and about_vec is not None and max(x[1] for x in ranked) < ABOUT_MIN:
        related = tuple(_statement_citation(n, st, a, r) for n, (r, _, st, a) in enumerate(ranked[:3], 1))
        topics = "; ".join(f"“{_gist(c)}” [{c.n}]" for c in related)
        return "", (), related, QUOTED_ELSEWHERE_NOTE.format(speaker=speaker, about=about, topics=topics)
    if about_vec is not None:
        # The statements on Y come first, also when Y is only carried over ("And what did
        # Ishiba say?" after a question on tariffs: his words on trade before those on Trump).
        ranked.sort(key=lambda x: -(x[0] + x[1]))
    chosen = [ranked[0]] + [x for x in ranked[1:max_quotes] if x[0] >= ranked[0][0] - SECOND_STATEMENT]
    chosen = _own_words(chosen, ranked, speaker, statements or _found, about_vec is not None and asked_about,
                        max_quotes + 1)
    cites = tuple(_statement_citation(n, st, a, r) for n, (r, _, st, a) in enumerate(chosen, 1))
    text = " ".join(QUOTE_ANSWER.format(speaker=c.speaker, quote=c.quote.rstrip(", "), n=c.n) if c.quote
                    else f"{c.sentence} [{c.n}]" for c in cites)
    return text, cites, (), None


def _own_words(chosen: list, ranked: list, speaker: str, statements: Statements, on_topic: bool, limit: int) -> list:
    """X's words as a reader wants them: a quotation the article splits into sentences kept whole
    ("“... hard-liners,” Rubio said in a statement. “Since before ...”": X's statements with
    nothing but white space between them, one run), and when only reported speech was chosen
    ("Weeks warned residents ..."), X's best quotation beside it (on Y when Y was asked).
    At most ``limit`` statements: each chosen one, then the rest of its run in article order."""
    out, seen = [], set()

    def add(item) -> None:
        if len(out) < limit and (item[3].id, item[2].start) not in seen:
            seen.add((item[3].id, item[2].start))
            out.append(item)

    for rank, match, st, a in chosen:
        own = sorted((x for x in statements(a) if speaker_matches(x.speaker, speaker, a.text)), key=lambda x: x.start)
        i = next((k for k, x in enumerate(own) if x.start == st.start), None)
        if i is None:
            add((rank, match, st, a))
            continue
        lo = hi = i
        while lo > 0 and own[lo - 1].quote and not a.text[own[lo - 1].end:own[lo].start].strip():
            lo -= 1
        while hi + 1 < len(own) and own[hi + 1].quote and not a.text[own[hi].end:own[hi + 1].start].strip():
            hi += 1
        add((rank, match, st, a))  # the chosen statement first, then the rest of its run in article order
        for x in own[lo:hi + 1]:
            add((rank, match, x, a))
    if not any(st.quote for _, _, st, _ in out):
        quote = next((x for x in ranked if x[2].quote and (not on_topic or x[1] >= ABOUT_MIN)), None)
        if quote is not None:
            if len(out) >= limit:
                seen.discard((out[-1][3].id, out[-1][2].start))
                out.pop()
            add(quote)
    return out


def _specifics_near(required: set[str], a: Article, st: Statement) -> float:
    """1 when Y's names and numbers ("35%" in "the vote on the 35% offer") are in the statement's
    paragraph; FAR_SPECIFICS when only elsewhere in its article (the offer named in the lead, the
    statement paragraphs down); 0 when the article never names them."""
    if not required or required <= set(terms(_around(a.text, st.start, st.end))):
        return 1.0
    return FAR_SPECIFICS if required <= set(terms(a.title + " " + a.text)) else 0.0


def _around(text: str, s: int, e: int) -> str:
    """The statement's paragraph (its line): the words a reporter puts next to a quotation are
    about it; the next paragraph may start another subject ("The meeting highlighted ... North
    Korea"). Hard-wrapped text gives a line, narrower: then FAR_SPECIFICS, not a wrong quote."""
    lo = text.rfind("\n", 0, s)
    hi = text.find("\n", e)
    return text[lo + 1:hi if hi >= 0 else len(text)]


def _statement_citation(n: int, st: Statement, a: Article, score: float) -> Citation:
    c = citation(n, a, st.start, st.end, score)
    return dataclasses.replace(c, speaker=st.speaker, quote=st.quote)


def _gist(c: Citation, words: int = 10) -> str:
    """The first words of what a citation says (its quotation, else its sentence)."""
    said = (c.quote or c.sentence).split()
    return " ".join(said[:words]) + ("…" if len(said) > words else "")


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
