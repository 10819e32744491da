"""The short answer of a factoid question: the date, number or name in the cited sentence that
answers it ("$14.9 billion"), or None when unsure. `Desk` puts it in `Answer.short`; `askdesk eval
qa` scores it (short_em, short_f1). Measured in docs/quality.md "Short answers".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..text import MONTH_NAME, NUMBER_WORDS, WEEKDAY, question_kind, terms

# Kinds of short answer shown by default. Dates and numbers are right 83% / 77% of the time on
# squad-dev's held-out half; names (person, place, "which <noun>") only 42-43%, worse than no
# span at all, so they are off until they can be trusted (docs/quality.md "Short answers").
SHORT_KINDS = ("date", "number")
ALL_SHORT_KINDS = ("date", "number", "person", "place", "name")


def short_answer(question: str, sentence: str, *, context: str = "",
                 kinds: Sequence[str] = SHORT_KINDS) -> str | None:
    """A short span of ``sentence`` that answers a factoid ``question``, or None when unsure.

    Dates for "when"/"what year", numbers with their unit for "how many"/"how much", names for
    "who", places for "where", and capitalised names for other "what/which <noun>" questions.
    A span must say something the question does not, and of several candidates the one with
    the most question words close by wins: an answer usually sits next to the words the
    question repeats. When no candidate clearly beats the others on that count the answer is
    None: no span is better than a wrong one.

    Args:
        question: the question as asked.
        sentence: the cited sentence expected to hold the answer.
        context: text around the sentence (e.g. the citation's snippet); a capitalised first word
            that also appears in lower case there is a common word, not a name.
        kinds: the kinds of question answered with a span (``ALL_SHORT_KINDS`` adds names).

    Returns:
        A substring of ``sentence``, or None.
    """
    kind = question_kind(question)
    cands = _short_candidates(kind, question, sentence, context) if kind in kinds else []
    if not cands:
        return None
    support, span = cands[0]
    # The runner-up with other words ("1974" twice is one candidate): when it is about as close
    # to the question's words, the choice between them is a guess.
    runner_up = next((c for c, sp in cands[1:] if sp.lower() != span.lower()), 0.0)
    # An open "what/which <noun>" asks for a name of any sort, so it needs twice the margin.
    if support - runner_up < SHORT_MIN_MARGIN * (2 if kind == "name" else 1):
        return None
    return span


def _short_candidates(kind: str, question: str, sentence: str, context: str) -> list[tuple[float, str]]:
    """(support, span) for each candidate answer of ``kind`` in the sentence, best first."""
    toks = _short_tokens(sentence)
    qterms = set(terms(question))
    if not toks or not qterms:
        return []
    stems = [set(terms(t.text)) for t in toks]
    anchors = [(k, st & qterms) for k, st in enumerate(stems) if st & qterms]
    # "Who was it sold to?", "By whom was it found?": the answer follows that preposition.
    m = re.search(r"\b(to|from|by|with|for|at|in|on)\s*\?\s*$|\b(to|from|by|with|for) whom\b", question.lower())
    prep = m and (m.group(1) or m.group(2))
    out = []
    for i, j in _SHORT_FINDERS[kind](question, sentence, toks, context):
        if kind in ("person", "place", "name"):
            # "NASA Deputy Administrator Hugh L. Dryden": the name is what follows the last title.
            titled = [k for k in range(i, j - 1) if toks[k].text.lower() in _TITLES]
            if titled:
                i = titled[-1] + 1
            # A name that shares a word with the question is the question's own subject.
            if any(stems[k] & qterms for k in range(i, j)) or not any(stems[k] for k in range(i, j)):
                continue
        elif not any(stems[k] - qterms for k in range(i, j)):
            continue  # nothing new: the question already says it
        near: dict[str, int] = {}
        for a, st in anchors:
            if i <= a < j:
                continue
            d = i - a if a < i else a - j + 1
            for t in st:
                near[t] = min(near.get(t, d), d)
        support = sum(1.0 / d for d in near.values() if d <= SHORT_WINDOW)
        if prep and i > 0 and toks[i - 1].text.lower() == prep:
            support += SHORT_PREP_BONUS
        span = re.sub(r"['’]s$", "", sentence[toks[i].start:toks[j - 1].end])  # "Gilruth's" -> "Gilruth"
        out.append((support, span))
    out.sort(key=lambda c: -c[0])  # stable: the earlier of two equal candidates stays first
    return out


# Chosen on the squad-dev split (docs/quality.md, "Short answers").
SHORT_WINDOW = 8  # tokens either side of a candidate in which the question's words count as support
# Support is the sum of 1/distance over those words (one right beside the span gives 1.0). The best
# candidate needs this much more than the runner-up, or than nothing when it is alone: on dev that
# trades coverage 0.36 -> 0.19 of answered questions for exact match 0.53 -> 0.69.
SHORT_MIN_MARGIN = 0.5
SHORT_PREP_BONUS = 1.0  # "Who was it sold to?" and a candidate right after "to" (dev: +4 right answers, +1 wrong)


@dataclass(frozen=True)
class _Tok:
    start: int
    end: int
    text: str


# Words with inner hyphens, apostrophes, dots or slashes ("Nelson-directed", "U.S", "1,600,000",
# "38–41", "km2"); a currency sign and a percent sign stay with their number.
_SHORT_TOKEN = re.compile(r"[$€£¥]?\w+(?:[-–'’.,/&]\w+)*%?")
_ORDINAL_WORDS = ("first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth|"
                  "fourteenth|fifteenth|sixteenth|seventeenth|eighteenth|nineteenth|twentieth|twenty-first")
_DATE = re.compile(
    rf"\b(?:(?:{WEEKDAY},?\s+)?{MONTH_NAME}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{3,4}}"  # March 3, 1974
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{MONTH_NAME},?\s+\d{{3,4}}"  # 3 March 1974
    rf"|{MONTH_NAME},?\s+\d{{4}}"  # March 1974
    rf"|(?:{WEEKDAY},?\s+)?(?:{MONTH_NAME}\s+\d{{1,2}}(?:st|nd|rd|th)?\b"  # Friday, March 3
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+{MONTH_NAME})"  # Friday, 3 March
    rf"|(?:(?:early|mid|late)[- ])?(?:\d{{1,2}}(?:st|nd|rd|th)|{_ORDINAL_WORDS})\s+century"  # the late 19th century
    r"|(?:1\d|20)\d\d\s*[-–]\s*(?:\d\d){1,2}\b"  # 2004-05, 1939–1945
    r"|(?:(?:early|mid|late)[- ])?(?:1\d|20)\d0s\b"  # the late 1980s
    r"|(?:AD|A\.D\.)\s*\d{1,4}\b|\d{1,4}\s*(?:BC|BCE|AD|CE)\b"
    r"|(?:1\d|20)\d\d\b"  # a bare year
    rf"|{MONTH_NAME}(?!\w)|{WEEKDAY}\b)"  # a bare month or day
)
_NAME_SUFFIX = frozenset("Jr Sr Inc Ltd Co Corp LLC PLC".split())
_NAME_JOIN = frozenset("of de da del di van von der den la le du bin ibn al & and".split())
# Words that open a sentence with a capital letter without being a name.
_LEADING_COMMON = frozenset("the a an in on at after before during however when while although but and as by for "
                            "from if since this that these those it its his her their there many some most".split())
# Job titles written before a name: "Deputy Administrator Hugh L. Dryden" answers "who" with the name.
_TITLES = frozenset("president vice chairman chief executive ceo director administrator deputy associate manager "
                    "secretary minister prime senator governor general colonel captain commander sir dr mr mrs ms "
                    "professor king queen prince princess pope saint st lord lady judge justice officer".split())


def _short_tokens(sentence: str) -> list[_Tok]:
    return [_Tok(m.start(), m.end(), m.group(0)) for m in _SHORT_TOKEN.finditer(sentence)]


def _token_range(toks: list[_Tok], s: int, e: int) -> tuple[int, int] | None:
    """The tokens inside the character span [s, e), as [i, j); None if there are none."""
    inside = [k for k, t in enumerate(toks) if t.start >= s and t.end <= e]
    return (inside[0], inside[-1] + 1) if inside else None


def _date_spans(question: str, sentence: str, toks: list[_Tok], context: str) -> list[tuple[int, int]]:
    return [r for m in _DATE.finditer(sentence) if (r := _token_range(toks, m.start(), m.end()))]


def _is_number(word: str) -> bool:
    w = word.lstrip("$€£¥").rstrip("%").lower()
    return bool(w) and (w[0].isdigit() or w in NUMBER_WORDS)


def _number_spans(question: str, sentence: str, toks: list[_Tok], context: str) -> list[tuple[int, int]]:
    """Numbers with their scale and unit ("$3.5 billion", "5 to 15 years", "60 percent"); dates left out."""
    in_date = {k for i, j in _date_spans(question, sentence, toks, context) for k in range(i, j)}

    def num(k: int) -> bool:
        return k < len(toks) and k not in in_date and _is_number(toks[k].text)

    def joined(k: int) -> bool:  # token k follows token k-1 after plain spaces
        return k < len(toks) and _gap(sentence, toks, k).isspace()

    def word(k: int) -> str:
        return toks[k].text.lower() if k < len(toks) else ""

    out, k = [], 0
    while k < len(toks):
        if not num(k):
            k += 1
            continue
        i = k
        k += 1
        while num(k) and joined(k):
            k += 1
        if word(k) == "to" and joined(k) and num(k + 1) and joined(k + 1):  # "5 to 15", "30 to 50 thousand"
            k += 2
            while num(k) and joined(k):
                k += 1
        if word(k) == "percent" and joined(k):
            k += 1
        elif word(k) == "per" and word(k + 1) == "cent":
            k += 2
        elif joined(k) and (word(k) in _UNITS or set(terms(word(k))) & _UNITS):  # "11,000 years", "382 kg"
            k += 1
        if k - i == 1 and word(i) in ("one", "half", "quarter", "third"):
            continue  # "One computer model": a determiner, not a count
        out.append((i, k))
    return out


_UNITS = frozenset("year day week month hour minute second decade century time km kg mi mile feet foot ft m cm mm nm "
                   "μm metre meter kilometre kilometer ton tonne gigaton lb pound acre hectare dollar euro pence "
                   "degree mph kph kw mw gw °c °f".split())


def _gap(sentence: str, toks: list[_Tok], k: int) -> str:
    """The text between token k-1 and token k."""
    return sentence[toks[k - 1].end:toks[k].start]


def _name_spans(question: str, sentence: str, toks: list[_Tok], context: str) -> list[tuple[int, int]]:
    """Runs of capitalised words ("Henry Plitt", "Bank of America"); months and common first words left out."""
    dates = {k for i, j in _date_spans(question, sentence, toks, context) for k in range(i, j)}
    text = f" {context} {sentence} "

    def cap(k: int) -> bool:
        return toks[k].text[:1].isupper() and k not in dates

    out, k = [], 0
    while k < len(toks):
        if not cap(k):
            k += 1
            continue
        i = k
        k += 1
        while k < len(toks) and not re.search(r"['’]s$", toks[k - 1].text):
            gap = _gap(sentence, toks, k)
            # "Hugh L. Dryden": an initial's dot is part of the name.
            if not (gap.isspace() or gap.startswith(".") and gap[1:].isspace() and len(toks[k - 1].text) <= 2
                    or gap.startswith(",") and gap[1:].isspace() and toks[k].text in _NAME_SUFFIX):
                break  # a comma ends a name unless ", Jr." or ", Inc." follows
            if cap(k):
                k += 1
            elif toks[k].text.lower() in _NAME_JOIN and k + 1 < len(toks) and cap(k + 1) \
                    and _gap(sentence, toks, k + 1).isspace():
                k += 2
            elif toks[k].text.lower() in _NAME_JOIN and k + 2 < len(toks) and toks[k + 1].text == "the" \
                    and cap(k + 2) and sentence[toks[k].end:toks[k + 2].start] == " the ":
                k += 3  # "Museum of the Moving Image"
            else:
                break
        if i == 0:
            first = toks[0].text
            if first.lower() in _LEADING_COMMON or re.search(rf"\b{re.escape(first.lower())}\b", text) \
                    or k == 1 and not re.search(rf"(?<=[\w,;:] ){re.escape(first)}\b", text):
                # "However", a word the text also writes in lower case, or a lone first word the text
                # never capitalises mid-sentence ("Budget", "Among"): a capital that only opens a sentence.
                i += 1
        # "Apollo 12", "Saturn 5": a number that completes a name.
        if i < k < len(toks) and re.fullmatch(r"\d{1,3}", toks[k].text) \
                and _gap(sentence, toks, k).isspace() and k not in dates:
            k += 1
        # "British bacteriologist", "American occupation": a nationality describing a noun, not a name.
        if k - i == 1 and k < len(toks) and toks[k].text.islower() and _gap(sentence, toks, k).isspace() \
                and re.search(r"(an|ish|ese|ch|ic)$", toks[i].text):
            continue
        if i < k and not (k - i == 1 and (len(toks[i].text) == 1 or toks[i].text in _NAME_SUFFIX)):
            out.append((i, k))  # a lone initial ("G.") or suffix ("Inc.") is not a name
    return out


_SHORT_FINDERS = {"date": _date_spans, "number": _number_spans, "person": _name_spans, "place": _name_spans,
                  "name": _name_spans}
