"""What arrived while the page runs: the articles that became answerable since it was opened,
whoever wrote them (an upload, `serve --watch`, `askdesk add` in another process). The page polls
`Arrivals` and shows them in its live note.
"""

from __future__ import annotations

from typing import Any

from ..errors import AskdeskError


class Arrivals:
    """The articles that became answerable while the page runs, numbered in order of arrival.

    Each poll compares the live generation with the one seen before: the articles of segments it
    had not seen, that were not live then, arrived (a merge's segment brings none). Whoever wrote
    them (an upload, `serve --watch`, `askdesk add` in another process) does not matter.
    """

    KEPT = 500  # arrivals remembered; a page open longer than this many arrivals shows the last ones

    def __init__(self, desk: Any):
        import threading
        from collections import deque

        self.desk = desk
        self.seq = 0
        self.log: deque = deque(maxlen=self.KEPT)  # (seq, article id, title, date)
        self._lock = threading.Lock()
        # What was live, kept as names and ids, never the snapshot itself: a page that only API
        # clients use polls rarely, and a kept snapshot would pin its segments' memory maps (files
        # merged away and deleted) for the life of the process (bench/soak.py found it).
        self._seen: tuple = ()  # (segment name, deletions) of the generation last looked at
        self._live: frozenset = frozenset()  # its live article ids
        try:
            self._look(desk.snapshot)  # what is there at start is not news
        except (AskdeskError, OSError, AttributeError):  # no index yet (or a desk that keeps none)
            pass

    def poll(self) -> int:
        """The number of the last arrival, after looking at the live generation."""
        try:
            snap = self.desk.snapshot
        except (AskdeskError, OSError, AttributeError):
            return self.seq  # no index yet (or one being replaced): nothing new
        with self._lock:
            if not hasattr(snap, "segments") or _signature(snap) == self._seen:
                return self.seq
            known = {name for name, _ in self._seen}
            for seg, dead in zip(snap.segments, snap.deleted):
                if seg.name in known:
                    continue
                for a in seg.articles.values():
                    if a.id not in dead and a.id not in self._live:
                        self.seq += 1
                        self.log.append((self.seq, a.id, a.title, a.date))
            self._look(snap)
            return self.seq

    def _look(self, snap: Any) -> None:
        if hasattr(snap, "segments"):
            self._seen = _signature(snap)
            self._live = frozenset(a for seg, dead in zip(snap.segments, snap.deleted)
                                   for a in seg.articles if a not in dead)

    def since(self, seq: int) -> list[tuple[str, str | None]]:
        """(title, date) of the articles that arrived after ``seq`` and are still live, oldest first."""
        live = self._live
        return [(t, d) for n, aid, t, d in list(self.log) if n > seq and aid in live]


def _signature(snap: Any) -> tuple:
    return tuple((seg.name, len(dead)) for seg, dead in zip(snap.segments, snap.deleted))
