"""Quotations in news text, statements (who said what, quoted or reported), and the questions
that ask about them.

Who speaks is read from the dependency parse (speakers.py): the subject of a verb of saying, the
object of "according to", "he"/"she" tied to the person named before. A quotation or sentence
gets a named speaker only when the article names one; an unnamed source ("a spokesperson for the
ministry") is kept as such, never given a name. The rest of this module matches the speakers of
statements to the person a question asks about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ..text import MONTHS, WEEKDAYS
from .chunk import split_sentences
from .names import NAME_SUFFIXES
from .speakers import Source, attribute

# Bumped when statements are found differently, so an index's stored ones are found again on first
# use (no re-embedding): 1, regular expressions (issue 16); 2, the dependency parse (issue 24).
STATEMENTS_FORMAT = 2


@dataclass(frozen=True)
class Quote:
    """A quotation in an article's text, and the person it names as the speaker."""

    text: str  # the words inside the quotation marks, exactly as written
    start: int  # span of the quotation, marks included
    end: int
    speaker: str | None  # as the article names them (titles left out); None unless the article names one
    passage: tuple[int, int]  # the quotation with its attribution: "...," Trump said.
    role: str | None = None  # the speaker's title or role as the article gives it ("port director")
    anonymous: str | None = None  # an unnamed source as described ("a spokesperson for the ministry")


# Names and verbs as regular expressions: what a question's speaker is matched with (speaker_matches,
# asked_speaker); who speaks in an article is read from the parse (speakers.py).
_VERBS = (r"(?:said|says|say|stated|states|told|tells|added|adds|remarked|noted|notes|explained|insisted|warned|"
          r"wrote|writes|declared|announced|argued|asked|replied|responded|recalled|continued|tweeted|posted|"
          r"urged|claimed|acknowledged|conceded|observed|commented|concluded|spoke|speaking)")
_TITLES = {"mr", "mrs", "ms", "dr", "prof", "president", "prime", "minister", "chancellor", "senator", "sen",
           "governor", "gov", "mayor", "secretary", "chief", "executive", "ceo", "chairman", "chairwoman", "chair",
           "spokesman", "spokeswoman", "spokesperson", "king", "queen", "pope", "general", "gen", "judge",
           "rep", "representative", "director", "coach", "captain", "sir", "dame", "lord", "lady", "vice", "deputy"}
# Capitalised words that start sentences or name things, never people.
_NOT_NAMES = {"the", "a", "an", "this", "that", "these", "those", "his", "her", "its", "their", "our", "my", "it",
              "he", "she", "they", "we", "i", "you", "but", "and", "so", "then", "when", "while", "in", "on", "at",
              "after", "before", "as", "if", "asked", "speaking", "officials", "analysts", "critics"} | set(MONTHS) \
    | set(WEEKDAYS)
_NAME = r"[A-Z][\w'’.\-]*(?:\s+(?:[A-Z][\w'’.\-]*|de|van|von|bin|al|da|del|der|le|la))*"
# Any double mark, and wire copy's two apostrophes: news text mixes them (“...,'' Rubio said;
# “...,“ he said), so marks pair up in order within a paragraph, whichever glyph they are.
_MARK = re.compile(r"[\"“”]|''")
MIN_QUOTE_WORDS = 3  # "good looking" or "unprecedented" are a writer's scare quotes, not a statement


def find_quotes(text: str) -> list[Quote]:
    """Every quotation of MIN_QUOTE_WORDS or more words in ``text``, with its speaker when named.

    The speaker is the one of the verb of saying the quotation hangs from (`"...," said port
    director Ana Costa.`, `Costa told reporters the port was "..."`, `"...," she said.` after a
    sentence naming her), or for a quotation standing alone, the one who speaks in the sentence
    before it (a quotation running over paragraphs keeps its speaker). Curly and straight double
    quotes and wire copy's ''. A quotation that runs to the end of its paragraph unclosed (wire
    style: the next paragraph opens with a mark) is a quotation too.
    """
    return list(_found(text)[0])


@lru_cache(maxsize=64)
def _found(text: str) -> tuple[tuple[Quote, ...], tuple[Statement, ...]]:
    """The quotations and statements of ``text``, from one parse (find_quotes and find_statements share it)."""
    sentences = split_sentences(text)
    spans = _quotations(text)
    kept = [(q, inner) for q, inner in spans if len(inner.split()) >= MIN_QUOTE_WORDS]
    sources, by_sentence = attribute(text, sentences, [q for q, _ in spans])
    source_of = dict(zip((q for q, _ in spans), sources))
    quotes, statements, covered = [], [], set()
    for (qs, qe), inner in kept:
        src = source_of[(qs, qe)]
        passage = _passage(qs, qe, sentences, by_sentence, src)
        quotes.append(Quote(inner, qs, qe, src.name if src else None, passage, src.role if src else None,
                            src.description if src and not src.name else None))
        if src is not None and _whole(text, qs, inner):
            statements.append(_statement(src, *passage, quote=inner))
            covered.update(i for i, (s, e) in enumerate(sentences) if s < passage[1] and passage[0] < e)
        elif src is not None:  # told CNN its guidelines "make clear ... We partner with ...": both sentences hers
            for i, (s, e) in enumerate(sentences):
                if s < qe and qs < e:
                    by_sentence.setdefault(i, src)
    for i, src in by_sentence.items():
        if i not in covered:
            statements.append(_statement(src, *sentences[i]))
    statements.sort(key=lambda st: st.start)
    return tuple(quotes), tuple(statements)


