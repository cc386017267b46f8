"""A small TCP proxy in front of each etcd member's peer port, for partitions between members.

Members advertise the proxy's port as their peer URL, so every byte of Raft
traffic between members passes through one of these. A connection's sender
is learned from its first HTTP request: etcd's peer transport names itself
in an ``X-Server-From`` header (the member id in hex) on its stream and
pipeline requests. :meth:`PeerProxy.block` then refuses new connections from
the blocked senders and cuts the ones already open.

A connection whose first request names no sender (etcd's ``/raft/probing``,
``/version``, ``/members``) is not harmless: the prober shares the pipeline's
keep-alive connection pool, so the same connection later carries
``POST /raft`` with Raft messages (seen in issue #13: the cut-off member kept
answering linearizable reads). Its sender is unknown, so while this proxy
blocks anyone, such connections are refused and the open ones are cut;
without a partition they pass. Threads, loopback only.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

_HEADER_LIMIT = 16384
_SENDER = b"x-server-from:"
_DRAIN = 5.0
"""Seconds a relay waits for its other direction to stop after shutting both down (it stops at once)."""


def sender_of(head: bytes) -> str | None:
    """The ``X-Server-From`` value of an HTTP request head, lower-case hex, if any."""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(_SENDER):
            return line[len(_SENDER) :].strip().decode("ascii", "replace").lower()
    return None


class PeerProxy:
    """Listens on ``127.0.0.1:listen_port`` and forwards to ``127.0.0.1:target_port``, minus blocked senders."""

    def __init__(self, listen_port: int, target_port: int, member_of: Callable[[str], int | None]) -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self.member_of = member_of
        """Maps a member id (hex) to the member's index, None while unknown."""
        self.blocked: frozenset[int] = frozenset()
        self._lock = threading.Lock()
        self._open: list[tuple[str | None, socket.socket, socket.socket]] = []
        """(sender's member id in hex, client side, member side) of each open connection."""
        self._server = socket.create_server(("127.0.0.1", listen_port), reuse_port=False)
        self._server.settimeout(0.5)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name=f"soak-proxy-{listen_port}", daemon=True)
        self._thread.start()

    def block(self, senders: set[int]) -> None:
        """From now on, drop traffic from these member indexes (an empty set heals).

        Connections already open are judged again now: from a blocked sender,
        from a sender whose id is not known yet, or with no sender at all,
        they are cut while anyone is blocked.
        """
        with self._lock:
            self.blocked = frozenset(senders)
            cut = [c for c in self._open if self._refused(c[0])]
            self._open = [c for c in self._open if c not in cut]
            kept = len(self._open)
        log.debug("proxy :%d blocks %s: cut %d connections, kept %d", self.listen_port, sorted(senders), len(cut), kept)
        for _, a, b in cut:
            _shut(a)
            _shut(b)

    def _refused(self, hex_id: str | None) -> bool:
        """Whether a connection from ``hex_id`` may not pass now (called under the lock)."""
        if not self.blocked:
            return False
        who = self.member_of(hex_id) if hex_id else None
        return who is None or who in self.blocked

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(2.0)
        self._server.close()
        with self._lock:
            conns, self._open = self._open, []
        for _, a, b in conns:  # their relay threads close them
            _shut(a)
            _shut(b)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), name="soak-proxy-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(10.0)
        head = b""
        try:
            while b"\r\n\r\n" not in head and len(head) < _HEADER_LIMIT:
                chunk = client.recv(4096)
                if not chunk:
                    break
                head += chunk
        except OSError:
            _close(client)
            return
        hex_id = sender_of(head)
        with self._lock:
            refused = self._refused(hex_id)
        log.debug("proxy :%d: %r from %s%s", self.listen_port, head.split(b"\r\n", 1)[0][:80], hex_id, " refused" if refused else "")
        if refused or not head:
            _close(client)
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2.0)
        except OSError:
            _close(client)
            return
        client.settimeout(None)
        upstream.settimeout(None)
        with self._lock:
            if self._refused(hex_id):  # blocked while we connected
                _close(client)
                _close(upstream)
                return
            self._open.append((hex_id, client, upstream))
        # Nothing has reached the member before the connection is registered, so a
        # block() from here on cuts it, and one before it was refused above.
        back = threading.Thread(target=_pump, args=(upstream, client), name="soak-proxy-pump", daemon=True)
        back.start()
        try:
            upstream.sendall(head)
        except OSError:
            _shut(client)
            _shut(upstream)
        else:
            _pump(client, upstream)
        back.join(_DRAIN)
        with self._lock:
            self._open = [c for c in self._open if c[1] is not client]
        # Closed here only, once both directions have stopped: a socket closed
        # under another thread's recv could see its descriptor reused.
        _close(client)
        _close(upstream)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until either ends; then shut both down, which ends the other direction too."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        _shut(src)
        _shut(dst)


def _shut(s: socket.socket) -> None:
    """End both directions; a thread blocked in recv or send on ``s`` returns."""
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _close(s: socket.socket) -> None:
    _shut(s)
    try:
        s.close()
    except OSError:
        pass
