"""Stopping on a signal without deadlocking: how a signal handler sets a ``threading.Event``.

A Python signal handler runs in the main thread, between two bytecodes of
whatever that thread was doing. ``Event.set`` takes the event's lock, and so
does the main thread itself for an instant every time it waits on the same
event (``while not stop.wait(0.5)``) or sets it: a signal that lands in that
instant (Ctrl-C in a terminal reaches the whole process group; ``timeout``
and a second SIGTERM do the same) runs a handler that waits for a lock its
own thread holds, and the process hangs for good. Found so: `zactor kv
cluster` under ``timeout``, SIGTERM'd with its servers, never exited.

The handler here only starts a thread that sets the event: it returns at
once, and the lock is taken when the main thread has let it go.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def setting(event: threading.Event) -> Callable[[int, Any], None]:
    """A signal handler that sets ``event`` from another thread (never waiting on a lock in the handler)."""

    def handle(signum: int, frame: Any) -> None:
        if not event.is_set():  # reads a flag: takes no lock
            threading.Thread(target=event.set, name=f"zactor-signal-{signum}", daemon=True).start()

    return handle
