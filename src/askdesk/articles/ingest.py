"""Files -> Articles: .txt and .md (with optional front matter) and .html (via trafilatura).

Reading never crashes on a bad file: it is skipped and reported with the reason, so one
broken download does not stop a whole folder from being indexed.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from ..errors import BadInputError
from ..text import MONTH, month_number
from ..types import Article
from .chunk import split_sentences

logger = logging.getLogger(__name__)

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm")
MAX_FILE_BYTES = 5_000_000

# Page furniture that scrapers leave at the end of an article. A paragraph that is one of
# these starts the tail; everything from it on is dropped when the tail is all short lines.
_TAIL_MARKERS = re.compile(
    r"^(tags?|filed under|categories|leave a (reply|comment)|comments?|\d+ comments?"
    r"|related( articles| posts| stories)?"
    r"|share( this( article| story)?)?:?|like this:?|you (may|might) also like|read (more|next)|more from .{0,40}"
    r"|advertisement|subscribe.*|sign up for .{0,60}|follow us.{0,40}|click to share.*|posted in .{0,60}"
    r"|your email address will not be published.*|about the author)\W*$",
    re.IGNORECASE,
)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*\r?\n", re.DOTALL)
_HEADER_LINE = re.compile(r"^(title|date|published|source|url|author)\s*:\s*(.+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Skipped:
    """A file that was not read, and why."""

    path: str
    reason: str


def article_id(key: str, text: str) -> str:
    """Content-derived id: the same file with the same text always gets the same id."""
    return hashlib.sha1(f"{key}\n{text}".encode()).hexdigest()[:16]


def iter_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Article files under ``paths`` (files or folders), sorted, hidden files left out."""
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p)
                if f.is_file() and f.suffix.lower() in SUFFIXES and not any(s.startswith(".") for s in rel.parts):
                    yield f
        elif p.is_file():
            yield p
        else:
            raise BadInputError(f"{str(p)!r} does not exist; give an article file or a folder of them")


def read_articles(
    paths: Iterable[str | Path], *, root: str | Path | None = None, max_bytes: int = MAX_FILE_BYTES
) -> tuple[list[Article], list[Skipped]]:
    """Read every article file under ``paths``.

    Args:
        paths: files or folders.
        root: paths are recorded relative to this folder when inside it (default: as given).
        max_bytes: larger files are skipped.

    Returns:
        The articles, in file order, and the files skipped with their reasons. A file inside
        ``root`` keeps its path relative to it, any other file its absolute path.
    """
    articles: list[Article] = []
    skipped: list[Skipped] = []
    for f in iter_files(paths):
        try:
            articles.append(read_article(f, root=root, max_bytes=max_bytes))
        except BadInputError as e:
            # Reported once, by the caller (the CLI's "skipped" lines, the page's status): not logged too.
            logger.debug("skipped %s: %s", f, e)
            skipped.append(Skipped(str(f), str(e)))
    return articles, skipped


