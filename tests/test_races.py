"""Races found by reading the runtime, each pinned by a test that failed before its fix.

Each test forces the interleaving that used to go wrong (holding a lock the
racing thread needs, stopping an actor from inside the put that races with
it), so none depends on luck or wall-clock speed.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from actors import Actor, ActorDeadError, ActorSystem, ReplyFuture, SystemStopped
from actors.testing import Echo, Fail
from tests.helpers import wait_until
from transport import Counters, Envelope, Kind, Node


@pytest.fixture
def tight_switching() -> Iterator[None]:
    """Switch threads as often as CPython allows, so an unlocked window is hit within a bounded loop."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_node_close_waits_for_a_send_in_progress() -> None:
    """The I/O thread used to destroy the ZeroMQ context while another thread was inside a send."""
    node = Node(on_message=lambda env: None)
    node._send_lock.acquire()  # as an actor thread inside node.send() holds it
    closer = threading.Thread(target=node.close)
    try:
        closer.start()
        closer.join(timeout=0.5)  # long enough for the I/O thread to reach its teardown
        assert not node._ctx.closed, "the context was destroyed under a thread that was sending"
    finally:
        node._send_lock.release()
    closer.join(timeout=10)
    assert not closer.is_alive()
    assert node._ctx.closed
    with pytest.raises(ConnectionError, match="closed"):
        node.send("ipc:///nonexistent/zactor-race.sock", Envelope(Kind.TELL, "x", node.endpoint, 0, "late"))


def test_counters_snapshot_never_shows_a_message_without_its_bytes(tight_switching: None) -> None:
    """Counters were written under the send lock and read under their own: snapshots tore."""
    counters = Counters()
    stop = threading.Event()

    def writer() -> None:
        for _ in range(2_000_000):
            if stop.is_set():
                return
            counters.count_sent("Msg", 10)

    thread = threading.Thread(target=writer)
    thread.start()
    torn = []
    try:
        for _ in range(20_000):
            snap = counters.snapshot()
            sent, nbytes = snap["sent"].get("Msg", 0), snap["sent_bytes"].get("Msg", 0)
            if nbytes != 10 * sent:
                torn.append((sent, nbytes))
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not torn, f"{len(torn)} torn snapshots, e.g. {torn[:3]}"


def test_counters_read_while_tallies_are_written_are_exact(tight_switching: None) -> None:
    """Messages are counted into per-writer tallies without a lock. Read and reset while the
    writers run, the totals must miss nothing: not what a retired tally (a closed channel's)
    counted, and not around a reset made mid-stream. (Whether a read can show a message
    without its bytes is not tested here: a tally keeps them in one tuple, and CPython does not
    switch threads between two plain stores either, so no test could catch that tear.)"""
    counters = Counters()
    stop = threading.Event()
    written = [0, 0]

    def writer(i: int) -> None:
        tally = counters.tally()
        for _ in range(100_000):
            if stop.is_set():
                break
            tally.count_sent("Msg", 10)
            tally.received += 1
            written[i] += 1
        counters.retire(tally)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    reset_window: tuple[int, int] | None = None
    try:
        for _ in range(1_000_000):  # until the writers are done (bounded)
            if not any(t.is_alive() for t in threads):
                break
            counters.snapshot()  # reads racing the writers, as a remote reader's would
            if reset_window is None and sum(written) >= 10_000:
                before = sum(written)
                counters.reset()
                reset_window = (before, sum(written))  # the reset fell between these two counts
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert reset_window is not None, "the writers finished before the reset"
    total = sum(written)
    after = counters.snapshot()
    assert total - reset_window[1] <= after["sent"]["Msg"] <= total - reset_window[0]
    assert after["sent_bytes"]["Msg"] == 10 * after["sent"]["Msg"] == 10 * counters.received
    counters.reset()
    assert counters.snapshot()["sent"] == {} and counters.received == 0
    assert counters.sent["Msg"] == counters.sent_bytes["Never"] == 0  # a type not sent reads 0, not KeyError


def test_blocking_ask_on_the_io_thread_is_refused_at_once(system: ActorSystem) -> None:
    """A blocking ask on the I/O thread used to wait its whole deadline for itself."""
    with ActorSystem() as other:
        other.spawn(Echo, name="echo")
        far = system.ref(other.endpoint, "echo")
        assert far.ask("warm", timeout=10) == "warm"
        outcome: queue.SimpleQueue[BaseException | Any] = queue.SimpleQueue()

        def on_io_thread() -> None:
            try:
                outcome.put(far.ask("from the I/O thread", timeout=3.0))
            except BaseException as exc:
                outcome.put(exc)

        system.call_later(0, on_io_thread)
        result = outcome.get(timeout=10)
        assert isinstance(result, RuntimeError) and "I/O thread" in str(result), repr(result)
        assert far.ask("still fine", timeout=10) == "still fine"


