"""Who may talk to a node: the ZAP handler that admits a CURVE client by its key, and the ROUTER's connections.

Why a room: a CURVE server without a ZAP handler lets any client that knows
its public key in, so the handler must exist before the node's ROUTER binds,
and a peer it refuses never gets a byte to the codec (nothing from an
unauthenticated peer is ever unpickled). The refusals happen inside libzmq,
so they are counted from the ROUTER's socket monitor. Both sockets belong to
the node's I/O thread, which calls :meth:`Admission.answer` and
:meth:`Admission.read_monitor` when their descriptors signal; the keys
themselves are :mod:`transport.keys`'s business.

The monitor also tells which descriptors the ROUTER accepted, and when the
operating system refused it one (out of open files). That is what the two
things a node cannot get from libzmq's API are built on:

- **Closing a revoked key's connection.** libzmq has no call that closes
  one peer of a ROUTER (``zmq_unbind`` only stops the listener: the
  accepted connections stay open, their messages discarded, and the peer is
  never told). A ``shutdown(2)`` of the accepted socket, which leaves the
  descriptor itself to libzmq, makes libzmq see the connection end and close
  it. A connection cannot be told from another by its key here (the ZAP
  request names the peer's address, not its port), so :meth:`cut` closes
  every accepted connection, once a key that has logged in since the last
  cut is revoked: the members' sockets reconnect at once and log in again,
  the revoked key cannot. A revocation is rare; a connection left open to a
  key its owner took back should not be.
- **Knowing it is starved of descriptors** (:attr:`Admission.starved_at`),
  so that a Raft leader no client can reach any more gives up its leadership.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Iterable
from typing import cast

import zmq
import zmq.utils.monitor
import zmq.utils.z85

from transport.counters import Counters
from transport.keys import Keyring
from transport.once import OncePerCause

log = logging.getLogger(__name__)
_notices = OncePerCause(log)  # a refused client retries: one line per cause, not per attempt

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
"""Where libzmq asks a context's ZAP handler (fixed by the ZAP protocol)."""

HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_WATCHED = HANDSHAKE_FAILURES | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_ACCEPT_FAILED
_STARVED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
"""What an accept fails with when the process (or the machine) has no descriptors or memory left."""