def read_article(path: str | Path, *, root: str | Path | None = None, max_bytes: int = MAX_FILE_BYTES) -> Article:
    """One file -> Article. Raises BadInputError (with the reason) for files that are not articles."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise BadInputError(f"{path.name!r} is not an article file; use one of {', '.join(SUFFIXES)}")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise BadInputError(f"{path.name!r} is {size:,} bytes, over the {max_bytes:,}-byte limit")
        raw = path.read_bytes()
    except OSError as e:
        raise BadInputError(f"{path.name!r} cannot be read ({e.strerror})") from None
    if b"\x00" in raw[:8192]:
        raise BadInputError(f"{path.name!r} looks binary, not text")
    rel = relative_path(path, root)
    try:
        content, encoding = decode_text(raw, path.name)
        if suffix in (".html", ".htm"):
            meta, body = _parse_html(content, path.name)
        else:
            meta, body = _parse_text(content)
    except ImportError as e:  # a library the reader imports lazily is missing: this file is skipped, not the sync
        raise unloadable(repr(path.name), e) from None
    body = strip_boilerplate(body)
    if not body.strip():
        raise BadInputError(f"{path.name!r} has no article text")
    title = (meta.get("title") or "").strip() or path.stem
    # Never the file's mtime: a copied or re-saved file would get the wrong day.
    hint = _year_hint(meta.get("url"), rel)  # a dateline may have been taken for the title line
    date_iso = (normalize_date(meta.get("date")) or dateline_date(body, year_hint=hint)
                or dateline_date(title, year_hint=hint))
    source, url = meta.get("source") or None, meta.get("url") or None
    # The id covers the metadata too: a corrected title or date is an update, not "unchanged".
    return Article(id=article_id(url or rel, "\n".join(map(str, (title, date_iso, source, body)))),
                   title=title, text=body, date=date_iso, source=source, url=url, path=rel, encoding=encoding)


# How much more garbled (charset_normalizer's mess ratio: odd symbols, mixed scripts) Windows-1252
# may read than the detector's best guess and still be chosen. News archives that are not UTF-8
# are nearly all Windows-1252 / Latin-1, and on a short article the detector cannot tell cp1252
# from cp1250 or cp852 (all read "Café" clean) and picks one that turns "niño" into "ni˝o".
CP1252_SLACK = 0.05
MAX_MESS = 0.2  # above this even the best guess is garbled: the file is not text we can read


def decode_text(raw: bytes, name: str = "the file") -> tuple[str, str | None]:
    """Bytes -> (text, the encoding used when it was not UTF-8).

    UTF-8 (with or without a BOM) first; then Windows-1252 unless the text reads clearly better
    in the encoding charset_normalizer detects (Cyrillic cp1251, Greek cp1253, ...).

    Raises:
        BadInputError: no encoding reads it as text.
    """
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes
    from charset_normalizer.md import mess_ratio

    best = from_bytes(raw).best()
    try:
        western = raw.decode("cp1252")
    except UnicodeDecodeError:
        western = None
    if western is not None and (best is None or mess_ratio(western) <= best.chaos + CP1252_SLACK):
        return western, "cp1252"
    if best is not None and best.chaos <= MAX_MESS:
        return str(best), best.encoding
    raise BadInputError(f"{name!r} is not UTF-8 and no other text encoding reads it cleanly; re-save it as UTF-8")


def article_from_text(text: str, *, title: str = "", key: str = "", **meta) -> Article:
    """An Article from text in memory (evaluation sets, tests); same cleaning as files."""
    body = strip_boilerplate(text.replace("\r\n", "\n")).strip()
    title = title or body[:60]
    date_iso = normalize_date(meta.get("date")) or dateline_date(body, year_hint=_year_hint(meta.get("url")))
    return Article(id=article_id(key or title, "\n".join(map(str, (title, date_iso, meta.get("source"), body)))),
                   title=title, text=body, date=date_iso, source=meta.get("source"), url=meta.get("url"),
                   path=meta.get("path"))


def strip_boilerplate(text: str) -> str:
    """Drop the page furniture after an article ("Tags", "Leave a Reply", sharing links ...)."""
    paras = [p for p in re.split(r"\n\s*\n", text.strip())]
    cut = len(paras)
    # Walk back over short trailing paragraphs; the earliest marker among them starts the tail.
    i = len(paras) - 1
    while i > 0 and len(paras[i]) < 200:
        first_line = paras[i].strip().splitlines()[0] if paras[i].strip() else ""
        if _TAIL_MARKERS.match(first_line.strip()):
            cut = i
        i -= 1
    return "\n\n".join(p.strip("\n") for p in paras[:cut]).strip()


def normalize_date(value) -> str | None:
    """Any date-like value -> ISO "YYYY-MM-DD", or None when it cannot be read."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    s = str(value).strip()
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).date().isoformat()
    except ValueError:
        pass
    try:
        from dateutil import parser

        return parser.parse(s, fuzzy=False).date().isoformat()
    except (ValueError, OverflowError, ImportError):
        logger.warning("unreadable date %r ignored", s)
        return None


