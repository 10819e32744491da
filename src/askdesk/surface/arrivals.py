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
        try:
            self._snap: Any = desk.snapshot  # what is there at start is not news
        except (AskdeskError, OSError, AttributeError):  # no index yet (or a desk that keeps none)
            self._snap = _NoIndex()

    def poll(self) -> int:
        """The number of the last arrival, after looking at the live generation."""
        try:
            snap = self.desk.snapshot
        except (AskdeskError, OSError, AttributeError):
            return self.seq  # no index yet (or one being replaced): nothing new
        with self._lock:
            old = self._snap
            if snap is old:
                return self.seq
            if hasattr(snap, "segments") and hasattr(old, "segments"):
                known = {s.name for s in old.segments}
                for seg, dead in zip(snap.segments, snap.deleted):
                    if seg.name in known:
                        continue
                    for a in seg.articles.values():
                        if a.id not in dead and old.get(a.id) is None:
                            self.seq += 1
                            self.log.append((self.seq, a.id, a.title, a.date))
            self._snap = snap
            return self.seq

    def since(self, seq: int) -> list[tuple[str, str | None]]:
        """(title, date) of the articles that arrived after ``seq`` and are still live, oldest first."""
        snap = self._snap
        return [(t, d) for n, aid, t, d in list(self.log) if n > seq and snap.get(aid) is not None]


class _NoIndex:
    """The generation before the first write: no segments, no articles."""

    segments: tuple = ()

    @staticmethod
    def get(article_id: str) -> None:
        return None
