"""When the page is saturated: a question that would wait behind ``max_waiting`` others is told
when to try again instead of joining the queue.

Under the cap, questions queue in gradio's queue as before (ui.py: the chat and `/ask` share the
"ask" queue, ASK_CONCURRENCY answers at a time). At the cap, `/ask` answers HTTP 503 with
Retry-After (gate.py) and the chat gives the same line as its reply (ui.py). The seconds come from
the answers timed here: the questions waiting x the recent pace, the time between two answers
finishing while others waited (gradio's work around each answer included: ~1.2x the answer's own
time over the 2 slots, 100 users on the loaded 2-core machine); until the queue first filled, the
mean answer time / the answers in flight.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .limits import retry_after

BUSY = "busy: {n} questions are waiting; try again in {s} s"
BUSY_ONE = "busy: 1 question is waiting; try again in {s} s"
# An answer's time before any was timed: ~35-45 ms of CPU on the 2-core target, ~70 ms of wall time
# with 2 in flight (about 30 answers a second, docs/benchmarks.md); the estimate says 1 s at least.
FIRST_GUESS_S = 0.07


def busy_line(waiting: int, wait_s: float) -> str:
    """The one-line refusal of a question when ``waiting`` questions are ahead of it."""
    return (BUSY_ONE if waiting == 1 else BUSY).format(n=waiting, s=retry_after(wait_s))


def queued(blocks: Any, concurrency_id: str = "ask") -> Callable[[], int]:
    """How many events wait in ``blocks``' gradio queue for ``concurrency_id`` (the running ones not counted).

    gradio has no public count per queue; tests/test_busy.py fills the queue and checks this one.
    """
    def waiting() -> int:
        queue = getattr(blocks, "_queue", None)
        events = getattr(queue, "event_queue_per_concurrency_id", {}).get(concurrency_id)
        return len(events.queue) if events is not None else 0

    return waiting


class Busy:
    """Admission to the page's answer queue; thread-safe.

    Args:
        max_waiting: questions that may wait for an answer; one more is refused (1 or more).
        workers: answers in flight at once (ui.ASK_CONCURRENCY).
        waiting: how many wait now; ``build_ui`` counts gradio's "ask" queue (`queued`) when not given.
        clock: seconds, monotonic (``time.monotonic``); tests pass a fake one.
        recent: how many of the last answer times (and paces) the estimate averages.
    """

    def __init__(self, max_waiting: int, *, workers: int, waiting: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.monotonic, recent: int = 32):
        if max_waiting < 1 or workers < 1:
            raise ValueError(f"max_waiting={max_waiting!r} and workers={workers!r} must be 1 or more")
        self.max_waiting, self.workers, self.waiting, self.clock = max_waiting, workers, waiting, clock
        # Questions the page itself let in (the chat checks before it joins, ui.py) are refused at the
        # gate only past twice the cap: between their check and their join, others may have joined.
        self.hard_cap = 2 * max_waiting
        self._times: deque[float] = deque(maxlen=recent)  # how long the recent answers took
        self._paces: deque[float] = deque(maxlen=recent)  # between two answers finishing while others waited
        self._finished: float | None = None  # when the last answer finished with others waiting; None: none waited
        self._joining = 0  # let in by the gate, not yet in gradio's queue (the join's reply not sent)
        self._lock = threading.Lock()

    def ahead(self) -> int:
        """Questions waiting now: in the queue, and on their way into it."""
        return (self.waiting() if self.waiting else 0) + self._joining

    def wait_s(self, waiting: int) -> float:
        """Seconds until ``waiting`` questions are answered, at the recent pace."""
        with self._lock:
            if self._paces:
                return sum(self._paces) / len(self._paces) * waiting
            each = sum(self._times) / len(self._times) if self._times else FIRST_GUESS_S
        return each * waiting / self.workers

    def line(self) -> str:
        """The refusal's line for the questions waiting now."""
        n = self.ahead()
        return busy_line(n, self.wait_s(n))

    def refusal(self) -> str | None:
        """The line when ``max_waiting`` or more questions wait now, else None (a question may join)."""
        n = self.ahead()
        return busy_line(n, self.wait_s(n)) if n >= self.max_waiting else None

    def admit(self, cap: int | None = None) -> tuple[str, int] | None:
        """Let a question join (None; counted as joining until `joined`), or (the line, Retry-After seconds)."""
        with self._lock:
            n = self.ahead()
            if n < (cap or self.max_waiting):
                self._joining += 1
                return None
        wait = self.wait_s(n)
        return busy_line(n, wait), retry_after(wait)

    def joined(self) -> None:
        """A question `admit` let in is in the queue now (or its join failed)."""
        with self._lock:
            self._joining -= 1

    @contextmanager
    def answering(self) -> Iterator[None]:
        """Time one answer, and the pace while others wait (they make the estimate)."""
        start = self.clock()
        try:
            yield
        finally:
            end = self.clock()
            self.took(end - start)
            queued = self.waiting() if self.waiting else 0
            with self._lock:
                if queued and self._finished is not None:  # a slot freed for the next waiting question
                    self._paces.append(max(0.0, end - self._finished))
                self._finished = end if queued else None  # an empty queue: the next pace starts afresh

    def took(self, seconds: float) -> None:
        """Record an answer that took ``seconds``."""
        with self._lock:
            self._times.append(max(0.0, seconds))
