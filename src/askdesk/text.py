"""The news-text vocabulary, in one place: months, weekdays, number words and scales, the
question's kind, and the one stemmer every stage uses (Snowball English, via PyStemmer).

Pure functions and constants; any module may import it (like types and config).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# A month as news text writes it: "March", "Mar.", "Sept" (case-insensitive patterns use it with re.I).
MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?"
         r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
MONTH_FULL = r"(?:january|february|march|april|may|june|july|august|september|sept|october|november|december)"
# Capitalised only (case-sensitive use): full names and dotted abbreviations.
MONTH_NAME = (r"(?:January|February|March|April|May|June|July|August|September|October|November|December"
              r"|Jan\.|Feb\.|Mar\.|Apr\.|Aug\.|Sept?\.|Oct\.|Nov\.|Dec\.)")
WEEKDAY = r"(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day"

NUMBER_WORDS = frozenset("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                         "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety "
                         "hundred thousand million billion trillion dozen dozens hundreds thousands millions "
                         "billions half quarter third".split())
# A figure's scale word and its factor: "12.1 million", "$3bn", "40k".
SCALES = {"thousand": 1e3, "k": 1e3, "million": 1e6, "mn": 1e6, "m": 1e6, "billion": 1e9, "bn": 1e9, "b": 1e9,
          "trillion": 1e12, "tn": 1e12}
# A number as written in news text, with its currency and scale: "$14.9 billion", "12,000", "3.5bn".
NUMBER = re.compile(r"(?P<cur>US\$|[$€£¥])?\s?(?P<num>(?<![\w.,])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.,])\d+(?:\.\d+)?)"
                    r"(?:\s?(?P<scale>thousand|million|billion|trillion|bn|mn|tn|[mbk])\b)?"
                    r"(?:\s?(?P<unit>%|per ?cent\b|[a-zA-Z]+\b))?", re.I)


def month_number(name: str) -> int:
    """"Feb", "february", "Sept." -> 2, 2, 9."""
    return next(i for i, m in enumerate(MONTHS, 1) if m.startswith(name.lower().rstrip(".")[:3]))


# ---- words: the terms BM25, coverage and the answerer's overlap count ----------------------------

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor
    not of off on once only or other our ours ourselves out over own same she should so some such than that the
    their theirs them themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves s t also say said
    says did does""".split()
)
# Acronyms with dots ("U.S." -> "us"), numbers with their decimals ("68.5"), words.
_TOKEN = re.compile(r"(?:[^\W\d_]\.){2,}|\d+(?:[.,]\d+)*|[^\W\d_]+(?:['’][^\W\d_]+)?", re.UNICODE)


def terms(text: str) -> list[str]:
    """Lexical terms: lower-cased words and whole numbers ("68.5"), stopwords out, Snowball-stemmed."""
    return [t for t in map(_term, _TOKEN.findall(text.lower())) if t]


@lru_cache(maxsize=1 << 17)
def _term(tok: str) -> str:
    # Cached: answering tokenizes a few dozen passage sentences per question, and words repeat
    # (this loop was ~5 ms of a 10 ms answer before).
    tok = tok.replace("’", "'")
    if tok.endswith(".") and not tok[0].isdigit():
        tok = tok.replace(".", "")
    if tok.endswith("'s"):
        tok = tok[:-2]
    if tok in STOPWORDS or not tok:
        return ""
    return stem(tok)


@lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """Snowball English ("tariffs" -> "tariff", "announced" -> "announc", "news" -> "news"); numbers kept.

    The stemmer bm25s uses: on squad-dev BM25 alone MRR@10 0.8725 -> 0.8751 against the suffix
    stripper it replaced, which also turned "news" into "new" (docs/quality.md)."""
    word = word.lower()
    if not word or word[0].isdigit():
        return word
    return _snowball().stemWord(word)


@lru_cache(maxsize=1)
def _snowball():
    import Stemmer

    return Stemmer.Stemmer("english")


# Irregular past forms of verbs news reports with, and their verbs: Snowball leaves "met" apart from
# "meet"/"meeting", "spoke" from "speak"/"speaking"... A topic ("the meeting") then misses a
# sentence that says "when I met with him", though it is about just that.
_IRREGULAR = (
    "met meet|spoke speak|spoken speak|said say|told tell|wrote write|written write|ran run|won win|"
    "lost lose|fought fight|bought buy|sold sell|paid pay|built build|began begin|begun begin|held hold|"
    "led lead|sent send|spent spend|gave give|given give|took take|taken take|made make|came come|"
    "went go|gone go|saw see|seen see|knew know|known know|thought think|brought bring|caught catch|"
    "taught teach|sought seek|felt feel|kept keep|meant mean|struck strike|rose rise|risen rise|fell fall|"
    "fallen fall|grew grow|grown grow|drew draw|drawn draw|flew fly|flown fly|chose choose|chosen choose|"
    "froze freeze|frozen freeze|stole steal|stolen steal|broke break|broken break|drove drive|"
    "driven drive|threw throw|thrown throw|hid hide|hidden hide|shot shoot|fled flee|forgave forgive|"
    "swore swear|sworn swear|wore wear|worn wear|sank sink|sunk sink|shook shake|shaken shake|"
    "understood understand|stood stand|withdrew withdraw|withdrawn withdraw|overtook overtake|"
    "undertook undertake|foresaw foresee"
)


