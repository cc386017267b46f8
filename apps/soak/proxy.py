"""A small TCP proxy in front of each etcd member's peer port, for partitions between members.

Members advertise the proxy's port as their peer URL, so every byte of Raft
traffic between members passes through one of these. A connection's sender
is learned from its first HTTP request: etcd's peer transport names itself
in an ``X-Server-From`` header (the member id in hex) on its stream and
pipeline requests. :meth:`PeerProxy.block` then refuses new connections from
the blocked senders and cuts the ones already open; connections that carry
no such header (version and health probes) pass. Threads, loopback only.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

_HEADER_LIMIT = 16384
_SENDER = b"x-server-from:"


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
        """From now on, drop traffic from these member indexes (an empty set heals)."""
        with self._lock:
            self.blocked = frozenset(senders)
            # Resolved now, not at accept: streams opened before the ids were known are cut too.
            cut = [c for c in self._open if self._refused(c[0])]
            self._open = [c for c in self._open if c not in cut]
        for _, a, b in cut:
            _close(a)
            _close(b)

    def _refused(self, hex_id: str | None) -> bool:
        who = self.member_of(hex_id) if hex_id else None
        return who is not None and who in self.blocked

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(2.0)
        self._server.close()
        with self._lock:
            conns, self._open = self._open, []
        for _, a, b in conns:
            _close(a)
            _close(b)

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
        if refused or not head:
            _close(client)
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2.0)
            upstream.sendall(head)
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
        threading.Thread(target=_pump, args=(upstream, client), name="soak-proxy-pump", daemon=True).start()
        _pump(client, upstream)
        with self._lock:
            self._open = [c for c in self._open if c[1] is not client]


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        _close(src)
        _close(dst)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
