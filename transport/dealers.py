"""The node's sending sockets: how one is opened, and the shared ones kept per destination.

Why a room: a DEALER is opened the same way for a shared connection and for a
thread's :class:`~transport.channel.Channel` (this node's keys, queue bounds,
a routing id that names the node, fast reconnects), and the shared ones form
a cache with rules of its own: one per destination, at most ``max_peers``
open (the least recently used goes first), none kept ``peer_idle`` seconds
without a send, each reachable from its descriptor (what the I/O thread
polls) and known by its destination (the label of the replies read off it).
The node's send lock guards every change; the I/O thread alone closes
sockets, since it alone polls their descriptors.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import cast

import zmq

from transport.keys import Keyring, check_dial
from transport.parts import wire_frame_limit

DEFAULT_MAX_PEERS = 256
"""Open sending sockets (one per destination) kept at most; the least recently used is closed."""

DEFAULT_PEER_IDLE = 300.0
"""Seconds without a send after which a sending socket is closed (reopened on the next send)."""

HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 10_000
HANDSHAKE_MS = 5_000
"""How long a node's ROUTER waits for a connection to finish its (CURVE) handshake before closing it: long
enough for a member on a loaded machine (a handshake takes milliseconds), short for a stranger holding a
descriptor and a buffer open."""
CONNECT_TIMEOUT_MS = 1000


def watch_liveness(sock: zmq.Socket) -> None:
    """Close a connection whose peer stops answering ZMTP pings, so that it is redialled.

    Why: after a network cut, TCP keeps the old connection and backs its
    retransmissions off exponentially, so traffic resumed seconds after the
    cut healed (6.3 s median after a 20 s cut, ``zactor bench failover``).
    A connection silent for ``HEARTBEAT_TIMEOUT_MS`` is dropped instead, and
    the DEALER redials every ``RECONNECT_IVL_MAX`` until the heal. Dropping a
    connection loses what was queued on it, so the timeout is long enough for
    a peer that is only paused (a stopped process, a long GC) to answer its
    asks late rather than never (tests/test_future_wait.py pauses one 5 s).
    On a ROUTER it also frees the descriptor of a client that vanished.
    """
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)


def open_dealer(
    ctx: zmq.Context,
    dest: str,
    *,
    keyring: Keyring | None,
    server_key: bytes | None,
    routing_id: bytes | None,
    inbound_hwm: int,
    max_frame_bytes: int,
    before_connect: Callable[[zmq.Socket], object] | None = None,
) -> zmq.Socket:
    """A DEALER connected to ``dest``; ZMQError (socket closed) if the endpoint is refused.

    ``server_key``: ``dest``'s CURVE key, looked up by the caller before any socket exists
    (an unknown host leaks nothing); with ``keyring`` None the connection is plain, and only
    to the insecure mode's allow-list (InsecureConnectError otherwise, before any socket exists).
    ``before_connect``: called with the socket just before it connects (a probe attaches its monitor there).
    """
    check_dial(dest, keyring is not None)
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, inbound_hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, wire_frame_limit(max_frame_bytes))  # larger messages come in parts
    # A restarted peer should be reachable again within milliseconds.
    sock.setsockopt(zmq.RECONNECT_IVL, 10)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
    # A dial into a cut network gives up and retries instead of waiting on TCP's SYN backoff.
    sock.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
    watch_liveness(sock)
    if routing_id is not None:
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
    if keyring is not None:
        sock.curve_serverkey = server_key
        sock.curve_publickey = keyring.public
        sock.curve_secretkey = keyring.secret
    try:
        if before_connect is not None:
            before_connect(sock)
        sock.connect(dest)
    except zmq.ZMQError:
        sock.close()
        raise
    return sock


class Dealers:
    """The shared DEALERs, one per destination, least recently used first.

    Changed under the node's send lock. The I/O thread reads ``by_fd`` without
    it (each read one dict operation, atomic under the GIL), so ``by_fd`` is
    changed in place and never replaced.
    """

    def __init__(self, max_peers: int, peer_idle: float) -> None:
        self.max_peers = max_peers
        self.peer_idle = peer_idle
        self.by_dest: OrderedDict[str, zmq.Socket] = OrderedDict()
        """Least recently used first: a send moves its destination to the end."""
        self.by_fd: dict[int, zmq.Socket] = {}
        self.peers: dict[zmq.Socket, str] = {}
        """Each socket's destination, for the replies read off it."""
        self.last_send: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self.by_dest)

    def add(self, dest: str, sock: zmq.Socket) -> None:
        self.by_dest[dest] = sock
        self.by_fd[cast(int, sock.get(zmq.FD))] = sock
        self.peers[sock] = dest
        self.last_send[dest] = time.monotonic()

    def over_limit(self) -> list[tuple[str, zmq.Socket]]:
        """Take out the least recently used beyond ``max_peers``; the caller closes them (see :meth:`close`)."""
        gone = []
        while len(self.by_dest) > self.max_peers:
            dest, sock = self.by_dest.popitem(last=False)
            self.last_send.pop(dest, None)
            gone.append((dest, sock))
        return gone

    def idle(self) -> list[tuple[str, zmq.Socket]]:
        """Take out those without a send for ``peer_idle`` seconds; the caller closes them."""
        cutoff = time.monotonic() - self.peer_idle
        gone = []
        for dest in [d for d, t in self.last_send.items() if t < cutoff]:
            del self.last_send[dest]
            sock = self.by_dest.pop(dest, None)
            if sock is not None:
                gone.append((dest, sock))
        return gone

    def close(self, sock: zmq.Socket) -> None:
        """Forget a socket taken out, and close it: only on the I/O thread (nobody polls it now)."""
        for fd in [fd for fd, s in list(self.by_fd.items()) if s is sock]:
            self.by_fd.pop(fd, None)
        self.peers.pop(sock, None)
        sock.close(linger=0)
