"""A 3-node PySyncObj key/value cluster with a tiny request protocol, for benchmarks to compare against.

PySyncObj replicates a ``ReplDict`` but has no client protocol of its own, so
each node process also hosts a small threaded TCP server (stdlib
``socketserver``) that turns a request into ``ReplDict.set(..., sync=True)``
(replicated, answered once applied on this node) or ``ReplDict.get`` (a read
of this node's copy: PySyncObj has no linearizable read). Each node keeps
its journal file on; PySyncObj writes it through mmap and never fsyncs it.

The wire format is as thin as we could make it: a 4-byte big-endian length,
then one op byte and its arguments; the answer is framed the same way with a
status byte (``K`` ok, ``E`` error) first. A put lost to a leader change is
retried by the node (bounded in time) and the answer says how many times.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import socket
import socketserver
import struct
import time
from typing import Any

from apps.etcd.ports import free_ports

_START_WAIT = 30.0
_STOP_WAIT = 5.0
_SYNC_TIMEOUT = 10.0
_LEN = struct.Struct(">I")
_KEYLEN = struct.Struct(">H")


def _read_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise ConnectionError("connection closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_frame(sock: socket.socket) -> bytes:
    (length,) = _LEN.unpack(_read_exact(sock, 4))
    return _read_exact(sock, length)


def _send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LEN.pack(len(payload)) + payload)


def keep_warnings(label: str) -> list[str]:
    """From now on, what PySyncObj logs at WARNING or above goes to the returned list, not the terminal.

    PySyncObj logs its troubles (such as truncating applied entries); a
    benchmark reports them instead of interleaving them with its table.
    """
    logged: list[str] = []
    keeper = logging.Handler(logging.WARNING)
    keeper.emit = lambda record: logged.append(f"{label}: {record.getMessage()}")  # type: ignore[method-assign]
    pysyncobj_log = logging.getLogger("pysyncobj")
    pysyncobj_log.addHandler(keeper)
    pysyncobj_log.propagate = False
    return logged


def serve_node(me: int, raft_addresses: list[str], request_port: int, journal: str) -> None:
    """Child-process target: one PySyncObj node with a ReplDict and its request server on ``request_port``."""
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjException
    from pysyncobj.batteries import ReplDict

    logged = keep_warnings(f"node {me}")

    # A command lost to a leader change (or refused while there is none) is
    # tried again, as zactor's clerk and etcd's client do; other failures
    # go back to the client.
    _TRANSIENT = {
        FAIL_REASON.QUEUE_FULL,
        FAIL_REASON.MISSING_LEADER,
        FAIL_REASON.DISCARDED,
        FAIL_REASON.NOT_LEADER,
        FAIL_REASON.LEADER_CHANGED,
        FAIL_REASON.UNKNOWN_OUTCOME,
    }
    data = ReplDict()
    partners = [a for i, a in enumerate(raft_addresses) if i != me]
    node = SyncObj(raft_addresses[me], partners, SyncObjConf(journalFile=journal, appendEntriesUseBatch=False), consumers=[data])

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                try:
                    request = _read_frame(sock)
                except (ConnectionError, OSError):
                    return
                try:
                    reply = b"K" + answer(request)
                except Exception as exc:
                    reply = b"E" + f"{type(exc).__name__}: {exc}".encode()
                try:
                    _send_frame(sock, reply)
                except OSError:
                    return

    def put(key: str, value: str) -> int:
        """Replicate ``key = value``; returns how many tries a leader change cost (a put is safe to repeat)."""
        deadline = time.monotonic() + _SYNC_TIMEOUT
        retried = 0
        while True:
            try:
                data.set(key, value, sync=True, timeout=max(0.1, deadline - time.monotonic()))
                return retried
            except SyncObjException as exc:
                if exc.errorCode not in _TRANSIENT or time.monotonic() >= deadline:
                    raise
                retried += 1
                time.sleep(0.01)

    def answer(request: bytes) -> bytes:
        op = request[:1]
        if op == b"P":
            (keylen,) = _KEYLEN.unpack_from(request, 1)
            return str(put(request[3 : 3 + keylen].decode(), request[3 + keylen :].decode())).encode()
        if op == b"G":
            return str(data.get(request[1:].decode(), "")).encode()
        if op == b"L":
            return b"1" if node._isLeader() else b"0"
        if op == b"W":
            return json.dumps(logged).encode()
        raise ValueError(f"unknown op {op!r}")

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", request_port), Handler)
    server.daemon_threads = True
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        node.destroy()


class PySyncObjClient:
    """Put and Get against one PySyncObj node's request server, one request at a time."""

    def __init__(self, host: str, port: int, timeout: float = 15.0) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.retries = 0
        """Tries lost to leader changes so far (the node retries a put; this counts what it reported)."""

    def _call(self, request: bytes) -> bytes:
        _send_frame(self._sock, request)
        reply = _read_frame(self._sock)
        if reply[:1] != b"K":
            raise RuntimeError(f"PySyncObj node refused {request[:1]!r}: {reply[1:].decode(errors='replace')}")
        return reply[1:]

    def put(self, key: str, value: str) -> None:
        k = key.encode()
        self.retries += int(self._call(b"P" + _KEYLEN.pack(len(k)) + k + value.encode()) or 0)

    def get(self, key: str) -> str:
        return self._call(b"G" + key.encode()).decode()

    def is_leader(self) -> bool:
        return self._call(b"L") == b"1"

    def warnings(self) -> list[str]:
        return json.loads(self._call(b"W"))

    def close(self) -> None:
        self._sock.close()


