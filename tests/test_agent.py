"""The node agent: "another machine" is an agent bound to 127.0.0.2 in its own working directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from actors import Actor, ActorSystem, AskTimeout, ProcessDied, RestartLimitReached
from actors.agent_protocol import AGENT_NAME, SpawnRequest
from actors.classref import ClassRef
from actors.errors import Unreachable
from actors.spawn import node_children
from actors.testing import Get, Incr, PersistentCounter
from tests.helpers import answer_after_kill, free_port
from transport.keys import Keyring, Member, init_keyring, write_members

AGENT_HOST = "127.0.0.2"


class Greeter(Actor):
    """Defined in this test module, which the agent (another directory, no tests package) cannot import."""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, tuple) and message[0] == "sleep":
            time.sleep(message[1])
        return f"hello {message} from {os.getcwd()}"


class Marker(Actor):
    """Creating one leaves a file: proof that a spawn request ran."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        Path(marker).touch()


class EvilClass:
    """Unpickling this (as a spawn request's class) runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _child(system: ActorSystem, node: str, name: str) -> Any:
    return {c.name: c for c in node_children(system, node)}[name]


def test_spawn_on_another_machine_look_up_kill_and_restart(system: ActorSystem, node: tuple[str, Path]) -> None:
    endpoint, workdir = node
    counter = system.spawn_process(PersistentCounter, "counter.state", name="counter", node=endpoint)
    assert counter.via == "import" and counter.address.endpoint.startswith(f"tcp://{AGENT_HOST}:")
    assert counter.ask(Incr(3)) == 3
    assert (workdir / "counter" / "counter.state").exists(), "state lives in the agent's directory"

    with ActorSystem(nodes=[endpoint]) as other:  # another program that knows only the node and the name
        found = other.lookup("counter")
        assert found.ask(Incr(1), timeout=10.0) == 4
        first = _child(other, endpoint, "counter")
        assert first.status == "running" and first.restarts == 0 and first.uptime is not None
        os.kill(first.pid, signal.SIGKILL)  # "another machine" is this one: its pid is ours to kill
        value, took = answer_after_kill(found, Get(), limit=1.0)
        assert value == 4 and took < 1.0
        assert answer_after_kill(counter, Get(), limit=1.0)[0] == 4  # the spawner's ref too
        again = _child(other, endpoint, "counter")
        assert again.restarts == 1 and again.pid != first.pid


def test_class_not_importable_on_the_node_travels_by_cloudpickle_and_in_flight_asks_fail(
    system: ActorSystem, node: tuple[str, Path]
) -> None:
    endpoint, workdir = node
    greeter = system.spawn_process(Greeter, name="greeter", node=endpoint, persist_dir="greeter-home")
    assert greeter.via == "cloudpickle"
    assert greeter.ask("you") == f"hello you from {workdir / 'greeter-home'}"
    in_flight = greeter.ask(("sleep", 60.0), block=False, timeout=30.0)
    time.sleep(0.05)
    os.kill(_child(system, endpoint, "greeter").pid, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(ProcessDied):
        in_flight.get(timeout=10.0)
    assert time.monotonic() - t0 < 10.0
    assert answer_after_kill(greeter, "again", limit=1.0)[0].startswith("hello again")


def test_restart_limit_on_a_node_reaches_the_caller(system: ActorSystem, node: tuple[str, Path]) -> None:
    endpoint, _ = node
    ref = system.spawn_process(Greeter, name="fragile", node=endpoint, max_restarts=0)
    assert ref.ask("x").startswith("hello")
    os.kill(_child(system, endpoint, "fragile").pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        try:
            ref.ask("x", timeout=0.2)
        except RestartLimitReached as exc:
            assert "gave up" in str(exc)
            break
        except (AskTimeout, ProcessDied):
            pass
    else:
        pytest.fail("the node's give-up never reached the caller")
    assert _child(system, endpoint, "fragile").status == "failed"


def test_node_list_cli_shows_restarts_and_uptime(system: ActorSystem, node: tuple[str, Path]) -> None:
    endpoint, _ = node
    system.spawn_process(PersistentCounter, "c.state", name="listed", node=endpoint).ask(Incr(1))
    out = subprocess.run([sys.executable, "-m", "apps.cli", "node", "list", "--node", endpoint], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "STATUS", "PID", "RESTARTS", "UPTIME"]
    assert row.split()[0] == "listed" and row.split()[1] == "running" and row.split()[3] == "0"
    assert "actors.testing:PersistentCounter (import)" in row


def test_node_cli_errors_are_clear(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "apps.cli", "node", "list"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--node" in out.stderr
    out = subprocess.run([sys.executable, "-m", "apps.cli", "node"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--endpoint" in out.stderr
    port = free_port("127.0.0.1")
    out = subprocess.run(
        [sys.executable, "-m", "apps.cli", "node", "list", "--node", f"tcp://127.0.0.1:{port}", "--timeout", "0.5"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1 and "no answer" in out.stderr


@pytest.mark.slow
def test_a_stranger_cannot_make_the_agent_spawn_anything(node: tuple[str, Path], tmp_path: Path, test_keyring: Path) -> None:
    """A key pair not in the agent's keyring: the handshake fails, nothing is decoded, no code runs."""
    endpoint, _ = node
    agent_public = Keyring(test_keyring).public
    stranger = Keyring(init_keyring(tmp_path / "stranger"))
    write_members(stranger.members_path, [Member("agent", agent_public, (AGENT_HOST,))])  # the agent's key is public
    unpickled = tmp_path / "unpickled"
    constructed = tmp_path / "constructed"
    with ActorSystem("tcp://127.0.0.1:0", keys=stranger.directory) as outsider:
        with pytest.raises(Unreachable, match="refused this machine's key"):  # said at once, not at the timeout
            outsider.spawn_process(Marker, str(constructed), name="intruder", node=endpoint, timeout=2.0)
        evil = SpawnRequest("evil", ClassRef(None, cloudpickle.dumps(EvilClass(unpickled))), (), {})
        with pytest.raises(AskTimeout):
            outsider.ref(endpoint, AGENT_NAME).ask(evil, timeout=2.0)
    with ActorSystem() as member:
        assert member.control(endpoint).counters()["rejected"] > 0
        assert node_children(member, endpoint) == []
    assert not unpickled.exists() and not constructed.exists()
    with ActorSystem() as member:  # the control: a member's same request does run
        member.spawn_process(Marker, str(constructed), name="welcome", node=endpoint)
        deadline = time.monotonic() + 10.0
        while not constructed.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    assert constructed.exists()