@lru_cache(maxsize=1)
def _verb_bases() -> dict[str, str]:
    pairs = (pair.split() for pair in _IRREGULAR.split("|"))
    return {stem(past): stem(verb) for past, verb in pairs}


def verb_base(term: str) -> str:
    """A term (`terms`) with an irregular verb's past form taken to its verb's: "met" -> "meet"."""
    return _verb_bases().get(term, term)


# ---- what a question asks for -------------------------------------------------------------------

_SAY = re.compile(r"\b(say|said|says|tell|told|remark|remarked|state|stated|quote|quoted|comment|comments|describe|"
                  r"described)\b")
_DATE_Q = re.compile(r"\b(when|in what year|(what|which) (year|date|day|month|time|century|decade|era))\b")
_NUMBER_Q = re.compile(r"\bhow (much|many|big|large|long|far|old|often|high|tall|fast|deep|heavy|wide)\b"
                       r"|\bwhat (percentage|percent|proportion|fraction|amount|number|size|share|price|cost"
                       r"|sum|value)\b"
                       r"|\bwhat was the (deficit|surplus|total|figure)\b")
_PERSON_Q = re.compile(r"^(who|whom|whose)\b|\b(by|to|from|with|for) whom\b|[,;] who\b"
                       r"|\bwho (is|was|were|are|did|does|has|had)\b")
_PLACE_Q = re.compile(r"^where\b|\bwhere (is|was|did|does|do|are|were|can|could)\b"
                      r"|\bin which (country|city|state|region)\b"
                      r"|\b(what|which) (country|city|state|nation|town|region|continent|province|county"
                      r"|island|river)\b")
_NAME_Q = re.compile(r"\b(what|which) (?!(is|was|are|were|do|does|did|has|have|had|can|could|would|will|should|"
                     r"may|might|must|type|types|kind|kinds|sort|form|forms|part|parts|way|ways|reason|"
                     r"happened|happens|effect|role|purpose|other|else|two|three)\b)[a-z]+\b|"
                     r"\bwhat is the name\b|\bnamed what\b|\bcalled what\b")
QUESTION_KINDS = ("quote", "date", "number", "person", "place", "name")


def question_kind(question: str) -> str | None:
    """The kind of answer a question asks for: quote, date, number, person, place, name, or None.

    "quote" for "What did Ishiba say about Trump?", "date" for when / what year, "number" for
    how much / how many / how heavy, "person" for who, "place" for where / which country, "name"
    for another "what/which <noun>" ("Which company bought ...?"); None for why / how / what happened.
    """
    q = " ".join(question.lower().split())
    q = re.sub(r"^(?:(?:and|but|so|then|also|ok|okay)[,]?\s+)+", "", q)  # "And what did Ishiba say?"
    if _SAY.search(q) and re.match(r"(what|how)\b", q):
        return "quote"
    for kind, rx in (("date", _DATE_Q), ("number", _NUMBER_Q), ("person", _PERSON_Q), ("place", _PLACE_Q),
                     ("name", _NAME_Q)):
        if rx.search(q):
            return kind
    return None


# ---- relative dates in the question ---------------------------------------------------------------

@dataclass(frozen=True)
class DatePhrase:
    """A stretch of days a question names ("last week"), resolved against an as-of day."""

    since: str  # ISO, inclusive
    until: str
    phrase: str  # as written in the question
    span: tuple[int, int]  # where the phrase is in the question
    relative: bool  # "last week" (True) or a named month or year, "in 2023" (False)
    recent: bool = False  # a preference for the newest reports (`recent_period`), not a period the question names


_PERIOD = re.compile(
    r"\b(?:(?P<today>today|tonight|this (?:morning|afternoon|evening))|(?P<yesterday>yesterday)"
    r"|(?P<n_rel>past|last) (?P<n>\d{1,3}) (?P<n_unit>day|week|month)s"
    r"|(?P<rel>this|last|past|previous) (?P<unit>week|month|year)"
    rf"|(?:in|during|since|of|early|late|mid(?:-| )?) (?P<month>{MONTH_FULL})(?: (?P<myear>(?:19|20)\d\d))?"
    rf"|(?P<month2>{MONTH_FULL}) (?P<myear2>(?:19|20)\d\d)"
    r"|(?:in|during) (?P<year>(?:19|20)\d\d)"
    r"|(?P<on>on|last) (?P<wday>monday|tuesday|wednesday|thursday|friday|saturday|sunday))\b", re.I)


