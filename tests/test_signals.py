"""A stop signal landing while the main thread holds the stop event's lock: set, never a hang."""

from __future__ import annotations

import os
import signal
import threading

from actors.signals import setting


def _signalled_inside_the_events_lock(handler_of: object) -> threading.Event:
    """SIGUSR1 raised while the main thread holds the event's lock (as ``wait`` and ``set`` do for an instant);
    the handler runs right there, before the lock is let go."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGUSR1, handler_of(stop))  # type: ignore[operator]
    try:
        with stop._cond:  # type: ignore[attr-defined]  # the lock Event.wait/set hold
            os.kill(os.getpid(), signal.SIGUSR1)  # delivered to this (the main) thread at the next bytecode
            assert not stop.is_set()  # the handler has run; the event waits for the lock
    finally:
        signal.signal(signal.SIGUSR1, previous)
    return stop


def test_the_handler_returns_at_once_and_the_event_is_set_when_the_lock_is_free() -> None:
    stop = _signalled_inside_the_events_lock(setting)
    assert stop.wait(10), "the event was never set"


def test_a_second_signal_before_the_first_is_served_sets_it_once_and_hangs_nothing() -> None:
    stop = threading.Event()
    handler = setting(stop)
    with stop._cond:  # type: ignore[attr-defined]
        handler(signal.SIGTERM, None)
        handler(signal.SIGTERM, None)
    assert stop.wait(10)
    handler(signal.SIGINT, None)  # already set: nothing to do
    assert stop.is_set()


def test_the_plain_way_would_hang_the_main_thread() -> None:
    """The bug this module exists for, shown on a thread of its own (the main thread must not hang): a handler
    that calls ``set`` while its thread holds the lock never returns."""
    stop = threading.Event()
    returned = threading.Event()

    def main_thread_stand_in() -> None:
        with stop._cond:  # type: ignore[attr-defined]
            if stop._cond._lock.acquire(timeout=0.5):  # type: ignore[attr-defined]  # what stop.set() would do here
                stop._cond._lock.release()  # type: ignore[attr-defined]
                returned.set()

    t = threading.Thread(target=main_thread_stand_in, daemon=True)
    t.start()
    t.join(5)
    assert not returned.is_set(), "Event's lock is reentrant after all: the handler would not need a thread"
