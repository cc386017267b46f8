"""Fixtures shared by the suite: an actor system, a supervisor, a remote echo host.

Everything a test starts is stopped by its fixture, also when the test fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actors import ActorSystem, ChildSpec, Supervisor
from actors.testing import serve_echo


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; for state in another process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


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
