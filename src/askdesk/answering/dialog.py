"""A conversation's focus: what a question asks, given the questions before it.

"What tariffs did Trump announce?" then "And what did Ishiba say?": the follow-up names a new
person, so it asks Ishiba (never Trump) and keeps the topic (tariffs). "How many people died?"
after a question about an earthquake names nothing new: it inherits the earthquake, and the
articles that answered it are preferred. "Who became acting president?" then "How old is he?":
"he" is the person the previous answer named, not anyone its question named; `Desk` finds that
name (`refers_to_answer`) and passes it as ``referent``. Pure functions over the questions' text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..articles.quotes import asked_speaker
from ..text import STOPWORDS, question_kind

# Words that make a question lean on the one before it ("And what did he say about that?").
FOLLOW_UP = re.compile(r"^(and|but|so|also|what about|how about|then)\b|\b(he|she|him|her|his|hers|they|them|their|"
                       r"it|its|that|this|those|these|there|then|the same)\b", re.I)
_NAME = re.compile(r"\b[A-Z][\w'’.\-]*(?:\s+(?:of|de|van|von|al|bin|the)?\s*[A-Z][\w'’.\-]*)*")
# Capitalised words that open or pepper questions without naming anything.
_NOT_NAMES = frozenset("""what who whom whose which when where why how and but so also then did does do is was were
are has have had will would could should can may might the a an in on at of for to from by with about after
before during and or i""".split())
_ASK_WORDS = frozenset("""what who whom whose which when where why how did does do is was were are has have had will
would could should can may might say said says tell told describe described think thought mean meant much many
the a an and but so also then about""".split())


@dataclass(frozen=True)
class Turn:
    """What one question of a conversation asks."""

    question: str  # as asked
    query: str  # what retrieval searches: the question, with the topic it leaves out carried over
    speaker: str | None  # for "what did X say": X, named by this question (or the one it follows)
    about: str | None  # what X is asked about ("Japan's investment in the United States"), if said
    kind: str | None  # text.question_kind of the question as understood (a follow-up keeps its kind)
    follows: bool  # whether it leans on the question before it
    referent: str | None = None  # the previous answer's person that "he"/"she" stands for, when used


def names(question: str) -> list[str]:
    """The capitalised names in a question ("Ishiba", "Nippon Steel"), question words left out."""
    out = []
    for m in _NAME.finditer(question):
        words = [w for w in m.group(0).split() if w.lower() not in _NOT_NAMES]
        if words:
            out.append(" ".join(words))
    return out


def content(question: str) -> list[str]:
    """The question's words that say what it is about (question words and stopwords left out)."""
    words = re.findall(r"[\w'’$%.,-]+", question)
    return [w.strip(".,") for w in words if w.lower().strip(".,") not in STOPWORDS | _ASK_WORDS and w.strip(".,")]


def about(question: str) -> str | None:
    """What a "what did X say about Y" / "how did X describe Y" question asks about: Y."""
    m = re.search(r"\b(?:say|said|says|think|thinks|thought|tell|told|write|wrote|comment|remark|state)\s+"
                  r"(?:about|on|of|regarding|concerning)\s+(.+?)\??$", question, re.I) \
        or re.search(r"\bdescribe[ds]?\s+(.+?)\??$", question, re.I)
    if not m:
        return None
    # "... about tariffs when he met Ishiba": the topic, not the occasion
    return re.split(r"\s+(?:when|after|before|while|during|at the|in the wake)\b", m.group(1).strip(), maxsplit=1)[0]


_PRONOUN = re.compile(r"^(?:that|this|it|them|these|those|the same|him|her|he|she|they)$", re.I)
_PERSONAL = re.compile(r"\b(he|she|him|her|his)\b", re.I)


def refers_to_answer(question: str, history: Sequence[str] = ()) -> bool:
    """Whether "he"/"she" in ``question`` stands for the person the previous answer named:
    the previous question asked "who" and this one names no one new ("How old is he?")."""
    if not history or not _PERSONAL.search(question) or question_kind(history[-1]) != "person":
        return False
    return not [n for n in names(question) if n not in names(history[-1])]


def personal_pronoun(question: str) -> str | None:
    """The first "he"/"she"/"him"/"her"/"his" of ``question``, as written."""
    m = _PERSONAL.search(question)
    return m.group(1) if m else None


def read(question: str, history: Sequence[str] = (), referent: str | None = None) -> Turn:
    """The turn ``question`` is, after ``history`` (earlier questions, oldest first).

    ``referent``: the name the previous answer gave, when `refers_to_answer`; "he"/"she" then
    means that person, and the question is asked of them."""
    kind = question_kind(question)
    speaker, topic = asked_speaker(question), about(question)
    if topic and _PRONOUN.match(topic):
        topic = None  # "about that": the previous question's topic, below
    previous = history[-1] if history else None
    follows = bool(previous) and (bool(FOLLOW_UP.search(question)) or len(content(question)) <= 2)
    if not follows:
        return Turn(question, question, speaker, topic, kind, False)
    before = read(previous, history[:-1])
    new = [n for n in names(question) if n not in names(previous)]
    switched = bool(speaker and before.speaker and speaker != before.speaker)
    if new or switched:
        # A new person or thing: it replaces the one the previous question asked about; the rest
        # of that question (its topic) stays.
        new = new or [speaker]
        replaced = {before.speaker} if before.speaker else set(names(previous)[:1])
        kept = [w for w in content(before.query) if not any(w in r.split() for r in replaced if r)]
        if before.kind == "quote" and kind is None:  # "And Ishiba?" after "What did Trump say ...?"
            kind, speaker = "quote", speaker or new[0]
        topic = topic or before.about
        query = " ".join([question, *[w for w in kept if w.lower() not in question.lower()]])
    elif referent and refers_to_answer(question, history):
        # "How old is he?" after "Who became acting president?": he is the answer, not the
        # question's own people (Raisi); asked of him by name. The previous question's words stay
        # out: they are what the previous answer already says ("appointed acting president").
        asked = _PERSONAL.sub(lambda m: f"{referent}'s" if m.group(1).lower() == "his" else referent,
                              question)
        query = asked
        if kind == "quote" and (not speaker or _PRONOUN.match(speaker)):
            speaker = referent
        return Turn(question, query, speaker, topic, kind, True, referent)
    else:
        # Nothing new named: the question leaves its topic out and inherits the previous one's.
        query = " ".join([question, *[w for w in content(before.query) if w.lower() not in question.lower()]])
        pronoun = re.search(r"\b(he|she|him|her)\b", question, re.I)
        if kind == "quote" and (not speaker or _PRONOUN.match(speaker)):
            speaker = before.speaker if pronoun else speaker
        topic = topic or (before.about if kind == "quote" else None)
    return Turn(question, query, speaker, topic, kind, True)
