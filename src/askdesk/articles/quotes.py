"""Quotations in news text and the people they are attributed to.

A quotation gets a speaker only when the article names one unambiguously: `"...," Trump said.`,
`"...," said Trump.`, `Trump said: "..."`, `"..." – Ishiba`, a quotation standing after the
sentence in which a named person speaks, or "he said" when the sentence before names exactly
one person. Anything else keeps ``speaker=None``: a wrong name is worse than none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ..text import MONTHS, WEEKDAYS
from .chunk import split_sentences


@dataclass(frozen=True)
class Quote:
    """A quotation in an article's text, and the person it names as the speaker."""

    text: str  # the words inside the quotation marks, exactly as written
    start: int  # span of the quotation, marks included
    end: int
    speaker: str | None  # as the article names them; None unless the article names one unambiguously
    passage: tuple[int, int]  # the quotation with its attribution: "...," Trump said.


_VERBS = (r"(?:said|says|say|stated|states|told|tells|added|adds|remarked|noted|notes|explained|insisted|warned|"
          r"wrote|writes|declared|announced|argued|asked|replied|responded|recalled|continued|tweeted|posted|"
          r"urged|claimed|acknowledged|conceded|observed|commented|concluded|spoke|speaking)")
_TITLES = {"mr", "mrs", "ms", "dr", "prof", "president", "prime", "minister", "chancellor", "senator", "sen",
           "governor", "gov", "mayor", "secretary", "chief", "executive", "ceo", "chairman", "chairwoman", "chair",
           "spokesman", "spokeswoman", "spokesperson", "king", "queen", "pope", "general", "gen", "judge",
           "rep", "representative", "director", "coach", "captain", "sir", "dame", "lord", "lady", "vice", "deputy"}
# "Harbour master Ilse Brandt": a lower-case role between a capital and a name.
_ROLES = _TITLES | {"master", "keeper", "official", "manager", "leader", "analyst", "economist", "owner", "worker",
                    "resident", "teacher", "professor", "founder", "boss", "head", "member", "officer", "lawmaker",
                    "spokesperson", "striker", "star", "player", "champion", "singer", "actor", "author", "chef"}
# Capitalised words that start sentences or name things, never people.
_NOT_NAMES = {"the", "a", "an", "this", "that", "these", "those", "his", "her", "its", "their", "our", "my", "it",
              "he", "she", "they", "we", "i", "you", "but", "and", "so", "then", "when", "while", "in", "on", "at",
              "after", "before", "as", "if", "asked", "speaking", "officials", "analysts", "critics"} | set(MONTHS) \
    | set(WEEKDAYS)
_NAME = r"[A-Z][\w'’.\-]*(?:\s+(?:[A-Z][\w'’.\-]*|de|van|von|bin|al|da|del|der|le|la))*"
# Any double mark, and wire copy's two apostrophes: news text mixes them (“...,'' Rubio said;
# “...,“ he said), so marks pair up in order within a paragraph, whichever glyph they are.
_MARK = re.compile(r"[\"“”]|''")
_AFTER = [  # text just after the closing mark
    ("name", re.compile(rf"\s*,?\s*(?P<name>{_NAME})\s+{_VERBS}\b")),
    # "...," Erin O'Connor, lead information officer for the forest service, said Thursday.
    ("name", re.compile(rf"\s*,?\s*(?P<name>{_NAME}),\s+[^,\"“”\n]{{3,100}},\s+{_VERBS}\b")),
    # "...," Colombia coach Nestor Lorenzo said. / "...," Varsk port chief Ola Berg said.
    ("name", re.compile(rf"\s*,?\s*(?:{_NAME}\s+)?(?:[a-z]+\s+){{0,2}}(?:{'|'.join(sorted(_ROLES))})\s+"
                        rf"(?P<name>{_NAME})\s+{_VERBS}\b")),
    ("name", re.compile(rf"\s*,?\s*{_VERBS}\s+(?P<name>{_NAME})")),
    ("pronoun", re.compile(rf"\s*,?\s*(?:he|she)\s+{_VERBS}\b", re.I)),
    ("name", re.compile(rf"\s*[–—]\s*(?P<name>{_NAME})\s*(?=$|\n|[.,;])|\s+-\s+(?P<name2>{_NAME})\s*(?=$|\n)")),
]
_BEFORE = [  # text just before the opening mark, in the same sentence
    ("name", re.compile(rf"(?P<name>{_NAME})\s+{_VERBS}(?:\s+[\w,]+){{0,4}}?\s*[:,]\s*$")),
    ("name", re.compile(rf"\b[Aa]ccording to (?P<name>{_NAME})\s*,\s*$")),
    ("pronoun", re.compile(rf"\b(?:[Hh]e|[Ss]he)\s+{_VERBS}(?:\s+[\w,]+){{0,4}}?\s*[:,]\s*$")),
]
MIN_QUOTE_WORDS = 3  # "good looking" or "unprecedented" are a writer's scare quotes, not a statement


