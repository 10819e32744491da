"""What the chat page shows, as strings: the answer in Markdown, its sources, the index panel.

Pure functions of `Answer`, `Citation` and `Desk.info()`; no Gradio. Article text is untrusted,
so everything derived from it is escaped here (`html.escape` for HTML, plus Markdown escaping
for the chat) before the page puts it in a component.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..text import pretty_date

if TYPE_CHECKING:
    from ..types import Answer, Citation

MORE_CHARS = 1500  # article text shown on each side of a cited sentence under "More of the article"
MAX_LISTED = 300  # articles listed in the index panel; a big corpus would make the page heavy
REFUSED_NOTE = "The closest passages are shown under **Related passages**."
UNSUPPORTED = "⚠ unsupported"  # the badge after a written sentence its cited passages do not back
UNSUPPORTED_NOTE = ("⚠ unsupported: the cited passages do not back that sentence (a number, date or name in it "
                    "is not in them, or they say something else). Check it against the sources.")
PERIOD_USED = "Preferring articles published {phrase}: {since} to {until}."
CONFLICTS_HEAD = "Reports differ"
SOURCES_EMPTY = '<div class="ad-sources"><p class="ad-muted">Sources for each answer appear here.</p></div>'


# ---- rendering: pure functions, every article-derived string escaped ----

def esc(value: Any) -> str:
    """Untrusted text -> HTML text, quotes included so it is also safe inside attributes."""
    return html.escape("" if value is None else str(value), quote=True)


# Enough to stop links, images, emphasis, code and headings; `(`, `.` or `$` (LaTeX is off) do nothing
# without these, and every extra backslash shows up when a reader copies an answer.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~])")


def md_text(value: Any) -> str:
    """Untrusted text for a Markdown component: Markdown syntax backslashed, then HTML escaped.

    `<`, `>` and `&` are left to html.escape: a backslash before `&lt;` would print "&lt;".
    """
    return html.escape(_MD_SPECIAL.sub(r"\\\1", "" if value is None else str(value)), quote=False)


def md_plain(text: str) -> str:
    """What `md_text` was given: the chat's own copy of a question read back as typed."""
    return re.sub(r"\\([\\`*_\[\]#|~])", r"\1", html.unescape(text))


def questions_in(chat: Any) -> list[str]:
    """The user's questions in a chat's messages (the page's Chatbot value), oldest first, as typed."""
    out = []
    for m in chat or ():
        if not isinstance(m, dict) or m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, list):  # gradio may hand text back as parts: [{"type": "text", "text": ...}]
            content = " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
        if isinstance(content, str) and content.strip():
            out.append(md_plain(content))
    return out


def safe_url(url: str | None) -> str | None:
    """`url` if it is a plain http(s) link, else None (javascript:, data:, or whitespace tricks)."""
    if not url or any(ord(ch) <= 32 or ord(ch) == 127 for ch in url):
        return None
    return url if re.match(r"https?://[^/?#]", url, re.IGNORECASE) else None


def highlight(text: str, start: int, end: int) -> str:
    """`text` escaped, with text[start:end] wrapped in <mark>."""
    start = max(0, min(start, len(text)))
    end = max(start, min(end, len(text)))
    # Outer whitespace trimmed: the panel keeps line breaks (pre-wrap), so a trailing "\n\n" would show.
    return f"{esc(text[:start].lstrip())}<mark>{esc(text[start:end])}</mark>{esc(text[end:].rstrip())}"


def snippet_html(c: Citation) -> str:
    """The citation's snippet with the cited sentence marked, found by offset or else by text."""
    i, j = c.start - c.snippet_start, c.end - c.snippet_start
    if not (0 <= i <= j <= len(c.snippet)) or c.snippet[i:j] != c.sentence:
        i = c.snippet.find(c.sentence)
        if i < 0:  # offsets and text disagree: show the sentence on its own, still marked
            return f"<mark>{esc(c.sentence)}</mark>"
        j = i + len(c.sentence)
    return highlight(c.snippet, i, j)


def excerpt_html(text: str, start: int, end: int, chars: int = MORE_CHARS) -> str:
    """Up to `chars` of article text each side of [start, end), cut at spaces, sentence marked."""
    if not (0 <= start <= end <= len(text)):
        return esc(text[: 2 * chars])
    lo, hi = max(0, start - chars), min(len(text), end + chars)
    if lo > 0:  # start after a space, so the excerpt does not open mid-word
        lo = text.find(" ", lo, start) + 1 or lo
    if hi < len(text) and text.rfind(" ", end, hi) > end:
        hi = text.rfind(" ", end, hi)
    body = highlight(text[lo:hi], start - lo, end - lo)
    return ("… " if lo else "") + body + (" …" if hi < len(text) else "")


