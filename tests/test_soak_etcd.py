"""The etcd side of the soak tool: the peer proxy really partitions members, and a short soak passes."""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from apps.etcd.ports import free_ports
from apps.soak.etcd import EtcdError, EtcdKV, EtcdMembers
from apps.soak.proxy import PeerProxy, sender_of

ROOT = Path(__file__).parent.parent


def test_sender_is_read_from_the_request_head():
    head = b"GET /raft/stream/message/abc HTTP/1.1\r\nHost: x\r\nX-Server-From: 1F29a\r\n\r\n"
    assert sender_of(head) == "1f29a"
    assert sender_of(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n") is None


class _Recorder(socketserver.BaseRequestHandler):
    """Echoes what it receives and keeps a copy: what a member behind the proxy would have been sent."""

    def handle(self) -> None:
        while data := self.request.recv(4096):
            with self.server.lock:  # type: ignore[attr-defined]
                self.server.received += data  # type: ignore[attr-defined]
            self.request.sendall(data)


@contextmanager
def _proxy_to_recorder(member_of: dict[str, int]) -> Iterator[tuple[PeerProxy, socketserver.ThreadingTCPServer]]:
    socketserver.ThreadingTCPServer.daemon_threads = True
    upstream = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Recorder)
    upstream.received = b""  # type: ignore[attr-defined]
    upstream.lock = threading.Lock()  # type: ignore[attr-defined]
    serving = threading.Thread(target=upstream.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    serving.start()
    proxy = PeerProxy(free_ports(1)[0], upstream.server_address[1], member_of.get)
    try:
        yield proxy, upstream
    finally:
        proxy.stop()
        upstream.shutdown()
        upstream.server_close()
        serving.join(5.0)


def _request(sock: socket.socket, path: str, sender: str | None) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: m\r\n" + (f"X-Server-From: {sender}\r\n" if sender else "") + "\r\n"
    sock.sendall(head.encode())
    return head.encode()


def _echoed(sock: socket.socket, sent: bytes) -> bool:
    """True once ``sent`` came back through the proxy; False if the proxy closed the connection instead."""
    got = b""
    deadline = time.monotonic() + 5.0
    while got != sent and time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            return False
        if not chunk:
            return False
        got += chunk
    assert got == sent, f"neither echoed nor closed within 5 s: got {got!r}"
    return True


def test_a_connection_that_names_no_sender_is_cut_by_a_partition_and_refused_during_it():
    """etcd's prober opens connections with no X-Server-From header, and its pipeline reuses them for Raft messages."""
    with _proxy_to_recorder({"aa": 0, "bb": 1}) as (proxy, upstream):
        conns = []

        def connect() -> socket.socket:
            c = socket.create_connection(("127.0.0.1", proxy.listen_port), timeout=5.0)
            conns.append(c)
            return c

        try:
            pooled, ally = connect(), connect()
            assert _echoed(pooled, _request(pooled, "/raft/probing", None))  # no partition: passes
            assert _echoed(ally, _request(ally, "/raft", "bb"))
            proxy.block({0})
            # The pooled connection could be carrying member 0's pipeline next: it is cut.
            late = b"POST /raft HTTP/1.1\r\nHost: m\r\nX-Server-From: aa\r\n\r\nlate"
            try:
                pooled.sendall(late)
            except OSError:
                pass
            assert not _echoed(pooled, late)
            assert _echoed(ally, _request(ally, "/raft", "bb"))  # the member it may talk to still does
            for path, sender in (("/raft/probing", None), ("/raft", "aa"), ("/raft", "cc")):
                c = connect()
                sent = _request(c, path, sender)
                assert not _echoed(c, sent), f"{path} from {sender} passed during the partition"
            with upstream.lock:  # type: ignore[attr-defined]
                leaked = upstream.received  # type: ignore[attr-defined]
            assert b"late" not in leaked and b"X-Server-From: aa" not in leaked and b"cc" not in leaked
            proxy.block(set())
            healed = connect()
            assert _echoed(healed, _request(healed, "/raft/probing", None))
        finally:
            for c in conns:
                c.close()


def _eventually(call, seconds: float):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except EtcdError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_partition_through_the_proxy_cuts_a_member_off_and_heal_reconnects_it(tmp_path):
    with EtcdMembers(tmp_path) as members:
        majority = EtcdKV([members.client_ports[0], members.client_ports[1]], 0, timeout=5.0)
        alone = EtcdKV([members.client_ports[2]], 0, timeout=2.0)
        _eventually(lambda: majority.put("k", "before"), 10.0)
        assert _eventually(lambda: alone.get("k"), 10.0) == "before"
        members.partition([[2], [0, 1]])
        _eventually(lambda: majority.put("k", "during"), 15.0)  # the majority goes on
        try:  # a linearizable read on the cut-off member cannot be confirmed
            answered: str | None = alone.get("k")
        except EtcdError:
            answered = None
        assert answered is None, f"the cut-off member answered a linearizable read with {answered!r}"
        members.heal()
        assert _eventually(lambda: alone.get("k"), 20.0) == "during"
        majority.close()
        alone.close()


@pytest.mark.slow
def test_etcd_soak_with_kill_pause_partition_passes(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.Popen([sys.executable, "-m", "apps.cli", "soak", "etcd", "--minutes", "0.5", "--seed", "21", "--min-throughput", "10",
                             "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "pass" and summary["final_reads"] > 0
    assert len({d[1] for d in summary["replicas"]}) == 1
    assert {e["kind"] for e in summary["events"]} <= {"kill", "pause", "partition"} and summary["events"]
    # The replay: the run played the schedule its seed gives, fault by fault, none before its offset (a
    # heal that overruns the end can leave the last faults unplayed, so a prefix of it).
    planned = subprocess.run([sys.executable, "-m", "apps.cli", "soak", "etcd", "--minutes", "0.5", "--seed", "21", "--schedule-only"],
                             cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout) == summary["schedule"]
    played = [(e["offset"], e["kind"], e["variant"]) for e in summary["events"]]
    assert played and played == [(f["offset"], f["kind"], f["variant"]) for f in summary["schedule"]][: len(played)]
    assert all(e["started"] >= e["offset"] for e in summary["events"])