def find_quotes(text: str) -> list[Quote]:
    """Every quotation of MIN_QUOTE_WORDS or more words in ``text``, with its speaker when named.

    Styles: `"...," Trump said.`, `"...," said Trump.`, `Trump said: "..."`, `"..." – Ishiba`,
    a standalone quotation after a sentence in which one named person speaks, and "he/she said"
    when the sentence before names exactly one person or one who speaks ("Large fires are not
    unusual, O'Connor said. "...," she said."). Curly and straight double quotes and wire copy's ''.
    """
    sentences = split_sentences(text)
    out = []
    for (qs, qe), inner in _quotations(text):
        if len(inner.split()) < MIN_QUOTE_WORDS:
            continue
        speaker, passage = _attribute(text, qs, qe, sentences)
        out.append(Quote(inner, qs, qe, speaker, passage))
    return out


def _quotations(text: str) -> list[tuple[tuple[int, int], str]]:
    """(span, marks included; the words inside) of each quotation: marks paired in order within
    each paragraph.

    The glyph does not matter ("“a”", "“a''" and a typo's "“a“" all pair): news copy mixes them,
    and pairing in order keeps a stray mark from running past its paragraph."""
    out = []
    start = 0
    for para in text.split("\n"):
        marks = [m for m in _MARK.finditer(para) if not (m.group(0) == "''" and _inside_word(para, m))]
        for a, b in zip(marks[::2], marks[1::2]):
            out.append(((start + a.start(), start + b.end()), para[a.end():b.start()]))
        start += len(para) + 1
    return out


def _inside_word(para: str, m: re.Match) -> bool:
    return m.start() > 0 and m.end() < len(para) and para[m.start() - 1].isalpha() and para[m.end()].isalpha()


def _attribute(text: str, qs: int, qe: int, sentences: list[tuple[int, int]]) -> tuple[str | None, tuple[int, int]]:
    line_end = text.find("\n", qe)
    after = text[qe:line_end if line_end >= 0 else len(text)][:120]
    for kind, rx in _AFTER:
        m = rx.match(after)
        if m:
            end = qe + m.end()
            end = end + 1 if text[end:end + 1] == "." else end
            if kind == "pronoun":
                return _previous_person(text, qs, sentences), (qs, end)
            name = _clean_name(m.group("name") if m.groupdict().get("name") else m.group("name2"))
            if name:
                return name, (qs, end)
    sent = next(((s, e) for s, e in sentences if s <= qs < e), (qs, qe))
    before = text[sent[0]:qs]
    for kind, rx in _BEFORE:
        m = rx.search(before)
        if m:
            if kind == "pronoun":
                return _previous_person(text, sent[0] + m.start(), sentences), (sent[0] + m.start(), qe)
            name = _clean_name(m.group("name"))
            if name:
                return name, (sent[0] + m.start(), qe)
    if not before.strip():  # the quotation opens its sentence: the speaker may be named just before it
        prev = [sp for sp in sentences if sp[1] <= qs]
        if prev and re.search(rf"\b{_VERBS}\b|:\s*$", text[prev[-1][0]:prev[-1][1]]):
            return _previous_person(text, qs, sentences, pronoun=False), (qs, qe)
    return None, (qs, qe)


