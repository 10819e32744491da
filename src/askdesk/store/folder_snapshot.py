"""One generation of the index folder, loaded (`FolderSnapshot`): its segments less their deleted
articles, presented as one index (the `records.Snapshot` seam), with what the folder's writer reads
of it (an article's parts, the owners of sentence hashes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..articles.quotes import Statement, find_statements
from ..types import Article, Chunk
from .lexical import BM25, SegmentedBM25
from .records import Segment, Sentences, SentenceSpans
from .vectors import FaissIndex, SegmentedVectors, chunk_key

TAIL_CHUNKS = 256  # segments this small (recent adds, small merges) are searched as one part


class FolderSnapshot:
    """One generation of the index folder, loaded: its segments less their deleted articles,
    presented as one index (`Snapshot`): one `VectorIndex` and one `LexicalIndex` over the
    segments, records looked up by chunk key. Never modified after load, so readers share it.
    """

    def __init__(self, path: Path, manifest: dict, segments: Sequence[Segment], deleted: Sequence[frozenset[str]]):
        self.path, self.manifest = path, manifest
        self.segments, self.deleted = tuple(segments), tuple(deleted)
        self.live = [s.live(d) for s, d in zip(self.segments, self.deleted)]
        # What a question searches: each large segment as it is, and the small ones (the recent
        # adds) as one part built here in memory, so 50 one-article segments cost a question one
        # search, not 50. Built from their live rows only: a cost of the tail, not of the index.
        small = [i for i, s in enumerate(self.segments) if len(s) <= TAIL_CHUNKS and s.vectors.kind["kind"] == "flat"]
        if len(small) < 2:
            small = []
        vparts, lparts, lives = [], [], []
        self._rows: list = []  # per part: its segment (an int), or (segment, row) arrays for the part of small ones
        for i, (seg, live) in enumerate(zip(self.segments, self.live)):
            if i not in small:
                vparts.append(seg.vectors)
                lparts.append(seg.lexical)
                lives.append(live)
                self._rows.append(i)
        if small:
            vecs, keys, dates, seg_of, row_of = [], [], [], [], []
            for i in small:
                seg, live = self.segments[i], self.live[i]
                rows = np.arange(len(seg)) if live is None else np.flatnonzero(live)
                vecs.append(seg.vectors.all_vectors()[rows])
                keys.append(seg.vectors.keys[rows])
                dates.append(seg.vectors.dates[rows])
                seg_of.append(np.full(len(rows), i, np.int64))
                row_of.append(rows)
            d = np.concatenate(dates)
            vparts.append(FaissIndex.build(np.concatenate(vecs), np.concatenate(keys), d, ann_above=len(d) + 1))
            lparts.append(BM25.merge([self.segments[i].lexical for i in small], [self.live[i] for i in small], dates=d))
            lives.append(None)
            self._rows.append((np.concatenate(seg_of), np.concatenate(row_of)))
        self.vectors = SegmentedVectors(vparts, lives, dim=manifest.get("dim"))
        self.lexical = SegmentedBM25(lparts, lives)
        # The last `sentences_in`: a question reads its hits' sentences twice (the answerer and
        # the news layer). One slot, replaced whole, so concurrent questions never see half of one.
        self._last_sentences: tuple[tuple[str, ...], Sentences] | None = None

    def _locate(self, keys: Sequence[int]) -> tuple[list[int], list[int]]:
        """(segment, row in it) of each live chunk key."""
        part, row = self.vectors.where.locate(keys)
        segs, rows = [], []
        for p, r in zip(part.tolist(), row.tolist()):
            where = self._rows[p]
            if isinstance(where, int):
                segs.append(where)
                rows.append(r)
            else:
                segs.append(int(where[0][r]))
                rows.append(int(where[1][r]))
        return segs, rows

    # -- articles ---------------------------------------------------------------------------------
    def find(self, article_id: str) -> tuple[Segment, int] | None:
        """(segment, position) of a live article, or None."""
        for seg, dead in zip(reversed(self.segments), reversed(self.deleted)):
            i = seg.position.get(article_id)
            if i is not None and article_id not in dead:
                return seg, i
        return None

    def get(self, article_id: str) -> Article | None:
        found = self.find(article_id)
        return found[0].articles[article_id] if found else None

    def article(self, article_id: str) -> Article:
        a = self.get(article_id)
        if a is None:
            raise KeyError(article_id)
        return a

    def all_articles(self) -> list[Article]:
        return [a for seg, dead in zip(self.segments, self.deleted) for a in seg.articles.values() if a.id not in dead]

    def _live_ids(self, index: str, value: str) -> list[Article]:
        out = []
        for seg, dead in zip(self.segments, self.deleted):
            out += [seg.articles[i] for i in getattr(seg, index).get(value, ()) if i not in dead]
        return out

    def with_url(self, url: str) -> list[Article]:
        return self._live_ids("by_url", url)

    def with_path(self, path: str) -> list[Article]:
        return self._live_ids("by_path", path)

    @property
    def articles(self) -> dict[str, Article]:
        """Every live article by id, in index order."""
        return {a.id: a for a in self.all_articles()}

    @property
    def chunks(self) -> list[Chunk]:
        """Every live chunk, in index order."""
        return [c for seg, live in zip(self.segments, self.live)
                for c in (seg.chunks if live is None else [seg.chunks[r] for r in np.flatnonzero(live).tolist()])]

    # -- what answering reads ---------------------------------------------------------------------
    def chunks_of(self, keys: Sequence[int]) -> list[Chunk]:
        part, row = self._locate(keys)
        return [self.segments[i].chunks[r] for i, r in zip(part, row)]

    def sentences_in(self, chunks: Sequence[Chunk]) -> Sentences:
        ids = tuple(c.id for c in chunks)
        last = self._last_sentences
        if last is not None and last[0] == ids:
            return last[1]
        got = self._sentences_in(chunks)
        self._last_sentences = (ids, got)
        return got

    def _sentences_in(self, chunks: Sequence[Chunk]) -> Sentences:
        part, row = self._locate([chunk_key(c.id) for c in chunks])
        owner, arts, spans, where = [], [], [], []
        wanted: dict[int, list[int]] = {}  # segment -> its sentence rows, in request order
        for j, (c, i, r) in enumerate(zip(chunks, part, row)):
            seg = self.segments[i]
            lo, hi = seg.bounds
            a_, b_ = int(lo[r]), int(hi[r])
            if b_ <= a_:
                continue
            a, n = seg.articles[c.article_id], b_ - a_
            # A chunk's rows at once (a question reads ~400 sentences of ~100 candidate chunks;
            # one Python step per sentence was a tenth of the question's time).
            if isinstance(seg.sentences, SentenceSpans):
                spans += seg.sentences.rows(a_, b_)
            else:
                base = seg.sentence_row[a.id]
                spans += seg.sentences[a.id][a_ - base:b_ - base]
            rows = wanted.setdefault(i, [])
            owner += [j] * n
            arts += [a] * n
            where += [(i, k) for k in range(len(rows), len(rows) + n)]
            rows.extend(range(a_, b_))
        if not where:
            return Sentences(np.zeros(0, np.int64), (), (), np.zeros((0, self.vectors.dim), np.float32))
        got = {i: np.asarray(self.segments[i].sentence_vectors[rows], dtype=np.float32) for i, rows in wanted.items()}
        if len(got) == 1:  # one segment (most questions): its rows were read in request order
            vecs = next(iter(got.values()))
        else:
            offset, at = {}, 0
            for i, v in got.items():
                offset[i], at = at, at + len(v)
            vecs = np.concatenate(list(got.values()))[[offset[i] + k for i, k in where]]
        vecs.setflags(write=False)  # shared by the calls the last-call slot answers
        return Sentences(np.asarray(owner, dtype=np.int64), tuple(arts), tuple(spans), vecs)

    def chunk_count(self, article_id: str) -> int:
        found = self.find(article_id)
        if found is None:
            raise KeyError(article_id)
        seg, i = found
        return int(seg.chunk_first[i + 1] - seg.chunk_first[i])

    def statements_of(self, article_id: str) -> tuple[Statement, ...]:
        found = self.find(article_id)
        if found is None:
            raise KeyError(article_id)
        seg = found[0]
        got = seg.statements.get(article_id)
        if got is None:
            got = seg.statements[article_id] = tuple(find_statements(seg.articles[article_id].text))
        return got

    def sentences_of(self, article_ids: Sequence[str]) -> Sentences:
        owner, arts, spans, vecs = [], [], [], []
        for j, aid in enumerate(article_ids):
            seg, _ = self.find(aid)
            a, base, all_spans = seg.articles[aid], seg.sentence_row[aid], seg.sentences[aid]
            owner += [j] * len(all_spans)
            arts += [a] * len(all_spans)
            spans += all_spans
            vecs.append(np.asarray(seg.sentence_vectors[base:base + len(all_spans)], dtype=np.float32))
        if not owner:
            return Sentences(np.zeros(0, np.int64), (), (), np.zeros((0, self.vectors.dim), np.float32))
        return Sentences(np.asarray(owner, dtype=np.int64), tuple(arts), tuple(spans), np.concatenate(vecs))

    # -- what the writer reads --------------------------------------------------------------------
    def article_parts(self, article_id: str) -> tuple[list[Chunk], list[tuple[int, int]], np.ndarray, np.ndarray,
                                                      np.ndarray]:
        """A live article's chunks, sentence spans, chunk vectors, sentence vectors and sentence hashes."""
        seg, i = self.find(article_id)
        lo, hi = int(seg.chunk_first[i]), int(seg.chunk_first[i + 1])
        r, n = seg.sentence_row[article_id], len(seg.sentences[article_id])
        chunk_vecs = (np.stack([seg.vectors.vector(x) for x in range(lo, hi)]) if hi > lo
                      else np.zeros((0, self.vectors.dim), np.float32))
        return (seg.chunks[lo:hi], seg.sentences[article_id], chunk_vecs,
                np.asarray(seg.sentence_vectors[r:r + n], dtype=np.float32), seg.hashes[r:r + n])

    def hash_owners(self, hashes: Sequence[int], exclude: set[str] = frozenset()) -> list[str | None]:
        """Per sentence hash, the id of the first live article (not in ``exclude``) holding that sentence."""
        hashes = np.asarray(hashes, dtype=np.int64)
        out: list[str | None] = [None] * len(hashes)
        for seg, dead in zip(self.segments, self.deleted):
            keys, owner = seg.hash_order
            if not len(keys):
                continue
            ids = list(seg.articles)
            lo = np.searchsorted(keys, hashes, "left")
            hi = np.searchsorted(keys, hashes, "right")
            for j in range(len(hashes)):
                if out[j] is not None:
                    continue
                for k in range(lo[j], hi[j]):
                    aid = ids[owner[k]]
                    if aid not in dead and aid not in exclude:
                        out[j] = aid
                        break
        return out