_MONTH = rf"(?P<mon>{MONTH})\.?"
# "WASHINGTON, March 3, 2025 (Reuters) -", "Feb 7 (Reuters) -", "LONDON, 3 March 2025 —", "Feb 7, 2021 ...":
# a place in capitals (optional), a date, an agency (optional), then a dash or an ellipsis.
_DATELINE = re.compile(
    r"\A\s*(?:[A-Z][A-Z.'\- ]{1,40}(?:,\s*[A-Z][\w.]+)?,?\s+)?(?:(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*,?\s+)?"
    rf"(?:{_MONTH}\s+(?P<day>\d{{1,2}})|(?P<day2>\d{{1,2}})\s+{_MONTH.replace('mon>', 'mon2>')})"
    r"(?:,?\s+(?P<year>(?:19|20)\d\d))?\s*(?:\([^)\n]{1,40}\)\s*)?(?:-|–|—|\.\.\.|…)", re.I)


def dateline_date(text: str, *, year_hint: int | None = None) -> str | None:
    """The date of a wire-style dateline opening ``text``, as ISO; None without one.

    A dateline without a year ("Feb 7 (Reuters) -") takes ``year_hint`` (from other metadata,
    e.g. a /2025/ in the url), or gives None: a guessed year would date the story wrongly.
    A weekday alone ("LONDON — Tuesday") is no date.
    """
    m = _DATELINE.match(text[:200])
    if not m:
        return None
    year = int(m.group("year")) if m.group("year") else year_hint
    if year is None:
        return None
    mon = (m.group("mon") or m.group("mon2")).lower()[:3]
    month = month_number(mon)
    try:
        return date(year, month, int(m.group("day") or m.group("day2"))).isoformat()
    except ValueError:  # "Feb 30"
        return None


def _year_hint(*keys: str | None) -> int | None:
    """A year the url or path names ("/2025/02/07/story"), for a dateline that gives none."""
    for key in keys:
        m = re.search(r"(?<![\d])((?:19|20)\d\d)(?=[/_-]\d\d?[/_-]|/)", key or "")
        if m:
            return int(m.group(1))
    return None


def _parse_text(content: str) -> tuple[dict, str]:
    content = content.replace("\r\n", "\n")
    m = _FRONT_MATTER.match(content)
    if m:
        import yaml

        try:
            meta = yaml.safe_load(m.group(1)) or {}
        except yaml.YAMLError:
            meta = {}
        if not isinstance(meta, dict):
            meta = {}
        meta = {str(k).lower(): v for k, v in meta.items()}
        if "published" in meta and "date" not in meta:
            meta["date"] = meta["published"]
        body = content[m.end():]
        if not meta.get("title"):
            title, body = _first_line_title(body)
            meta["title"] = title
        return meta, body.strip("\n")
    # "Title: ...", "Date: ..." header lines, as some exporters write them.
    lines = content.split("\n")
    meta: dict = {}
    n = 0
    while n < len(lines) and (m2 := _HEADER_LINE.match(lines[n].strip())):
        key = m2.group(1).lower()
        meta["date" if key == "published" else key] = m2.group(2).strip()
        n += 1
    body = "\n".join(lines[n:])
    if not meta.get("title"):
        meta["title"], body = _first_line_title(body)
    return meta, body.strip("\n")


def _first_line_title(body: str) -> tuple[str, str]:
    """A short first line followed by a blank line is the title (the common plain-text export)."""
    stripped = body.lstrip("\n")
    first, _, rest = stripped.partition("\n")
    heading = first.lstrip("#").strip()
    if heading and len(heading) <= 200 and (rest.startswith("\n") or first.startswith("#")) and rest.strip():
        return heading, rest.strip("\n")
    return "", stripped


