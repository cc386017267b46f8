"""spawn_process: an actor in a supervised process of its own, on real processes and kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from actors import (
    Actor,
    ActorDeadError,
    ActorSystem,
    AskTimeout,
    ClassRef,
    ProcessDied,
    RestartLimitReached,
)
from actors.spawn import spawner_of
from actors.testing import Get, Incr, PersistentCounter
from tests.helpers import answer_after_kill, wait_until


def make_tally_class() -> type:
    """A class defined in this test module but not importable by name (made in a function): cloudpickle carries it."""

    class Tally(PersistentCounter):
        def on_receive(self, message: Any) -> Any:
            if isinstance(message, tuple) and message[0] == "sleep":
                time.sleep(message[1])
                return "slept"
            return (os.getpid(), super().on_receive(message))

    return Tally


def test_class_ref_by_import_path_or_by_value() -> None:
    importable = ClassRef.of(PersistentCounter)
    assert importable.path == "actors.testing:PersistentCounter" and importable.blob is None
    assert importable.load() == (PersistentCounter, "import")
    local = ClassRef.of(make_tally_class())
    assert local.path is None and local.blob
    cls, via = local.load()
    assert via == "cloudpickle" and cls.__name__ == "Tally"
    both = ClassRef.of(PersistentCounter, with_blob=True)
    assert both.path and both.blob
    fallback = ClassRef("no_such_module_anywhere:PersistentCounter", both.blob)
    cls, via = fallback.load()
    assert via == "cloudpickle" and cls.__name__ == "PersistentCounter"
    with pytest.raises(ImportError, match="no_such_module_anywhere"):
        ClassRef("no_such_module_anywhere:X").load()
    with pytest.raises(TypeError):
        ClassRef.of(int)


def test_importable_class_survives_kill_9_with_its_state(system: ActorSystem, tmp_path: Path) -> None:
    counter = system.spawn_process(PersistentCounter, "counter.state", name="counter", persist_dir=tmp_path / "c")
    assert counter.via == "import"
    assert counter.ask(Incr(5)) == 5
    assert counter.ask(Incr(2)) == 7
    assert (tmp_path / "c" / "counter.state").exists()  # relative state lands in persist_dir
    spawner = spawner_of(system)
    pid = spawner.pid(counter)
    assert pid is not None and pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    value, took = answer_after_kill(counter, Get(), limit=1.0)
    assert value == 7, "the restarted process reloads its persisted state"
    assert took < 1.0
    assert spawner.pid(counter) != pid and spawner.restarts(counter) == 1
    assert counter.ask(Incr(1)) == 8


def test_class_from_the_test_module_travels_by_cloudpickle_and_in_flight_asks_fail_clearly(
    system: ActorSystem, tmp_path: Path
) -> None:
    tally = system.spawn_process(make_tally_class(), "tally.state", name="tally", persist_dir=tmp_path / "t")
    assert tally.via == "cloudpickle"
    first_pid, value = tally.ask(Incr(3))
    assert value == 3 and first_pid != os.getpid()
    in_flight = tally.ask(("sleep", 60.0), block=False, timeout=30.0)
    time.sleep(0.05)  # let the ask reach the actor's handler (its reply cannot come for 60 s anyway)
    os.kill(first_pid, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(ProcessDied, match=r"died .* while this ask was in flight"):
        in_flight.get(timeout=5.0)
    assert time.monotonic() - t0 < 5.0  # the death, not the 30 s timeout, ended it
    (pid, value), took = answer_after_kill(tally, Get(), limit=1.0)
    assert value == 3 and pid != first_pid
    assert took < 1.0


def test_restart_limit_gives_up_with_a_clear_error(system: ActorSystem, tmp_path: Path) -> None:
    counter = system.spawn_process(PersistentCounter, "c.state", name="fragile", max_restarts=1, within=60.0, persist_dir=tmp_path)
    assert counter.ask(Incr(1)) == 1
    spawner = spawner_of(system)
    os.kill(spawner.pid(counter), signal.SIGKILL)
    assert answer_after_kill(counter, Get(), limit=5.0)[0] == 1
    os.kill(spawner.pid(counter), signal.SIGKILL)  # the second death within the window: over the limit
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            counter.ask(Get(), timeout=0.2)
        except RestartLimitReached as exc:
            assert "gave up" in str(exc) and "fragile" in str(exc)
            break
        except (AskTimeout, ProcessDied):
            pass
    else:
        pytest.fail("the caller never learned that the supervisor gave up")
    with pytest.raises(RestartLimitReached):
        counter.tell(Incr(1))


def test_stop_ends_the_process_for_good(system: ActorSystem, tmp_path: Path) -> None:
    counter = system.spawn_process(PersistentCounter, "c.state", name="short", persist_dir=tmp_path)
    assert counter.ask(Incr(1)) == 1
    pid = spawner_of(system).pid(counter)
    counter.stop()
    with pytest.raises(ActorDeadError):
        counter.ask(Get(), timeout=1.0)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_lookup_finds_a_spawned_process_and_a_local_actor_by_name(system: ActorSystem, tmp_path: Path) -> None:
    system.spawn_process(PersistentCounter, "c.state", name="named", persist_dir=tmp_path)
    assert system.lookup("named").ask(Incr(4)) == 4
    system.spawn(PersistentCounter, str(tmp_path / "local.state"), name="local")
    assert system.lookup("local").ask(Incr(2)) == 2
    with pytest.raises(LookupError, match="nobody"):
        system.lookup("nobody")


def test_bad_arguments_are_clear_errors(system: ActorSystem) -> None:
    with pytest.raises(TypeError, match=r"pykka\.Actor"):
        system.spawn_process(dict, name="x")
    with pytest.raises(ValueError, match="max_restarts"):
        system.spawn_process(PersistentCounter, "c", name="y", max_restarts=-1)
    with pytest.raises(ValueError, match="name"):
        system.spawn_process(PersistentCounter, "c", name="a#b")


class Settings(Actor):
    """Answers with the keyword arguments it was built with, two of which share spawn's own option names."""

    def __init__(self, timeout: float, name: str, colour: str = "") -> None:
        super().__init__()
        self.got = (timeout, name, colour)

    def on_receive(self, message: Any) -> Any:
        return self.got


