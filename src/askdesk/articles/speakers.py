"""Who speaks in a news article, read from the dependency parse (parser.py).

A speaker is the subject of a verb of saying ("said", "told", "wrote", "called the attack ...")
or the object of "according to"; a quotation takes the speaker of the verb it hangs from, and a
quotation with none, standing alone, keeps the speaker of the sentence before it (wire copy's
paragraphs of one person's words). Names are kept apart from titles and roles ("port director
Ana Costa": Ana Costa, port director; "Guy Parmelin, who visited ...": Guy Parmelin), "he",
"she", "the minister", "it" and "the company" are tied to the one named before them, and an
unnamed source stays what it is ("a spokesperson for the ministry").
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

from .names import (
    NAME_SUFFIXES,
    PROPER,
    TITLES,
    Mention,
    body_named,
    full_names,
    has_org_word,
    is_body,
    mention,
    misread_name,
    name_of,
    phrase,
)
from .parser import SPEECH, parsed, units


@dataclass(frozen=True)
class Source:
    """Who a statement is attributed to: a name, or an unnamed source as the article describes it."""

    name: str | None  # "Ana Costa" (titles and roles left out); None for an unnamed source
    role: str | None = None  # "port director", "the foreign minister for Germany", when the article gives one
    description: str | None = None  # an unnamed source: "a spokesperson for the ministry"


# Verbs that speak only with words after them (a clause, a quotation, "call for"): "added a
# penalty", "posted a photo", "called the police", "recalled 675,000 cans" are no speech.
_NEEDS_WORDS = {"add", "call", "post", "confirm", "continue", "report", "recall", "respond", "maintain", "deny",
                "describe", "ask", "cite", "recommend", "criticize", "slam", "blast", "condemn", "accuse", "point",
                "blame", "lament", "liken", "praise", "applaud", "voice"}
_NO_OBJECT = {"add", "continue", "post", "confirm", "report", "recall", "respond", "maintain"}  # need a clause
_WORDS_DEPS = {"ccomp", "parataxis", "oprd", "xcomp", "dobj"}
# Nouns that name a document or a message: its author, when named, is the source ("Trump's statement said").
_DOCUMENTS = set("""statement report letter post release filing complaint lawsuit study survey poll data document memo
testimony video message website tweet odds guidelines guidance analysis estimate estimates figures records note
indictment order ruling opinion interview announcement account book notice review""".split())
# Singular nouns that "the ..." uses for a person named before ("the minister said") ...
_ROLE_NOUNS = set("""king queen pope president minister lady governor senator mayor chancellor premier secretary coach
manager judge justice prince princess chairman chairwoman director founder ambassador""".split())
# ... and for a company or body named before ("the company said"), as "it" does.
_BODIES = set("""company firm automaker carmaker retailer airline bank network platform agency group organization
organisation union club league""".split())
_ISSUED = {"statement", "release", "letter", "post", "tweet", "message", "memo", "note"}  # what a speaker issues
_BACK_WORDS = {"he", "she", "it"} | _ROLE_NOUNS | _BODIES | _ISSUED
_RULES = {"law", "protocol", "bill", "plan", "proposal", "measure", "rule", "rules", "policy", "legislation",
          "agreement", "deal", "order", "resolution", "budget", "program", "contract", "treaty"}
_REFUSE = {"refused", "declined", "refuses", "declines", "refusing", "declining"}
# What "denied ..." denies when it is a statement ("denied the allegations"), not a refusal ("denied a permit").
_CLAIMS = set("""allegation allegations claim claims report reports accusation accusations charge charges wrongdoing
rumor rumors rumour rumours involvement responsibility knowledge suggestion suggestions""".split())
_DASH = re.compile(r"\s*[–—]\s*([A-Z][\w'’.\-]*(?:\s+[A-Z][\w'’.\-]*){0,3})\s*$")


@dataclass
class _Event:
    """A verb of saying (or "according to") with its source, as found on the parse."""

    pos: int  # the verb's offset in the article
    sent: int  # its sentence (chunk.split_sentences)
    depth: int  # steps to the root of its parse: the least deep verb of a sentence is its speaker
    source: Source | None  # None while "he", "the minister" or "it" is unresolved (or stays so)
    refers: str | None = None  # "he", "she", "it", or a role or body noun ("minister", "company")
    words: bool = True  # False: "Brandt spoke after the ceremony" (the quotation after it is hers; no statement)
    described: str | None = None  # "the police chief": the unnamed source, when nobody named before is meant


@dataclass
class _Article:
    """What resolving needs of one article, and the sources resolved so far (by sentence)."""

    text: str
    starts: list[int]
    mentions: list[Mention]
    parsed: set[int]
    names: dict[str, str]  # short name -> the full one (full_names)
    said: dict[int, Source] = field(default_factory=dict)


class _Inside:
    """Which quotation's words an offset lies in (index into ``spans``), -1 for none."""

    def __init__(self, quotations):
        self.spans = sorted(quotations)
        self.starts = [s for s, _ in self.spans]
        self.index = {q: i for i, q in enumerate(self.spans)}

    def __call__(self, pos: int) -> int:
        i = bisect_right(self.starts, pos) - 1
        return i if i >= 0 and self.spans[i][0] < pos < self.spans[i][1] - 1 else -1


