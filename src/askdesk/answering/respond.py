"""A question, read in its conversation, answered from a loaded index: the steps `Desk.ask` runs.

The turn (`dialog`: follow-ups, "he" after a "who" question), the date phrase (`text`), the
question's vector, retrieval (`retrieve.Retriever`), the extractive answer or refusal (`answer`),
X's own words for "what did X say" (`news.who_said`), the short answer (`short`), then the news
layer (`news.enrich`) or an LLM's written answer (`generate`). `Desk` owns the index, the models
and the settings; this module owns the order of the steps.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np

from ..config import Config
from ..store.records import Snapshot
from ..store.vectors import Window
from ..text import pretty_date, recent_period, resolve_period, terms, without_period
from ..types import Answer, Claim, Hit, Period
from . import answer as answer_mod
from . import dialog, news
from . import generate as generate_mod
from .answer import REFUSAL
from .retrieve import Retriever, window_notes
from .short import short_answer


@dataclass(frozen=True)
class Evidence:
    """What an answer rests on (`Desk.evidence`)."""

    turn: dialog.Turn  # the question as read in its conversation
    query: str  # what retrieval searched
    qvec: np.ndarray
    hits: list[Hit]
    extract: answer_mod.Extract  # the extractive answerer's decision, with the refusal features
    period: Period | None
    note: str | None
    snap: Snapshot  # the index it was read from
    retriever: Retriever


@dataclass(frozen=True)
class Asking:
    """What answering reads besides the question: the loaded index and the desk's models and settings."""

    snap: Snapshot
    retriever: Retriever
    embedder: object  # askdesk.models.embed.Embedder
    config: Config
    generator: object | None = None  # askdesk.answering.generate.Generator
    reader: object | None = None  # askdesk.answering.read.SpanReader: chooses the sentence, short answer, refusal


def evidence(ctx: Asking, q: str, history: Sequence[str], window: Window | None, as_of: str | None) -> Evidence:
    """``q`` (checked, one line) after ``history``: read, retrieved and answered extractively."""
    referent = _referent(ctx, q, history, window, as_of)
    turn = dialog.read(q, history, referent)
    # "last week" is resolved against as_of (default today) and cut from the text retrieval sees;
    # with no date phrase, the newest reports are preferred ("recently", or nothing said: news time sense).
    day = as_of or date.today()
    period = resolve_period(q, day) or (recent_period(q, day, days=ctx.config.recent_days)
                                        if ctx.config.recent_days else None)
    query = without_period(turn.query, period)
    qvec = ctx.embedder.embed_query(query)
    hits, period_used, note = ctx.retriever.retrieve(query, qvec, ctx.config.top_k, window=window, period=period)
    x = answer_mod.answer(query, hits, ctx.snap, qvec, ctx.snap.lexical, max_citations=ctx.config.max_citations,
                          refuse_below=ctx.config.refuse_below,
                          period=(period.since, period.until) if period else None,
                          reader=ctx.reader, reader_candidates=ctx.config.reader_candidates)
    if turn.referent:  # the reader should see who "he" was taken to be
        note = " ".join(filter(None, (note, f"“{dialog.personal_pronoun(q)}” is read as {turn.referent}, "
                                            f"whom the previous answer named.")))
    return Evidence(turn, query, qvec, hits, x, period_used, note, ctx.snap, ctx.retriever)


def _referent(ctx: Asking, q: str, history: Sequence[str], window: Window | None, as_of: str | None) -> str | None:
    """The person the previous answer named, when ``q`` says "he"/"she" of them
    (`dialog.refers_to_answer`): the previous question's evidence again (the same index
    gives the same extractive answer, ~10 ms), its first cited sentence's name."""
    if not dialog.refers_to_answer(q, history):
        return None
    prev = evidence(ctx, history[-1], history[:-1], window, as_of).extract
    if prev.refused or not prev.citations:
        return None
    c = prev.citations[0]
    return short_answer(history[-1], c.sentence, context=c.snippet, kinds=("person",))


