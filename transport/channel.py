"""A thread's own sending connection to one node, driven by the thread that waits for the replies.

Why a room: a thread that asks and waits should be woken by the reply itself,
as with raw pyzmq, not by the node's I/O thread first (one wake-up per round
trip instead of two). So each (thread, destination) gets a DEALER of its own:
the thread sends on it and, holding the channel's lock, reads the replies off
it. The node makes channels (:meth:`~transport.node.Node.channel`) and closes
them; what a channel needs back from its node is :class:`ChannelHost`: how to
frame and count what it sends, the fault decisions, and the node's way in
for a frame that arrives (decode, count, "in" fault rules); a well-formed
reply with no fault rules set is decoded here without it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Protocol

import zmq

from transport.codec import BATCH, MalformedFrame, decode, encode_fields
from transport.counters import Counters, Tally
from transport.envelope import CONTROL_NAME, KIND_REPLY, Envelope
from transport.faults import DROP, FaultTable
from transport.once import OncePerCause
from transport.parts import PART_BYTES, read_rest, send_parts
from transport.rawzmq import NOBLOCK, RCVMORE, RCVTIMEO, raw_get, raw_recv, raw_send, raw_set

log = logging.getLogger(__name__)
_notices = OncePerCause(log)
_NONE_SENT = (0, 0)


class ChannelHost(Protocol):
    """What a channel needs from its node (:class:`~transport.node.Node` is one)."""

    endpoint: str
    max_frame_bytes: int
    counters: Counters
    frame_src: str
    """What a frame says of its sender ("" when the connection's routing id says it)."""

    def decide_out(self, dest: str, message_type: str) -> float:
        """The "out" fault rules' verdict on one message (DROP, a delay in seconds, or 0)."""
        ...

    def send_later(self, delay: float, dest: str, frame: bytes) -> None:
        """Send ``frame`` to ``dest`` on the shared connection after ``delay`` seconds."""
        ...

    def accept(self, frame: bytes, route: bytes | None, replies_only: bool, peer: str, tally: Tally) -> Envelope | None:
        """Decode, count and fault-check one frame that arrived; None when dropped or held back."""
        ...

    def accept_batch(self, frame: bytes, peer: str, tally: Tally) -> list[Envelope]:
        """``accept`` for each reply of a batch."""
        ...


class ThreadChannels(dict):
    """One thread's channels; when the thread ends its channels are handed back to the node to close."""

    def __init__(self, orphans: deque) -> None:
        super().__init__()
        self._orphans = orphans

    def __del__(self) -> None:
        self._orphans.extend(self.values())  # closed by the next channel() call or by close(), never here


class Channel:
    """A sending connection owned by whichever thread holds its lock: no I/O thread in between.

    A thread that asks and waits sends its request on its own DEALER and
    polls that DEALER for the reply itself, so the reply wakes exactly the
    thread that waits for it (as with raw pyzmq), never the node's I/O thread
    first. One channel per (thread, destination), made by :meth:`Node.channel`;
    any thread may drive it (read its replies) while holding ``lock``, which is
    how a future handed to another thread still completes.
    """

    __slots__ = ("_faults", "_host", "_sock", "_tally", "_timeout_ms", "closed", "dest", "lock")

    def __init__(self, host: ChannelHost, faults: FaultTable, dest: str, sock: zmq.Socket) -> None:
        """``faults``: the node's table, read here only for whether it has rules (decisions go through ``host``)."""
        self._host = host
        self._faults = faults
        self.dest = dest
        self._sock = sock
        self._timeout_ms = -1  # the socket's receive timeout now (-1: ZeroMQ's default, wait forever)
        self._tally = host.counters.tally()  # written only under ``lock``
        self.lock = threading.Lock()
        self.closed = False

    def request(self, kind: int, name: str, corr: int, body: Any) -> int:
        """Send a tell or an ask to actor ``name`` on this channel (any thread; encoding errors raise here).

        From the fields, not an Envelope: this is every remote ask's way out.
        """
        host = self._host
        frame = encode_fields(kind, name, host.frame_src, "", corr, body, host.max_frame_bytes)
        size = len(frame)
        counted = True
        if name == CONTROL_NAME:  # never subject to faults, and kept out of ``sent``
            host.counters.add("control")
        elif self._faults.rules:
            hold = host.decide_out(self.dest, type(body).__name__)
            host.counters.count_sent(type(body).__name__, size)
            if hold == DROP:
                host.counters.add("dropped_by_faults")
                return size
            if hold > 0:  # rare (fault tests): the shared connection carries it later
                host.send_later(hold, self.dest, frame)
                return size
        else:
            counted = False  # the usual case: into this channel's tally, under its lock
        with self.lock:
            if self.closed:
                raise ConnectionError(f"node {host.endpoint} is closed")
            if not counted:  # Tally.count_sent, inline: every request comes this way
                by_type, mtype = self._tally.by_type, type(body).__name__
                n, nbytes = by_type.get(mtype, _NONE_SENT)
                by_type[mtype] = (n + 1, nbytes + size)
            try:
                if size <= PART_BYTES:
                    raw_send(self._sock, frame, NOBLOCK)
                else:  # a large message goes in parts (transport.parts)
                    send_parts(self._sock, frame)
            except zmq.Again:
                host.counters.add("send_failures")
                _notices.warn(("queue full", host.endpoint, self.dest), "node %s: queue to %s is full; message dropped (more: send_failures)", host.endpoint, self.dest)
        return size

    def receive(self, timeout: float) -> list[Envelope]:
        """Wait up to ``timeout`` s for one message on this channel: its replies; callers hold ``lock``.

        A blocking receive with a timeout (the GIL released while it waits),
        rather than a poll and then a read: one call into ZeroMQ per message,
        which holds one reply or a batch of them (or a large reply's first part, and then its others). Empty when nothing came, or
        what came did not decode or was not a reply (counted and dropped).
        """
        if self.closed:
            return []
        sock = self._sock
        ms = max(0, int(timeout * 1000))
        if ms != self._timeout_ms:
            raw_set(sock, RCVTIMEO, ms)
            self._timeout_ms = ms
        try:
            frame = raw_recv(sock, 0)
        except zmq.Again:
            return []
        if len(frame) == PART_BYTES and raw_get(sock, RCVMORE):  # only such a part begins a message in parts
            host = self._host
            try:
                frame = read_rest(sock, frame, host.max_frame_bytes)
            except MalformedFrame as exc:
                host.counters.add("malformed")
                _notices.warn(("malformed", host.endpoint, self.dest), "node %s: dropped a malformed frame from %s: %s (more: malformed)", host.endpoint, self.dest, exc)
                return []
        if len(frame) > 3 and frame[3] == BATCH:
            return self._host.accept_batch(frame, self.dest, self._tally)
        if not self._faults.rules:
            # The usual reply (no fault rules, a well-formed reply): decoded here, without
            # the node's general way in; anything else takes that way, which decodes it
            # again to count, log or hold it as every frame is.
            try:
                env = decode(frame, None, self.dest)
            except MalformedFrame:
                pass
            else:
                if env.kind >= KIND_REPLY:
                    self._tally.received += 1
                    return [env]
        accepted = self._host.accept(frame, None, True, self.dest, self._tally)
        return [accepted] if accepted is not None else []

    @property
    def socket(self) -> zmq.Socket:
        """The DEALER itself, read-only: a thread that holds ``lock`` may poll it beside other
        sockets (``actors.future.wait`` waits on many channels in one ``zmq_poll``), then ``receive``."""
        return self._sock

    def close(self) -> None:
        """Close the socket once no thread drives it (waits for the lock)."""
        with self.lock:
            if not self.closed:
                self.closed = True
                self._sock.close(linger=0)
                self._host.counters.retire(self._tally)
