"""The actor runtime inside and across processes: refs, errors, rebuilds, timers."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import pykka
import pytest

from actors import Actor, ActorDeadError, ActorSystem, AskTimeout, RemoteError, RestartLimit, SystemStopped
from actors.testing import Collector, Count, Echo, Fail, Received
from tests.helpers import wait_until


class Flaky(Actor):
    """Raises on a told Fail; counts how many instances were built."""

    built = 0

    def __init__(self) -> None:
        super().__init__()
        Flaky.built += 1
        self.seen: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Fail):
            raise RuntimeError(message.why)
        if message == "seen":
            return list(self.seen)
        self.seen.append(message)
        return None


class Ticker(Actor):
    def __init__(self, done: threading.Event, repeats: int) -> None:
        super().__init__()
        self.done, self.repeats, self.ticks = done, repeats, 0
        self.timer = None

    def on_start(self) -> None:
        self.schedule(0.02, "once")
        self.timer = self.schedule_every(0.01, "tick")

    def on_receive(self, message: Any) -> Any:
        if message == "tick":
            self.ticks += 1
            if self.ticks == self.repeats:
                self.timer.cancel()
                self.done.set()
        if message == "ticks":
            return self.ticks
        return message


class Unpicklable(Actor):
    def on_receive(self, message: Any) -> Any:
        return threading.Lock()


def test_local_ref_has_the_same_face_as_a_remote_one(system: ActorSystem, remote: str) -> None:
    local = system.spawn(Echo, name="echo")
    far = system.ref(remote, "echo")
    for ref in (local, far):
        assert ref.ask(("x", 1), timeout=5) == ("x", 1)
        assert ref.ask(2, block=False, timeout=5).get() == 2
        ref.tell("fire and forget")
    assert system.ref(str(local.address)).name == "echo"


def test_exception_in_a_remote_ask_comes_back_and_the_actor_goes_on(system: ActorSystem, remote: str) -> None:
    echo = system.ref(remote, "echo")
    with pytest.raises(RuntimeError, match="boom"):
        echo.ask(Fail("boom"), timeout=5)
    assert echo.ask("alive", timeout=5) == "alive"


def test_unpicklable_reply_becomes_a_clear_error(system: ActorSystem) -> None:
    with ActorSystem() as other:
        other.spawn(Unpicklable, name="u")
        with pytest.raises((TypeError, RemoteError), match="pickle"):
            system.ref(other.endpoint, "u").ask("give me a lock", timeout=5)


def test_local_ask_timeout_is_an_ask_timeout(system: ActorSystem) -> None:
    class Slow(Actor):
        def on_receive(self, message: Any) -> Any:
            threading.Event().wait(0.5)

    slow = system.spawn(Slow, name="slow")
    with pytest.raises(AskTimeout):
        slow.ask("x", timeout=0.05)
    with pytest.raises(pykka.Timeout):  # one except catches both kinds
        slow.ask("x", timeout=0.05)


def test_actor_that_raises_on_a_tell_is_rebuilt_from_its_factory(system: ActorSystem) -> None:
    Flaky.built = 0
    ref = system.spawn(Flaky, name="flaky")
    ref.tell("a")
    ref.tell(Fail("crash"))
    assert wait_until(lambda: system.restarts("flaky") == 1, 5)
    assert ref.ask("seen", timeout=5) == []  # a fresh instance, same name, same ref
    assert Flaky.built == 2


def test_rebuilds_stop_at_the_restart_limit(system: ActorSystem) -> None:
    ref = system.spawn(Flaky, name="fragile", restart=RestartLimit(max_restarts=2, within=60))
    for _ in range(3):
        before = system.restarts("fragile")
        ref.tell(Fail("again"))
        wait_until(lambda: system.restarts("fragile") > before or not ref.is_alive(), 5)
    assert wait_until(lambda: not ref.is_alive(), 5)
    assert system.restarts("fragile") == 2
    with pytest.raises(ActorDeadError, match="gave up after repeated failures"):
        ref.ask("seen", timeout=1)


def test_spawn_rejects_duplicate_names_and_non_actors(system: ActorSystem) -> None:
    system.spawn(Echo, name="one")
    with pytest.raises(ValueError, match="already runs"):
        system.spawn(Echo, name="one")
    with pytest.raises(TypeError, match=r"pykka\.Actor"):
        system.spawn(dict, name="two")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="without '#'"):
        system.spawn(Echo, name="a#b")


def test_timers_deliver_into_the_mailbox_and_cancel(system: ActorSystem) -> None:
    done = threading.Event()
    ref = system.spawn(Ticker, done, 5, name="ticker")
    assert done.wait(5)
    ticks = ref.ask("ticks")
    assert ticks == 5
    assert ref.ask("once") == "once"


class SlowTicker(Actor):
    """Its first tick blocks until released, so later ticks queue up behind it."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__()
        self.release, self.ticks, self.timer = release, 0, None

    def on_start(self) -> None:
        self.timer = self.schedule_every(0.005, "tick")

    def on_receive(self, message: Any) -> Any:
        if message == "tick":
            self.ticks += 1
            if self.ticks == 1:
                self.release.wait(5)
                self.timer.cancel()  # ticks are already queued behind this one
        if message == "queued":
            return self.actor_inbox.qsize()
        return self.ticks if message == "ticks" else message