def citation_html(c: Citation, article_text: str | None = None) -> str:
    """One source card: [n], title (linked only to http/https), date, source, snippet, more."""
    url = safe_url(c.url)
    title = esc(c.title or c.path or c.article_id)
    if url:
        title = f'<a href="{esc(url)}" target="_blank" rel="noopener noreferrer nofollow">{title}</a>'
    meta = " · ".join(esc(m) for m in (c.date, c.source) if m)
    if not url and c.path:
        meta = " · ".join(filter(None, (meta, f"<code>{esc(c.path)}</code>")))
    more = ""
    if article_text:
        more = (f'<details><summary>More of the article</summary>'
                f'<div class="ad-more">{excerpt_html(article_text, c.start, c.end)}</div></details>')
    quote = ""
    if c.quote and c.speaker:  # marked as a quotation, with the speaker the article names
        quote = (f'<div class="ad-quote"><q>{esc(c.quote.rstrip(", "))}</q> — '
                 f'<span class="ad-speaker">{esc(c.speaker)}</span></div>')
    return (f'<div class="ad-cite" data-n="{int(c.n)}"><div class="ad-head">[{int(c.n)}] {title}</div>'
            f'<div class="ad-meta">{meta}</div>{quote}<blockquote class="ad-snippet">{snippet_html(c)}</blockquote>'
            f"{more}</div>")


def conflicts_html(answer: Answer) -> str:
    """Each fact the cited reports give differently, every value with its [n], source and date."""
    if not answer.conflicts:
        return ""
    by_n = {c.n: c for c in answer.citations}
    items = []
    for x in answer.conflicts:
        values = []
        for value, n in x.values:
            c = by_n.get(n)
            where = ", ".join(esc(w) for w in ((c.source or c.title), _day(c.date)) if w) if c else ""
            values.append(f'<b>{esc(value)}</b> [{int(n)}]' + (f" ({where})" if where else ""))
        items.append(f"<li>{esc(x.about)}: {' vs '.join(values)}</li>")
    return f'<div class="ad-conflicts"><b>{esc(CONFLICTS_HEAD)}</b><ul>{"".join(items)}</ul></div>'


def _day(iso: str | None) -> str | None:
    return pretty_date(iso)


def sources_empty(serial: int = 0) -> str:
    """The sources panel with no sources (a new conversation, or a reply that is an error)."""
    return SOURCES_EMPTY.replace('class="ad-sources"', f'class="ad-sources" data-answer="{int(serial)}"', 1)


def sources_html(answer: Answer, article_text: Callable[[str], str | None] | None = None, *, serial: int = 0) -> str:
    """The sources panel for one answer; a refusal shows its related passages instead.

    ``serial`` numbers the answer (``data-answer``), so a new answer is told from the last one
    even when both are to the same question."""
    related = answer.refused or (not answer.citations and bool(answer.related))  # a written answer citing nothing
    cites = answer.related if related else answer.citations
    head = "Related passages" if related else "Sources"
    note = '<p class="ad-refused">Not answered. These are the closest passages, not an answer.</p>'
    note = note if answer.refused else ""
    texts: dict[str, str | None] = {}  # two citations from one article: one lookup
    for c in cites:
        if article_text and c.article_id not in texts:
            texts[c.article_id] = article_text(c.article_id)
    cards = "".join(citation_html(c, texts.get(c.article_id)) for c in cites)
    period = answer.period
    if period and period.used:
        said = PERIOD_USED.format(phrase=period.phrase, since=_day(period.since), until=_day(period.until))
        note += f'<p class="ad-muted ad-period">{esc(said)}</p>'
    conflicts = "" if related else conflicts_html(answer)
    return (f'<div class="ad-sources" data-answer="{int(serial)}"><h3>{head}</h3>'
            f'<p class="ad-muted">for: {esc(answer.question)}</p>'
            f'{note}{conflicts}{cards or "<p class=ad-muted>No passages.</p>"}</div>')


SHORT_HEAD = "Short answer:"