def attribute(text: str, sentences: Sequence[tuple[int, int]], quotations: Sequence[tuple[int, int]],
              ) -> tuple[list[Source | None], dict[int, Source]]:
    """Sources of the quotations (spans, marks included) and of the sentences of reported speech.

    Returns:
        (one Source or None per quotation, {sentence index: Source} for each sentence whose verb of
        saying has a source, whether or not it holds a quotation).

    Raises:
        ParserUnavailableError: spaCy or its model is not installed (`pip install -e .`).
    """
    todo, parsed_units = units(text, sentences, quotations)
    if not todo:
        return [None] * len(quotations), {}
    with parsed([t for _, t in todo]) as docs:  # the Docs live only inside: read them into events here
        return _attribute(text, sentences, quotations, todo, parsed_units, docs)


def _attribute(text, sentences, quotations, todo, parsed_units, docs):
    """`attribute` on the parsed units (``docs``, one per unit of ``todo``), read while they are valid."""
    starts = [s for s, _ in sentences]
    inside = _Inside(quotations)
    events: list[_Event] = []
    mentions: list[Mention] = []
    verbs: dict[tuple[int, int], _Event] = {}
    words: dict[int, list] = {}  # quotation -> the tokens of its words
    for (offset, _), doc in zip(todo, docs):
        for tok in doc:
            pos = offset + tok.idx
            q = inside(pos)
            if q >= 0:
                words.setdefault(q, []).append(tok)
                continue
            sent = bisect_right(starts, pos) - 1
            ev = _event(tok, pos, sent, text, offset, inside)
            if ev:
                events.append(ev)
                verbs[(id(doc), tok.i)] = ev
            m = mention(tok, pos, sent, text, offset)
            if m:
                mentions.append(m)
    quote_events = [_governing(qs, qe, words.get(inside.index[(qs, qe)], []), verbs, events, starts, text)
                    for qs, qe in quotations]
    art = _Article(text, starts, mentions, parsed_units, full_names(text, mentions))
    return _resolve(art, quotations, quote_events, events, art.names)


# ---- on the parse: verbs of saying, their subjects, names ----------------------------------------

