"""Names in a parsed news sentence, for speakers.py: a person's or body's name apart from the
titles and roles around it ("Swiss President Guy Parmelin": Guy Parmelin, Swiss President), the
names the article gives in full ("Costa" -> "Ana Costa"), and whether a name is a company's or
body's rather than a person's ("Ford", "Labor Department").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..text import MONTHS, WEEKDAYS

# Capitalised words before a name that are titles or descriptions, not part of it.
TITLES = set("""president vice prime minister gov governor sen senator rep representative mr mrs ms miss dr prof
professor king queen pope prince princess judge justice secretary chancellor mayor gen general capt captain coach
chief ceo cfo commissioner director superintendent attorney officer chairman chairwoman chair deputy acting former
sheriff lt col sgt ambassador speaker leader spokesman spokeswoman spokesperson rev reverend sir dame lord lady
archbishop bishop cardinal father rabbi imam astrologer manager executive adviser advisor founder head commander
admiral adm sec pastor premier emir sheikh crown democrat republican independent gop president-elect rep.-elect
sen.-elect mp lawmaker analyst economist author entrepreneur dean provost clerk councilman councilwoman councilor
councillor assemblyman assemblywoman congressman congresswoman delegate trustee alderman supervisor treasurer
comptroller auditor attorney-general editor-in-chief""".split())
# Words that make a name a company's or body's.
ORG_WORDS = set("""inc corp co company group department ministry agency commission association society council
committee service administration bank airlines forces command university board foundation institute office
party act court law bill news times press journal network radio city county state states river street stadium center
centre hospital airport park club team fund initiative project program
hurricane typhoon cyclone storm""".split())  # storms: named like people ("Hurricane Ernesto"), never a speaker
DATES = set(MONTHS) | set(WEEKDAYS)
PLACE_PREPS = {"in", "at", "from", "to", "near", "of", "across", "outside", "into", "on", "throughout", "around",
               "over", "within", "through", "toward", "towards", "between", "among", "via"}
PROPER = ("NNP", "NNPS")
NAME_SUFFIXES = {"jr", "sr", "ii", "iii", "iv"}  # after a name, never the name: "Tom Kenner, Jr."
# Capitalised words a parse may take into a name: "Likewise Nicola Sturgeon asserted".
NOT_NAME = {"likewise", "meanwhile", "however", "also", "but", "and", "still", "yet", "then", "now", "later", "so",
            "instead", "indeed", "asked", "speaking", "separately", "earlier", "today"}
# Institutions whose name goes on with "of": "Ministry of Foreign Affairs", not "Bill Milligan of Atlanta".
OF_NAMES = {"ministry", "department", "board", "council", "committee", "commission", "office", "bureau", "university",
            "institute", "school", "college", "court", "bank", "church", "academy", "society", "association", "union",
            "federation", "league", "house", "chamber", "secretary", "minister", "agency", "service", "division",
            "centers", "center", "institutes", "administration", "foundation", "museum"}
DATELINE = re.compile(r"(?:,\s*[A-Z][\w.]*(?:\s+[A-Z][\w.]*)?)?\s*\((?:AP|Reuters|AFP|UPI)\)")  # "LONDON (AP) —"
# Runs of capitalised words (names a lead gives), words that open sentences, names of bodies ("National Museum of
# American History", "Centers for Disease Control and Prevention").
CAPITALS = re.compile(r"\b[A-Z][\w'’.-]*(?:[ \t]+[A-Z][\w'’-]*)+")
OPENERS = set("""the a an in on at but and or so if as when while after before since for from with by this that these
those his her its their our my we he she they it i you there here what who how why where mr mrs ms dr through to
during under""".split())
BODY_NAME = re.compile(r"[A-Z][\w'’&-]*(?:[ \t]+(?:(?:of|for|and|on|the|de)[ \t]+)*[A-Z][\w'’&-]*)*")


@dataclass
class Mention:
    """A name in a parsed sentence, outside quotations, with the roles the article gives it there."""

    pos: int
    sent: int
    name: str
    roles: frozenset
    main: bool  # the subject of its sentence's main verb
    plural: bool  # "Palestinians", "Israel Defense Forces": never "he" or "she"


def misread_name(h) -> bool:
    """A surname the tagger took for a noun ("Scribner editor-in-chief Nan Graham": Graham, NN) or
    for a verb ("Trump and his aides have said": Trump, VB)."""
    if h.dep_ == "nsubj" and h.tag_ in ("VB", "VBP") and h.text[:1].isupper() and h.text[1:].islower() and \
            any(c.dep_ == "conj" for c in h.children):
        return True  # "Trump and his aides have said": a subject is never a verb
    return h.tag_ == "NN" and h.text[:1].isupper() and not h.is_sent_start and \
        any(c.dep_ == "compound" and c.tag_ in PROPER and c.i == h.i - 1 for c in h.children)


def name_of(h, text, offset) -> tuple[str | None, str | None]:
    """(name, role) of a proper-noun phrase: "Swiss President Guy Parmelin" -> ("Guy Parmelin",
    "Swiss President"); "Ministry of Foreign Affairs" whole; a title alone ("the Pope") has no name."""
    doc = h.doc
    i = h.i
    while i > 0 and h.i >= doc[i - 1].head.i >= i and doc[i - 1].dep_ in ("compound", "flat", "punct", "nmod") \
            and (doc[i - 1].tag_ in PROPER or doc[i - 1].text == "-") and doc[i - 1].lower_.rstrip(".") not in TITLES:
        i -= 1
    while i < h.i and (doc[i].text == "-" or doc[i].lower_.rstrip(".") in TITLES or doc[i].lower_ in NOT_NAME):
        i += 1
    end = h
    of = next((c for c in h.children if c.dep_ == "prep" and c.lower_ in ("of", "for")), None)
    obj = next((g for g in of.children if g.dep_ == "pobj"), None) if of is not None else None
    if obj is not None and obj.tag_ in PROPER and h.tag_ in PROPER and h.lower_ in OF_NAMES:
        end = max(obj.subtree, key=lambda t: t.i)  # "Ministry of Foreign Affairs", "Centers for Disease Control"
        while end.i > obj.i and end.tag_ not in PROPER:
            end = end.doc[end.i - 1]
    titled = h.lower_.rstrip(".") in TITLES
    name = None if titled else text[offset + doc[i].idx:offset + end.idx + len(end)]
    left = min((t.i for t in h.subtree if t.i < i and t.dep_ not in ("det", "punct")), default=None)
    if name is None:
        role = text[offset + doc[left if left is not None else h.i].idx:offset + h.idx + len(h)]
    else:
        role = text[offset + doc[left].idx:offset + doc[i - 1].idx + len(doc[i - 1])] if left is not None else ""
    return name, role.removesuffix("'s").removesuffix("’s").strip(" ,") or None


def phrase(h, text, offset, drop=("relcl", "appos", "acl", "advcl", "punct", "cc", "conj")) -> str:
    """The noun phrase headed by ``h``, less relative clauses and appositions."""
    keep = [h]
    for c in h.children:
        if c.dep_ not in drop:
            keep.extend(c.subtree)
    lo, hi = min(t.i for t in keep), max(t.i for t in keep)
    doc = h.doc
    while hi > lo and doc[hi].dep_ == "punct":
        hi -= 1
    return text[offset + doc[lo].idx:offset + doc[hi].idx + len(doc[hi])].lstrip("∎•·*-–— ")


def mention(tok, pos, sent, text, offset) -> Mention | None:
    """A named person or body (the head of a proper-noun phrase, not a place or a date)."""
    if tok.tag_ not in PROPER or tok.dep_ in ("compound", "flat", "poss") or tok.lower_ in DATES:
        return None
    head = tok
    while head.dep_ == "conj" and head.head.i != head.i:
        head = head.head
    if head.dep_ == "pobj" and head.head.lower_ in PLACE_PREPS:
        return None  # "in Varsk", "throughout Europe, the US and New Zealand": places
    name, role = name_of(tok, text, offset)
    if not name or not name[0].isupper():
        return None
    roles = set((role or "").lower().replace(".", "").split())
    appos = next((c for c in tok.children if c.dep_ == "appos"), None)
    if appos is not None:  # "Fauci, the director of ..."
        roles |= {t.lower_ for t in appos.subtree}
    if tok.dep_ == "appos":  # "the mayor, Anne Hidalgo"
        roles |= {t.lower_ for t in tok.head.subtree if t.i < tok.i}
    if DATELINE.match(text, offset + tok.idx + len(tok)):
        return None  # "LONDON (AP) —"
    return Mention(pos, sent, name, frozenset(roles), tok.dep_ in ("nsubj", "nsubjpass") and tok.head.dep_ == "ROOT",
                   tok.tag_ == "NNPS")


def full_names(text: str, mentions: list[Mention]) -> dict[str, str]:
    """A name written short -> the one longer name in the article ending in it ("Costa" -> "Ana
    Costa"), from the parsed names and from runs of two or three capitalised words anywhere in the
    text (the lead that introduces a person is often not parsed; titles, possessives and sentence
    openers left out); else the one parsed name beginning with it ("Jason" -> "Jason Kelce")."""
    parsed = {m.name for m in mentions if " " in m.name}
    found = set(parsed)
    for m in CAPITALS.finditer(text):
        words = m.group(0).split()
        cut = max((i + 1 for i, w in enumerate(words) if w.lower().rstrip(".") in TITLES | NOT_NAME | OPENERS
                   or w.lower() in DATES or w.endswith(("'s", "’s"))), default=0)
        words = words[cut:]
        if 2 <= len(words) <= 3 and not any(w.isupper() for w in words) and not has_org_word(" ".join(words)):
            found.add(" ".join(words))
    last: dict[str, set[str]] = {}
    first: dict[str, set[str]] = {}
    for name in found:
        last.setdefault(name.split()[-1], set()).add(name)
    for name in parsed:
        if not has_org_word(name):
            first.setdefault(name.split()[0], set()).add(name)
    out = {w: next(iter(f)) for w, f in first.items() if len(f) == 1 and w not in last}
    out.update({w: next(iter(f)) for w, f in last.items() if len(f) == 1})
    return out


def body_named(text: str, word: str, at: int) -> str | None:
    """The last name before ``at`` with ``word`` in it as a capitalised word ("the operator" ->
    "California Independent System Operator"), within the 3,000 characters before."""
    lo = max(0, at - 3000)
    found = None
    for m in BODY_NAME.finditer(text, lo, at):
        words = m.group(0).split()
        while words and words[0].lower() in OPENERS | NOT_NAME:  # "Through the National Museum ..."
            words = words[1:]
        if len(words) > 1 and any(w.lower().removesuffix("’s").removesuffix("'s") == word for w in words):
            found = " ".join(words).removesuffix("’s").removesuffix("'s")
    return found


def has_org_word(name: str) -> bool:
    """An organisation's word in the name, or an acronym ("NOAA")."""
    return (name.isupper() and len(name) > 1) or any(w in ORG_WORDS for w in name.lower().replace(".", "").split())


def is_body(name: str, mentions) -> bool:
    """Whether a name is a company's or body's, not a person's: an organisation's word in it, or one
    word that is no person's surname in the article ("Ford", "Twitter")."""
    if has_org_word(name):
        return True
    return " " not in name and not any(m.name.endswith(" " + name) for m in mentions)
