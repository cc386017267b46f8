"""Calls due at a time, run by the node's I/O thread between its reads.

Why a room: every timeout, retry, election timer and delayed (fault-held)
send in the system is one of these, and they must run on the I/O thread (so
what they touch has one user) without a thread of their own. Any thread adds
a call; the I/O thread runs the due ones at each turn of its loop and sleeps
in its poll no longer than the next one is away.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Timer:
    """Handle of a scheduled call; ``cancel()`` makes it a no-op."""

    __slots__ = ("cancelled", "fn")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class TimerQueue:
    """Scheduled calls in the order they fall due (ties: the order they were added)."""

    def __init__(self, label: str) -> None:
        self.label = label
        """The node's endpoint, for logs."""
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def add(self, delay: float, fn: Callable[[], Any]) -> Timer:
        """Schedule ``fn`` ``delay`` seconds from now (any thread)."""
        timer = Timer(fn)
        with self._lock:
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._seq), timer))
        return timer

    def run_due(self) -> int | None:
        """Run every due call (on the I/O thread); the poll timeout in ms until the next one, None if none."""
        heap, lock = self._heap, self._lock
        while True:
            with lock:
                if not heap:
                    return None
                when, _, timer = heap[0]
                wait = when - time.monotonic()
                if wait > 0:
                    return max(1, int(wait * 1000) + 1)
                heapq.heappop(heap)
            if not timer.cancelled:
                try:
                    timer.fn()
                except Exception:
                    log.exception("node %s: timer callback failed", self.label)