def test_cancelled_timer_drops_ticks_already_in_the_mailbox(system: ActorSystem) -> None:
    release = threading.Event()
    ref = system.spawn(SlowTicker, release, name="slow-ticker")
    deadline = time.monotonic() + 5
    while system._pykka_ref("slow-ticker").actor_inbox.qsize() < 3 and time.monotonic() < deadline:
        time.sleep(0.005)  # waiting for the timer to queue ticks: there is no event for it
    assert system._pykka_ref("slow-ticker").actor_inbox.qsize() >= 3
    release.set()
    assert ref.ask("ticks", timeout=5) == 1


def test_messages_between_two_systems_in_one_process(system: ActorSystem) -> None:
    with ActorSystem("tcp://127.0.0.1:0") as other:
        box = other.spawn(Collector, name="box")
        far = system.ref(other.endpoint, "box")
        for i in range(5):
            far.tell(i)
        assert far.ask(Received(), timeout=5) == [0, 1, 2, 3, 4]
        assert box.ask(Count()) == 5


def test_stopped_system_fails_pending_and_new_asks(system: ActorSystem) -> None:
    with ActorSystem() as other:
        endpoint = other.endpoint
    with pytest.raises(AskTimeout):
        system.ref(endpoint, "x").ask(1, timeout=0.2)
    with pytest.raises(SystemStopped):
        other.spawn(Echo, name="late")


class _Extension:
    """A layer's per-system state, as the Spawner is: counts how often it is made and closed."""

    made = 0

    def __init__(self, system: ActorSystem) -> None:
        type(self).made += 1
        self.system = system
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_an_extension_is_made_once_per_system_and_closed_by_stop() -> None:
    _Extension.made = 0
    with ActorSystem() as system:
        first = system.extension(_Extension)
        assert system.extension(_Extension) is first and first.system is system
        with ActorSystem() as other:
            assert other.extension(_Extension) is not first
        assert first.closed == 0
    assert first.closed == 1 and _Extension.made == 2
    system.stop()  # idempotent: closed once
    assert first.closed == 1
    with pytest.raises(SystemStopped):
        system.extension(_Extension)  # nothing would close a new one


# ---- an inline actor's on_start comes first ------------------------------------


class StartsFirst(Actor):
    """Inline; counts the messages it handles, and those it handled before ``on_start`` ran."""

    inline = True

    def __init__(self, enough: int, got_enough: threading.Event) -> None:
        super().__init__()
        self.enough, self.got_enough = enough, got_enough
        self.started = False
        self.handled = self.before_start = 0

    def on_start(self) -> None:
        self.started = True

    def on_receive(self, message: Any) -> Any:
        if message == "report":
            return (self.handled, self.before_start)
        self.handled += 1
        self.before_start += not self.started
        if self.handled == self.enough:
            self.got_enough.set()
        return None


def _hammer(endpoint: str, name: str, connected: Any, sent: Any, stop: Any) -> None:
    """A child process: tell ``name`` at ``endpoint`` over and over until ``stop`` (bounded in count and time)."""
    with ActorSystem() as system:
        system.control(endpoint).ping()  # the connection is made and authenticated before the tells
        connected.set()
        ref = system.ref(endpoint, name)
        deadline = time.monotonic() + 60
        for i in range(2_000_000):
            if stop.is_set() or time.monotonic() > deadline:
                break
            ref.tell(i)
            sent.value = i + 1


def test_an_inline_actor_handles_nothing_before_its_on_start(system: ActorSystem) -> None:
    """pykka runs ``on_start`` before the first message; an inline actor must too, also when a
    peer process's messages for its name already wait on the node's socket as it is spawned.

    The node's I/O thread is held in a timer while the actor is spawned, so the tells the peer
    keeps sending wait in ZeroMQ, and the setup the spawn queues is behind them. Nothing on
    this side touches the actor until it has handled the peer's tells (an ask from here would
    queue behind the setup and hide the bug)."""
    ctx = multiprocessing.get_context("spawn")
    connected, stop = ctx.Event(), ctx.Event()
    sent = ctx.Value("q", 0)
    proc = ctx.Process(target=_hammer, args=(system.endpoint, "starts-first", connected, sent, stop), daemon=True)
    proc.start()
    try:
        assert connected.wait(30), "the peer process never reached the node"
        held, release, got_enough = threading.Event(), threading.Event(), threading.Event()
        system.call_later(0, lambda: (held.set(), release.wait(10)))
        try:
            assert held.wait(10)
            start = sent.value
            assert wait_until(lambda: sent.value >= start + 200, 20), "the peer stopped sending"
            ref = system.spawn(StartsFirst, 200, got_enough, name="starts-first")
        finally:
            release.set()
        assert got_enough.wait(20), "the actor never got the peer's tells"
        handled, before_start = ref.ask("report")
        assert before_start == 0, f"{before_start} of {handled} messages were handled before on_start"
    finally:
        stop.set()
        proc.join(20)
        if proc.is_alive():
            proc.kill()
            proc.join(10)
