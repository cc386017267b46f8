"""Replies a peer has not read yet: bounded in bytes per connection, so a reader that stops is cut off.

Why a room: ZeroMQ bounds a ROUTER's queue to each connection in messages
(SNDHWM), not bytes. A member that sent 1,000 asks for a 1 MiB value and
never read the replies grew its server by 1 GiB: every reply waited in
libzmq's queue for that connection. The node cannot ask libzmq how many
bytes one connection's queue holds, but it can learn when libzmq lets go
of a message it was handed: a reply sent without a copy and tracked
(pyzmq's MessageTracker) is done once libzmq has taken it off the queue
(encrypted it into the connection's output, or dropped it with a
connection that went). So the node counts, per connection, the bytes of
the large replies it has handed over and libzmq still holds, and drops a
reply that would take a connection past ``limit``: counted in
``cut_off`` and logged once per connection (then once a minute with how
many more), while the connection itself stays. When the peer reads again,
its queue drains, the bytes come back, and its next replies go out.

Only replies of :data:`TRACK_FROM` bytes or more are tracked: below that a
copy is cheaper than a tracker (a thread of pyzmq's sets its event), so
small replies (every batch among them) stay on the fast path, bounded by
the ROUTER's SNDHWM in messages (:data:`REPLY_HWM`), i.e. less than
``REPLY_HWM * TRACK_FROM`` (64 MiB) per connection. A connection with
nothing unread always gets its next reply, however large (up to the frame
limit), so no reply is too large to send at all. A reader that keeps
reading is never cut off: its queue empties as fast as the network carries
it, and what its own node has read but not yet handed on is no longer held
here.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from transport.counters import Counters
from transport.once import OncePerCause
from transport.rawzmq import MORE_NOBLOCK, NOBLOCK, raw_send

log = logging.getLogger(__name__)
_notices = OncePerCause(log)

DEFAULT_MAX_UNREAD_BYTES = 64 * 1024 * 1024
"""Bytes of large replies one connection may leave unread before its further replies are dropped."""

TRACK_FROM = 64 * 1024
"""Replies this large or larger are counted in bytes until libzmq lets go of them (smaller ones by count)."""

REPLY_HWM = 1000
"""The ROUTER's SNDHWM: replies queued per connection, in messages (ZeroMQ's default)."""

_MiB = 1024 * 1024


class UnreadReplies:
    """The bytes of large replies each connection's queue holds; the I/O thread's alone (it owns the ROUTER)."""

    __slots__ = ("_counters", "_held", "_label", "_peer", "_sweep_at", "limit")

    def __init__(self, limit: int, counters: Counters, label: str, peer: Callable[[bytes], str]) -> None:
        """``peer``: what a connection's routing id says of it, for the log line."""
        if limit < 1:
            raise ValueError(f"max_unread_bytes must be at least 1, got {limit}")
        self.limit = limit
        self._counters = counters
        self._label = label
        self._peer = peer
        self._held: dict[bytes, _Queue] = {}
        self._sweep_at = 64  # forget connections with nothing held once this many are known

    def send(self, router: zmq.Socket, route: bytes, frame: bytes) -> None:
        """Send one large reply (``TRACK_FROM`` bytes or more) to ``route``, or drop it if that connection
        already holds ``limit`` bytes unread (and something at all)."""
        queue = self._held.get(route)
        if queue is not None:
            queue.reclaim()
            if queue.size and queue.size + len(frame) > self.limit:
                self._cut_off(route, queue.size)
                return
        try:
            raw_send(router, route, MORE_NOBLOCK)
            tracker = raw_send(router, frame, NOBLOCK, False, True)
        except zmq.ZMQError:  # the asker has gone, or its queue is full in messages (it is not reading)
            self._counters.add("send_failures")
            return
        if queue is None:
            if len(self._held) >= self._sweep_at:
                self._sweep()
            queue = self._held[route] = _Queue()
        queue.add(tracker, len(frame))

    def held(self, route: bytes) -> int:
        """Bytes of large replies to ``route`` that libzmq still holds (for tests and logs)."""
        queue = self._held.get(route)
        if queue is None:
            return 0
        queue.reclaim()
        return queue.size

    def _cut_off(self, route: bytes, size: int) -> None:
        self._counters.add("cut_off")
        peer = self._peer(route)
        _notices.warn(
            ("cut off", self._label, route),
            "node %s: the connection %s has left %.0f MiB of replies unread (max_unread_bytes: %.0f MiB); "
            "its replies are dropped until it reads (more: cut_off)",
            self._label, f"from {peer}" if peer else f"with routing id {route.hex()}", size / _MiB, self.limit / _MiB,
        )

    def _sweep(self) -> None:
        """Forget the connections whose replies have all been taken (or dropped with the connection)."""
        for route in list(self._held):
            queue = self._held[route]
            queue.reclaim()
            if not queue.size:
                del self._held[route]
        self._sweep_at = max(64, 2 * len(self._held))


class _Queue:
    """One connection's tracked replies, oldest first (libzmq lets go of them in order)."""

    __slots__ = ("size", "trackers")

    def __init__(self) -> None:
        self.trackers: deque[tuple[Any, int]] = deque()
        self.size = 0

    def add(self, tracker: Any, size: int) -> None:
        self.trackers.append((tracker, size))
        self.size += size

    def reclaim(self) -> None:
        trackers = self.trackers
        while trackers and trackers[0][0].done:
            self.size -= trackers.popleft()[1]
