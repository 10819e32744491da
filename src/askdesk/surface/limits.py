"""How many questions one client may ask a minute, on a page open to many (`askdesk serve --read-only`).

A sliding log per client address: at most N questions in any 60 seconds, counted where a question
is answered (the chat and `/ask`), so no route around the page's HTTP gate (gate.py) escapes it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Config

# A person reads each answer before the next question: 30 a minute leaves room for a burst of
# example buttons and follow-ups, and stops a script at ~1 question every 2 s per address.
READ_ONLY_PER_MINUTE = 30
TOO_MANY = "too many questions; try again in {s} s"


def per_minute(cfg: Config) -> int:
    """The page's limit: ``cfg.max_questions_per_minute``, else 30 on a read-only page and none (0) otherwise."""
    if cfg.max_questions_per_minute is not None:
        return cfg.max_questions_per_minute
    return READ_ONLY_PER_MINUTE if cfg.read_only else 0


def retry_after(wait_s: float) -> int:
    """Whole seconds to wait (at least 1): the Retry-After header and the message say the same number."""
    return max(1, math.ceil(wait_s))


def too_many(wait_s: float) -> str:
    """The one-line refusal of a question over the limit."""
    return TOO_MANY.format(s=retry_after(wait_s))


class QuestionLimit:
    """At most ``per_minute`` questions from one client in any ``window_s`` seconds; thread-safe.

    Args:
        per_minute: questions allowed per window and client.
        clock: seconds, monotonic (``time.monotonic``); tests pass a fake one.
        window_s: the window, 60 seconds unless a test says otherwise.
    """

    SWEEP_AT = 1024  # clients remembered before the idle ones are forgotten (then twice the live ones)

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic, window_s: float = 60.0):
        if per_minute < 1:
            raise ValueError(f"per_minute={per_minute!r} must be 1 or more")
        self.per_minute, self.window_s, self.clock = per_minute, window_s, clock
        self._asked: dict[str, deque[float]] = {}  # client -> when its questions of the window came, oldest first
        self._lock = threading.Lock()
        self._sweep_at = self.SWEEP_AT

    def wait(self, client: str) -> float:
        """Seconds until ``client`` may ask again; 0.0: now. Records nothing."""
        with self._lock:
            return self._wait(client, self.clock())

    def take(self, client: str) -> float:
        """Count a question from ``client`` if it may ask now (returns 0.0); else the seconds to wait."""
        with self._lock:
            now = self.clock()
            wait = self._wait(client, now)
            if wait == 0.0:
                self._asked.setdefault(client, deque()).append(now)
                if len(self._asked) > self._sweep_at:
                    self._sweep(now)
            return wait

    def _wait(self, client: str, now: float) -> float:
        asked = self._asked.get(client)
        if not asked:
            return 0.0
        while asked and asked[0] <= now - self.window_s:  # out of the window: no longer counted
            asked.popleft()
        if len(asked) < self.per_minute:
            return 0.0
        return asked[0] + self.window_s - now  # when the oldest question leaves the window

    def _sweep(self, now: float) -> None:
        """Forget the clients with no question in the window (a page open to many sees many addresses)."""
        for client in [c for c, asked in self._asked.items() if not asked or asked[-1] <= now - self.window_s]:
            del self._asked[client]
        self._sweep_at = max(self.SWEEP_AT, 2 * len(self._asked))
