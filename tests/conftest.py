"""Fixtures shared by the suite: an actor system, a supervisor, a remote echo host, a node agent.

Everything a test starts is stopped by its fixture, also when the test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from actors import ActorSystem, ChildSpec, Supervisor
from actors.spawn import wait_for_node
from actors.testing import serve_echo
from tests.helpers import free_port
from tests.users import User, make_user, remove_user
from transport.keys import INSECURE_ENV, KEYS_ENV, init_keyring, resolve_keyring


@pytest.fixture(scope="session", autouse=True)
def test_keyring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test runs secure (the default) on a keyring of its own, never the developer's.

    Through the environment, so processes the tests start (the fork server,
    CLI subprocesses) use it too.
    """
    saved = {name: os.environ.get(name) for name in (KEYS_ENV, INSECURE_ENV)}
    ring = init_keyring(tmp_path_factory.mktemp("keyring") / "keys")
    os.environ[KEYS_ENV] = str(ring)
    os.environ.pop(INSECURE_ENV, None)
    yield ring
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def system() -> Iterator[ActorSystem]:
    with ActorSystem(ask_timeout=10.0) as s:
        yield s


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    with Supervisor() as sup:
        yield sup


@pytest.fixture
def remote(supervisor: Supervisor, tmp_path: Path, system: ActorSystem) -> str:
    """Endpoint of a child process hosting ``echo`` and ``collector``, up and answering."""
    endpoint = f"ipc://{tmp_path}/remote.sock"
    supervisor.start_child(ChildSpec("remote", serve_echo, (endpoint,)))
    system.ref(endpoint, "echo").ask("ready?", timeout=10.0)
    return endpoint


@pytest.fixture
def member_socket() -> Iterator[Callable[[str], zmq.Socket]]:
    """A raw DEALER of a cluster member (this machine's key), connected on demand."""
    ctx = zmq.Context()
    ring = resolve_keyring()

    def connect(endpoint: str) -> zmq.Socket:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        ring.secure_client(sock, endpoint)
        sock.connect(endpoint)
        return sock

    yield connect
    ctx.destroy(linger=0)


@pytest.fixture(scope="session")
def other_user() -> Iterator[User]:
    """A second unix user, for attacks by another person on this machine (see tests/users.py)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a second unix user (useradd) for the attacker")
    user = make_user()
    try:
        yield user
    finally:
        remove_user(user)


AGENT_HOST = "127.0.0.2"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A node agent in its own process and working directory, on 127.0.0.2; stopped after the test."""
    workdir = tmp_path / "machine-b"
    workdir.mkdir()
    endpoint = f"tcp://{AGENT_HOST}:{free_port(AGENT_HOST)}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.cli", "node", "--endpoint", endpoint, "--dir", str(workdir)],
        cwd=workdir,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: teardown reaches its fork server and children too
    )
    try:
        with ActorSystem() as probe:
            wait_for_node(probe, endpoint, timeout=30.0)
        yield endpoint, workdir
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group outlived the agent
        except ProcessLookupError:
            pass
        proc.stderr.close()
