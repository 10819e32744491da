"""The data that flows through askdesk: Article -> Chunk -> Hit -> Citation -> Answer (with its
Claims, Conflicts and Period).

All frozen: a value that leaves one stage is never changed by the next. Each links back
to its source, so a citation can always be followed to the article and the exact span.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Article:
    """One news article, as read from a file (or built by an evaluation set)."""

    id: str  # content-derived: a hash of path (or url) and text
    title: str
    text: str  # the body, boilerplate removed; chunk and sentence offsets index into it
    date: str | None = None  # ISO date, "2025-02-07"
    source: str | None = None  # the publisher, "Reuters"
    url: str | None = None
    path: str | None = None  # the file it came from: relative to the corpus folder, absolute if outside it
    encoding: str | None = None  # how the file was decoded when it was not UTF-8 ("cp1252"); None: UTF-8


@dataclass(frozen=True)
class Chunk:
    """A token-counted, sentence-aligned window of an article's text."""

    id: str  # content-derived: hash of article id and span
    article_id: str
    start: int  # character offsets into Article.text
    end: int
    text: str


@dataclass(frozen=True)
class Hit:
    """A chunk found for a question, with the scores that ranked it."""

    chunk: Chunk
    score: float  # fused score, higher is better
    dense: float = 0.0  # cosine similarity of question and chunk
    lexical: float = 0.0  # BM25 score of the question's words in the chunk


@dataclass(frozen=True)
class Citation:
    """A numbered pointer from an answer to the sentence that supports it."""

    n: int
    article_id: str
    title: str
    date: str | None
    source: str | None
    url: str | None
    path: str | None
    sentence: str  # the cited sentence, exactly as in the article
    snippet: str  # the sentence with its neighbours, for context
    start: int  # the sentence's character span in the article text
    end: int
    score: float
    snippet_start: int = 0  # where the snippet begins in the article text
    quote: str | None = None  # the quotation in the cited passage, exactly as written (no marks)
    speaker: str | None = None  # who the article says spoke it; None when it names no one

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Claim:
    """One sentence of an answer, its citations, and whether the cited passages back it."""

    text: str
    cites: tuple[int, ...]  # the [n] numbers it carries
    supported: bool  # extractive sentences always are; a written one when its figures and meaning check out
    evidence: str | None = None  # the cited sentence closest to it

    def to_dict(self) -> dict:
        return {"text": self.text, "cites": list(self.cites), "supported": self.supported, "evidence": self.evidence}


@dataclass(frozen=True)
class Conflict:
    """A figure or date that cited reports give differently: what it is about, each value with its [n]."""

    about: str  # the clause with the figure left out: "the port of Varsk handled … of cargo last year"
    values: tuple[tuple[str, int], ...]  # (value as written, citation number)

    def to_dict(self) -> dict:
        return {"about": self.about, "values": [{"value": v, "citation": n} for v, n in self.values]}


@dataclass(frozen=True)
class Period:
    """The date phrase of a question ("last week") as days, and whether retrieval could prefer them."""

    phrase: str
    since: str  # ISO, inclusive
    until: str
    used: bool  # False: nothing was published then, the answer uses any date

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Answer:
    """What `Desk.ask` returns: text with [n] markers, its citations, or a refusal."""

    question: str
    text: str
    refused: bool
    citations: tuple[Citation, ...] = ()
    related: tuple[Citation, ...] = ()  # closest passages when refused (or extra context)
    confidence: float = 0.0  # calibrated probability that the passages hold the answer
    timings_ms: dict = field(default_factory=dict)
    generator: str = "extractive"  # or the model name of the LLM that wrote `text`
    sentences: tuple[Claim, ...] = ()  # each sentence of the answer, its citations, and whether they back it
    note: str | None = None  # shown with the answer, e.g. why the LLM's answer was not used
    conflicts: tuple[Conflict, ...] = ()  # figures or dates that cited passages give differently
    as_of: str | None = None  # the cited article's date when the answer holds only as of a date
    period: Period | None = None  # a date phrase of the question, resolved
    short: str | None = None  # for a factoid question, the span of the first cited sentence that answers it

    def to_dict(self) -> dict:
        """The JSON shape of `askdesk ask --json` (docs/api.md lists every key; a test holds them equal)."""
        return {
            "question": self.question,
            "answer": self.text,
            "refused": self.refused,
            "confidence": round(self.confidence, 4),
            "citations": [c.to_dict() for c in self.citations],
            "related": [c.to_dict() for c in self.related],
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "generator": self.generator,
            "sentences": [s.to_dict() for s in self.sentences],
            "note": self.note,
            "conflicts": [c.to_dict() for c in self.conflicts],
            "as_of": self.as_of,
            "period": self.period.to_dict() if self.period else None,
            "short": self.short,
        }
