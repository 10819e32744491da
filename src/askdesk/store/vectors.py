"""The `VectorIndex` seam, and its FAISS implementation (exact below `Config.ann_above` chunks, IVF above).

A vector index holds one normalized vector per chunk, keyed by `chunk_key` (60 bits of the chunk's
content hash, so keys survive rebuilds and removals), with the chunk's article date, so that a
date window is a filter the engine applies (FAISS: a selector over its rows; Milvus: a filter
expression), not a bitmap the caller builds. Every implementation passes the same contract tests
(tests/test_vectors.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


def chunk_key(chunk_id: str) -> int:
    """A chunk's key in the vector and lexical indexes: 60 bits of its content hash (a positive int64)."""
    return int(chunk_id[:15], 16)


def day_number(iso: str | None) -> int:
    """"2025-02-07" -> 20250207; None or "" -> 0 (undated)."""
    return int(iso[:10].replace("-", "")) if iso else 0


@dataclass(frozen=True)
class Window:
    """The publication dates a question may use: ISO days, inclusive; None leaves that end open.

    ``undated``: whether articles without a date pass (they cannot be shown to be in range)."""

    since: str | None = None
    until: str | None = None
    undated: bool = False

    def mask(self, dates: np.ndarray) -> np.ndarray:
        """Which of ``dates`` (`day_number`s, 0 = undated) pass."""
        dated = dates > 0
        ok = dated.copy()
        if self.since:
            ok &= dates >= day_number(self.since)
        if self.until:
            ok &= dates <= day_number(self.until)
        return ok | ~dated if self.undated else ok


class KeyRows:
    """Chunk key -> row, over an array of keys in row order (sorted copy + binary search: at 100k
    chunks 1.6 MB, where a dict of Python ints took 11 MB)."""

    def __init__(self, keys: np.ndarray):
        self.keys = np.asarray(keys, dtype=np.int64)
        self._order = np.argsort(self.keys, kind="stable")
        self._sorted = self.keys[self._order]

    def find(self, keys: Sequence[int]) -> np.ndarray:
        """The row of each key, -1 for a key not held."""
        keys = np.asarray(keys, dtype=np.int64)
        if not len(keys) or not len(self._sorted):
            return np.full(len(keys), -1, np.int64)
        at = np.minimum(np.searchsorted(self._sorted, keys), len(self._sorted) - 1)
        return np.where(self._sorted[at] == keys, self._order[at], -1)

    def __call__(self, keys: Sequence[int]) -> np.ndarray:
        """The row of each key; raises KeyError for a key not held."""
        keys = np.asarray(keys, dtype=np.int64)
        if not len(keys):
            return np.zeros(0, np.int64)
        at = np.minimum(np.searchsorted(self._sorted, keys), max(len(self._sorted) - 1, 0))
        if not len(self._sorted) or np.any(self._sorted[at] != keys):
            bad = keys if not len(self._sorted) else keys[self._sorted[at] != keys]
            raise KeyError(f"chunk keys not in the index: {bad[:3].tolist()}")
        return self._order[at]


class VectorIndex(Protocol):
    """Chunk vectors searched by inner product. Another engine (Milvus) plugs in here."""

    dim: int

    def __len__(self) -> int:
        """How many chunks it holds."""

    def search(self, query: np.ndarray, k: int, *, window: Window | None = None) -> list[tuple[int, float]]:
        """The ``k`` nearest chunks as (chunk key, inner product), best first, inside ``window``."""

    def vectors(self, keys: Sequence[int]) -> np.ndarray:
        """The stored vectors of the given chunks, (len(keys), dim) float32."""

    def add(self, keys: Sequence[int], vectors: np.ndarray, dates: Sequence[int]) -> None:
        """Add chunks (``dates``: `day_number` of each chunk's article)."""

    def remove(self, keys: Sequence[int]) -> None:
        """Remove chunks; unknown keys are ignored."""


# Never IVF below this many chunks: exact search there takes ~0.2 ms, and k-means wants ~39
# points a list (1,000 chunks -> 25 lists).
MIN_IVF = 1000
RETRAIN_RATIO = 1.5  # IVF lists are re-trained once the corpus grew or shrank this much since


