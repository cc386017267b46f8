"""Who may talk to a node: the ZAP handler that admits a CURVE client by its key, and the count of those refused.

Why a room: a CURVE server without a ZAP handler lets any client that knows
its public key in, so the handler must exist before the node's ROUTER binds,
and a peer it refuses never gets a byte to the codec (nothing from an
unauthenticated peer is ever unpickled). The refusals happen inside libzmq,
so they are counted from the ROUTER's socket monitor. Both sockets belong to
the node's I/O thread, which calls :meth:`Admission.answer` and
:meth:`Admission.read_monitor` when their descriptors signal; the keys
themselves are :mod:`transport.keys`'s business.
"""

from __future__ import annotations

import logging
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
        self._monitor = router.get_monitor_socket(HANDSHAKE_FAILURES)

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
            if not ok:
                _notices.warn(("key", self.label, client), "node %s: refused a connection from %s: its key %s is not in the keyring",
                              self.label, address.decode(errors="replace"), (client or b"(none)").decode())
            # The User-Id names the key on every frame of the connection (see transport.roles).
            zap.send_multipart([version, request_id, b"200" if ok else b"400", b"OK" if ok else b"not in keyring", client if ok else b"", b""])
        return True

    def read_monitor(self) -> bool:
        """Count failed handshakes as ``rejected``; whether events are left for the next turn."""
        for _ in range(1_000):
            try:
                event = zmq.utils.monitor.recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return False
            if event["event"] & HANDSHAKE_FAILURES:
                self._counters.add("rejected")
                if event["event"] != zmq.EVENT_HANDSHAKE_FAILED_AUTH:  # a refused key was logged by answer()
                    _notices.warn(("handshake", self.label), "node %s: refused a connection that failed the CURVE handshake "
                                  "(a client with --insecure, or one whose keyring has another key for this node; more: rejected)",
                                  self.label)
        return True
