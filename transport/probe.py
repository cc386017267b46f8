"""Why a node does not answer: a trial connection watched through ZeroMQ's socket monitor.

Why a room: when an ask gets no reply, the cause usually lies in the
connection, and libzmq knows it but tells no one: nothing listens at the
endpoint, or the server refused this machine's key, or one side speaks CURVE
and the other does not, or the server's key is not the one the keyring has
for that host. :func:`probe` opens one more DEALER to the endpoint, exactly as
the node opens its own (:func:`~transport.dealers.open_dealer`: same keys,
same server key, same options), so it meets the same fate, and reads the
monitor's events until the outcome is known. A trial connection rather than
a monitor on every connection: the message paths pay nothing, no monitor
socket is held per connection (unread, its queue would grow), and a socket
refused by a ZAP handler is never retried by libzmq, so its own monitor
would have one story to tell, once.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import zmq
import zmq.utils.monitor

from transport.dealers import open_dealer
from transport.keys import Keyring, endpoint_host

PROBE_TIMEOUT = 1.0
"""Seconds a probe waits for the handshake's outcome (a refused connection is known in milliseconds)."""


class LinkState(enum.Enum):
    """What a trial connection to a node found."""

    OK = "connected"
    """The handshake completed: the node is up and lets this machine in."""
    NOTHING_LISTENING = "nothing listening"
    KEY_REFUSED = "key refused"
    """The server's ZAP handler refused this machine's key (not in its keyring's members)."""
    SERVER_INSECURE = "server insecure"
    """This side speaks CURVE, the server does not (it runs with --insecure)."""
    SERVER_SECURE = "server secure"
    """This side is insecure, the server requires CURVE."""
    HANDSHAKE_FAILED = "handshake failed"
    """Most likely the server's key is not the one the keyring has for that host."""
    NO_RESPONSE = "no response"
    """No answer at all to the connection attempt in time: a host down, a firewall or a partition dropping packets."""
    NO_OUTCOME = "no outcome"
    """Connected, but the handshake neither completed nor failed in time (a slow or foreign peer)."""


@dataclass(frozen=True)
class LinkReport:
    """A probe's finding: the state, and a sentence for a person that names the fix."""

    endpoint: str
    state: LinkState
    explanation: str

    @property
    def ok(self) -> bool:
        return self.state is LinkState.OK

    @property
    def lasting(self) -> bool:
        """A cause that will not go away by waiting (unlike a server not started yet)."""
        return self.state in (LinkState.KEY_REFUSED, LinkState.SERVER_INSECURE, LinkState.SERVER_SECURE, LinkState.HANDSHAKE_FAILED)


_WATCHED = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
_FAILED = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL


def probe(
    ctx: zmq.Context,
    endpoint: str,
    *,
    keyring: Keyring | None,
    server_key: bytes | None,
    max_frame_bytes: int,
    timeout: float = PROBE_TIMEOUT,
) -> LinkReport:
    """Open a trial connection to ``endpoint`` like the node's own and say what became of it.

    Any thread (the sockets are this call's own). Raises what ``open_dealer``
    raises before any socket exists (an endpoint the insecure mode may not dial).
    """
    report = _try(ctx, endpoint, keyring, server_key, max_frame_bytes, timeout)
    if report.state is LinkState.HANDSHAKE_FAILED and keyring is not None:
        # CURVE failed for a reason libzmq did not name (it reports a mechanism
        # mismatch only when the server's ERROR arrives before the close): a
        # plain handshake that succeeds says the server runs without security.
        try:
            plain = _try(ctx, endpoint, None, None, max_frame_bytes, timeout)
        except OSError:  # plain connections are allowed to loopback and ipc:// only
            return report
        if plain.ok:
            return explain(endpoint, LinkState.SERVER_INSECURE)
    return report


