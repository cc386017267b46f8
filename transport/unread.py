"""Replies a peer has not read yet: bounded in bytes per connection, so a reader that stops is held back, then cut off.

Why a room: ZeroMQ bounds a ROUTER's queue to each connection in messages
(SNDHWM), not bytes. A member that sent 1,000 asks for a 1 MiB value and
never read the replies grew its server by 1 GiB: every reply waited in
libzmq's queue for that connection. The node cannot ask libzmq how many
bytes one connection's queue holds, but it can learn when libzmq lets go
of a message it was handed: a reply sent without a copy and tracked
(pyzmq's MessageTracker) is done once libzmq has taken it off the queue
(encrypted it into the connection's output, or dropped it with a
connection that went). So the node counts, per connection, the bytes of
the large replies it has handed over and libzmq still holds.

While a connection holds ``limit`` bytes or more, its next requests are not
served but *held back*, undecoded and in order (a request is small; its
reply is what weighs), and served as the connection's replies drain
(looked at every few milliseconds while any are held): back-pressure, so a
reader that keeps reading loses nothing, however much it asks for at once
(a clerk with a hundred asks for 1 MiB in flight, a shuffle's chunks). A
peer that stops reading fills its held-back requests to their bound
(:data:`HOLD_MAX` requests or ``limit / 4`` bytes; the first is held back
whatever its size): from then on its
requests are dropped, counted in ``cut_off`` and logged once per connection
(then once a minute with how many more), until it reads again. A reply is
dropped too (also ``cut_off``) if it would take its connection past twice
``limit``: the asks of one connection admitted before it was full and
answered later by an actor on its own thread. A connection with nothing
held always gets its next reply, however large (up to the frame limit).

Only replies of :data:`TRACK_FROM` bytes or more are tracked: below that a
copy is cheaper than a tracker (a thread of pyzmq's sets its event), so
small replies (every batch among them) stay on the fast path, bounded by
the ROUTER's SNDHWM in messages (:data:`REPLY_HWM`), i.e. less than
``REPLY_HWM * TRACK_FROM`` (80 MiB) per connection. So a connection that
never reads holds at most about 2 x ``limit`` of large replies, ``limit / 4``
of requests held back, and 80 MiB of small replies.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq
import zmq.utils.garbage  # see below: imported for its exit handler

from transport.counters import Counters
from transport.once import OncePerCause
from transport.parts import PART_BYTES, send_tracked_parts
from transport.rawzmq import MORE_NOBLOCK, NOBLOCK, raw_send

log = logging.getLogger(__name__)
_notices = OncePerCause(log)

# pyzmq's thread that lets go of zero-copy data stops at exit; imported now, its exit
# handler is registered before any node's (ActorSystem.shared's), so it runs after them:
# a node closed at exit still has it to release what its queues held.

DEFAULT_MAX_UNREAD_BYTES = 32 * 1024 * 1024
"""Bytes of large replies one connection may leave unread before its further requests are held back."""

TRACK_FROM = 8 * 1024
"""Replies this large or larger are counted in bytes until libzmq lets go of them (smaller ones by count).
Every reply sent in parts is one of them (its tracker is done when libzmq has let go of all its parts)."""
assert TRACK_FROM <= PART_BYTES

REPLY_HWM = 10_000
"""The ROUTER's SNDHWM: replies queued per connection, in messages. As many as requests may be held back,
so that a pipelining reader that falls behind for a moment (a window of thousands of small asks) loses none."""

HOLD_MAX = 10_000
"""Requests held back per connection at most (and ``limit / 4`` bytes of them); past that they are dropped."""

LOOK_EVERY = (0.002, 0.1)
"""Seconds between looks at the connections with requests held back: the first, and the longest (doubling
while none of them drains)."""

SWEEP_EVERY = 1.0
"""Seconds between looks for connections with nothing held any more, while any has large replies in flight."""

_MiB = 1024 * 1024


class UnreadReplies:
    """The bytes of large replies each connection's queue holds; the I/O thread's alone (it owns the ROUTER).

    ``queues`` is non-empty while some connection has large replies in flight or requests held back
    (and up to :data:`SWEEP_EVERY` after): the node's read loop asks :meth:`hold` about a request only
    then (one truth test per request otherwise).
    """

    __slots__ = (
        "_call_later", "_counters", "_held_back", "_label", "_peer", "_serve", "_wait", "limit", "queues", "waiting",
    )

    def __init__(
        self,
        limit: int,
        counters: Counters,
        label: str,
        peer: Callable[[bytes], str],
        serve: Callable[[Any, bytes], None],
        call_later: Callable[[float, Callable[[], Any]], Any],
    ) -> None:
        """``peer``: what a connection's routing id says of it, for the log line; ``serve(frame, route)``:
        serve a request held back (as the read loop would have); ``call_later``: the node's timers."""
        if limit < 1:
            raise ValueError(f"max_unread_bytes must be at least 1, got {limit}")
        self.limit = limit
        self._counters = counters
        self._label = label
        self._peer = peer
        self._serve = serve
        self._call_later = call_later
        self.queues: dict[bytes, _Queue] = {}
        self._held_back: set[bytes] = set()
        self.waiting = 0
        """Requests held back now, on every connection."""
        self._wait = 0.0  # seconds to the next look at what is held back (0: no look due)

    def send(self, router: zmq.Socket, route: bytes, frame: bytes) -> None:
        """Send one large reply (``TRACK_FROM`` bytes or more) to ``route``, or drop it if that connection
        already holds twice ``limit`` bytes unread with it (and something at all)."""
        queue = self.queues.get(route)
        if queue is not None:
            queue.reclaim()
            if queue.size and queue.size + len(frame) > 2 * self.limit:
                self._cut_off(route, queue.size, "reply")
                return
        try:
            raw_send(router, route, MORE_NOBLOCK)
            if len(frame) <= PART_BYTES:
                tracker = raw_send(router, frame, NOBLOCK, False, True)
            else:
                tracker = send_tracked_parts(router, frame)
        except zmq.ZMQError as exc:  # the asker has gone, or its queue is full in messages (it is not reading)
            self._counters.add("send_failures")
            if exc.errno == zmq.EHOSTUNREACH and queue is not None and queue.waiting:  # gone: serve it no more
                self._counters.add("send_failures", len(queue.waiting))
                self.waiting -= len(queue.waiting)
                queue.waiting.clear()
                queue.waiting_bytes = 0
            return
        if queue is None:
            if not self.queues:  # the first connection with large replies in flight: sweep until none is left
                self._call_later(SWEEP_EVERY, self._sweep)
            queue = self.queues[route] = _Queue()
        queue.trackers.append((tracker, len(frame)))
        queue.size += len(frame)

    def hold(self, route: bytes, frame: Any) -> bool:
        """Whether a request that just came in on ``route`` is held back (or dropped) rather than served now:
        so while its connection holds ``limit`` bytes unread, or has requests held back already (order)."""
        queue = self.queues.get(route)
        if queue is None:
            return False
        if not queue.waiting:
            queue.reclaim()
            if queue.size < self.limit:
                return False
            self._held_back.add(route)
            if not self._wait:
                self._wait = LOOK_EVERY[0]
                self._call_later(self._wait, self._look)
        size = len(frame)
        if queue.waiting and (len(queue.waiting) >= HOLD_MAX or queue.waiting_bytes + size > self.limit // 4):
            self._cut_off(route, queue.size, "request")
            return True
        queue.waiting.append(frame)
        queue.waiting_bytes += size
        self.waiting += 1
        return True

    def _look(self) -> None:
        """On a timer: serve what is held back for the connections that have drained below ``limit``."""
        progress = False
        for route in list(self._held_back):
            queue = self.queues.get(route)
            if queue is None:  # swept: nothing held for it any more
                self._held_back.discard(route)
                continue
            queue.reclaim()
            waiting = queue.waiting
            while waiting and queue.size < self.limit:
                frame = waiting.popleft()
                queue.waiting_bytes -= len(frame)
                self.waiting -= 1
                progress = True
                try:
                    self._serve(frame, route)  # a reply adds to queue.size
                except Exception:  # never fatal to the look, which the rest held back waits for
                    log.exception("node %s: serving a request held back failed", self._label)
            if not waiting:
                self._held_back.discard(route)
        if not self._held_back:
            self._wait = 0.0
            return
        self._wait = LOOK_EVERY[0] if progress else min(2 * self._wait, LOOK_EVERY[1])
        self._call_later(self._wait, self._look)

    def _cut_off(self, route: bytes, size: int, what: str) -> None:
        self._counters.add("cut_off")
        peer = self._peer(route)
        _notices.warn(
            ("cut off", self._label, route),
            "node %s: the connection %s has left %.0f MiB of replies unread (max_unread_bytes: %.0f MiB) and "
            "has more requests waiting than are held back for it: a %s was dropped, and more will be until "
            "it reads (more: cut_off)",
            self._label, f"from {peer}" if peer else f"with routing id {route.hex()}", size / _MiB, self.limit / _MiB, what,
        )

    def _sweep(self) -> None:
        """On a timer: forget the connections whose replies have all been taken (or dropped with the
        connection), so that ``queues`` empties and requests skip :meth:`hold` again."""
        for route in list(self.queues):
            queue = self.queues[route]
            queue.reclaim()
            if not queue.size and not queue.waiting:
                del self.queues[route]
        if self.queues:
            self._call_later(SWEEP_EVERY, self._sweep)


class _Queue:
    """One connection's tracked replies, oldest first (libzmq lets go of them in order), and its requests held back."""

    __slots__ = ("size", "trackers", "waiting", "waiting_bytes")

    def __init__(self) -> None:
        self.trackers: deque[tuple[Any, int]] = deque()
        self.size = 0
        self.waiting: deque[Any] = deque()
        """Requests held back, undecoded (a zmq.Frame with security on, bytes without), oldest first."""
        self.waiting_bytes = 0

    def reclaim(self) -> None:
        trackers = self.trackers
        while trackers and trackers[0][0].done:
            self.size -= trackers.popleft()[1]