def answers(ctx: Asking, q: str, history: Sequence[str], ev: Evidence, *, window: Window | None, stream: bool,
            started: float) -> Iterator[str | Answer]:
    """The answer to ``q`` from ``ev``: the LLM's text pieces when it streams, then the Answer.

    ``started``: `time.perf_counter()` when the question came in (the Answer's timings)."""
    snap, hits, x = ctx.snap, ev.hits, ev.extract
    t1 = time.perf_counter()
    block, scores = ctx.retriever.sentences(hits, ev.qvec) if hits else (None, None)
    text, refused, cites, related, note = x.text, x.refused, x.citations, x.related, ev.note
    if ev.turn.kind == "quote" and ev.turn.speaker and hits:
        text, refused, cites, related, why = _who_said(ctx, q, ev, window, related)
        note = " ".join(filter(None, (note, why))) or None
    t2 = time.perf_counter()
    # The reader's span when it read the cited sentence (not for who-said answers, which quote X).
    short = (x.short if x.short and cites and cites == x.citations
             else short_answer(q, cites[0].sentence, context=cites[0].snippet) if cites else None)
    base = Answer(question=q, text=text, refused=refused, citations=cites, related=related,
                  confidence=x.confidence, timings_ms={"retrieve": (t1 - started) * 1000, "answer": (t2 - t1) * 1000},
                  sentences=tuple(Claim(c.sentence, (c.n,), True, c.sentence) for c in cites),
                  note=note, period=ev.period, short=short)

    def dated(a: Answer) -> Answer:  # what the reader should know about the dates of what is cited
        said = " ".join(filter(None, (window_notes(window, hits, a.citations), age_note(ev.period, a))))
        return dataclasses.replace(a, note=" ".join(filter(None, (a.note, said)))) if said else a

    if refused:  # the refusal stands: the LLM is not asked, the news layer has nothing to add
        yield dated(base)
        return
    if ctx.generator is None or ev.turn.kind == "quote" and ev.turn.speaker:
        yield dated(news.enrich(base, block, scores, statements(snap)))
        return
    for item in generate_mod.written_answer(
            base, generate_mod.passages_from_hits(hits, snap), ctx.generator, ctx.embedder,
            stream=stream, history=list(history)):  # the generator's own timeout (config.llm_timeout)
        yield dated(news.enrich(item, block, scores, statements(snap))) if isinstance(item, Answer) else item


def _who_said(ctx: Asking, q: str, ev: Evidence, window: Window | None, related: tuple):
    """"What did X say (about Y)?": X's own words on Y, quoted or reported, or a refusal that
    says what X is quoted on; never someone else's words. (text, refused, citations, related, note)"""
    turn = ev.turn
    about_vec = ctx.embedder.embed_query(turn.about) if turn.about else None
    asked = turn.about is not None and turn.about == dialog.about(q)  # said, not carried over
    # X's statements anywhere in the articles retrieved, and in those a search for X's name and
    # the topic finds: a quotation is often a paragraph away from the facts. BM25, which matches
    # the name exactly whatever the article's length: on the name, and on the name with the topic.
    named = [k for words in (turn.speaker, f"{turn.speaker} {turn.about or ''}")
             for k, _ in ctx.snap.lexical.search(terms(words), 2 * ctx.config.top_k, window=window)]
    articles = [h.chunk.article_id for h in ev.hits] + [c.article_id for c in ctx.snap.chunks_of(named)]
    spoken = ctx.snap.sentences_of(list(dict.fromkeys(articles)))
    said, quoted, on, why = news.who_said(turn.speaker, turn.about, about_vec, spoken, spoken.vectors @ ev.qvec,
                                          asked_about=asked, max_quotes=ctx.config.max_citations,
                                          statements=statements(ctx.snap))
    if said:
        return said, False, quoted, (), why
    return REFUSAL, True, (), on or related, why


def statements(snap: Snapshot) -> news.Statements | None:
    """The index's stored statements, when its store keeps them (`Snapshot.statements_of`)."""
    of = getattr(snap, "statements_of", None)
    return (lambda a: of(a.id)) if of is not None else None


AGE_NOTE = "[{n}] is from {date}, {age} before {day}."


def age_note(period: Period | None, a: Answer) -> str | None:
    """How old the first source is, when the question asked for a period ("this week", "recently")
    and the answer had to come from before it: older reports answer only when nothing recent does."""
    if period is None or a.refused or not a.citations or not a.citations[0].date:
        return None
    c = a.citations[0]
    if c.date >= period.since:
        return None
    return AGE_NOTE.format(n=c.n, date=pretty_date(c.date), age=age_words(c.date, period.until),
                           day=pretty_date(period.until))


def age_words(then: str, now: str) -> str:
    """"5 days", "3 weeks", "4 months", "2 years": the time from ISO day ``then`` to ``now``."""
    days = (date.fromisoformat(now) - date.fromisoformat(then)).days
    n, unit = ((days, "day") if days < 14 else (days // 7, "week") if days < 61 else
               (days // 30, "month") if days < 730 else (days // 365, "year"))
    return f"{n} {unit}{'s' * (n != 1)}"
