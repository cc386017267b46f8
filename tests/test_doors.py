"""The doors before login: what a stranger can hold of a server without ever logging in.

A stranger can open TCP connections to a node and never finish the CURVE
handshake, or start it with one enormous command. Each holds one of the server's descriptors until the node closes
it: the node closes it after ``HANDSHAKE_MS`` (libzmq's default was 30 s),
and a node raises its soft open-file limit to the hard one at start, so the
usual 1,024 no longer runs out before the members get in. A handshake command
is one ZMTP frame, which libzmq reads whole before it looks at it: a node's
per-frame limit (:func:`transport.parts.wire_frame_limit`) is what bounds it.
All against a real ``zactor kv serve`` process started with a soft limit of 1,024; and a crowd that fills a
Raft leader's whole table of open files, against a real ``zactor kv cluster``.
"""

from __future__ import annotations

import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import ActorSystem
from apps.kvsrv import Clerk
from apps.kvsrv.client import KVUnavailable
from tests.helpers import free_port, rss_bytes, wait_until
from tests.processes import ROOT, listening, running, zactor
from transport.dealers import HANDSHAKE_MS

pytestmark = pytest.mark.slow  # each waits out a handshake time or opens 1,100 connections

SHELL_LIMIT = 1024
"""The soft open-file limit the server starts with, as a login shell commonly gives."""
STRANGERS = 1100
_MiB = 1024 * 1024


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


def _greeting(mechanism: bytes) -> bytes:
    """A ZMTP 3.0 client greeting: signature, version 3.0, the mechanism's name padded to 20, as-server 0, filler."""
    return b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + mechanism.ljust(20, b"\x00") + b"\x00" + bytes(31)


def _long_command_head(size: int) -> bytes:
    """A ZMTP long command frame's head (flags 0x06: command, 8-byte size) for a CURVE HELLO of ``size`` bytes."""
    return b"\x06" + struct.pack("!Q", size) + b"\x05HELLO"


HANDSHAKE_COMMAND = 60 * _MiB
HANDSHAKE_STRANGERS = 16


def test_sixteen_strangers_sending_a_60_mib_handshake_command_grow_the_server_by_less_than_100_mib(
    server: tuple[str, int],
) -> None:
    endpoint, pid = server
    with ActorSystem() as member:
        clerk = Clerk(endpoint, system=member, give_up_after=5.0)
        clerk.put("before", "v")  # the server has served a member: its own allocations are made
        before = rss_bytes(pid)
        # Each command claims 60 MiB and carries all of it but its last byte: libzmq, which reads a frame
        # whole before it looks at it, would hold each one until the handshake time ran out.
        head = _greeting(b"CURVE") + _long_command_head(HANDSHAKE_COMMAND)
        body = bytes(HANDSHAKE_COMMAND - 1 - 6)  # the size counts the name ("\x05HELLO") too
        strangers: list[socket.socket] = []
        peak = before
        try:
            for _ in range(HANDSHAKE_STRANGERS):
                s = socket.create_connection(("127.0.0.1", _port(endpoint)), timeout=10)
                strangers.append(s)
                try:
                    s.sendall(head)
                    s.sendall(body)
                except OSError:  # the server refused the frame and closed the connection: what should happen
                    pass
                peak = max(peak, rss_bytes(pid))
            for _ in range(20):  # what is still in flight lands within moments; watch it for 0.5 s
                time.sleep(0.025)
                peak = max(peak, rss_bytes(pid))
        finally:
            for s in strangers:
                s.close()
        grown = (peak - before) / _MiB
        assert grown < 100, f"the server grew by {grown:.0f} MiB under {HANDSHAKE_STRANGERS} strangers' handshake commands"
        clerk.put("after", "w")
        assert clerk.get("after") == "w" and clerk.get("before") == "v"


CLUSTER_FILES = 160
"""The open-file limit (soft and hard) of the Raft KV cluster below (a server uses about 25 at rest):
few enough that a crowd of strangers fills it faster than the handshake time empties it."""


def _cluster_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (CLUSTER_FILES, CLUSTER_FILES))


class _Crowd:
    """Stranger connections that keep a server's table of open files full: as the server closes those that
    never log in (after HANDSHAKE_MS), new ones take their place, on a thread of their own until closed."""

    def __init__(self, port: int, size: int) -> None:
        self.port, self.size = port, size
        self.socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, daemon=True)
        self._thread.start()

    def _open(self) -> None:
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", self.port))  # not waited for: past the backlog the kernel holds it in SYN
        self.socks.append(s)

    def _keep(self) -> None:
        for _ in range(self.size):
            self._open()
        deadline = time.monotonic() + 120  # bounded, whatever the test does
        while not self._stop.wait(0.2) and time.monotonic() < deadline:
            for s in list(self.socks):
                try:
                    if s.recv(4096) == b"":  # the server closed it
                        self.socks.remove(s)
                        s.close()
                        self._open()
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:  # refused or reset
                    self.socks.remove(s)
                    s.close()
                    self._open()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for s in self.socks:
            s.close()


def test_a_raft_leader_out_of_open_files_steps_down_and_clients_are_served_by_another(tmp_path: Path) -> None:
    """Strangers fill the leader's table of open files, so no new client can reach it while its heartbeats
    (on connections it already has) would keep its leadership: it must give it up, and a new clerk's put
    must succeed on the leader the others elect, while the crowd is still there."""
    ports = [free_port() for _ in range(3)]
    endpoints = [f"tcp://127.0.0.1:{p}" for p in ports]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4 * CLUSTER_FILES), hard))  # the crowd's sockets
    crowd = None
    try:
        with running("kv", "cluster", "--servers", "3", "--endpoints", ",".join(endpoints), "--data-dir", str(tmp_path / "d"),
                     "--for", "120", preexec_fn=_cluster_files) as lines, ActorSystem() as system:
            line = lines.wait_for("leader: server", 30)
            leader = int(line.split("leader: server ")[1].split()[0])
            control = system.control(endpoints[leader], timeout=10)  # a connection made before the crowd came
            assert control.counters()["accept_failed"] == 0
            crowd = _Crowd(ports[leader], 3 * CLUSTER_FILES)
            assert wait_until(lambda: control.counters()["accept_failed"] > 0, 20), "the crowd never filled the table"
            line = lines.wait_for("leader: server", 15)
            assert int(line.split("leader: server ")[1].split()[0]) != leader, line
            # A clerk that starts now (new connections to every server) is served, the crowd still there.
            failed_before = control.counters()["accept_failed"]
            out = zactor("kv", "put", "--servers", ",".join(endpoints), "k", "v", timeout=30)
            assert out.returncode == 0, out.stderr
            assert control.counters()["accept_failed"] > failed_before, "the crowd had gone: the put proves nothing"
            out = zactor("kv", "get", "--servers", ",".join(endpoints), "k", timeout=30)
            assert out.returncode == 0 and out.stdout.strip() == "v", out
    finally:
        if crowd is not None:
            crowd.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