def _event(tok, pos, sent, text, offset, inside) -> _Event | None:
    """The verb of saying ``tok`` with its source, or "according to X"; None if it is neither."""
    if tok.lower_ == "according":
        obj = next((g for c in tok.children if c.lower_ == "to" for g in c.children if g.dep_ == "pobj"), None)
        return _with_source(obj, pos, sent, _depth(tok), text, offset) if obj is not None else None
    lemma = SPEECH.get(tok.lower_)
    if lemma is None or not tok.tag_.startswith("VB") or tok.dep_ in ("amod", "acl", "auxpass"):
        return None
    if any(c.dep_ == "neg" for c in tok.children) or tok.dep_ == "xcomp" and tok.head.lower_ in _REFUSE:
        return None  # "did not say", "refused to say": no statement
    if any(c.dep_ in ("nsubjpass", "auxpass") for c in tok.children):  # "was confirmed by James Paterson"
        by = next((g for c in tok.children if c.dep_ == "agent" for g in c.children if g.dep_ == "pobj"), None)
        if by is None or by.tag_ not in PROPER or (lemma in _NEEDS_WORDS and lemma not in ("confirm", "describe",
                                                                                          "liken")):
            return None  # "was called for intentional grounding"
        if lemma in ("describe", "liken") and not _has_words(tok, lemma):
            return None  # "was described by the IOC as ...": words; "was described by Smith" alone: none
        return _with_source(by, pos, sent, _depth(tok), text, offset)
    if lemma in _NEEDS_WORDS and not _has_words(tok, lemma):
        return None
    if lemma == "deny" and not any(c.dep_ in ("ccomp", "parataxis") for c in tok.children) and not any(
            c.dep_ == "dobj" and c.lower_ in _CLAIMS for c in tok.children):
        return None  # "denied a permit", "denied entry": a refusal, not a statement; "denied the allegations": one
    subj = _subject(tok, inside, offset)
    if subj is not None and subj.lower_ in ("he", "she"):
        subj = _binder(tok, subj, inside, offset) or subj
    if subj is not None and lemma == "call" and subj.lower_ in _RULES:
        return None  # "The St. Louis law called for ...": a text's content, nobody speaking
    ev = _with_source(subj, pos, sent, _depth(tok), text, offset) if subj is not None else None
    if ev is not None and lemma == "speak":
        ev.words = _has_words(tok, lemma)
    return ev


def _binder(verb, pronoun, inside, offset):
    """The named subject of a clause the verb is part of: "Eric Schmitt sued to stop what he called ..."."""
    tok = verb
    for _ in range(5):
        if tok.head.i == tok.i:
            return None
        tok = tok.head
        subj = next((c for c in tok.children if c.dep_ in ("nsubj", "nsubjpass") and inside(offset + c.idx) < 0), None)
        if subj is not None and subj.i != pronoun.i:
            return subj if subj.tag_ == "NNP" else None
    return None


def _depth(tok) -> int:
    d = 0
    while tok.head.i != tok.i and d < 50:
        tok, d = tok.head, d + 1
    return d


def _has_words(tok, lemma) -> bool:
    """Whether the verb has what was said after it: a clause, a quotation, "called ... an outrage"."""
    if tok.dep_ == "parataxis":  # "Why, Durbin asked, did she ...": the sentence around it
        return True
    deps = {c.dep_ for c in tok.children}
    if lemma in ("describe", "liken") and any(c.dep_ == "prep" and c.lower_ in ("as", "to") for c in tok.children):
        return True  # "described as an execution", "likened it to"
    if lemma == "point":  # "pointed out that"
        return any(c.dep_ == "prt" and c.lower_ == "out" for c in tok.children)
    if lemma == "call":  # "called the attack an outrage", "called for", "called on X to"
        return bool(deps & {"ccomp", "oprd", "xcomp"}) or any(c.dep_ in ("prep", "prt") and c.lower_ in ("for", "on")
                                                             for c in tok.children)
    if lemma in _NO_OBJECT:
        deps -= {"dobj", "xcomp"}
    return bool(deps & _WORDS_DEPS) or any(c.dep_ == "punct" and c.text in ('"', "“", "”", "''", ":")
                                           for c in tok.children)


def _subject(verb, inside, offset):
    """The subject of a verb of saying, through "and said", ", adding", "who said"; of two
    (a misparse), the name outside the quotation ('Zilch," Sen. Amy Klobuchar said')."""
    tok = verb
    for step in range(4):
        deps = ("nsubj",) if step == 0 else ("nsubj", "nsubjpass")
        subjs = [c for c in tok.children if c.dep_ in deps and inside(offset + c.idx) < 0]
        if len(subjs) > 1:  # "Mayor Tom Kenner, Jr. told": the suffix parsed as a second subject
            subjs = [c for c in subjs if c.lower_.rstrip(".") not in NAME_SUFFIXES] or subjs
        if subjs:
            subj = max(subjs, key=lambda c: c.i)  # the nearer: "LONDON (AP) — Pop superstar Adele has hinted"
            if subj.tag_ in ("WP", "WDT") and tok.dep_ == "relcl":
                head = tok.head  # "Nasrallah, who said ..."
                return head.head if head.dep_ == "appos" else head  # "Jesmyn Ward, a ... winner who wrote"
            return subj
        if tok.dep_ not in ("conj", "advcl", "xcomp") or tok.head.i == tok.i:
            return None
        tok = tok.head
    return None


