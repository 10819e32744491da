"""`askdesk watch`: keep the index in step with a folder (and its feeds) as files come and go.

At start the index is synced with the folder (what changed while nothing watched). Then file
events (watchdog: inotify on Linux) are gathered until the folder has been quiet for
``quiet`` seconds, so a copy of 500 files is one write, not 500; each batch is one
`Desk.update` (new and changed files added or updated, deleted ones removed), with one log
line per article. A file that cannot be read is skipped with its reason, and read again when
it changes. Feeds (feeds.py) are polled between batches; what they bring is written into the
folder and indexed as the next batch. Each write is published atomically: stopping the watcher
(Ctrl-C, or a kill at any point) leaves the last good index.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..text import counted
from .feeds import Feeds
from .ingest import SUFFIXES

logger = logging.getLogger(__name__)

QUIET_S = 0.5  # a batch is written once the folder has had no event for this long
MAX_BATCH_S = 10.0  # ... or after this long, when files keep coming
STOP_CHECK_S = 0.25  # how soon a set `Watcher.stop` is seen while waiting for events


def is_article(path: str | Path, folder: Path) -> bool:
    """Whether a file under ``folder`` is one the indexer reads (ingest.iter_files' rules:
    an article suffix, no hidden part such as an upload's ``.name.part``)."""
    p = Path(path)
    try:
        rel = p.resolve().relative_to(folder.resolve()) if p.is_absolute() else p
    except ValueError:
        return False
    return p.suffix.lower() in SUFFIXES and not any(s.startswith(".") for s in rel.parts)


class Watcher:
    """Keeps ``desk``'s index in step with ``folder``; `run` blocks until ``stop`` is set.

    Args:
        desk: the Desk whose index is kept (its writes go through `Desk.update`).
        folder: the article folder.
        quiet: seconds without an event that end a batch.
        feeds: polled between batches every ``feed_every`` seconds (None: no feeds).
        log: one line per change, skip and failing feed (default: print to stderr).
    """

    def __init__(self, desk: Any, folder: str | Path, *, quiet: float = QUIET_S, feeds: Feeds | None = None,
                 feed_every: float = 900.0, log: Callable[[str], None] | None = None):
        self.desk, self.folder = desk, Path(folder)
        self.quiet, self.feeds, self.feed_every = quiet, feeds, feed_every
        self.log = log or (lambda line: logger.warning("%s", line))
        self.stop = threading.Event()
        self.batches = 0  # writes made (tests and the page wait on it)
        self.pending: set[str] = set()  # files of a batch that could not be written yet (another writer held the index)

    def run(self, *, sync: bool = True) -> None:
        """Watch (and first sync, with ``sync``) until `stop` is set; Ctrl-C raises KeyboardInterrupt."""
        from watchdog.observers import Observer

        changes: queue.SimpleQueue[str] = queue.SimpleQueue()
        observer = Observer()
        observer.start()
        try:
            # On a started observer, schedule() returns with its watches in place (inotify's, added in
            # this thread, a folder at a time): the sync below and the "watching" line come after
            # them, so no file that lands later is missed.
            observer.schedule(_collector(changes), str(self.folder), recursive=True, event_filter=_events())
            if sync:
                self.catch_up()
            self.log(f"watching {self.folder} (Ctrl-C stops)")
            wait = 1.0 if self.feeds is not None else 2.0  # wake up now and then for the feeds
            while not self.stop.is_set():
                changed = self._gather(changes, wait)
                if changed:
                    self.pending |= set(self.articles_in(changed))
                if self.pending:
                    paths, self.pending = sorted(self.pending), set()
                    self.apply(paths)
                if self.feeds is not None and not self.stop.is_set():
                    self.poll_feeds()
        finally:
            observer.stop()
            observer.join(timeout=10)

    def _gather(self, changes: queue.SimpleQueue, wait: float) -> set[str]:
        """The paths of one batch: its first event within ``wait`` s, then each one until the folder
        has been quiet for ``quiet`` s (or for ``MAX_BATCH_S`` at most); empty without an event, or at stop."""
        got: set[str] = set()
        end = time.monotonic() + wait
        while not got:
            left = end - time.monotonic()
            if left <= 0 or self.stop.is_set():
                return got
            try:
                got.add(changes.get(timeout=min(left, STOP_CHECK_S)))
            except queue.Empty:
                pass
        start = last = time.monotonic()
        while not self.stop.is_set():
            left = min(last + max(self.quiet, 0.01), start + MAX_BATCH_S) - time.monotonic()
            if left <= 0:
                break
            try:
                got.add(changes.get(timeout=min(left, STOP_CHECK_S)))
            except queue.Empty:
                continue
            last = time.monotonic()
        return got

    def articles_in(self, changed: set[str]) -> list[str]:
        """The article files a batch of events is about: files as they are, a folder that
        appeared by each article file under it, a folder that went by the articles it held."""
        out: set[str] = set()
        for p in map(Path, changed):
            if p.is_dir():
                out |= {str(f) for f in p.rglob("*") if f.is_file() and is_article(f, self.folder)}
            elif is_article(p, self.folder):
                out.add(str(p))
            elif not p.exists() and not p.suffix:  # perhaps a folder moved away: its articles go too
                try:
                    rel = p.resolve().relative_to(self.folder.resolve()).as_posix() + "/"
                    held = self.desk.snapshot.all_articles()
                except Exception:  # noqa: BLE001 - outside the folder, or no index yet: nothing held under it
                    continue
                out |= {str(self.folder / a.path) for a in held if a.path and a.path.startswith(rel)}
        return sorted(out)

    def catch_up(self) -> dict | None:
        """One sync with the folder: what changed while nothing watched it."""
        from ..errors import EmptyCorpusError

        t0 = time.perf_counter()
        try:
            stats = self.desk.sync(self.folder)
        except EmptyCorpusError:
            self.log(f"no articles in {self.folder} yet; waiting for some")
            return None
        notes, lines = changes_lines(stats, self.folder)
        for line in [*notes, *lines]:
            self.log(line)
        self.log(f"synced {self.folder} in {time.perf_counter() - t0:.1f} s")
        return stats

    def apply(self, paths: list[str | Path]) -> dict | None:
        """One write for a batch of changed paths; one line per article, per skipped file."""
        from ..errors import AskdeskError, IndexLockedError, IndexWriteError

        t0 = time.perf_counter()
        n = f"{len(paths)} changed file{'s' * (len(paths) != 1)}"
        try:
            stats = self.desk.update(paths)
        except (IndexLockedError, IndexWriteError) as e:  # another writer, a full disk: tried again, not lost
            self.pending |= {str(p) for p in paths}
            self.log(f"could not index {n} yet: {e}; trying again in a moment")
            self.stop.wait(2.0)
            return None
        except AskdeskError as e:  # e.g. the folder's last article was deleted: said, not fatal
            self.log(f"could not index {n}: {e}")
            return None
        self.batches += 1
        for change, path, title in stats.get("changed", []):
            self.log(f"{change} {path} ({title})")
        for path, reason in stats.get("skipped", []):
            self.log(f"skipped {path}: {reason} (read again when it changes)")
        if stats.get("changed"):
            self.log(f"index holds {counted(stats['n_articles'], 'article')}, {counted(stats['n_chunks'], 'chunk')} "
                     f"({time.perf_counter() - t0:.2f} s)")
        return stats

    def poll_feeds(self) -> None:
        """Poll the feeds that are due; the files they write reach `apply` as folder events."""
        try:
            if self.feeds.due(self.feed_every):
                self.feeds.poll(self.feed_every)
        except Exception as e:  # noqa: BLE001 - a feed never stops the watcher
            self.log(f"polling feeds failed ({type(e).__name__}: {e}); tried again at the next poll")


def _events() -> list[type]:
    """The events a batch is made of: files created, written, closed after a write, deleted or moved,
    folders created, deleted or moved. Not a folder's "modified" (its listing changed: the file's own
    event says which file), nor opens and reads (the indexer's own reads would wake the watcher)."""
    from watchdog import events as ev

    return [ev.FileCreatedEvent, ev.FileModifiedEvent, ev.FileClosedEvent, ev.FileDeletedEvent, ev.FileMovedEvent,
            ev.DirCreatedEvent, ev.DirDeletedEvent, ev.DirMovedEvent]


def _collector(changes: queue.SimpleQueue):
    """A watchdog event handler that puts each path an event names (both of a move) on ``changes``."""
    from watchdog.events import FileSystemEventHandler

    class Collect(FileSystemEventHandler):
        def on_any_event(self, event) -> None:
            for p in (event.src_path, getattr(event, "dest_path", "")):
                if p:
                    changes.put(str(p))

    return Collect()


def watch_in_background(desk: Any, folder: str | Path, **kw) -> Watcher:
    """A `Watcher` running in a daemon thread (the page's `serve --watch`); set ``.stop`` to end it."""
    w = Watcher(desk, folder, **kw)
    t = threading.Thread(target=_run_logged, args=(w,), name="askdesk-watch", daemon=True)
    t.start()
    return w


def _run_logged(w: Watcher) -> None:
    try:
        w.run(sync=False)  # the page synced at start already
    except Exception:  # noqa: BLE001 - the page goes on without it; the log says why
        logger.exception("the folder watcher stopped")


def changes_lines(stats: dict, corpus: Path | None = None) -> tuple[list[str], list[str]]:
    """What a write did, in the words `askdesk index` prints and `serve` logs at start:
    (a line per skipped or re-encoded file, the lines of counts)."""
    notes = [f"skipped {path}: {reason}" for path, reason in stats.get("skipped", [])]
    notes += [f"read {path} as {encoding} (it is not UTF-8)" for path, encoding in stats.get("decoded", [])]
    lines = [f"{stats['added']:,} added, {stats['updated']:,} updated, {stats['removed']:,} removed, "
             f"{stats['unchanged']:,} unchanged; index holds {counted(stats['n_articles'], 'article')}, "
             f"{counted(stats['n_chunks'], 'chunk')}"]
    if stats.get("kept"):
        n, where = stats["kept"], f" {corpus}" if corpus else ""
        lines.append(f"kept {n:,} article{'s' * (n != 1)} that {'is' if n == 1 else 'are'} not in"
                     f"{where or ' the folder'}; `askdesk index{where} --prune` removes {'it' if n == 1 else 'them'}")
    if stats.get("reembedded"):
        lines.append("the index was built with other settings (model, chunking, ASKDESK_INT8 or an older index "
                     f"format): all {stats['n_articles']:,} articles embedded again")
    return notes, lines
