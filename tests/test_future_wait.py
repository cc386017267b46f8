"""``actors.wait``: one thread waits on asks to several nodes at once, on real processes and sockets.

A host that "answers late or never" is a real echo process stopped with
SIGSTOP (a paused process, as the soak's nemesis makes them): its requests
queue in the kernel and it answers once SIGCONT lets it run again.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, FIRST_EXCEPTION
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actors import ActorSystem, AskTimeout, BlockingOnIOThread, ChildSpec, ReplyFuture, Supervisor, wait
from actors.testing import Echo, Fail, serve_echo
from tests.helpers import Held, wait_until


@dataclass
class Host:
    """An echo process of the test's own: ``pause`` stops it (SIGSTOP), ``resume`` lets it answer."""

    endpoint: str
    pid: int

    def pause(self) -> None:
        """Stop the process and return once every thread of it is stopped (SIGSTOP is asynchronous:
        on a busy machine a thread can still answer an ask sent just after the kill)."""
        os.kill(self.pid, signal.SIGSTOP)
        assert wait_until(self._stopped, 10), f"echo process {self.pid} did not stop"

    def _stopped(self) -> bool:
        tasks = Path(f"/proc/{self.pid}/task")
        states = []
        for task in tasks.iterdir():
            try:
                stat = (task / "stat").read_text()
            except FileNotFoundError:  # a thread that just ended
                continue
            states.append(stat[stat.rindex(")") + 2])  # the state letter follows the command name
        return bool(states) and all(state in "tT" for state in states)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


@pytest.fixture
def hosts(supervisor: Supervisor, tmp_path: Path, system: ActorSystem) -> Iterator[list[Host]]:
    """Three echo processes, up and answering; every one running again (SIGCONT) before the supervisor stops them."""
    started: list[Host] = []
    try:
        for i in range(3):
            endpoint = f"ipc://{tmp_path}/echo-{i}.sock"
            supervisor.start_child(ChildSpec(f"echo-{i}", serve_echo, (endpoint,)))
            assert system.ref(endpoint, "echo").ask("ready?", timeout=30) == "ready?"
            pid = supervisor.pid(f"echo-{i}")
            assert pid is not None
            started.append(Host(endpoint, pid))
        yield started
    finally:
        for host in started:
            try:
                host.resume()
            except ProcessLookupError:
                pass


def echo(system: ActorSystem, host: Host) -> Any:
    return system.ref(host.endpoint, "echo")


@pytest.mark.slow
def test_wait_returns_the_answered_asks_and_leaves_the_silent_one_pending_never_cancelled(
    system: ActorSystem, hosts: list[Host]
) -> None:
    a, b, c = hosts
    c.pause()
    silent = echo(system, c).ask("late", block=False, timeout=60)
    fa = echo(system, a).ask("from a", block=False, timeout=60)
    fb = echo(system, b).ask("from b", block=False, timeout=60)
    # The silent one first: waiting on the futures one after another would spend the whole
    # timeout on it and then read nothing for the others.
    done, not_done = wait([silent, fa, fb], timeout=5)
    assert done == {fa, fb}
    assert not_done == {silent}
    assert (fa.get(timeout=0), fb.get(timeout=0)) == ("from a", "from b")
    with pytest.raises(AskTimeout):
        silent.get(timeout=0)
    c.resume()
    assert silent.get(timeout=20) == "late"  # the timed-out wait cancelled nothing


def test_first_completed_returns_with_the_one_answer_and_a_later_wait_gets_the_rest(
    system: ActorSystem, hosts: list[Host]
) -> None:
    a, b, c = hosts
    b.pause()
    c.pause()
    fb = echo(system, b).ask("b", block=False, timeout=60)
    fc = echo(system, c).ask("c", block=False, timeout=60)
    fa = echo(system, a).ask("a", block=False, timeout=60)
    began = time.monotonic()
    done, not_done = wait([fb, fc, fa], timeout=30, return_when=FIRST_COMPLETED)
    assert time.monotonic() - began < 30, "FIRST_COMPLETED waited out its timeout"
    assert done == {fa} and not_done == {fb, fc}
    b.resume()
    c.resume()
    done, not_done = wait([fb, fc], timeout=30)
    assert done == {fb, fc} and not not_done
    assert (fb.get(timeout=0), fc.get(timeout=0)) == ("b", "c")


