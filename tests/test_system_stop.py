"""An actor system stopping: by a signal as by ``stop()``, every actor's ``on_stop`` runs, and what
its actors and other nodes still send meanwhile is delivered or dropped quietly, never a failure."""

from __future__ import annotations

import faulthandler
import logging
import multiprocessing
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from actors import Actor, ActorSystem, SystemStopped
from actors.host import Hosted, host
from tests.helpers import OnStop, wait_until


class _Marks(Actor):
    """Writes a file once started and another once stopped: what another process can see of it."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = Path(directory)

    def on_start(self) -> None:
        (self.directory / "started").write_text("yes")

    def on_stop(self) -> None:
        (self.directory / "stopped").write_text("yes")

    def on_receive(self, message: Any) -> Any:
        return message


def _host_marks(endpoint: str, directory: str, sigint: Any = signal.default_int_handler) -> None:
    # This child inherits an ignored SIGINT from a test run started in the background (a CI runner's
    # `cmd &`, nohup), and a host keeps an ignored SIGINT on purpose (see the test after the next): so
    # it starts as a foreground process would, unless told otherwise.
    signal.signal(signal.SIGINT, sigint)
    with open(Path(directory) / "stacks.txt", "w") as stacks:  # where SIGUSR1 writes every thread's stack
        faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
        host(endpoint, [Hosted("marks", _Marks, (directory,))])


def _stacks_of(proc: Any, directory: Path) -> str:
    """A ``_host_marks`` process that has not ended: its signal masks (blocked, ignored, pending: was
    the stop signal ever delivered?) and every thread's stack (what it hangs in)."""
    try:
        with open(f"/proc/{proc.pid}/status") as status:
            masks = "".join(line for line in status if line.startswith(("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")))
    except OSError as exc:
        masks = f"(no /proc status: {exc})\n"
    os.kill(proc.pid, signal.SIGUSR1)
    stacks = directory / "stacks.txt"
    wait_until(lambda: "most recent call first" in stacks.read_text(), 10)
    return masks + stacks.read_text()


class _SignalledWhileMade(_Marks):
    """Its process gets SIGTERM while this actor is being made: before the host began to wait for signals."""

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        os.kill(os.getpid(), signal.SIGTERM)


def _host_signalled(endpoint: str, directory: str) -> None:
    host(endpoint, [Hosted("marks", _SignalledWhileMade, (directory,))])


def test_a_stop_signal_that_comes_while_the_actors_start_still_stops_them(tmp_path: Path) -> None:
    """The host caught stop signals only once it waited for them: a SIGTERM just after an actor had
    started killed the process (exit -15) and the actor's on_stop never ran (1 run in 40 of the test
    below failed so)."""
    proc = multiprocessing.get_context("spawn").Process(target=_host_signalled, args=(f"ipc://{tmp_path}/h.sock", str(tmp_path)))
    proc.start()
    try:
        proc.join(30)
        assert proc.exitcode == 0
        assert (tmp_path / "started").exists() and (tmp_path / "stopped").exists()
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_the_hosted_actors_so_their_on_stop_runs(tmp_path: Path, signum: int) -> None:
    """The signal used to mark the system stopped before ``stop()`` ran, which then took its work as done:
    the process exited 0 with no actor stopped (a peer's files never closed, no agent told)."""
    proc = multiprocessing.get_context("spawn").Process(target=_host_marks, args=(f"ipc://{tmp_path}/h.sock", str(tmp_path)))
    proc.start()
    try:
        assert wait_until(lambda: (tmp_path / "started").exists() or not proc.is_alive(), 30)
        assert (tmp_path / "started").exists(), f"the hosted actor never started (child exit code {proc.exitcode})"
        assert proc.pid is not None
        os.kill(proc.pid, signum)
        proc.join(30)
        if proc.is_alive():  # seen once in a loaded CI run (SIGINT): say where it hangs
            stopped = (tmp_path / "stopped").exists()
            pytest.fail(f"still running 30 s after signal {signum} (actor stopped: {stopped}); its threads:\n{_stacks_of(proc, tmp_path)}")
        assert proc.exitcode == 0
        assert (tmp_path / "stopped").exists(), "the signal ended the process without stopping its actor"
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()