def test_waiting_on_the_io_thread_for_a_future_another_thread_made_is_refused(system: ActorSystem) -> None:
    """The ask is made (on its channel) by the test's thread and handed to the I/O thread,
    which must refuse to block on it as it refuses its own asks."""
    with ActorSystem() as other:
        other.spawn(Echo, name="echo")
        far = system.ref(other.endpoint, "echo")
        assert far.ask("warm", timeout=10) == "warm"
        future = far.ask("made here", block=False, timeout=10)
        outcome: queue.SimpleQueue[BaseException | Any] = queue.SimpleQueue()

        def on_io_thread() -> None:
            try:
                outcome.put(future.get(timeout=3.0))
            except BaseException as exc:
                outcome.put(exc)

        system.call_later(0, on_io_thread)
        result = outcome.get(timeout=10)
        assert isinstance(result, RuntimeError) and "I/O thread" in str(result), repr(result)
        assert future.get(timeout=10) == "made here"  # still answered, to the thread that may wait


class _StopsBeforePut:
    """A mailbox whose put of "late" first stops its actor and waits for its drain: the race, forced."""

    def __init__(self, actor: Actor) -> None:
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._actor = actor

    def put(self, envelope: Any) -> None:
        if envelope.message == "late":
            self._actor.actor_ref.stop(block=True, timeout=10)  # stopped and drained before the put lands
        self._q.put(envelope)

    def get(self) -> Any:
        return self._q.get()

    def empty(self) -> bool:
        return self._q.empty()

    def qsize(self) -> int:
        return self._q.qsize()


class StopsAsAskArrives(Actor):
    def _create_actor_inbox(self) -> Any:  # type: ignore[override]
        return _StopsBeforePut(self)

    def on_receive(self, message: Any) -> Any:
        return message


@pytest.mark.parametrize("where", ["remote", "local"])
def test_ask_put_as_the_actor_stops_is_answered_dead_at_once(system: ActorSystem, where: str) -> None:
    """An ask put into a mailbox just after the actor's stop-time drain used to wait its whole deadline."""
    with ActorSystem() as other:
        ref = other.spawn(StopsAsAskArrives, name="s")
        target = system.ref(other.endpoint, "s") if where == "remote" else ref
        assert target.ask("hello", timeout=10) == "hello"
        with pytest.raises(ActorDeadError):
            target.ask("late", timeout=5.0)


class Gated(Actor):
    """Blocks on ``gate`` when told "hold"; raises on Fail; remembers everything else."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.seen: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if message == "hold":
            self.gate.wait(10)
            return None
        if isinstance(message, Fail):
            raise RuntimeError(message.why)
        if message == "seen":
            return list(self.seen)
        self.seen.append(message)
        return None


def test_rebuilt_actor_gets_the_tells_queued_behind_the_failure(system: ActorSystem) -> None:
    """Tells queued behind the one that crashed the actor used to vanish with the old instance."""
    gate = threading.Event()
    ref = system.spawn(Gated, gate, name="gated")
    ref.tell("hold")
    ref.tell(Fail("crash"))
    for item in ("a", "b", "c"):
        ref.tell(item)
    gate.set()
    assert wait_until(lambda: system.restarts("gated") == 1, 10)
    assert ref.ask("seen", timeout=10) == ["a", "b", "c"]


class _HeldExcInfo:
    """An ``exc_info`` whose reading blocks until released: holds ``set_exception`` inside its
    completion, so another thread can complete the same future at that very moment."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.reading = threading.Event()
        self.release = threading.Event()

    def __bool__(self) -> bool:
        return True

    def __getitem__(self, i: int) -> Any:
        self.reading.set()
        self.release.wait(10)
        return (type(self.exc), self.exc, None)[i]


def test_a_future_completed_by_two_threads_at_once_completes_once() -> None:
    """System teardown (set_exception) and an actor's thread (set) used to both release the future's lock."""
    future = ReplyFuture("Get", "counter")
    held = _HeldExcInfo(SystemStopped("stopping"))
    errors: list[BaseException] = []

    def teardown() -> None:
        try:
            future.set_exception(held)
        except BaseException as exc:
            errors.append(exc)

    stopper = threading.Thread(target=teardown)
    stopper.start()
    assert held.reading.wait(10)  # the teardown is inside set_exception now
    future.set("the actor's answer")  # the actor's thread completes it meanwhile
    held.release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert errors == [], f"completing twice raised {errors!r}"
    assert future.get(timeout=0) == "the actor's answer"  # the first completion stands
    assert future.get(timeout=0) == "the actor's answer"