class Admission:
    """The CURVE server side of one node's ROUTER: made before the bind, then served by the I/O thread alone."""

    def __init__(self, ctx: zmq.Context, router: zmq.Socket, keyring: Keyring, counters: Counters) -> None:
        self._keyring = keyring
        self._counters = counters
        self._router = router
        self.label = "?"
        """The node's endpoint, for logs (set once the ROUTER is bound)."""
        self._zap = ctx.socket(zmq.REP)
        self._zap.setsockopt(zmq.LINGER, 0)
        self._zap.bind(ZAP_ENDPOINT)
        keyring.secure_server(router)
        router.zap_domain = b"zactor"
        self._monitor = router.get_monitor_socket(_WATCHED)
        self._accepted: set[int] = set()
        """Descriptors of the ROUTER's accepted connections, as the monitor has told them so far."""
        self._admitted: set[str] = set()
        """Keys admitted since the last :meth:`cut` (whether or not their connections are still open)."""
        self.starved_at: float | None = None
        """``time.monotonic()`` of the last accept the OS refused for want of descriptors or memory."""
        self.bound = ""
        """The ROUTER's bound endpoint (numeric, as libzmq reports it), set once bound: what tells an accepted
        socket from one this process opened."""

    def close(self) -> None:
        """Stop the monitor (before the context goes; the sockets close with it)."""
        try:
            self._router.disable_monitor()
        except zmq.ZMQError:
            pass

    def descriptors(self) -> tuple[int, int]:
        """The ZAP socket's and the monitor's ZMQ_FD, for the I/O thread's poller (edge-triggered)."""
        return cast(int, self._zap.get(zmq.FD)), cast(int, self._monitor.get(zmq.FD))

    def answer(self) -> bool:
        """Admit a CURVE client only if its public key is in the keyring, naming the key as the
        connection's User-Id; whether requests are left.

        Reads until none are left, or a bound (the rest wait for the next turn).
        """
        zap = self._zap
        for _ in range(1_000):
            try:
                request = zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return False
            ok = False
            client = b""
            try:
                version, request_id, _domain, address, _identity, mechanism = request[:6]
                client = zmq.utils.z85.encode(request[6]) if mechanism == b"CURVE" and len(request) > 6 else b""
                ok = bool(client) and self._keyring.allows(client)
            except Exception as exc:  # a bad request or a keyring file that no longer parses: refuse
                version, request_id, address = b"1.0", request[1] if len(request) > 1 else b"", b"?"
                log.error("node %s: refusing a connection, cannot check it: %s", self.label, exc)
            if ok:
                self._admitted.add(client.decode())
            else:
                _notices.warn(("key", self.label, client), "node %s: refused a connection from %s: its key %s is not in the keyring",
                              self.label, address.decode(errors="replace"), (client or b"(none)").decode())
            # The User-Id names the key on every frame of the connection (see transport.roles).
            zap.send_multipart([version, request_id, b"200" if ok else b"400", b"OK" if ok else b"not in keyring", client if ok else b"", b""])
        return True

    def read_monitor(self) -> bool:
        """Count failed handshakes as ``rejected``, keep the accepted descriptors, note a refused accept;
        whether events are left for the next turn."""
        for _ in range(1_000):
            try:
                event = zmq.utils.monitor.recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return False
            kind, value = event["event"], event["value"]
            if kind == zmq.EVENT_ACCEPTED:
                self._accepted.add(value)
            elif kind == zmq.EVENT_DISCONNECTED:
                self._accepted.discard(value)
            elif kind == zmq.EVENT_ACCEPT_FAILED:
                self._accept_failed(value)
            elif kind & HANDSHAKE_FAILURES:
                self._counters.add("rejected")
                if event["event"] != zmq.EVENT_HANDSHAKE_FAILED_AUTH:  # a refused key was logged by answer()
                    _notices.warn(("handshake", self.label), "node %s: refused a connection that failed the CURVE handshake "
                                  "(a client with --insecure, or one whose keyring has another key for this node; more: rejected)",
                                  self.label)
        return True

    def _accept_failed(self, err: int) -> None:
        self._counters.add("accept_failed")
        if err in _STARVED:
            self.starved_at = time.monotonic()
        _notices.warn(("accept", self.label, err), "node %s: could not accept a connection: %s (more: accept_failed; "
                      "a Raft leader gives up leading while this lasts)", self.label, os.strerror(err))

    def cut(self, revoked: Iterable[str]) -> int:
        """Close every accepted connection if a key in ``revoked`` has logged in since the last cut; how many
        were closed (see the module docstring for why all of them)."""
        gone = self._admitted.intersection(revoked)
        if not gone:
            return 0
        self.read_monitor()  # the descriptors as of now: one closed meanwhile may already be another's
        closed = sum(1 for fd in sorted(self._accepted) if _shut_if_accepted(fd, self.bound))
        self._admitted.clear()  # the members log in again, and are admitted anew
        self._counters.add("closed", closed)
        log.warning("node %s: closed %d connection(s) because key(s) %s were revoked; members reconnect at once",
                    self.label, closed, ", ".join(sorted(gone)))
        return closed


def _shut_if_accepted(fd: int, bound: str) -> bool:
    """``shutdown(2)`` ``fd`` if it is still a socket accepted on ``bound`` (a closed descriptor's number may be
    in use again, by anything); libzmq then sees the connection end and closes it itself."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:  # closed meanwhile, or not a socket
        return False
    try:
        name = sock.getsockname()
        if bound.startswith("tcp://"):
            ours = isinstance(name, tuple) and str(name[1]) == bound.rsplit(":", 1)[1]
        else:
            ours = bound.startswith("ipc://") and name == bound[len("ipc://"):]
        if ours:
            sock.shutdown(socket.SHUT_RDWR)
        return ours
    except OSError:
        return False
    finally:
        sock.close()  # the duplicate only: the descriptor stays libzmq's