def _signal_masks(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as status:
        return {k: int(v, 16) for k, v in (line.split(":") for line in status) if k in ("SigIgn", "SigCgt")}


def test_a_host_started_with_sigint_ignored_leaves_it_ignored_and_stops_on_sigterm(tmp_path: Path) -> None:
    """A supervised child (or a background job) has SIGINT ignored: Ctrl-C is its supervisor's. Its host
    must not take SIGINT over; SIGTERM still stops it cleanly. (Why the test above resets SIGINT first:
    a CI run started in the background failed it so, the child rightly deaf to SIGINT.)"""
    proc = multiprocessing.get_context("spawn").Process(target=_host_marks, args=(f"ipc://{tmp_path}/h.sock", str(tmp_path), signal.SIG_IGN))
    proc.start()
    try:
        assert wait_until(lambda: (tmp_path / "started").exists() or not proc.is_alive(), 30)
        assert proc.pid is not None and proc.is_alive()
        masks = _signal_masks(proc.pid)
        bit = 1 << (signal.SIGINT - 1)
        assert masks["SigIgn"] & bit and not masks["SigCgt"] & bit, f"the host took SIGINT over: {masks}"
        assert masks["SigCgt"] & (1 << (signal.SIGTERM - 1)), f"the host does not catch SIGTERM: {masks}"
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(30)
        assert proc.exitcode == 0 and (tmp_path / "stopped").exists()
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()


class _Recorder(Actor):
    def __init__(self, got: list[Any]) -> None:
        super().__init__()
        self.got = got

    def on_receive(self, message: Any) -> None:
        self.got.append(message)


class _Teller(Actor):
    """Tells ``to`` what it is told, then sets ``handled``: its handler ran to the end."""

    def __init__(self, to: str, handled: threading.Event) -> None:
        super().__init__()
        self.to, self.handled = to, handled

    def on_receive(self, message: Any) -> None:
        assert self.actor_system is not None
        self.actor_system.ref(self.to).tell(f"from {message}")
        self.handled.set()


@pytest.mark.parametrize("recorder_first", [False, True], ids=["to-a-running-sibling", "to-a-stopped-sibling"])
def test_a_tell_to_a_sibling_while_the_system_stops_is_delivered_or_dropped_never_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, recorder_first: bool
) -> None:
    """Actors stop one after another. One still running may tell a sibling: delivered if that sibling is
    still running (it used to raise 'no actor named', every name struck off before any actor stopped),
    dropped if it has stopped (as a tell it had queued is), and either way the sender's handler goes on."""
    endpoint = f"ipc://{tmp_path}/s.sock"
    got: list[Any] = []
    handled = threading.Event()

    def have_the_teller_tell(system: ActorSystem) -> None:
        system.ref(endpoint, "teller").tell("go")
        handled.wait(10)

    system = ActorSystem(endpoint)
    if recorder_first:
        system.spawn(_Recorder, got, name="recorder")
    system.spawn(OnStop, have_the_teller_tell, name="gate")
    system.spawn(_Teller, f"{endpoint}#recorder", handled, name="teller")
    if not recorder_first:
        system.spawn(_Recorder, got, name="recorder")
    with caplog.at_level(logging.WARNING):
        system.stop()
    assert handled.is_set(), "the teller's handler did not run to its end"
    assert got == ([] if recorder_first else ["from go"])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_a_message_from_another_node_for_an_actor_stopped_with_its_system_is_counted_not_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Other nodes cannot know a system is stopping: what they send its stopped actors meanwhile is
    expected, so it is counted (unknown_actor) without the warning a wrong name gets (seen in
    `zactor bench membership`: a removed server's log said 'a Removed for actor raft, which this node
    does not host' as its process stopped)."""
    other = ActorSystem(f"ipc://{tmp_path}/other.sock")
    system = ActorSystem(f"ipc://{tmp_path}/s.sock")

    def tell_it_from_the_other_node(me: ActorSystem) -> None:
        other.ref(me.endpoint, "gone").tell("late")
        wait_until(lambda: me.node.counters.unknown_actor >= 1, 10)  # no event: it lands on the I/O thread

    try:
        system.spawn(_Recorder, [], name="gone")
        system.spawn(OnStop, tell_it_from_the_other_node, name="afar")  # stopped after "gone"
        with caplog.at_level(logging.WARNING):
            system.stop()
        assert system.node.counters.unknown_actor == 1
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    finally:
        system.stop()
        other.stop()


class _AsksAfterStop(Actor):
    """Answers an ask only after telling another node something, which it first waits to be unable to do."""

    def __init__(self, started: threading.Event) -> None:
        super().__init__()
        self.started = started

    def on_receive(self, message: Any) -> str:
        system = self.actor_system
        assert system is not None
        self.started.set()
        assert system._stopped.wait(10)  # stop() has begun (it waits for this handler); the event, not a poll
        system.ref("ipc:///tmp/zactor-nobody-here.sock", "x").tell("hello")  # raises SystemStopped
        return "answered"


@pytest.mark.parametrize("asker", ["local", "remote"])
def test_an_ask_cut_short_by_its_systems_stop_is_answered_with_the_stop_not_with_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, asker: str
) -> None:
    """A handler whose system stops under it is not a failure, but its asker still has no answer: it used
    to get None (the handler's error swallowed as if a tell's), which a client would take for a value."""
    other = ActorSystem(f"ipc://{tmp_path}/other.sock")
    system = ActorSystem(f"ipc://{tmp_path}/s.sock")
    started = threading.Event()
    try:
        system.spawn(_AsksAfterStop, started, name="relay")
        ref = (system if asker == "local" else other).ref(system.endpoint, "relay")
        future = ref.ask("question", block=False, timeout=20)
        assert started.wait(10)
        with caplog.at_level(logging.ERROR):
            system.stop()
        with pytest.raises(SystemStopped, match="is stopped"):  # the same type for a remote asker: re-raised as sent
            answer = future.get(timeout=10)
            pytest.fail(f"the asker was answered {answer!r}")
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    finally:
        system.stop()
        other.stop()