class PySyncObjCluster:
    """Context manager: ``nodes`` PySyncObj processes with journals under ``data_dir``.

    ``endpoints`` lists each node's request server as ``(host, port)``.
    Leaving the block stops every node (SIGTERM, then SIGKILL after a bounded
    wait), also when starting failed halfway.
    """

    def __init__(self, data_dir: str, nodes: int = 3) -> None:
        self.data_dir = data_dir
        self.nodes = nodes
        ports = free_ports(2 * nodes)
        self._raft_addresses = [f"127.0.0.1:{ports[i]}" for i in range(nodes)]
        self.endpoints = [("127.0.0.1", ports[nodes + i]) for i in range(nodes)]
        self.procs: list[Any] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def __enter__(self) -> PySyncObjCluster:
        ctx = multiprocessing.get_context("forkserver")
        try:
            for i in range(self.nodes):
                journal = f"{self.data_dir}/pysyncobj-{i}.journal"
                args = (i, self._raft_addresses, self.endpoints[i][1], journal)
                proc = ctx.Process(target=serve_node, args=args, name=f"pysyncobj-{i}", daemon=True)
                proc.start()
                self.procs.append(proc)
            self.leader()  # every request server up and a leader elected
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _ask_each(self, call: Any) -> list[Any]:
        answers = []
        for host, port in self.endpoints:
            client = PySyncObjClient(host, port, timeout=2.0)
            try:
                answers.append(call(client))
            finally:
                client.close()
        return answers

    def leader(self) -> int:
        """Index of the node that leads now (bounded wait for start-up and an election)."""
        deadline = time.monotonic() + _START_WAIT
        while time.monotonic() < deadline:
            for i, p in enumerate(self.procs):
                if not p.is_alive():
                    raise RuntimeError(f"PySyncObj node {i} exited with {p.exitcode}")
            try:
                leads = self._ask_each(lambda c: c.is_leader())
                if any(leads):
                    return leads.index(True)
            except OSError:
                pass  # a request server not listening yet
            time.sleep(0.1)
        raise RuntimeError(f"PySyncObj: no leader within {_START_WAIT} s")

    def warnings(self) -> list[str]:
        """What every node's PySyncObj logged at WARNING or above so far."""
        return [text for texts in self._ask_each(lambda c: c.warnings()) for text in texts]

    def stop(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(timeout=_STOP_WAIT)
            if p.is_alive():
                p.kill()
                p.join(timeout=_STOP_WAIT)
