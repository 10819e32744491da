"""How a loaded index holds its records, and what answering reads of it (the `Snapshot` seam).

`Segment` is one segment folder in memory; `folder_snapshot.FolderSnapshot` is one generation: its
segments, less their deleted articles, presented as one index. Plain Python records cost more
than the vectors: a `Chunk` with its own copy of its text, a tuple of two ints per sentence.
These views keep one copy of each article's text and flat numpy arrays, and give back the same
values (`Chunk` fields, lists of span tuples) when read, so 100k chunks fit in a few hundred MB.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np

from ..articles.quotes import Statement
from ..errors import IndexCorruptError
from ..types import Article, Chunk
from .lexical import BM25, LexicalIndex
from .vectors import FaissIndex, VectorIndex


class StoredChunk(Chunk):
    """A loaded `Chunk` whose ``text`` is sliced from its article's text when read.

    Reads, compares and hashes like the `Chunk` it was saved from; it only skips holding a copy
    of its text (at 100k chunks the copies were 90 MB, as much as the articles themselves).
    """

    def __init__(self, id: str, article_id: str, start: int, end: int, source: str):
        put = object.__setattr__  # Chunk is frozen; set once, here, as its own __init__ does
        put(self, "id", id)
        put(self, "article_id", article_id)
        put(self, "start", start)
        put(self, "end", end)
        put(self, "_source", source)  # the article's text: the same str object, not a copy

    @property
    def text(self) -> str:  # type: ignore[override]
        return self._source[self.start:self.end]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Chunk):
            return NotImplemented
        return ((self.id, self.article_id, self.start, self.end, self.text)
                == (other.id, other.article_id, other.start, other.end, other.text))

    __hash__ = Chunk.__hash__


class StoredArticles(Mapping):
    """article id -> `Article`, each parsed from its line of articles.jsonl when first asked for.

    A segment with its columns (`segment.COLUMNS`) opens without reading articles.jsonl: at 100k
    chunks parsing its 42k lines (text, sentence spans, statements) was 2 s of every cold start,
    for the ten articles a question cites. Iterating parses them all (writers do, readers do not).
    The open descriptor keeps the file readable after a newer generation unlinks it, as
    `SentenceVectors` does.
    """

    def __init__(self, path: Path, ids: list[str], offsets: np.ndarray, fix: str):
        self.ids, self._offsets = ids, offsets  # offsets: n + 1 byte offsets, the lines' starts and the end
        self.position = {a: i for i, a in enumerate(ids)}
        self._path, self._fix = path, fix
        self._made: dict[str, Article] = {}
        self._statements: dict[str, list | None] = {}  # the stored rows, kept when a line is parsed
        self._fd = os.open(path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)

    def _parse(self, article_id: str) -> Article:
        i = self.position[article_id]
        lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
        try:
            rec = json.loads(os.pread(self._fd, hi - lo, lo))
            if rec.get("id") != article_id:
                raise ValueError(f"line {i + 1} is not article {article_id!r}")
            self._statements[article_id] = rec.pop("statements", None)
            for k in ("sentences", "sentence_row"):
                rec.pop(k, None)
            a = Article(**rec)
        except (OSError, ValueError, TypeError, AttributeError) as e:
            # Read after the index was checked at open: say what to run, as opening would have.
            raise IndexCorruptError(f"{str(self._path)!r} does not match its columns ({type(e).__name__}: "
                                    f"{str(e)[:120]}); {self._fix}") from None
        self._made[article_id] = a  # one assignment: two threads parsing it make equal values
        return a

    def __getitem__(self, article_id: str) -> Article:
        return self._made.get(article_id) or self._parse(article_id)

    def statement_rows(self, article_id: str) -> list | None:
        """The article's stored statement rows (None: not in this segment, or stored before
        statements were)."""
        if article_id not in self.position:
            return None
        if article_id not in self._statements:
            self._parse(article_id)
        return self._statements[article_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, article_id: object) -> bool:
        return article_id in self.position


class StoredChunks(Sequence):
    """A segment's chunks from its columns (ids, article positions, offsets), each made a
    `StoredChunk` when read: 100k chunk objects were 0.3 s of a cold start and ~40 MB."""

    def __init__(self, ids: np.ndarray, article: np.ndarray, start: np.ndarray, end: np.ndarray,
                 articles: StoredArticles, keys: np.ndarray):
        # ids: a fixed-width str array (a Python str per chunk is ~65 bytes more, 65 MB at 1M)
        self.ids, self.article, self.start, self.end, self.keys = ids, article, start, end, keys
        self._articles = articles

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        aid = self._articles.ids[int(self.article[i])]
        return StoredChunk(str(self.ids[i]), aid, int(self.start[i]), int(self.end[i]), self._articles[aid].text)


class StoredStatements(MutableMapping):
    """article id -> its statements, made from the rows articles.jsonl stored when asked for: at
    100k chunks, making every article's at load was 0.2 s of each cold start, for the few
    articles a question quotes. Statements found later (an older segment's) are set here."""

    def __init__(self, stored: Callable[[str], list | None] = lambda _: None, ids: Iterable[str] = ()):
        # stored: an article's rows (None: none stored, or found by older rules, so found again);
        # ids: the articles that may have them, in index order.
        self._stored, self._ids = stored, ids
        self._made: dict[str, tuple[Statement, ...]] = {}

    def __getitem__(self, article_id: str) -> tuple[Statement, ...]:
        got = self._made.get(article_id)
        if got is None:
            rows = self._stored(article_id)
            if rows is None:
                raise KeyError(article_id)
            got = tuple(Statement.from_row(r) for r in rows)
            self._made[article_id] = got  # one assignment: two threads making it make equal values
        return got

    def __setitem__(self, article_id: str, value: tuple[Statement, ...]) -> None:
        self._made[article_id] = value

    def __delitem__(self, article_id: str) -> None:
        raise TypeError("a segment's statements are never removed")

    def __iter__(self) -> Iterator[str]:
        stored = [a for a in self._ids if self._stored(a) is not None]
        yield from stored
        seen = set(stored)
        yield from (a for a in list(self._made) if a not in seen)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, article_id: object) -> bool:
        return article_id in self._made or self._stored(article_id) is not None  # type: ignore[arg-type]