def answer_markdown(answer: Answer) -> str:
    """The chat bubble: the answer with its [n] markers, then a one-line list of its sources.

    A written (LLM) answer is shown sentence by sentence, unsupported ones badged; a note
    (e.g. "the LLM was down, this is the extractive answer") comes last.
    """
    if answer.refused:
        return f"**Not answered.** {md_text(answer.text)}\n\n{REFUSED_NOTE}"
    refs = "; ".join(f"\\[{int(c.n)}\\] {md_text(c.title)}" + (f" ({md_text(c.date)})" if c.date else "")
                     for c in answer.citations)
    body = md_text(answer.text)
    if answer.generator != "extractive" and answer.sentences:  # written by an LLM: each sentence as verified
        body = " ".join(md_text(s.text) + "".join(f" \\[{int(n)}\\]" for n in s.cites)
                        + ("" if s.supported else f" **{UNSUPPORTED}**") for s in answer.sentences)
        if not all(s.supported for s in answer.sentences):
            body += f"\n\n_{md_text(UNSUPPORTED_NOTE)}_"
        # The news layer's additions to a written answer's text are not among its checked sentences.
        if answer.as_of:
            body = f"_As of {md_text(_day(answer.as_of))}:_ {body}"
        by_n = {c.n: c for c in answer.citations}
        for x in answer.conflicts:
            values = " vs ".join(md_text(v) + f" \\[{int(n)}\\]" + (
                f" ({md_text(by_n[n].source or by_n[n].title)})" if n in by_n else "") for v, n in x.values)
            body += f"\n\n**{md_text(CONFLICTS_HEAD)}** on {md_text(x.about)}: {values}"
    note = f"\n\n> {md_text(answer.note)}" if answer.note else ""  # e.g. the LLM was down: extractive instead
    if answer.short and answer.generator == "extractive":  # the reader's span in citation [1], first and bold
        body = f"**{md_text(SHORT_HEAD)}** **{md_text(answer.short)}**\n\n{body}"
    return body + (f"\n\n*Sources:* {refs}" if refs else "") + note


def index_html(info: dict) -> str:
    """The index panel: model, counts, build time and the article list."""
    arts = info.get("articles") or []
    rows = "".join(f"<tr><td>{esc(a.get('title'))}</td><td>{esc(a.get('date') or '')}</td></tr>"
                   for a in arts[:MAX_LISTED])
    more = f'<p class="ad-muted">… and {len(arts) - MAX_LISTED:,} more</p>' if len(arts) > MAX_LISTED else ""
    return (f'<div class="ad-index"><p><b>Model</b> {esc(info.get("model"))} · <b>Articles</b> '
            f'<span id="n-articles">{int(info.get("n_articles", 0)):,}</span> · <b>Chunks</b> '
            f'<span id="n-chunks">{int(info.get("n_chunks", 0)):,}</span> · '
            f'<b>Built</b> {esc(info.get("created"))}</p>'
            f"<table><tr><th>Title</th><th>Date</th></tr>{rows}</table>{more}</div>")


def live_html(arrived: Sequence[tuple[str, str | None]], *, serial: int = 0) -> str:
    """The page's live note: the articles that arrived since the page was opened, newest first.

    ``arrived``: (title, date) oldest first; ``serial`` (``data-live``) numbers the index's
    arrivals seen so far, so a reader can tell a new note from the last one."""
    n = len(arrived)
    if not n:
        return f'<div class="ad-live" data-live="{int(serial)}" data-count="0"></div>'
    items = "".join(f"<li>{esc(t)}{' · ' + esc(d) if d else ''}</li>" for t, d in list(arrived)[::-1][:MAX_LISTED])
    more = f'<p class="ad-muted">… and {n - MAX_LISTED:,} more</p>' if n > MAX_LISTED else ""
    return (f'<div class="ad-live" data-live="{int(serial)}" data-count="{n}"><p><b>{n:,} new '
            f'article{"s" * (n != 1)} since you opened the page</b></p><ul>{items}</ul>{more}</div>')


def add_html(result: dict | None, *, serial: int = 0, adding: Sequence[str] = (), error: str | None = None) -> str:
    """What an upload did (or that one is under way), in a few lines; every name and reason escaped.

    ``result``: `Desk.add`'s counts with "new" (titles now in the index) and "rejected"
    [(file name, reason)]. ``serial`` numbers the upload (``data-upload``); ``data-state`` is
    "adding" while it runs, "done" after.
    """
    state = "adding" if adding else "done"
    if adding:
        body = f"<p>Adding {esc(', '.join(adding))} …</p>"
    elif error is not None:
        body = f"<p>⚠️ {esc(error)}</p>"
    else:
        result = result or {}
        added, updated = result.get("added", 0), result.get("updated", 0)
        rejected = list(result.get("rejected", ())) + [(Path(p).name, r) for p, r in result.get("skipped", [])]
        head = (f"Added <b>{added:,}</b> new, <b>{updated:,}</b> updated." if added or updated else
                "Nothing new: already in the index.") if result.get("stored", 1) else ""
        counts = (f" The index now holds <b>{result.get('n_articles', 0):,}</b> articles in "
                  f"<b>{result.get('n_chunks', 0):,}</b> chunks.")
        items = [f"<li>new: {esc(t)}</li>" for t in result.get("new", ())]
        items += [f"<li>not added: {esc(name)}: {esc(reason)}</li>" for name, reason in rejected]
        body = (f"<p>{head}{counts}</p>" if head or not items else "") + (f"<ul>{''.join(items)}</ul>" if items else "")
    return f'<div class="ad-add" data-upload="{int(serial)}" data-state="{state}">{body}</div>'