def _previous_person(text: str, pos: int, sentences: list[tuple[int, int]], *, pronoun: bool = True) -> str | None:
    """The one person named in the sentence before ``pos``; None when none or several are.

    For a "he said" exactly one person may be named there; for a quotation standing on its own,
    the one who speaks in that sentence ("Brandt told reporters:") even if another is named.
    """
    prev = [sp for sp in sentences if sp[1] <= pos]
    if not prev:
        return None
    s, e = prev[-1]
    people, speaking = {}, {}
    sentence = text[s:e]
    for m in re.finditer(_NAME, sentence):
        if sentence[:m.start()].count('"') % 2 or sentence[:m.start()].count("“") > sentence[:m.start()].count("”"):
            continue  # inside a quotation
        name = _clean_name(m.group(0))
        if not name:
            continue
        single = " " not in name and not _is_speaker(text, name)
        if single and re.search(r"\b(?:in|at|from|to|near|of|across|outside)\s+$", sentence[:m.start()]):
            continue  # "... in Varsk": a place
        if single and not sentence[:m.start()].strip():  # a capital that may only start the sentence
            role = re.match(rf"\s+([a-z]+)\s+{_NAME}", sentence[m.end():])
            if role and role.group(1) in _ROLES:
                continue  # "Harbour master Ilse Brandt": a description of the name that follows
            if not re.search(rf"[a-z,;]\s+{re.escape(name)}\b", text):
                people.setdefault(name, None)  # "Prices rose": counts against certainty, never chosen
                continue
        people.setdefault(name.split()[-1], name)
        if re.match(rf"\s+(?:\w+\s+){{0,2}}?{_VERBS}\b", sentence[m.end():]):
            speaking.setdefault(name.split()[-1], name)
    if len(people) == 1:
        return next(iter(people.values()))  # None when the one capital is not known to be a name
    if len(speaking) == 1:
        # 'Large fires are not unusual, O'Connor said. "It's not unheard of ...," she said.': the
        # one person who speaks in the sentence before is who goes on speaking.
        return next(iter(speaking.values()))
    return None


def _is_speaker(text: str, name: str) -> bool:
    """Whether the text has ``name`` speak: "Ishiba said", "said Ishiba", "– Ishiba"."""
    return " ".join(name.split()) in _speakers(text)


_SPEAKS_BEFORE = re.compile(rf"({_NAME})\s+{_VERBS}\b")
_SPEAKS_AFTER = re.compile(rf"(?:{_VERBS}\s+|[–—]\s*)({_NAME})")


@lru_cache(maxsize=64)
def _speakers(text: str) -> frozenset[str]:
    """Every name the text has speak, found in one pass (a search per name over the whole text was
    most of the time of finding an article's statements): for "Prime Minister Shigeru Ishiba
    said", each ending of the name ("Ishiba", "Shigeru Ishiba", ...); after the verb or a dash,
    each beginning."""
    out: set[str] = set()
    for m in _SPEAKS_BEFORE.finditer(text):
        w = m.group(1).split()
        out.update(" ".join(w[i:]) for i in range(len(w)))
    for m in _SPEAKS_AFTER.finditer(text):
        w = m.group(1).split()
        out.update(" ".join(w[:j]) for j in range(1, len(w) + 1))
    return frozenset(out)


def _clean_name(raw: str | None) -> str | None:
    """A name as written, less leading titles ("Prime Minister Shigeru Ishiba" -> "Shigeru Ishiba")."""
    words = (raw or "").strip().rstrip(".,").split()
    if words and words[0].lower() in _NOT_NAMES:
        return None  # "The company said": a description, not a name
    while len(words) > 1 and words[0].lower().rstrip(".") in _TITLES:
        words = words[1:]
    if not words or words[0].lower().rstrip(".") in _TITLES | _NOT_NAMES or not words[0][0].isupper():
        return None
    return " ".join(words)


# ---- statements: who said what, quoted or reported ---------------------------------------------

@dataclass(frozen=True)
class Statement:
    """A sentence in which a named person speaks: a quotation, or reported speech ("Ishiba
    reiterated Japan's commitment ..."). What "What did X say about Y?" answers from."""

    speaker: str  # as the article names them; "he"/"she" resolved only when one person is meant
    start: int  # the sentence (or the quotation with its attribution), in the article text
    end: int
    quote: str | None = None  # the quoted words of a quotation; None for reported speech

    def to_row(self) -> list:
        """As an index stores it (a JSON list)."""
        return [self.speaker, self.start, self.end, self.quote]

    @classmethod
    def from_row(cls, row: list) -> Statement:
        speaker, start, end, quote = row
        return cls(str(speaker), int(start), int(end), None if quote is None else str(quote))


