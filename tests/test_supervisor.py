"""Supervision of real child processes: kill -9, restarts from persisted state, limits."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from actors import EXIT_DONE, ActorDeadError, ActorSystem, AskTimeout, ChildSpec, Supervisor
from actors.testing import Get, Incr, crash_at_once, serve_counter
from tests.helpers import wait_until


def _answer(ref, message, timeout: float = 10.0):
    """Ask until the (re)started child answers; a restart makes the first tries fail."""
    result = []

    def attempt() -> bool:
        try:
            result.append(ref.ask(message, timeout=0.2))
            return True
        except (AskTimeout, ActorDeadError):
            return False

    assert wait_until(attempt, timeout, interval=0.0), f"no answer to {message!r} within {timeout} s"
    return result[0]


def test_kill_9_restarts_the_child_and_the_counter_goes_on(
    supervisor: Supervisor, system: ActorSystem, tmp_path: Path
) -> None:
    endpoint = f"ipc://{tmp_path}/counter.sock"
    supervisor.start_child(ChildSpec("counter", serve_counter, (endpoint, str(tmp_path / "counter.state"))))
    counter = system.ref(endpoint, "counter")
    assert _answer(counter, Get()) == 0  # up: from here on one ask per increment (a retried Incr would count twice)
    for _ in range(5):
        counter.ask(Incr(1), timeout=10)
    first_pid = supervisor.pid("counter")
    os.kill(first_pid, signal.SIGKILL)
    assert supervisor.wait_for(lambda: supervisor.restarts("counter") == 1 and supervisor.pid("counter") is not None, 10)
    assert supervisor.pid("counter") != first_pid
    assert _answer(counter, Get()) == 5
    assert counter.ask(Incr(1), timeout=5) == 6
    exits = [e for e in supervisor.events if e.kind == "exited"]
    assert [(e.pid, e.exitcode) for e in exits] == [(first_pid, -signal.SIGKILL)]


def test_repeated_kills_keep_every_acknowledged_increment(
    supervisor: Supervisor, system: ActorSystem, tmp_path: Path
) -> None:
    endpoint = f"ipc://{tmp_path}/c.sock"
    supervisor.start_child(ChildSpec("c", serve_counter, (endpoint, str(tmp_path / "c.state"))))
    counter = system.ref(endpoint, "counter")
    acknowledged = 0
    for round_ in range(4):
        for _ in range(3):
            acknowledged = _answer(counter, Incr(1))
        supervisor.kill("c")
        assert supervisor.wait_for(lambda r=round_: supervisor.restarts("c") == r + 1, 10)
        assert _answer(counter, Get()) == acknowledged


def test_restart_intensity_limit_gives_up_and_reports(tmp_path: Path) -> None:
    gave_up: list[str] = []
    with Supervisor(max_restarts=3, within=30.0, backoff_step=0.01, on_give_up=gave_up.append) as sup:
        sup.start_child(ChildSpec("doomed", crash_at_once, (7,)))
        assert sup.wait_for(lambda: sup.status("doomed") == "failed", 20)
        assert sup.restarts("doomed") == 3
        assert gave_up == ["doomed"]
        exits = [e.exitcode for e in sup.events if e.kind == "exited"]
        assert exits == [7, 7, 7, 7]
        assert [e.kind for e in sup.events][-1] == "gave_up"


def test_corrupt_state_stops_the_child_with_an_error_not_a_wrong_value(
    system: ActorSystem, tmp_path: Path
) -> None:
    state = tmp_path / "bad.state"
    state.write_bytes(b"definitely not a state file")
    endpoint = f"ipc://{tmp_path}/bad.sock"
    with Supervisor(max_restarts=1, within=30.0, backoff_step=0.01) as sup:
        sup.start_child(ChildSpec("bad", serve_counter, (endpoint, str(state))))
        assert sup.wait_for(lambda: sup.status("bad") == "failed", 20)
    with pytest.raises(AskTimeout):
        system.ref(endpoint, "counter").ask(Get(), timeout=0.2)
    assert state.read_bytes() == b"definitely not a state file"  # nothing overwritten


def test_transient_child_that_exits_cleanly_is_not_restarted(tmp_path: Path) -> None:
    with Supervisor() as sup:
        sup.start_child(ChildSpec("once", crash_at_once, (0,), restart="transient"))
        assert sup.wait_for(lambda: sup.status("once") == "exited", 10)
        assert sup.restarts("once") == 0


def test_stop_ends_every_child(tmp_path: Path) -> None:
    with Supervisor() as sup:
        for i in range(3):
            sup.start_child(ChildSpec(f"c{i}", serve_counter, (f"ipc://{tmp_path}/{i}.sock", str(tmp_path / f"{i}.state"))))
        pids = [sup.pid(f"c{i}") for i in range(3)]
    for pid in pids:
        assert wait_until(lambda p=pid: not _alive(p), 5), f"child {pid} outlived its supervisor"


def test_child_spec_validates_restart_kind() -> None:
    with pytest.raises(ValueError, match="permanent, transient or temporary"):
        ChildSpec("x", crash_at_once, restart="sometimes")  # type: ignore[arg-type]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


_PARENT = """
import sys, time
from actors import ChildSpec, Supervisor
from actors.testing import serve_counter
if __name__ == "__main__":
    tmp = sys.argv[1]
    sup = Supervisor()
    for i in range(2):
        sup.start_child(ChildSpec(f"c{i}", serve_counter, (f"ipc://{tmp}/{i}.sock", f"{tmp}/{i}.state")))
    print(" ".join(str(sup.pid(f"c{i}")) for i in range(2)), flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@pytest.mark.slow
def test_children_do_not_outlive_a_supervisor_process_that_is_killed(tmp_path: Path, sig: signal.Signals) -> None:
    """The supervisor's process gets no chance to stop its children: the fork server sees its parent's
    pipe close and exits, and every child asked the kernel for SIGKILL when the fork server dies."""
    import subprocess
    import sys

    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    root = Path(__file__).parent.parent
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=root, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(root)})
    pids: list[int] = []
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids), f"children not started: {pids}"
        os.kill(parent.pid, sig)
        parent.wait(10)
        for pid in pids:
            assert wait_until(lambda p=pid: not _alive(p), 10), f"child {pid} outlived its supervisor's process ({sig.name})"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_child_that_exits_done_is_never_restarted_whatever_its_kind() -> None:
    """EXIT_DONE: finished for good (a Raft server removed from its cluster), even for a permanent child."""
    with Supervisor(max_restarts=5, within=10.0) as sup:
        for kind in ("permanent", "transient"):
            sup.start_child(ChildSpec(kind, os._exit, (EXIT_DONE,), restart=kind))
        sup.start_child(ChildSpec("other", os._exit, (5,)))  # any other exit of a permanent child is restarted
        assert sup.wait_for(lambda: all(sup.status(k) == "exited" for k in ("permanent", "transient")), 30)
        assert all(sup.exit_code(k) == EXIT_DONE and sup.restarts(k) == 0 for k in ("permanent", "transient"))
        assert sup.wait_for(lambda: sup.restarts("other") >= 1, 30) and sup.exit_code("other") == 5