class _PerArticle(Mapping):
    """A read-only view keyed by article id over the sentence spans array."""

    def __init__(self, position: dict[str, int], first: np.ndarray, spans: np.ndarray):
        self._position = position  # article id -> its position in `first`
        self._first = first  # first sentence row of each article, plus the total at the end
        self._spans = spans  # (n_sentences, 2) int32, rows in sentence_vectors order

    def __iter__(self) -> Iterator[str]:
        return iter(self._position)

    def __len__(self) -> int:
        return len(self._position)


class SentenceSpans(_PerArticle):
    """article id -> its sentence spans as ``[(start, end), ...]``, built on access.

    Lists of tuples of Python ints cost ~120 bytes a sentence (62 MB at 100k chunks); the
    int32 array behind this costs 8.
    """

    def __getitem__(self, article_id: str) -> list[tuple[int, int]]:
        i = self._position[article_id]
        return [tuple(span) for span in self._spans[self._first[i]:self._first[i + 1]].tolist()]

    def rows(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The spans of sentence rows [lo, hi), whichever articles they belong to."""
        return [tuple(span) for span in self._spans[lo:hi].tolist()]

    def ranges(self, article: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per chunk (its article's position, its start and end), [lo, hi) of the sentence rows
        wholly inside it.

        An article's sentences are sorted and do not overlap, and articles' rows follow their
        positions, so (position, offset) keys are sorted over all rows, by start and by end alike:
        the first sentence starting at or after the chunk's start, and the first one ending past
        its end, are two searches over every row at once.
        """
        owner = np.repeat(np.arange(len(self._first) - 1, dtype=np.int64), np.diff(self._first))
        s = (owner << 32) | self._spans[:, 0].astype(np.int64)
        e = (owner << 32) | self._spans[:, 1].astype(np.int64)
        at = np.asarray(article, dtype=np.int64) << 32
        lo = np.searchsorted(s, at | np.asarray(start, dtype=np.int64), "left")
        hi = np.searchsorted(e, at | np.asarray(end, dtype=np.int64), "right")
        return lo, np.maximum(hi, lo)


class SentenceRows(_PerArticle):
    """article id -> the row of its first sentence in ``sentence_vectors``."""

    def __getitem__(self, article_id: str) -> int:
        return int(self._first[self._position[article_id]])


class SentenceVectors:
    """The rows of ``sentences.npy``, read from the file with ``os.preadv`` when asked for.

    Answering reads the ~500 sentence rows of a question's candidate chunks. Memory-mapped, the
    rows read stayed in this process's RSS along with the pages the kernel maps around each
    fault (fault-around maps up to 16 cached pages at a time, and MADV_RANDOM does not stop it):
    at 100k chunks 50 questions left ~250 MB of the 377 MB file resident. Read with ``preadv``,
    the rows are copied out (a question reads ~100 runs of ~5 rows, ~0.4 MB) and the file's pages
    stay in the shared page cache only. The open descriptor keeps the file readable after a
    newer generation unlinks it, as the mapping did.

    Indexes like a read-only 2-D array for what askdesk does with it: a row, a slice, a list of
    rows, ``np.asarray``. Rows come back in the file's dtype (askdesk writes float16; float32
    files read too).
    """

    def __init__(self, path: Path):
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0(f))
            offset = f.tell()
        if len(shape) != 2 or fortran or dtype.kind != "f":
            raise ValueError(f"{path.name} holds {dtype} {shape}, not a C-order 2-D float array")
        self.shape, self.dtype, self.ndim = tuple(shape), dtype, 2
        self._row_bytes = shape[1] * dtype.itemsize
        self._offset = offset
        if os.path.getsize(path) < offset + shape[0] * self._row_bytes:
            raise ValueError(f"{path.name} is shorter than its {shape[0]} rows")
        self._fd = os.open(path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self._row_bytes

    def _read_into(self, out: np.ndarray, lo: int) -> None:
        """Fill ``out`` (a C-order block of rows) with the rows from ``lo`` on."""
        if out.nbytes and os.preadv(self._fd, [memoryview(out).cast("B")],
                                    self._offset + lo * self._row_bytes) != out.nbytes:
            raise OSError(f"short read of sentence vector rows {lo}:{lo + len(out)}")

    def _read(self, lo: int, hi: int) -> np.ndarray:
        out = np.empty((hi - lo, self.shape[1]), self.dtype)
        self._read_into(out, lo)
        return out

    def __getitem__(self, key) -> np.ndarray:
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"sentence row {int(key)} out of range for {n} rows")
            return self._read(i, i + 1)[0]
        if isinstance(key, slice):
            lo, hi, step = key.indices(n)
            return self._read(lo, max(lo, hi)) if step == 1 else self[np.arange(lo, hi, step)]
        rows = np.asarray(key, dtype=np.int64).reshape(-1)
        if not len(rows):
            return np.zeros((0, self.shape[1]), self.dtype)
        rows = np.where(rows < 0, rows + n, rows)
        if rows.min() < 0 or rows.max() >= n:
            raise IndexError(f"sentence rows out of range for {n} rows")
        # One read per run of consecutive rows: a chunk's sentences are one run.
        wanted = np.unique(rows)
        cuts = (np.flatnonzero(np.diff(wanted) != 1) + 1).tolist()
        out = np.empty((len(wanted), self.shape[1]), self.dtype)
        for a, b in zip([0] + cuts, cuts + [len(wanted)]):
            self._read_into(out[a:b], int(wanted[a]))
        return out[np.searchsorted(wanted, rows)]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._read(0, self.shape[0])
        return out if dtype is None else out.astype(dtype)