def _names(system: ActorSystem, node: str) -> set[str]:
    return {c.name for c in node_children(system, node)}


def test_a_process_on_a_node_ends_with_its_spawner_unless_detached(node: tuple[str, Path]) -> None:
    endpoint, _ = node
    with ActorSystem() as spawner:
        spawner.spawn_process(PersistentCounter, "a.state", name="tied", node=endpoint).ask(Incr(1))
        spawner.spawn_process(PersistentCounter, "b.state", name="kept", node=endpoint, detached=True).ask(Incr(1))
        assert _names(spawner, endpoint) == {"tied", "kept"}
    with ActorSystem() as later:
        assert _names(later, endpoint) == {"kept"}, "the tied process outlived its spawner"
        # A second run of the same script can spawn its tied actor again.
        assert later.spawn_process(PersistentCounter, "a.state", name="tied", node=endpoint).ask(Get()) == 1
        later.stop_process("kept", node=endpoint)
        assert _names(later, endpoint) == {"tied"}
        with pytest.raises(LookupError, match="no actor named 'kept'"):
            later.stop_process("kept", node=endpoint)
        with pytest.raises(ValueError, match="detached=True needs node="):
            later.spawn_process(PersistentCounter, "c.state", name="local", detached=True)


def test_stop_process_ends_a_local_process_for_good(system: ActorSystem, tmp_path: Path) -> None:
    ref = system.spawn_process(PersistentCounter, str(tmp_path / "c.state"), name="local-one")
    assert ref.ask(Incr(1)) == 1
    system.stop_process("local-one")
    with pytest.raises(RestartLimitReached, match="stopped"):
        ref.ask(Get())
    with pytest.raises(LookupError, match="no process named 'local-one'"):
        system.stop_process("local-one")


def test_node_stop_cli_stops_a_detached_actor(system: ActorSystem, node: tuple[str, Path]) -> None:
    endpoint, _ = node
    system.spawn_process(PersistentCounter, "c.state", name="left", node=endpoint, detached=True).ask(Incr(1))
    cli = [sys.executable, "-m", "apps.cli", "node", "stop", "left", "--node", endpoint]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "stopped 'left'" in out.stdout, out
    assert "left" not in _names(system, endpoint)
    out = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "zactor node stop:" in out.stderr and "no actor named 'left'" in out.stderr, out