def shared_future(system: ActorSystem, warm: Host, host: Host, message: Any) -> ReplyFuture:
    """An ask on the node's shared connection, completed by the I/O thread (as ``ask_async``'s are).

    Made on a thread of its own: ``ask_async`` moves its thread to the shared
    connections for good, and the test's thread must keep its channels.
    """
    out: queue.SimpleQueue[Any] = queue.SimpleQueue()
    far = echo(system, host)

    def run() -> None:
        try:
            asyncio.run(echo(system, warm).ask_async("warm", timeout=30))
            out.put(far.ask(message, block=False, timeout=60))
        except BaseException as exc:
            out.put(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    result = out.get(timeout=1)
    assert isinstance(result, ReplyFuture), repr(result)
    assert result._channel is None, "the future was meant to be completed by the I/O thread"
    return result


def test_futures_of_every_kind_in_one_wait(system: ActorSystem, hosts: list[Host]) -> None:
    a, b, c = hosts
    gate = threading.Event()
    held = system.spawn(Held, gate, name="held")
    local_echo = system.spawn(Echo, name="echo")
    c.pause()
    shared = shared_future(system, a, c, "shared")  # answered only once c runs again
    on_channel = echo(system, a).ask("channel", block=False, timeout=60)
    local = held.ask("local", block=False, timeout=60)
    local_now = local_echo.ask("local echo", block=False, timeout=60)
    mapped = echo(system, b).ask(20, block=False, timeout=60).map(lambda v: v + 1)
    joined = echo(system, a).ask("x", block=False, timeout=60).join(echo(system, b).ask("y", block=False, timeout=60))
    failing = echo(system, b).ask(Fail("on purpose"), block=False, timeout=60)
    everything = [shared, on_channel, local, local_now, mapped, joined, failing]

    done, not_done = wait(everything, timeout=3)
    assert not_done == {shared, local}, "only the paused host's and the held actor's asks are unanswered"
    assert done == {on_channel, local_now, mapped, joined, failing}
    assert not local._callbacks and not shared._callbacks, "wait left its wake-up callbacks on the futures"

    # Completed by other threads while this one waits: the actor's thread, the node's I/O thread.
    opener = threading.Timer(0.2, gate.set)
    resumer = threading.Timer(0.2, c.resume)
    opener.start()
    resumer.start()
    try:
        done, not_done = wait(everything, timeout=30)
    finally:
        opener.join(timeout=10)
        resumer.join(timeout=10)
    assert done == set(everything) and not not_done
    assert [f.get(timeout=0) for f in everything[:6]] == ["shared", "channel", "local", "local echo", 21, ["x", "y"]]
    with pytest.raises(RuntimeError, match="on purpose"):
        failing.get(timeout=0)


def test_first_exception_stops_at_the_error(system: ActorSystem, hosts: list[Host]) -> None:
    a, _b, c = hosts
    c.pause()
    silent = echo(system, c).ask("late", block=False, timeout=60)
    failing = echo(system, a).ask(Fail("on purpose"), block=False, timeout=60)
    began = time.monotonic()
    done, not_done = wait([silent, failing], timeout=30, return_when=FIRST_EXCEPTION)
    assert time.monotonic() - began < 30, "FIRST_EXCEPTION waited out its timeout"
    assert done == {failing} and not_done == {silent}
    c.resume()
    assert silent.get(timeout=20) == "late"


def test_a_future_another_thread_is_driving_completes_in_wait(system: ActorSystem, hosts: list[Host]) -> None:
    a, _b, c = hosts
    c.pause()
    handed: queue.SimpleQueue[Any] = queue.SimpleQueue()
    got: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def driver() -> None:  # asks on its own channel and waits on it (holding the channel's lock)
        try:
            future = echo(system, c).ask("driven", block=False, timeout=60)
            handed.put(future)
            got.put(future.get(timeout=30))
        except BaseException as exc:
            got.put(exc)

    thread = threading.Thread(target=driver)
    thread.start()
    try:
        future = handed.get(timeout=30)
        assert isinstance(future, ReplyFuture) and future._channel is not None
        assert wait_until(future._channel.lock.locked, 10), "the other thread never drove its channel"
        mine = echo(system, a).ask("mine", block=False, timeout=60)
        resumer = threading.Timer(0.2, c.resume)
        resumer.start()
        try:
            done, not_done = wait([future, mine], timeout=30)
        finally:
            resumer.join(timeout=10)
        assert done == {future, mine} and not not_done
        assert future.get(timeout=0) == "driven" and mine.get(timeout=0) == "mine"
    finally:
        c.resume()
        thread.join(timeout=30)
    assert got.get(timeout=1) == "driven"


def test_wait_reads_the_channel_of_a_thread_that_handed_its_future_over(system: ActorSystem, hosts: list[Host]) -> None:
    a = hosts[0]
    handed: queue.SimpleQueue[Any] = queue.SimpleQueue()
    finish = threading.Event()

    def asker() -> None:  # asks, hands the future over, never waits on it; stays alive so its channel does
        handed.put(echo(system, a).ask("handed over", block=False, timeout=60))
        finish.wait(30)

    thread = threading.Thread(target=asker)
    thread.start()
    try:
        future = handed.get(timeout=30)
        done, not_done = wait([future], timeout=30)
        assert done == {future} and not not_done
        assert future.get(timeout=0) == "handed over"
    finally:
        finish.set()
        thread.join(timeout=30)


def test_wait_on_the_io_thread_is_refused(system: ActorSystem, hosts: list[Host]) -> None:
    far = echo(system, hosts[0])
    outcome: queue.SimpleQueue[BaseException | Any] = queue.SimpleQueue()

    def on_io_thread() -> None:
        try:
            outcome.put(wait([far.ask("from the I/O thread", block=False, timeout=5)], timeout=2))
        except BaseException as exc:
            outcome.put(exc)

    system.call_later(0, on_io_thread)
    result = outcome.get(timeout=30)
    assert isinstance(result, BlockingOnIOThread), repr(result)
    assert far.ask("still fine", timeout=10) == "still fine"


def test_edges_no_futures_done_ones_a_zero_timeout_and_a_bad_return_when(system: ActorSystem, hosts: list[Host]) -> None:
    assert wait([], timeout=1) == (set(), set())
    assert wait([], timeout=1, return_when=FIRST_COMPLETED) == (set(), set())
    answered = echo(system, hosts[0]).ask("answered", block=False, timeout=60)
    assert answered.get(timeout=20) == "answered"
    hosts[1].pause()
    silent = echo(system, hosts[1]).ask("silent", block=False, timeout=60)
    assert wait([answered, silent, answered], timeout=0) == ({answered}, {silent})
    assert wait([answered, silent], timeout=0, return_when=FIRST_COMPLETED) == ({answered}, {silent})
    with pytest.raises(ValueError, match="return_when"):
        wait([answered], timeout=1, return_when="WHENEVER")
    with pytest.raises(TypeError, match="takes futures"):
        wait([answered, "not a future"], timeout=1)  # type: ignore[list-item]
    hosts[1].resume()
    assert silent.get(timeout=20) == "silent"


def test_without_a_timeout_wait_ends_at_the_asks_deadline(system: ActorSystem, hosts: list[Host]) -> None:
    hosts[2].pause()
    silent = echo(system, hosts[2]).ask("never in time", block=False, timeout=0.5)
    done, not_done = wait([silent], timeout=None)  # returns: past its deadline, no get would wait for it either
    assert done | not_done == {silent}
    with pytest.raises(AskTimeout):
        silent.get(timeout=0)
    hosts[2].resume()