def resolve_period(question: str, as_of: str | date | None = None) -> DatePhrase | None:
    """The first date phrase of ``question`` as a date range, or None.

    "today", "yesterday", "this/last/past week|month|year", "past 3 days", "in February" (the
    latest February up to ``as_of``), "March 2024", "in 2023", "on Monday". ``as_of`` defaults to
    today; a range never runs past it.
    """
    day = date.fromisoformat(as_of) if isinstance(as_of, str) else (as_of or date.today())
    m = _PERIOD.search(question)
    if not m:
        return None
    g = {k: (v.lower() if v else v) for k, v in m.groupdict().items()}
    relative = True
    if g["today"]:
        lo = hi = day
    elif g["yesterday"]:
        lo = hi = day - timedelta(days=1)
    elif g["n"]:
        n, unit = int(g["n"]), g["n_unit"]
        lo, hi = day - timedelta(days=n * {"day": 1, "week": 7, "month": 30}[unit] - 1), day
    elif g["unit"]:
        lo, hi = _relative_range(g["rel"], g["unit"], day)
    elif g["month"] or g["month2"]:
        month = month_number(g["month"] or g["month2"])
        year = g["myear"] or g["myear2"]
        year = int(year) if year else (day.year if month <= day.month else day.year - 1)
        lo, hi = date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
        relative = False
    elif g["year"]:
        lo, hi = date(int(g["year"]), 1, 1), date(int(g["year"]), 12, 31)
        relative = False
    else:
        back = (day.weekday() - WEEKDAYS.index(g["wday"])) % 7
        if back == 0 and g["on"] == "last":
            back = 7
        lo = hi = day - timedelta(days=back)
    if lo <= day < hi:
        hi = day
    return DatePhrase(lo.isoformat(), hi.isoformat(), m.group(0), m.span(), relative)


# News time sense: "recently", "currently", "the latest" ask for the newest reports, and so does a
# question that names no date at all (news is asked about now): the RECENT_DAYS before as_of. A
# preference, never a filter: with nothing that recent, the best of any date answers (docs/news.md).
RECENT_DAYS = 14  # the default of Config.recent_days
_RECENT = re.compile(r"\b(?:recently|lately|currently|at present|at the moment|right now|these days|so far|to date"
                     r"|(?:the )?(?:latest|most recent|newest)|now)\b", re.I)


def recent_period(question: str, as_of: str | date | None = None, *, days: int = RECENT_DAYS) -> DatePhrase:
    """The newest reports' period for ``question``: the ``days`` before ``as_of`` (default today).

    Its phrase is the question's word for it ("recently", cut from the retrieval text like "last
    week"), or "" when the question has none (a question about the news is asked about now)."""
    day = date.fromisoformat(as_of) if isinstance(as_of, str) else (as_of or date.today())
    lo = (day - timedelta(days=days - 1)).isoformat()
    m = _RECENT.search(question)
    if m is None:
        return DatePhrase(lo, day.isoformat(), "", (0, 0), False, recent=True)
    return DatePhrase(lo, day.isoformat(), m.group(0), m.span(), True, recent=True)


def _relative_range(rel: str, unit: str, day: date) -> tuple[date, date]:
    if rel == "past":  # a rolling window that ends today
        return day - timedelta(days={"week": 6, "month": 29, "year": 364}[unit]), day
    if unit == "week":
        monday = day - timedelta(days=day.weekday())
        return (monday, day) if rel == "this" else (monday - timedelta(days=7), monday - timedelta(days=1))
    if unit == "month":
        first = day.replace(day=1)
        if rel == "this":
            return first, day
        last = first - timedelta(days=1)
        return last.replace(day=1), last
    if rel == "this":
        return day.replace(month=1, day=1), day
    return date(day.year - 1, 1, 1), date(day.year - 1, 12, 31)


def without_period(question: str, period: DatePhrase | None) -> str:
    """The question with a relative date phrase cut out, for retrieval: "last week" matches no
    article's words. Named months and years stay: "in 2019" is also in the articles' text."""
    if period is None or not period.relative:
        return question
    s, e = period.span
    return re.sub(r" ([?.!,])", r"\1", " ".join((question[:s] + question[e:]).split())) or question


def pretty_date(iso: str | None) -> str | None:
    """"2025-02-07" -> "7 February 2025"; other strings unchanged."""
    try:
        d = date.fromisoformat(iso or "")
    except ValueError:
        return iso
    return f"{d.day} {MONTHS[d.month - 1].capitalize()} {d.year}"


def counted(n: int, noun: str) -> str:
    """"1 article", "1,848 articles"."""
    return f"{n:,} {noun}{'s' * (n != 1)}"