def _try(
    ctx: zmq.Context, endpoint: str, keyring: Keyring | None, server_key: bytes | None, max_frame_bytes: int, timeout: float
) -> LinkReport:
    monitors: list[zmq.Socket] = []
    try:
        sock = open_dealer(
            ctx, endpoint, keyring=keyring, server_key=server_key, routing_id=None, inbound_hwm=1,
            max_frame_bytes=max_frame_bytes,
            before_connect=lambda s: monitors.append(s.get_monitor_socket(_WATCHED)),  # no event may come before it
        )
    except BaseException:
        for monitor in monitors:
            monitor.close(linger=0)
        raise
    monitor = monitors[0]
    try:
        return _outcome(monitor, endpoint, keyring is not None, time.monotonic() + timeout)
    finally:
        try:
            sock.disable_monitor()
        except zmq.ZMQError:
            pass
        monitor.close(linger=0)
        sock.close(linger=0)


def _outcome(monitor: zmq.Socket, endpoint: str, secure: bool, deadline: float) -> LinkReport:
    connected = False
    retries = 0  # refused connection attempts
    for _ in range(10_000):  # bounded: a few events per connection attempt, attempts every 10-200 ms
        left = deadline - time.monotonic()
        if left <= 0 or not monitor.poll(max(1, int(left * 1000))):
            break
        event = zmq.utils.monitor.recv_monitor_message(monitor)
        kind, value = event["event"], event["value"]
        if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return explain(endpoint, LinkState.OK)
        if not secure and kind & _FAILED:  # a plain client fails a handshake only with a CURVE server
            return explain(endpoint, LinkState.SERVER_SECURE)
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return explain(endpoint, LinkState.KEY_REFUSED)
        if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return explain(endpoint, LinkState.SERVER_INSECURE)
        if kind & _FAILED:
            return explain(endpoint, LinkState.HANDSHAKE_FAILED)
        if kind == zmq.EVENT_CONNECTED:
            connected = True
        elif kind == zmq.EVENT_CONNECT_RETRIED:
            retries += 1
            if not connected:  # the connection was refused (a caller that must be sure looks again later)
                return explain(endpoint, LinkState.NOTHING_LISTENING)
    if connected:
        return explain(endpoint, LinkState.NO_OUTCOME)
    return explain(endpoint, LinkState.NOTHING_LISTENING if retries else LinkState.NO_RESPONSE)


def explain(endpoint: str, state: LinkState) -> LinkReport:
    """The sentence a person reads for ``state``, with the command that fixes it."""
    host = endpoint_host(endpoint) or endpoint
    text = {
        LinkState.OK: f"the node at {endpoint} accepts this machine's connection",
        LinkState.NOTHING_LISTENING: f"nothing is listening at {endpoint}: is the server started, and is that its endpoint?",
        LinkState.KEY_REFUSED: (
            f"the node at {endpoint} refused this machine's key (it is not in that node's keyring): on that machine, "
            "run `zactor keys add NAME KEY` with the key `zactor keys show` prints here (add `--role member` "
            "for a node that hosts actors), or point both at one keyring with --keys DIR"
        ),
        LinkState.SERVER_INSECURE: (
            f"the node at {endpoint} runs without security (--insecure) and this side uses CURVE: "
            "restart the server without --insecure, or connect with --insecure too (loopback only)"
        ),
        LinkState.SERVER_SECURE: (
            f"the node at {endpoint} requires CURVE security and this side runs with --insecure (or ZACTOR_INSECURE): "
            "drop --insecure and use a keyring that node lets in"
        ),
        LinkState.HANDSHAKE_FAILED: (
            f"the security handshake with {endpoint} failed: that node uses another keyring (its key is not the one "
            f"this keyring has for {host}, or this machine's key is not among its members): give both the same "
            f"--keys DIR, or run `zactor keys show` on each side and `zactor keys add NAME KEY --host {host} --role member` "
            "on the other"
        ),
        LinkState.NO_RESPONSE: (
            f"no response from {endpoint} to a connection attempt: the host may be down, or a firewall "
            "or a network partition drops the packets"
        ),
        LinkState.NO_OUTCOME: f"the node at {endpoint} took a connection but never completed the handshake (a foreign or stalled process?)",
    }[state]
    return LinkReport(endpoint, state, text)