def _with_source(head, pos, sent, depth, text, offset) -> _Event | None:
    got = _source(head, text, offset)
    if got is None:
        return None
    if isinstance(got, Source):
        return _Event(pos, sent, depth, got)
    word, described = got if isinstance(got, tuple) else (got, None)
    return _Event(pos, sent, depth, None, refers=word, described=described)


def _source(h, text, offset) -> Source | str | tuple[str, str] | None:
    """Who the noun phrase headed by ``h`` names: a Source, a word to resolve ("she"; "minister" with
    the phrase to keep if nobody named is meant: ("chief", "the police chief")), or None."""
    if h.tag_ in ("PRP", "PRP$"):
        return h.lower_ if h.lower_ in ("he", "she", "it") else None
    if h.lower_ == "old" and re.fullmatch(r"the \d+-year-old", phrase(h, text, offset).lower()):
        return "he"  # "The 29-year-old included a note ... stating"
    appos = next((c for c in h.children if c.dep_ == "appos" and c.tag_ in PROPER), None)
    if h.lower_ in _DOCUMENTS or (h.tag_ in PROPER and h.lower_.rstrip("s") in _DOCUMENTS):
        owner = next((c.lower_ for c in h.children if c.dep_ == "poss" and c.tag_ == "PRP$"), None)
        if owner in ("its", "his", "her"):  # "according to its ... Report", "his testimony says"
            return {"its": "it", "his": "he", "her": "she"}[owner]
    if h.tag_ in PROPER or misread_name(h):
        name, role = name_of(h, text, offset)
        described = next((c for c in h.children if c.dep_ == "appos" and c.tag_ in ("NN", "NNS")), None)
        if described is not None:  # "Erin O'Connor, lead officer for the forest service, said"
            role = phrase(described, text, offset)
        if name and " " not in name and role and role != role.title() and \
                any(c.dep_ == "det" for c in h.children):
            return Source(None, description=phrase(h, text, offset))  # "the pro-DeSantis super PAC"
        if name and not name[0].isupper():
            return Source(None, description=phrase(h, text, offset))  # "the metro area chamber of commerce"
        if name:
            return Source(name, role)
        named = next((c for c in h.children if c.dep_ in ("appos", "npadvmod") and c.tag_ in PROPER), None)
        if named is not None:  # "Dearborn USPS Window Clerk, April Washington"
            name = name_of(named, text, offset)[0]
            return Source(name, role) if name else None
        return role.split()[-1].lower() if role else None  # "the Pope said"
    if not h.tag_.startswith("NN") and h.tag_ != "CD":
        return None
    if appos is not None:  # "The mayor, Anne Hidalgo, said"; "port director (appos) Ana Costa"
        name = name_of(appos, text, offset)[0]
        if name:
            return Source(name, phrase(h, text, offset, drop=("appos", "punct", "relcl")).removeprefix("The ")
                          .removeprefix("the ") or None)
    for c in h.subtree:  # "The U.N. agency for Palestinian refugees, known as UNRWA"
        if c.dep_ == "acl" and c.lower_ in ("known", "called"):
            obj = next((g for a in c.children if a.lower_ == "as" for g in a.children if g.dep_ == "pobj"), None)
            if obj is not None and obj.tag_ in PROPER:
                return Source(name_of(obj, text, offset)[0] or obj.text, phrase(h, text, offset))
    if any(c.dep_ == "poss" and c.lower_ in ("our", "my") for c in h.children):
        return None  # "according to our polling": the writer's own
    if h.lower_ in _DOCUMENTS:  # "Trump's statement said", "a letter from Breton", "a NASA report"
        for c in h.children:
            if c.dep_ in ("poss", "compound") and c.tag_ in PROPER:
                return Source(name_of(c, text, offset)[0] or c.text)
            by = c if c.dep_ == "prep" and c.lower_ in ("by", "from") else \
                next((g for g in c.children if g.dep_ == "agent"), None) if c.dep_ == "acl" else None
            obj = next((g for g in by.children if g.dep_ == "pobj"), None) if by is not None else None
            if obj is not None and obj.tag_ in PROPER:
                return _source(obj, text, offset)
    det = next((c for c in h.children if c.dep_ in ("det", "poss")), None)
    if det is not None and det.lower_ == "the" and h.tag_ == "NN":
        # "the minister", "the company", "the statement": the one named before; "the police
        # chief": the one the article gave that role; else what it says ("the fire department").
        return h.lower_, phrase(h, text, offset)
    return Source(None, description=phrase(h, text, offset))