@dataclass(frozen=True)
class Sentences:
    """The whole sentences inside some chunks, in chunk order then text order, with their vectors."""

    chunk: np.ndarray  # per sentence: the position of its chunk in the request
    articles: tuple[Article, ...]  # per sentence
    spans: tuple[tuple[int, int], ...]  # per sentence, in its article's text
    vectors: np.ndarray  # (n, dim) float32

    def __len__(self) -> int:
        return len(self.spans)

    def text(self, i: int) -> str:
        s, e = self.spans[i]
        return self.articles[i].text[s:e]


class Snapshot(Protocol):
    """What answering reads of an index: the folder's generation (`folder_snapshot`); another store plugs in here."""

    manifest: dict
    vectors: VectorIndex
    lexical: LexicalIndex

    def article(self, article_id: str) -> Article:
        """The article, with its full text; KeyError when it is not held."""

    def chunks_of(self, keys: Sequence[int]) -> list[Chunk]:
        """The chunk records of the given keys, in that order."""

    def chunk_count(self, article_id: str) -> int:
        """How many chunks the article has (retrieval's length term)."""

    def sentences_in(self, chunks: Sequence[Chunk]) -> Sentences:
        """The whole sentences inside each chunk, with their vectors."""

    def sentences_of(self, article_ids: Sequence[str]) -> Sentences:
        """Every sentence of each article, with its vector (``chunk``: the article's position)."""

    def statements_of(self, article_id: str) -> tuple[Statement, ...]:
        """The article's statements (quotations and reported speech with their speakers), as
        found when it was indexed (`quotes.find_statements`)."""

    def all_articles(self) -> list[Article]:
        """Every article, in index order."""


