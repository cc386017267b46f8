"""The doors before login: what a stranger can hold of a server without ever logging in.

A stranger can open TCP connections to a node and never finish the CURVE
handshake. Each holds one of the server's descriptors until the node closes
it: the node closes it after ``HANDSHAKE_MS`` (libzmq's default was 30 s),
and a node raises its soft open-file limit to the hard one at start, so the
usual 1,024 no longer runs out before the members get in. Both against a
real ``zactor kv serve`` process started with a soft limit of 1,024.
"""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import ActorSystem
from apps.kvsrv import Clerk
from apps.kvsrv.client import KVUnavailable
from tests.helpers import free_port
from tests.processes import ROOT, listening
from transport.dealers import HANDSHAKE_MS

pytestmark = pytest.mark.slow  # each waits out a handshake time or opens 1,100 connections

SHELL_LIMIT = 1024
"""The soft open-file limit the server starts with, as a login shell commonly gives."""
STRANGERS = 1100


def _shell_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (SHELL_LIMIT, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    """A secure ``zactor kv serve`` started with a soft limit of 1,024 open files: (endpoint, pid)."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 4 * STRANGERS:
        pytest.skip(f"the hard open-file limit is below {4 * STRANGERS}: nothing to raise to")
    proc = subprocess.Popen([sys.executable, "-m", "apps.cli", "kv", "serve", "--endpoint", f"tcp://127.0.0.1:{free_port()}"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_shell_limit)
    try:
        yield listening(proc), proc.pid
    finally:
        proc.kill()
        proc.wait(10)


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _open_files_limit(pid: int) -> int:
    """The soft limit of open files of process ``pid``, from /proc (what the kernel enforces, not what it was told)."""
    line = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines() if line.startswith("Max open files"))
    return int(line.split()[3])


def test_a_connection_that_never_logs_in_is_closed_after_the_handshake_time(server: tuple[str, int]) -> None:
    endpoint, _ = server
    with socket.create_connection(("127.0.0.1", _port(endpoint)), timeout=5) as idle:
        started = time.monotonic()
        idle.settimeout(3 * HANDSHAKE_MS / 1000)
        while idle.recv(4096):  # the server's greeting, then nothing until it closes the connection
            pass
        waited = time.monotonic() - started
    assert waited < 2 * HANDSHAKE_MS / 1000, f"closed after {waited:.1f} s"


def test_members_get_in_past_1100_idle_strangers_and_a_shell_limit_of_1024(server: tuple[str, int]) -> None:
    endpoint, pid = server
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4 * STRANGERS), hard))  # the test's own sockets
    strangers: list[socket.socket] = []
    try:
        for _ in range(STRANGERS):
            strangers.append(socket.create_connection(("127.0.0.1", _port(endpoint)), timeout=5))
        # Each stranger the server has accepted holds one of its descriptors until HANDSHAKE_MS has passed
        # (how many at once depends on how fast the machine lets them in); the limit is what keeps room.
        assert _open_files_limit(pid) == resource.getrlimit(resource.RLIMIT_NOFILE)[1] > SHELL_LIMIT
        answered = 0
        with ActorSystem() as member:
            clerk = Clerk(endpoint, system=member, give_up_after=1.0)
            for i in range(20):
                try:
                    clerk.put(f"k{i}", "v")
                    answered += 1
                except KVUnavailable:
                    pass
        assert answered >= 19, f"{answered} of 20 member calls answered within 1 s"
    finally:
        for s in strangers:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