def _governing(qs, qe, words, verbs, events, starts, text) -> _Event | None:
    """The verb of saying a quotation hangs from: the nearest such ancestor of its words, else the
    one verb of saying in the sentences it spans."""
    best = None
    for tok in words:
        a, steps = tok.head, 0
        while steps < 4 and a is not None:
            ev = verbs.get((id(a.doc), a.i))
            if ev is not None:
                if best is None or steps < best[0]:
                    best = (steps, ev)
                break
            a, steps = (a.head if a.head.i != a.i else None), steps + 1
    if best:
        return best[1]
    first, last = bisect_right(starts, qs) - 1, bisect_right(starts, qe - 1) - 1
    near = [e for e in events if first <= e.sent <= last]
    if not near and last + 1 < len(starts) and starts[last + 1] - qe < 3:
        after = [e for e in events if e.sent == last + 1]  # '"... a win-win-win." Bach said last month.'
        end = starts[last + 2] if last + 2 < len(starts) else len(text)
        near = after if len(text[starts[last + 1]:end].split()) <= 6 else []
    return near[0] if len(near) == 1 else None


# ---- resolving, in article order ---------------------------------------------------------------

def _resolve(art: _Article, quotations, quote_events, events, names):
    """Sources in article order: pronouns and "the minister" from the sentences before, quotations
    without a verb from the statement just before them."""
    starts = art.starts
    quote_sources: list[Source | None] = [None] * len(quotations)
    items = [(qs, 0, i) for i, (qs, _) in enumerate(quotations)]
    items += [(starts[e.sent], 1, j) for j, e in enumerate(events)]
    for _, kind, i in sorted(items):
        if kind == 0:
            qs, qe = quotations[i]
            ev = quote_events[i]
            src = _resolved(ev, qs, art, names) if ev else (_dash(art.text, qe, names) or _before(art, qs))
            quote_sources[i] = src
            if src is not None:
                for k in range(bisect_right(starts, qs) - 1, bisect_right(starts, qe - 1)):
                    art.said.setdefault(k, src)
        else:
            ev = events[i]
            src = _resolved(ev, starts[ev.sent], art, names)
            least = all(e.depth >= ev.depth for e in events if e.sent == ev.sent and e is not ev)
            if src is not None and (ev.sent not in art.said or least):
                art.said[ev.sent] = src
    by_sentence: dict[int, Source] = {}
    for ev in sorted(events, key=lambda e: e.depth):
        if ev.sent not in by_sentence and ev.source is not None and ev.words:
            by_sentence[ev.sent] = ev.source
    return quote_sources, by_sentence


def _resolved(ev: _Event, at: int, art: _Article, names: dict[str, str]) -> Source | None:
    """The event's source with a pronoun or role resolved and a short name written out (kept on the event)."""
    if ev.source is None and ev.refers:
        name = _referent(ev.refers, at, art, ev.pos)
        ev.source = Source(name) if name else Source(None, description=ev.described) if ev.described else None
        ev.refers = None
    src = ev.source
    if src is not None and src.name in names:
        ev.source = Source(names[src.name], src.role, src.description)
    elif src is not None and not src.name and src.description in names:  # "Speed said": a name parsed as a noun
        ev.source = Source(names[src.description])
    return ev.source