class Segment:
    """One loaded segment folder of the index: articles, chunks, sentence vectors, FAISS and BM25
    over its chunks only. Never changes after it is written, so generations (and readers) share it.

    Rows are in article order: an article's chunks are one run of rows (``chunk_first``), its
    sentences one run of sentence rows (``sentence_row``).
    """

    def __init__(self, name: str, path: Path, meta: dict, articles: dict[str, Article], position: dict[str, int],
                 sentences: SentenceSpans, sentence_row: Mapping[str, int],
                 sentence_vectors: SentenceVectors | np.ndarray, chunks: list[Chunk], chunk_first: np.ndarray,
                 vectors: FaissIndex, lexical: BM25, hashes: np.ndarray,
                 statements: MutableMapping[str, tuple[Statement, ...]] | None = None):
        self.name, self.path, self.meta = name, path, meta
        # Found when the segment was written (None: a segment written before they were stored;
        # its articles' statements are found on first use and kept here).
        self.statements = statements if statements is not None else {}
        self.articles, self.position = articles, position
        self.sentences, self.sentence_row, self.sentence_vectors = sentences, sentence_row, sentence_vectors
        self.chunks, self.chunk_first = chunks, chunk_first
        self.chunk_article = np.repeat(np.arange(len(articles), dtype=np.int32), np.diff(chunk_first))
        self.vectors, self.lexical, self.hashes = vectors, lexical, hashes

    def __len__(self) -> int:
        return len(self.chunks)

    def live(self, deleted: frozenset[str]) -> np.ndarray | None:
        """Per chunk row, whether its article is live (None: all are)."""
        pos = [self.position[a] for a in deleted if a in self.position]
        if not pos:
            return None
        dead = np.zeros(len(self.articles), bool)
        dead[pos] = True
        return ~dead[self.chunk_article]

    def article_chunks(self, article_id: str) -> list[Chunk]:
        i = self.position[article_id]
        return self.chunks[int(self.chunk_first[i]):int(self.chunk_first[i + 1])]

    @cached_property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per chunk row, [lo, hi) of the rows in sentence_vectors of the whole sentences inside it."""
        # In arrays (a Python loop with bisect per chunk was ~0.6 s of the first question at 100k chunks).
        if isinstance(self.chunks, StoredChunks):
            starts, ends = self.chunks.start, self.chunks.end
        else:
            starts = np.fromiter((c.start for c in self.chunks), np.int64, len(self.chunks))
            ends = np.fromiter((c.end for c in self.chunks), np.int64, len(self.chunks))
        return self.sentences.ranges(self.chunk_article, starts, ends)

    @cached_property
    def by_url(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for a in self.articles.values():
            if a.url:
                out.setdefault(a.url, []).append(a.id)
        return out

    @cached_property
    def by_path(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for a in self.articles.values():
            if a.path:
                out.setdefault(a.path, []).append(a.id)
        return out

    @cached_property
    def hash_order(self) -> tuple[np.ndarray, np.ndarray]:
        """The sentence hashes sorted, and the article position of each (for near-duplicates)."""
        first = np.asarray([self.sentence_row[a] for a in self.articles] + [len(self.hashes)], np.int64)
        owner = np.repeat(np.arange(len(self.articles), dtype=np.int64), np.diff(first))
        order = np.argsort(self.hashes, kind="stable")
        return self.hashes[order], owner[order]


def sentence_hash(text: str) -> int:
    """A sentence's stable 64-bit hash, whitespace and case folded (for near-duplicate articles)."""
    digest = hashlib.blake2b(" ".join(text.lower().split()).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)

