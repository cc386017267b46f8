"""A stop signal landing while the main thread holds the stop event's lock: set, never a hang."""

from __future__ import annotations

import logging
import os
import signal
import threading

import pytest

from actors import Actor, ActorSystem
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


def test_a_handler_cut_short_by_its_systems_stop_is_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    """A stop signal's ``stop()`` stops the system before its actors: a tell in a handler running then
    raises SystemStopped, which is the process going away, not the actor failing (no traceback, no on_failure)."""
    started, proceed, told = threading.Event(), threading.Event(), threading.Event()
    failures: list[BaseException | None] = []

    class Teller(Actor):
        def on_receive(self, message: object) -> None:
            started.set()
            proceed.wait(10)
            try:
                assert self.actor_system is not None
                self.actor_system.ref("ipc:///tmp/zactor-nobody-here.sock", "x").tell("hello")
            finally:
                told.set()

        def on_failure(self, exception_type: object, exception_value: BaseException | None, traceback: object) -> None:
            failures.append(exception_value)

    system = ActorSystem()
    ref = system.spawn(Teller, name="teller")
    ref.tell("go")
    assert started.wait(10)
    stopping = threading.Thread(target=system.stop)
    stopping.start()
    for _ in range(200):  # until stop() has marked the system stopped (it then waits for the handler)
        if system.stopped:
            break
        threading.Event().wait(0.01)
    assert system.stopped
    with caplog.at_level(logging.ERROR):
        proceed.set()
        assert told.wait(10)
        stopping.join(15)
    assert not stopping.is_alive() and failures == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