def _referent(word: str, at: int, art: _Article, verb: int | None = None) -> str | None:
    """Whom "he"/"she", "it" or "the <noun>" at offset ``at`` stands for: the last one named before
    with that role ("the police chief"); for "he", "she", "the minister" (a person's role),
    "it", "the company" and "the statement", going back over the sentences before, the named
    speaker of the nearest that has one, or the one person (company, for "it") it names; two:
    nobody. A sentence that says "he" (or "his") itself and names nobody as its subject goes on
    about someone named before it, so its other names are passed over."""
    body = word == "it" or word in _BODIES
    anyone = word in _ISSUED  # "the statement said": whoever spoke before it
    if word in TITLES | _ROLE_NOUNS:  # "the police chief": the one given that role
        sent = bisect_right(art.starts, at) - 1
        for prev in range(sent - 1, max(sent - 4, -1), -1):  # "The president also told": the president who
            src = art.said.get(prev)                          # spoke just before, not another named since
            if src is not None and src.name and any(art.names.get(m.name, m.name) == src.name and word in m.roles
                                                    for m in art.mentions if m.pos < at):
                return src.name
        for m in reversed(art.mentions):
            if m.pos < at and word in m.roles and not has_org_word(m.name):
                return m.name
    if word not in ("he", "she", "it") and word not in TITLES | _ROLE_NOUNS:
        named = body_named(art.text, word, max(at, verb or at))  # "the museum": "the National Museum of ..."
        if named:
            return named
    if word not in _BACK_WORDS:
        return None
    again = None if body or anyone else _SHE if word == "she" else _HE
    sent = bisect_right(art.starts, at) - 1
    for prev in range(sent - 1, max(sent - 4, -1), -1):
        src = art.said.get(prev)
        if src is not None and src.name and (anyone or (is_body(src.name, art.mentions) if body
                                                       else not has_org_word(src.name))):
            return src.name
        if src is not None and src.name and not (body or anyone) and is_body(src.name, art.mentions):
            continue  # "The hurricane center says ...": a body is never "he" or "she"; look further back
        if src is not None and (src.name or body or anyone):
            return None  # someone else spoke there; an unnamed "experts" is passed over for "he"
        if prev not in art.parsed:
            known = _known_people(art, prev) if not body else set()
            if len(known) == 1:  # "Farmer is enrolled in Medicare ...": not parsed, but a name the article gives
                return next(iter(known))
            if known or again is None:
                return None
            continue
        named = {m.name: m for m in art.mentions if m.sent == prev and
                 (is_body(m.name, art.mentions) if body else not (m.plural or has_org_word(m.name)))}
        main = [n for n, m in named.items() if m.main]
        if again is not None and again.search(art.text, art.starts[prev], _end(art, prev)):
            if len(main) == 1:  # "Farmer is enrolled ... because of her heart condition."
                return main[0]
            continue
        if len(named) == 1 or (body and len(main) == 1):  # "Ford would not comment on ... It did say ..."
            return main[0] if body and len(main) == 1 else next(iter(named))
        if named:
            return None
    return None


_HE = re.compile(r"\b(?:[Hh]e|him|[Hh]is|himself)\b")
_SHE = re.compile(r"\b(?:[Ss]he|[Hh]er|hers|herself)\b")


def _end(art: _Article, sent: int) -> int:
    return art.starts[sent + 1] if sent + 1 < len(art.starts) else len(art.text)


def _known_people(art: _Article, sent: int) -> set[str]:
    """The people an unparsed sentence names: capitalised words that are names the article gives in full."""
    text = art.text[art.starts[sent]:_end(art, sent)]
    return {art.names[w] for w in re.findall(r"[A-Z][\w'’-]+", text) if w in art.names and not has_org_word(w)}


def _before(art: _Article, qs: int) -> Source | None:
    """The source of a quotation with no verb, opening its sentence: whoever speaks in the sentence
    just before it, in its paragraph or closing the one before (a quotation that runs on)."""
    sent = bisect_right(art.starts, qs) - 1
    if sent < 1 or art.text[art.starts[sent]:qs].strip() not in ("", "And", "But", "Or"):
        return None  # words quoted inside a sentence with no verb of saying: the writer's sentence
    return art.said.get(sent - 1)


def _dash(text: str, qe: int, names: dict[str, str]) -> Source | None:
    """`"..." – Ishiba`: a name after a dash, ending the line."""
    end = text.find("\n", qe)
    m = _DASH.match(text[qe:end if end >= 0 else len(text)])
    return Source(names.get(m.group(1), m.group(1))) if m else None