# Verbs of saying, and of stating a position in words ("stressed", "praised", "highlighted").
_REPORT = (r"(?:said|says|told|tells|added|adds|noted|notes|stressed|stresses|reiterated|reiterates|emphasi[sz]ed|"
           r"described|describes|expressed|expresses|announced|announces|argued|argues|warned|warns|insisted|"
           r"claimed|claims|acknowledged|urged|urges|vowed|vows|pledged|pledges|promised|praised|praises|"
           r"critici[sz]ed|criticises|accused|called|calls|highlighted|highlights|explained|remarked|declared|"
           r"suggested|admitted|denied|confirmed|revealed|predicted|rejected|voiced|questioned|"
           r"blamed|thanked|defended|hailed|dismissed|conceded|recalled|wrote|posted|tweeted|testified)")
_ADVERB = r"(?:(?:\w+ly|further|also|later|then|again|previously|once|often|repeatedly)\s+)?"
_REPORTED = re.compile(rf"(?P<subj>{_NAME}|[Hh]e|[Ss]he)(?:,[^,\n]{{1,160}},)?\s+{_ADVERB}{_REPORT}\b")


def find_statements(text: str) -> list[Statement]:
    """Every sentence of ``text`` in which a named person speaks, quoted or reported.

    A quotation keeps the speaker `find_quotes` finds; a sentence whose subject is a person and
    whose verb is one of saying ("Ishiba reiterated ...", "He further noted that ...") is reported
    speech by that person, "he"/"she" resolved to the one person the sentences before name. A
    sentence with neither, or a subject that is not a person ("The company said"), is no statement.
    """
    sentences = split_sentences(text)
    out: list[Statement] = []
    quoted: set[int] = set()
    for q in find_quotes(text):
        if q.speaker:
            out.append(Statement(q.speaker, *q.passage, quote=q.text))
            quoted.update(i for i, (s, e) in enumerate(sentences) if s < q.passage[1] and q.passage[0] < e)
    for i, (s, e) in enumerate(sentences):
        if i in quoted:
            continue
        m = _REPORTED.match(text, s, e) or _REPORTED.match(text, _after_lead(text, s, e), e)
        if not m:
            continue
        subj = m.group("subj")
        speaker = _previous_person(text, s, sentences) if subj.lower() in ("he", "she") else _clean_name(subj)
        if speaker and _is_person(text, speaker):
            out.append(Statement(speaker, s, e))
    out.sort(key=lambda st: st.start)
    return out


def _after_lead(text: str, s: int, e: int) -> int:
    """Where the sentence's subject starts after a leading clause ("On trade, Trump said ...")."""
    m = re.match(r"[^,\n]{2,60},\s+", text[s:e])
    return s + m.end() if m else s


def _is_person(text: str, name: str) -> bool:
    """Whether ``name`` is used as a person in ``text``: two or more capitalised words, or a word the
    text also gives as a speaker or after a title ("Prime Minister Ishiba")."""
    words = name.split()
    if len(words) > 1:
        return not any(w.lower() in _NOT_NAMES for w in words)
    return _is_speaker(text, words[0]) or words[0] in _titled_or_named(text)


_AFTER_TITLE = re.compile(rf"\b(?i:{'|'.join(sorted(_TITLES, key=len, reverse=True))})\.?\s+({_NAME})")
_AFTER_CAPITAL = re.compile(r"\b[A-Z][a-z]+\s+(?=([\w'’.\-]+))")


@lru_cache(maxsize=64)
def _titled_or_named(text: str) -> frozenset[str]:
    """Words the text puts after a title ("Minister Ishiba", "Gov. Wes Moore": each word of the
    name) or after another capitalised word ("Shigeru Ishiba"), in one pass over the text."""
    out: set[str] = set()
    for m in _AFTER_TITLE.finditer(text):
        out.update(m.group(1).split())
    for m in _AFTER_CAPITAL.finditer(text):
        word = m.group(1)
        out.add(word)
        out.add(re.match(r"\w*", word).group(0))  # "Ishiba's" names Ishiba too
    return frozenset(out)


_ASKED = re.compile(r"\b(?:did|does|do|has|have|had|will|would)\s+(?P<name>.+?)\s+(?:say|said|tell|told|think|"
                    r"mean|state|remark|comment|describe|write|add|announce|claim|argue|warn)\b"
                    r"|^(?:[Ww]hat|[Hh]ow)\s+(?P<name2>[A-Z][\w'’.\-]*(?:\s+[A-Z][\w'’.\-]*)*)\s+(?:said|says|thinks)\b")