def test_factory_keywords_named_like_spawn_options_go_through_kwargs(system: ActorSystem) -> None:
    """spawn and spawn_process take timeout=, name=... themselves: kwargs= reaches the factory with them."""
    there = system.spawn_process(Settings, name="settings", kwargs={"timeout": 2.5, "name": "inner"}, colour="red")
    assert there.ask("?") == (2.5, "inner", "red")
    here = system.spawn(Settings, name="local", kwargs={"timeout": 1.0, "name": "here", "colour": "blue"})
    assert here.ask("?") == (1.0, "here", "blue")
    with pytest.raises(TypeError, match="both in kwargs= and loose: colour"):
        system.spawn(Settings, name="twice", kwargs={"timeout": 1.0, "name": "x", "colour": "a"}, colour="b")
    with pytest.raises(TypeError, match="both in kwargs= and loose: colour"):
        system.spawn_process(Settings, name="twice", kwargs={"timeout": 1.0, "name": "x", "colour": "a"}, colour="b")


def test_system_stop_stops_spawned_processes(tmp_path: Path) -> None:
    with ActorSystem() as system:
        counter = system.spawn_process(PersistentCounter, "c.state", name="c", persist_dir=tmp_path)
        counter.ask(Incr(1), timeout=10.0)
        pid = spawner_of(system).pid(counter)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.slow
def test_bench_supervisor_reports_spawn_process_latency_beside_its_baseline() -> None:
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "apps.cli", "bench", "supervisor", "--json", "--restarts", "2", "--spawns", "3"],
        capture_output=True, text=True, timeout=170,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["spawns"] == 3 and result["spawn_process_p50_ms"] > 0 and result["mp_process_pipe_p50_ms"] > 0
    assert 0 < result["spawn_ratio_q1"] <= result["spawn_ratio_p50"] <= result["spawn_ratio_q3"]


class Quitter(PersistentCounter):
    """Exits its process cleanly when told "quit"."""

    def on_receive(self, message: Any) -> Any:
        if message == "quit":
            os._exit(0)
        return super().on_receive(message)


def test_a_transient_process_that_exits_cleanly_stays_down_and_says_so(system: ActorSystem, tmp_path: Path) -> None:
    ref = system.spawn_process(Quitter, "q.state", name="quitter", restart="transient", persist_dir=tmp_path)
    assert ref.ask(Incr(1)) == 1
    with pytest.raises(ProcessDied):
        ref.ask("quit", timeout=10.0)
    with pytest.raises(RestartLimitReached, match="not restarted"):
        ref.ask(Get(), timeout=1.0)


class KillOnTheWayOut:
    """A message that kills its process while it is being sent, and waits until the ref has heard of the death.

    Its pickling runs inside the send, on the asking thread: so the death
    notice reaches the ref after the ask began and before the send returns.
    On the wire it is ``("sleep", 60.0)``: a restarted process that gets it
    does not answer within the ask's timeout either.
    """

    def __init__(self, ref: Any) -> None:
        self.ref = ref
        self.pid = ref.pid()
        self.deaths = ref.deaths

    def __reduce__(self) -> tuple:
        os.kill(self.pid, signal.SIGKILL)
        assert wait_until(lambda: self.ref.deaths > self.deaths, timeout=10), "the supervisor never reported the death"
        return (tuple, (("sleep", 60.0),))


def test_a_death_noticed_while_the_ask_is_being_sent_fails_it_with_process_died(system: ActorSystem, tmp_path: Path) -> None:
    """The ask used to be recorded as in flight only after its send: a death in between left it to time out."""
    tally = system.spawn_process(make_tally_class(), "tally.state", name="tally", persist_dir=tmp_path / "t")
    assert tally.ask(Incr(1))[1] == 1
    t0 = time.monotonic()
    with pytest.raises(ProcessDied, match="in flight"):
        tally.ask(KillOnTheWayOut(tally), timeout=5.0)
    assert time.monotonic() - t0 < 5.0  # the death ended it, not the timeout


_UNGUARDED = '''
from actors import ActorSystem
from actors.testing import Echo
with ActorSystem() as system:
    print(system.spawn_process(Echo, name="echo").ask("hi"))
'''


def test_a_script_without_a_main_guard_gets_one_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(_UNGUARDED)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out
    assert f"zactor: {script} starts an actor system when it is imported" in out.stderr, out.stderr
    assert "'echo' cannot start" in out.stderr and 'if __name__ == "__main__":' in out.stderr, out.stderr
    assert "freeze_support" not in out.stderr and "restarting" not in out.stderr, out.stderr  # no multiprocessing dump, no restart loop
    assert len(out.stderr.splitlines()) < 20, out.stderr
    assert list(tmp_path.glob("zactor-spawn-*")) == [], "the spawn directory was left behind"