def _quotations(text: str) -> list[tuple[tuple[int, int], str]]:
    """(span, marks included; the words inside) of each quotation: marks paired in order within
    each paragraph; an odd mark left opening a quotation runs to the paragraph's end.

    The glyph does not matter ("“a”", "“a''" and a typo's "“a“" all pair): news copy mixes them,
    and pairing in order keeps a stray mark from running past its paragraph."""
    out = []
    start = 0
    for para in text.split("\n"):
        marks = [m for m in _MARK.finditer(para) if not (m.group(0) == "''" and _inside_word(para, m))]
        for a, b in zip(marks[::2], marks[1::2]):
            out.append(((start + a.start(), start + b.end()), para[a.end():b.start()]))
        if len(marks) % 2 and marks[-1].end() < len(para) and not para[marks[-1].end()].isspace():
            a = marks[-1]  # “It is not about me ... (no closing mark: it goes on in the next paragraph)
            end = len(para.rstrip())
            out.append(((start + a.start(), start + end), para[a.end():end]))
        start += len(para) + 1
    return out


def _inside_word(para: str, m: re.Match) -> bool:
    return m.start() > 0 and m.end() < len(para) and para[m.start() - 1].isalpha() and para[m.end()].isalpha()


def _whole(text: str, qs: int, inner: str) -> bool:
    """Whether a quotation is said whole (a sentence of its own: "We are ready," she said), not words
    quoted inside the writer's sentence (Biden called it "an outrage"): then the sentence is the statement."""
    first = next((c for c in inner if c.isalpha()), "")
    return first.isupper() or not text[:qs].rstrip(" ").endswith(tuple("abcdefghijklmnopqrstuvwxyz,"))


def _passage(qs: int, qe: int, sentences, by_sentence: dict, src) -> tuple[int, int]:
    """The quotation with the sentence that attributes it ("...," said Ana Costa.), when one does."""
    s, e = qs, qe
    for i, (a, b) in enumerate(sentences):
        if a < qe + 2 and qs < b and by_sentence.get(i) is src and src is not None:
            s, e = min(s, a), max(e, b)
    return s, e


def _statement(src: Source, start: int, end: int, quote: str | None = None) -> Statement:
    if src.name:
        return Statement(src.name, start, end, quote, src.role)
    return Statement(src.description or "", start, end, quote, None, anonymous=True)


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
    """A sentence in which someone speaks: a quotation, or reported speech ("Ishiba reiterated
    Japan's commitment ..."). What "What did X say about Y?" answers from."""

    speaker: str  # as the article names them (titles left out); for an unnamed source, its description
    start: int  # the sentence (or the quotation with its attribution), in the article text
    end: int
    quote: str | None = None  # the quoted words of a quotation said whole; None for reported speech
    role: str | None = None  # the speaker's title or role as the article gives it ("port director")
    anonymous: bool = False  # an unnamed source ("a spokesperson for the ministry"): never a named answer

    def to_row(self) -> list:
        """As an index stores it (a JSON list)."""
        return [self.speaker, self.start, self.end, self.quote, self.role, self.anonymous]

    @classmethod
    def from_row(cls, row: list) -> Statement:
        """A stored row; rows of four (speaker, start, end, quote) are those of STATEMENTS_FORMAT 1."""
        speaker, start, end, quote, role, anonymous = (*row, None, False)[:6] if len(row) == 4 else row
        return cls(str(speaker), int(start), int(end), None if quote is None else str(quote),
                   None if role is None else str(role), bool(anonymous))


# Verbs of saying, and of stating a position in words ("stressed", "praised", "highlighted").
_REPORT = (r"(?:said|says|told|tells|added|adds|noted|notes|stressed|stresses|reiterated|reiterates|emphasi[sz]ed|"
           r"described|describes|expressed|expresses|announced|announces|argued|argues|warned|warns|insisted|"
           r"claimed|claims|acknowledged|urged|urges|vowed|vows|pledged|pledges|promised|praised|praises|"
           r"critici[sz]ed|criticises|accused|called|calls|highlighted|highlights|explained|remarked|declared|"
           r"suggested|admitted|denied|confirmed|revealed|predicted|rejected|voiced|questioned|"
           r"blamed|thanked|defended|hailed|dismissed|conceded|recalled|wrote|posted|tweeted|testified)")


def find_statements(text: str) -> list[Statement]:
    """Every sentence of ``text`` in which someone speaks, quoted or reported, with who it is.

    A quotation said whole is one statement with its attribution (`"...," said Ana Costa.`); any
    other sentence whose verb of saying has a source ("Ishiba reiterated ...", "He further noted
    that ...", "According to Costa, ...") is reported speech by that source. Unnamed sources are
    statements with ``anonymous=True`` ("a spokesperson for the ministry"); "he"/"she" that the
    sentences before do not tie to one person make no statement.

    Raises:
        ParserUnavailableError: spaCy or its model is not installed (`pip install -e .`).
    """
    return list(_found(text)[1])


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
    names = [w for w in speaker.split() if w.rstrip(".").lower() not in NAME_SUFFIXES]
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
