"""Warnings once per cause: the first time a cause is seen it is logged, its repeats are counted.

Why a room: a misdirected client sends a request every 100 ms, and a server
that logs each one buries the one line that matters (30 identical lines a
second). A warning a user must see belongs at the default level, so it must
come once per cause: the first occurrence in full, then at most one line a
minute saying how many more came. Causes are kept in a bounded table (the
oldest forgotten first), so a stream of distinct causes cannot grow memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable

REPEAT_EVERY = 60.0
"""Seconds between the summary lines of one cause that keeps recurring."""

MAX_CAUSES = 1024
"""Causes remembered at most; the least recently seen is forgotten (and logged again if it returns)."""


class OncePerCause:
    """Warn through ``logger`` once per cause (any hashable); thread-safe."""

    def __init__(self, logger: logging.Logger, *, every: float = REPEAT_EVERY, max_causes: int = MAX_CAUSES) -> None:
        self._log = logger
        self._every = every
        self._max = max_causes
        self._seen: OrderedDict[Hashable, list] = OrderedDict()  # cause -> [last logged at, repeats since]
        self._lock = threading.Lock()

    def warn(self, cause: Hashable, msg: str, *args: object, level: int = logging.WARNING) -> bool:
        """Log ``msg % args`` if ``cause`` is new (or its last line is ``every`` seconds old); whether it was logged."""
        now = time.monotonic()
        with self._lock:
            entry = self._seen.get(cause)
            if entry is None:
                self._seen[cause] = [now, 0]
                while len(self._seen) > self._max:
                    self._seen.popitem(last=False)
                repeats = -1
            else:
                self._seen.move_to_end(cause)
                if now - entry[0] < self._every:
                    entry[1] += 1
                    return False
                repeats = entry[1]
                entry[0], entry[1] = now, 0
        if repeats < 0:
            self._log.log(level, msg, *args)
        else:
            self._log.log(level, msg + " (again; %d more like it in the last %.0f s)", *args, repeats + 1, self._every)
        return True

    def repeats(self, cause: Hashable) -> int:
        """How many times ``cause`` came since it was last logged (0 for a cause not seen)."""
        with self._lock:
            entry = self._seen.get(cause)
            return entry[1] if entry is not None else 0