def asked_speaker(question: str) -> str | None:
    """Whom a quote question asks about, as the question names them: "What did Ishiba say about
    Trump?" -> "Ishiba"; "How did Baltimore's mayor describe ...?" -> "Baltimore's mayor"."""
    m = _ASKED.search(question)
    raw = (m and (m.group("name") or m.group("name2")) or "").strip()
    raw = re.sub(r"^(?:the|a|an)\s+", "", raw, flags=re.I)
    if not raw or not re.search(r"[A-Z]", raw) or raw.lower() in ("he", "she", "they", "it", "you", "i", "we"):
        return None
    names = re.findall(_NAME, raw)
    if len(names) == 1 and names[0] == raw:
        return _clean_name(raw) or raw
    return raw


def same_person(speaker: str | None, asked: str) -> bool:
    """Whether ``speaker`` is ``asked``: they share a surname-like word ("Shigeru Ishiba" / "Ishiba")."""
    if not speaker:
        return False
    a = {_name_word(w) for w in asked.split() if w[:1].isupper()}
    return bool(a & {_name_word(w) for w in speaker.split()})


def _name_word(word: str) -> str:
    """"O’Connor's," -> "o'connor": one apostrophe, no possessive, no punctuation."""
    return word.lower().replace("’", "'").strip(".,").removesuffix("'s")


# Titles as articles abbreviate them, as questions spell them out.
_TITLE_WORDS = {"gov": "governor", "sen": "senator", "rep": "representative", "pres": "president", "gen": "general",
                "sec": "secretary", "dr": "doctor", "prof": "professor", "ceo": "chief", "pm": "prime"}


def _words(text: str) -> set[str]:
    out = set()
    for w in re.findall(r"[A-Za-z][\w'’.-]*", text):
        w = w.lower().replace("’", "'").removesuffix("'s").replace(".", "")
        if w and w not in _NOT_NAMES and w not in ("of", "for", "at", "on", "said", "says"):
            out.add(_TITLE_WORDS.get(w, w).rstrip("s") if len(w) > 3 else _TITLE_WORDS.get(w, w))
    return out


def speaker_matches(speaker: str | None, asked: str, text: str) -> bool:
    """Whether the ``speaker`` of a statement in ``text`` is the one ``asked`` about: a shared
    name word ("Ishiba"), or, for a description ("Baltimore's mayor", "LUMA's president"), every
    word of it in how the article introduces the speaker ("Baltimore Mayor Brandon Scott",
    "Scott, the mayor of Baltimore,")."""
    if not speaker:
        return False
    if same_person(speaker, asked):
        return True
    if not re.search(r"\b[a-z]{3,}", re.sub(r"\b(?:the|of|and)\b", "", asked)):
        # A name ("Putin", "White House"): only a speaker who bears it, or one the article
        # introduces by it ("White House spokesman John Kirby") when it is no person's name here.
        last = asked.split()[-1].removesuffix("'s").removesuffix("’s")
        if _is_speaker(text, last) or re.search(rf"\b{re.escape(last)}\s+(?:{_REPORT})\b", text):
            return False
    wanted = _words(asked)
    return bool(wanted) and wanted <= _words(speaker) | _introduced(text, speaker)


@lru_cache(maxsize=8192)
def _introduced(text: str, speaker: str) -> frozenset:
    """The words around each mention of the speaker's last name: title, organisation, apposition."""
    names = [w for w in speaker.split() if w.rstrip(".").lower() not in ("jr", "sr", "ii", "iii")]
    last = names[-1] if names else speaker.split()[-1]
    out: set[str] = set()
    for m in re.finditer(rf"\b{re.escape(last)}\b", text):
        before = text[max(0, m.start() - 80):m.start()]
        # the sentence so far: cut at a sentence end, not at "U.S." or "Gov."
        before = re.split(r"[;!?\n\"“”]|(?<=[a-z]{3}\.)\s", before)[-1]
        after = re.match(r"[^,.;\n]{0,30}?,\s*([^,.;\n]{3,80}),", text[m.end():m.end() + 120])
        out |= _words(" ".join(before.split()[-6:]))
        if after:
            out |= _words(after.group(1))
    return frozenset(out)
