"""How a loaded index holds its records: compactly, so 100k chunks fit in a few hundred MB.

Plain Python records cost more than the vectors: a `Chunk` with its own copy of its text, a
tuple of two ints per sentence. These views keep one copy of each article's text and flat numpy
arrays, and give back the same values (`Chunk` fields, lists of span tuples) when read.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Iterator

import numpy as np

from .types import Chunk


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


class SentenceRows(_PerArticle):
    """article id -> the row of its first sentence in ``sentence_vectors``."""

    def __getitem__(self, article_id: str) -> int:
        return int(self._first[self._position[article_id]])


def map_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed .npz (what ``np.savez`` writes), memory-mapped in place.

    ``np.load`` ignores ``mmap_mode`` for .npz and would read all of it: 53 MB of BM25 postings
    at 100k chunks, of which a question touches the few terms it has. Each member is stored
    uncompressed, so its .npy data is one contiguous run of the file that can be mapped.
    """
    out = {}
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for info in z.infolist():
            name = info.filename.removesuffix(".npy")
            if info.compress_type != zipfile.ZIP_STORED:  # written by something else: read it
                with np.load(path, allow_pickle=False) as npz:
                    return {k: npz[k] for k in npz.files}
            f.seek(info.header_offset)
            local = f.read(30)  # the zip local file header; its name and extra lengths end it
            if local[:4] != b"PK\x03\x04":
                raise ValueError(f"bad zip member {info.filename!r}")
            f.seek(info.header_offset + 30 + int.from_bytes(local[26:28], "little")
                   + int.from_bytes(local[28:30], "little"))
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0(f))
            if dtype.hasobject:
                raise ValueError(f"{info.filename!r} holds Python objects; askdesk never writes those")
            if 0 in shape:
                out[name] = np.zeros(shape, dtype)
            else:
                out[name] = np.memmap(path, dtype=dtype, mode="r", offset=f.tell(), shape=shape,
                                      order="F" if fortran else "C")
    return out