def ivf_shape(n: int) -> tuple[int, int]:
    """(nlist, nprobe) of the IVF index over ``n`` vectors: 100k -> 1,264 lists, 158 probed."""
    nlist = max(1, min(int(4 * n ** 0.5), n // 39))  # ~4 sqrt(n), and k-means' 39 points a list
    return nlist, ivf_probes(nlist)


def ivf_probes(nlist: int) -> int:
    """Lists searched per question: an eighth of them, at least 32. On real news vectors
    (bench/measure.py `ann_real`: realtimeqa-dev's sentence vectors, its questions) a 32nd (40 of
    1,264 at 100k) found 0.954 of the exact top 10, an eighth 0.986-0.997 (questions of weeks the
    choice was not made on), for ~1 ms a search instead of ~0.3. Synthetic vectors had shown 0.99 at
    a 32nd: they cluster more tightly than real text does."""
    return min(nlist, max(32, -(-nlist // 8)))


class FaissIndex:
    """FAISS behind `VectorIndex`: an IndexIDMap2 keyed by chunk key over exact inner product
    (IndexFlatIP), or above ``ann_above`` chunks ``IVF{nlist},SQfp16``.

    Rows inside FAISS are kept in the order the chunks were added (the writer's chunk order), so
    a search runs on the inner index directly and maps rows to keys with one array lookup (a
    dict of 100k Python ints cost 11 MB), and a date window is a bitmap selector over rows.
    """

    def __init__(self, index, dates: np.ndarray, kind: dict):
        import faiss

        self.index = index  # the IndexIDMap2
        self.kind = kind  # the manifest's entry: {"kind": "flat"} or {"kind": "ivf", "nlist", "nprobe", ...}
        self.dim = index.d
        self._inner = faiss.downcast_index(index.index)
        self._nprobe: int | None = None
        if kind["kind"] == "ivf":
            ivf = faiss.extract_index_ivf(self._inner)
            # The probes are a search setting, not part of the file: an index written with fewer
            # (a 32nd, before real vectors were measured) searches as many as one written today.
            ivf.nprobe = self._nprobe = max(int(kind["nprobe"]), ivf_probes(ivf.nlist))
            if ivf.direct_map.type == faiss.DirectMap.NoMap:  # vectors() needs it; written with it
                ivf.make_direct_map()
        self._set_keys(dates)

    def _set_keys(self, dates: np.ndarray) -> None:
        import faiss

        self.keys = (faiss.vector_to_array(self.index.id_map).astype(np.int64) if self.index.ntotal
                     else np.zeros(0, np.int64))
        self.dates = np.asarray(dates, dtype=np.int32)
        if len(self.dates) != len(self.keys):
            raise ValueError(f"{len(self.dates)} dates for {len(self.keys)} vectors")
        self.rows_of = KeyRows(self.keys)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    # -- building and storage -----------------------------------------------------------------
    @classmethod
    def build(cls, vectors: np.ndarray, keys: Sequence[int], dates: Sequence[int], *, ann_above: int,
              previous: FaissIndex | None = None) -> FaissIndex:
        """The index over ``vectors`` (rows in chunk order).

        Exact inner product up to ``ann_above`` vectors; above, ``IVF{nlist},SQfp16`` (`ivf_shape`):
        at 100k chunks recall@10 0.9875 against exact search (200 questions; IVF,Flat the same),
        and `Desk.ask` in 0.45x the time. Vectors are float16: 73 MB instead of IVF,Flat's 147 MB
        at 100k, each component within 6e-5 of the float32 one. SQ8 (37 MB) fell to 0.974, under
        the 0.98 floor, and would be re-trained, drifting, on every add; fp16 does not drift.

        ``previous``: the last generation's index. Its IVF centroids are reused while ``n`` is
        within `RETRAIN_RATIO` of the count they were trained on: k-means was 12 of the ~20 s an
        add to a 100k index spent in FAISS, and a few articles do not move the lists.
        """
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        if n <= max(ann_above, MIN_IVF - 1):
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
            kind: dict = {"kind": "flat"}
        else:
            old = previous.kind if previous is not None else {}
            trained_on = old.get("trained_on") or old.get("nlist", 0) ** 2 // 16  # older manifests: ~ivf_shape's n
            reuse = (previous is not None and old.get("kind") == "ivf" and old.get("vectors") == "fp16"
                     and 1 / RETRAIN_RATIO <= n / max(trained_on, 1) <= RETRAIN_RATIO)
            nlist, nprobe = (old["nlist"], old["nprobe"]) if reuse else ivf_shape(n)
            index = faiss.index_factory(dim, f"IDMap2,IVF{nlist},SQfp16", faiss.METRIC_INNER_PRODUCT)
            ivf = faiss.extract_index_ivf(index)
            # Each vector's own fp16, not its residual from the list centroid: the stored vector is
            # then the same whichever centroids k-means found, so vectors() -> the next
            # generation's index gives back the very same values.
            ivf.by_residual = False
            if reuse:
                ivf.quantizer.add(faiss.extract_index_ivf(previous.index).quantizer.reconstruct_n(0, nlist))
                ivf.is_trained = index.is_trained = True  # fp16 codes need no training, only the lists did
            else:
                # k-means on 40 points a list (FAISS asks for 39): at 100k half the training time of 64
                # a list, and no worse (recall@10 0.993 vs 0.988 at nprobe 40).
                sample = np.random.default_rng(0).choice(n, min(n, 40 * nlist), replace=False)
                index.train(vectors[np.sort(sample)])
                trained_on = n
            kind = {"kind": "ivf", "nlist": nlist, "nprobe": nprobe, "vectors": "fp16", "trained_on": int(trained_on)}
        if n:
            index.add_with_ids(vectors, np.asarray(keys, dtype=np.int64))
        if kind["kind"] == "ivf":
            # Written with the file: lets vectors() reconstruct a chunk found only by BM25.
            faiss.extract_index_ivf(index).make_direct_map()
        return cls(index, np.asarray(dates, dtype=np.int32), kind)

    def to_bytes(self) -> np.ndarray:
        """The index as FAISS writes it, in memory (the caller writes it, so a full disk is an OSError)."""
        import faiss

        return faiss.serialize_index(self.index)

    @classmethod
    def load(cls, path: Path, kind: dict, dates: np.ndarray) -> FaissIndex:
        import faiss

        index = faiss.read_index(str(path))
        if not isinstance(index, faiss.IndexIDMap2):
            raise ValueError(f"{path.name} holds a {type(index).__name__}, not an IndexIDMap2")
        return cls(index, dates, kind)

    # -- the seam -------------------------------------------------------------------------------
    def search(self, query: np.ndarray, k: int, *, window: Window | None = None) -> list[tuple[int, float]]:
        return self.search_rows(query, k, allowed=None if window is None else window.mask(self.dates), keys=True)

    def search_rows(self, query: np.ndarray, k: int, *, allowed: np.ndarray | None = None,
                    keys: bool = False) -> list[tuple[int, float]]:
        """Top ``k`` as (row, score) (or (key, score) with ``keys``); ``allowed``: a mask over rows.

        The search itself skips the rows left out, so a narrow filter still returns ``k`` rows when it can.
        """
        import faiss

        n = len(self)
        if not n or k < 1:
            return []
        params = bits = None
        if allowed is not None:
            share = int(np.count_nonzero(allowed))
            if not share:
                return []
            bits = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")  # kept alive for the search
            sel = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
            if self._nprobe is None:
                params = faiss.SearchParameters(sel=sel)
            else:
                # With 1 row in 10 allowed, each probed list holds a tenth as many candidates:
                # probing 10x the lists keeps the candidates seen (and the recall) as unfiltered.
                nlist = faiss.extract_index_ivf(self._inner).nlist
                params = faiss.SearchParametersIVF(sel=sel, nprobe=min(nlist, -(-self._nprobe * n // share)))
        scores, rows = self._inner.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32),
                                          min(k, n), params=params)
        out = [(r, s) for r, s in zip(rows[0].tolist(), scores[0].tolist()) if r >= 0]
        return [(int(self.keys[r]), s) for r, s in out] if keys else out

    def vectors(self, keys: Sequence[int]) -> np.ndarray:
        rows = self.rows_of(keys)
        if not len(rows):
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._inner.reconstruct(int(r)) for r in rows])

    def vector(self, row: int) -> np.ndarray:
        """The stored vector of ``row``: normalized, float32 (fp16-rounded in an IVF index)."""
        return self._inner.reconstruct(int(row))

    def all_vectors(self) -> np.ndarray:
        """Every vector, in row order (the next generation reuses them)."""
        n = len(self)
        return self._inner.reconstruct_n(0, n) if n else np.zeros((0, self.dim), np.float32)

    def add(self, keys: Sequence[int], vectors: np.ndarray, dates: Sequence[int]) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        if not len(keys):
            return
        if self._nprobe is not None and not self.index.is_trained:
            raise ValueError("an untrained IVF index cannot take vectors")
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), keys)
        if self.kind["kind"] == "ivf":
            import faiss

            faiss.extract_index_ivf(self.index).make_direct_map()
        self._set_keys(np.concatenate([self.dates, np.asarray(dates, dtype=np.int32)]))

    def remove(self, keys: Sequence[int]) -> None:
        keep = ~np.isin(self.keys, np.asarray(keys, dtype=np.int64))
        if keep.all():
            return
        # Rebuilt from the kept vectors, not faiss' remove_ids: an IDMap2 over IVF maps rows to
        # keys by position, which IVF's removal does not keep. The same kind, the same lists.
        kind = self.kind
        ann_above = len(self) * 2 if kind["kind"] == "flat" else 0
        rebuilt = FaissIndex.build(self.all_vectors()[keep], self.keys[keep], self.dates[keep], ann_above=ann_above,
                                   previous=self if kind["kind"] == "ivf" else None)
        self.__dict__.update(rebuilt.__dict__)


class Segments:
    """Chunk key -> (segment, row) over the parts of a segmented index, live rows only.

    A key is live in one part at most (the writer deletes an article from its old segment when
    it writes it again), so the first part that holds it live is the one.
    """

    def __init__(self, rows: Sequence[KeyRows], live: Sequence[np.ndarray | None]):
        self.rows, self.live = list(rows), list(live)

    def locate(self, keys: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(part, row) of each key; raises KeyError for a key no part holds live."""
        keys = np.asarray(keys, dtype=np.int64)
        part = np.full(len(keys), -1, np.int64)
        row = np.full(len(keys), -1, np.int64)
        todo = np.arange(len(keys))
        for i in range(len(self.rows) - 1, -1, -1):  # newest first: most lookups are of recent articles
            if not len(todo):
                break
            r = self.rows[i].find(keys[todo])
            ok = r >= 0
            if self.live[i] is not None:
                ok &= self.live[i][np.maximum(r, 0)]
            part[todo[ok]], row[todo[ok]] = i, r[ok]
            todo = todo[~ok]
        if len(todo):
            raise KeyError(f"chunk keys not in the index: {keys[todo[:3]].tolist()}")
        return part, row


def merge_top(lists: Sequence[Sequence[tuple[int, float]]], k: int) -> list[tuple[int, float]]:
    """The ``k`` best (key, score) of several best-first lists, best first (ties: earlier list first)."""
    if len(lists) == 1:
        return list(lists[0][:k])
    flat = [x for hits in lists for x in hits]
    order = sorted(range(len(flat)), key=lambda i: -flat[i][1])  # stable: ties keep list order
    return [flat[i] for i in order[:k]]


class SegmentedVectors:
    """One `VectorIndex` over the FAISS indexes of several segments, less their deleted rows.

    A search runs in each part (deleted rows and the date window are a selector inside FAISS)
    and keeps the best ``k`` of all. ``add`` puts the new vectors in a part of their own and
    ``remove`` marks rows deleted, as the index folder's writer does with segment files.
    """

    def __init__(self, parts: Sequence[FaissIndex], live: Sequence[np.ndarray | None], *, dim: int | None = None):
        self.parts, self.live = list(parts), list(live)
        self.dim = dim if dim is not None else (self.parts[0].dim if self.parts else 0)
        self.where = Segments([p.rows_of for p in self.parts], self.live)

    def __len__(self) -> int:
        return sum(len(p) if m is None else int(np.count_nonzero(m)) for p, m in zip(self.parts, self.live))

    def search(self, query: np.ndarray, k: int, *, window: Window | None = None) -> list[tuple[int, float]]:
        lists = []
        for part, live in zip(self.parts, self.live):
            allowed = live if window is None else (window.mask(part.dates) if live is None
                                                     else live & window.mask(part.dates))
            lists.append(part.search_rows(query, k, allowed=allowed, keys=True))
        return merge_top(lists, k)

    def vectors(self, keys: Sequence[int]) -> np.ndarray:
        if not len(keys):
            return np.zeros((0, self.dim), np.float32)
        part, row = self.where.locate(keys)
        return np.stack([self.parts[i].vector(r) for i, r in zip(part.tolist(), row.tolist())])

    def add(self, keys: Sequence[int], vectors: np.ndarray, dates: Sequence[int]) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        if not len(keys):
            return
        self.remove(keys)  # a key lives in one part only
        self.parts.append(FaissIndex.build(vectors, keys, dates, ann_above=len(keys)))
        self.live.append(None)
        self.where = Segments([p.rows_of for p in self.parts], self.live)

    def remove(self, keys: Sequence[int]) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        for i, part in enumerate(self.parts):
            r = part.rows_of.find(keys)
            r = r[r >= 0]
            if len(r):
                live = np.ones(len(part), bool) if self.live[i] is None else self.live[i].copy()
                live[r] = False
                self.live[i] = live
        self.where = Segments([p.rows_of for p in self.parts], self.live)