def unloadable(what: str, e: BaseException) -> BadInputError:
    """One line for a file or page whose reader library fails to load, ending with the install command."""
    detail = " ".join(str(e).split())[:200] or type(e).__name__
    # jusText (under trafilatura) asks for `lxml[html_clean]`; lxml spells that extra `html-clean`, and
    # pips that do not normalise extra names (23.2, which Python 3.11 ships) never install lxml_html_clean.
    if "html_clean" in detail or "html.clean" in detail:
        fix = "run `pip install lxml_html_clean`"
    elif isinstance(e, ModuleNotFoundError) and e.name:
        fix = f"run `pip install -e .` in askdesk's folder (it installs {e.name.partition('.')[0]!r})"
    else:
        fix = "run `pip install -e .` in askdesk's folder (it reinstalls what the readers import)"
    return BadInputError(f"{what} cannot be read: its reader fails to load ({detail}); {fix}")


def html_document(html: str, *, url: str | None = None, name: str = "the page") -> dict | None:
    """trafilatura's main text and metadata of an HTML page, as a dict; None when it finds none.

    Raises:
        BadInputError: trafilatura or a library under it fails to load (one line with the fix).
    """
    try:
        import trafilatura
    except Exception as e:  # noqa: BLE001 - ImportError or a broken install: the page is skipped, not the sync
        raise unloadable(name, e) from None
    try:
        return trafilatura.bare_extraction(html, url=url, with_metadata=True, include_comments=False, as_dict=True)
    except ImportError as e:  # a module trafilatura loads on first use
        raise unloadable(name, e) from None


def _parse_html(content: str, name: str) -> tuple[dict, str]:
    doc = html_document(content, name=repr(name))
    if not doc or not (doc.get("text") or "").strip():
        raise BadInputError(f"{name!r} has no article text that could be extracted")
    meta = {"title": doc.get("title"), "date": doc.get("date"), "source": doc.get("sitename"), "url": doc.get("url")}
    return meta, doc["text"]


def relative_path(path: Path, root: str | Path | None) -> str:
    """The path relative to ``root`` when inside it; else absolute, so that a sync of ``root``
    can tell its own files (whose deletion it follows) from files added from elsewhere."""
    if root is not None:
        try:
            return path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            pass
    return path.resolve().as_posix()


def dedupe(articles: list[Article]) -> list[Article]:
    """One article per id (identical copies collapse), first occurrence wins."""
    seen, out = set(), []
    for a in articles:
        if a.id not in seen:
            seen.add(a.id)
            out.append(a)
    return out


def drop_near_duplicates(articles: list[Article], share: float = 0.8, *,
                         known: Mapping[str, Sequence[tuple[int, int]]] | None = None,
                         ) -> tuple[list[Article], list[Skipped]]:
    """Keep one copy of a story published twice (a wire story with a new headline or byline).

    An article is a copy when ``share`` of its sentences (whitespace and case folded) already
    stand in one kept article; the first in corpus order is kept. ``known``: sentence spans by
    article id from the index (re-splitting 40k indexed articles took 13 s of every add).
    """
    known = known or {}
    owner: dict[int, int] = {}  # sentence hash -> index of the kept article holding it
    kept: list[Article] = []
    dropped: list[Skipped] = []
    for a in articles:
        spans = known.get(a.id)  # one lookup: the index's view builds the span list on access
        spans = split_sentences(a.text) if spans is None else spans
        hashes = {hash(" ".join(a.text[s:e].lower().split())) for s, e in spans}
        counts: dict[int, int] = {}
        for h in hashes:
            if h in owner:
                counts[owner[h]] = counts.get(owner[h], 0) + 1
        twin = max(counts, key=counts.get) if counts else None
        if twin is not None and counts[twin] >= share * len(hashes):
            dropped.append(Skipped(a.path or a.id, f"near-duplicate of {kept[twin].path or kept[twin].id}"))
            continue
        for h in hashes:
            owner.setdefault(h, len(kept))
        kept.append(a)
    return kept, dropped
