"""Selections: what a write changes, worked out from the live articles.

`for_sync`, `for_add`, `for_remove` and `for_files` each turn the live articles (`Held`: the
loaded index, looked up per segment, or a plain list when the index cannot be reused) into a
`Delta`: the articles to write and the live ones to delete. Adding one article to 100k chunks
looks up its key; it does not go through every article. `build.write` runs one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..articles.ingest import dedupe
from ..types import Article
from . import index as index_mod


def key(a: Article) -> str:
    """What makes two versions of an article the same article: its url, else its path, else its id."""
    return a.url or a.path or a.id


def in_folder(a: Article) -> bool:
    """Whether the article was read from the synced folder: its path is relative to it (files
    from anywhere else keep an absolute path, see ingest.read_articles)."""
    return bool(a.path) and not Path(a.path).is_absolute()


class Held:
    """The live articles a selection looks things up in: the loaded index (per-segment lookups,
    nothing built per write) or a plain list (an index that cannot be reused)."""

    def __init__(self, snap: index_mod.FolderSnapshot | None = None, articles: Sequence[Article] = ()):
        self.snap = snap
        if snap is None:
            self._by_id = {a.id: a for a in articles}
            self._by_key: dict[str, list[Article]] = {}
            self._by_path: dict[str, list[Article]] = {}
            for a in self._by_id.values():
                self._by_key.setdefault(key(a), []).append(a)
                if a.path:
                    self._by_path.setdefault(a.path, []).append(a)

    def get(self, article_id: str) -> Article | None:
        return self.snap.get(article_id) if self.snap is not None else self._by_id.get(article_id)

    def with_key(self, k: str) -> list[Article]:
        if self.snap is None:
            return list(self._by_key.get(k, ()))
        same = [a for a in self.snap.with_url(k)] + [a for a in self.snap.with_path(k) if not a.url]
        a = self.snap.get(k)
        return same + ([a] if a is not None and not a.url and not a.path else [])

    def with_path(self, path: str) -> list[Article]:
        return self.snap.with_path(path) if self.snap is not None else list(self._by_path.get(path, ()))

    def all(self) -> list[Article]:
        return self.snap.all_articles() if self.snap is not None else list(self._by_id.values())

    def __len__(self) -> int:
        return self.snap.manifest["n_articles"] if self.snap is not None else len(self._by_id)


@dataclass
class Delta:
    """What a selection changes: articles to write (new, updated, or with a changed record) and
    live article ids to delete (removed, replaced by an update, or written again)."""

    write: list[Article] = field(default_factory=list)
    remove: set[str] = field(default_factory=set)
    replaces: dict[str, set[str]] = field(default_factory=dict)  # written id -> the live ids it updates
    removed: int = 0  # removed for good (not replaced by a newer version)

    def put(self, a: Article, held: Held) -> None:
        """Write ``a``: unchanged when its id is live (rewritten only if its record moved), an
        update of the live articles with its key, or new."""
        same = held.get(a.id)
        if same is not None:
            # Other live articles with its key go: the folder never holds two, but a write to a Milvus
            # store killed midway can leave them (the old version of an update, or a file of the same
            # name in the folder it was syncing to), and they would otherwise stay for good.
            self.remove |= {o.id for o in held.with_key(key(a))} - {a.id}
            if same != a:  # same text, another path: written again with its vectors
                self.write.append(a)
                self.remove.add(a.id)
            return
        olds = {o.id for o in held.with_key(key(a))}
        if olds:
            self.replaces[a.id] = olds
            self.remove |= olds
        self.write.append(a)


# the live articles, the folder the index was last synced with -> what this write changes
Selection = Callable[[Held, "Path | None"], Delta]


def for_sync(articles: list[Article], folder: Path | None, *, unreadable: set[str] = frozenset(),
             prune: bool = False, kept: list[Article] | None = None) -> Selection:
    """Hold ``articles`` (read from ``folder``, or given), plus what the user did not remove.

    An old article goes only when its file was deleted from the folder the index was last synced
    with (``folder`` is that folder), or with ``prune``. Articles from a folder recorded before
    ``folder`` get absolute paths, so that "a.txt" there is never taken for "a.txt" here.
    ``unreadable``: files of ``folder`` that exist but were skipped (their articles stay).
    ``kept``: filled with the old articles kept that are not in ``folder``.
    """
    articles = dedupe(articles)
    keys, ids = {key(a) for a in articles}, {a.id for a in articles}
    kept = kept if kept is not None else []

    def select(held: Held, recorded: Path | None) -> Delta:
        d = Delta()
        seen = []
        for a in held.all():
            mine = folder is not None and recorded == folder and in_folder(a)
            now = a
            if folder is not None and recorded is not None and not mine and in_folder(a) and a.url is None:
                now = dataclasses.replace(a, path=str(recorded / a.path))
            seen.append(now)
            if key(now) in keys or a.id in ids:
                continue  # updated or unchanged
            if prune or mine and str(folder / a.path) not in unreadable:
                d.remove.add(a.id)  # pruned, or its file was deleted from this folder: the user removed it
                d.removed += 1
                continue
            kept.append(now)
            if now is not a:  # its record now says where it came from: written again, not embedded
                d.write.append(now)
                d.remove.add(a.id)
        view = Held(articles=seen)
        for a in articles:
            d.put(a, view)
        return d

    return select


def for_add(new: list[Article]) -> Selection:
    """The live articles with ``new`` added (or replacing the versions with the same key)."""
    def select(held: Held, recorded: Path | None) -> Delta:
        d = Delta()
        for a in dedupe(new):
            d.put(a, held)
        return d

    return select


def for_remove(ids: set[str]) -> Selection:
    """The live articles less those with the given ids."""
    def select(held: Held, recorded: Path | None) -> Delta:
        gone = {i for i in ids if held.get(i) is not None}
        return Delta(remove=gone, removed=len(gone))

    return select


def for_files(new: list[Article], gone: Sequence[str]) -> Selection:
    """A watched folder's changes: ``new`` read from its new and changed files, and the articles
    of its files that were deleted (``gone``: their paths, relative to the folder) removed."""
    def select(held: Held, recorded: Path | None) -> Delta:
        d = Delta()
        for a in dedupe(new):
            d.put(a, held)
        for path in gone:
            for a in held.with_path(path):
                if a.id not in d.remove:
                    d.remove.add(a.id)
                    d.removed += 1
        return d

    return select
