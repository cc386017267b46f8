"""Replies held back in a burst of requests, to go out as one message per connection.

Why a room: in a burst (a pipelining client, many requests already waiting on
the ROUTER) an inline actor answers each request as it is read, and sending
each answer alone costs a system call and a wake-up of the asker apiece. The
I/O thread holds those replies instead and sends the ones to one connection
as a batch (see :func:`transport.codec.encode_batch`): when the requests read
in a row stop coming from that connection, when the batch is full (frames or
bytes), and after the last read of the burst. The rules that bound how long a
reply may wait live here; the node decides when a burst starts and ends and
owns the socket the batch goes out on.
"""

from __future__ import annotations

from collections.abc import Callable

from transport.codec import BATCH_MAX_BYTES, BATCH_MAX_FRAMES, HEADER_BYTES

BATCH_ROOM = BATCH_MAX_BYTES - HEADER_BYTES
"""Bytes of replies one batch holds (a larger reply goes alone)."""


class ReplyBatch:
    """Replies to one connection that wait for the end of its run of requests (I/O thread only).

    ``send(route, frames)`` puts what is held on the wire: one frame alone, several as a batch.
    The node's read loop counts ``reads`` itself and flushes when a request comes from
    another connection than ``route`` or past BATCH_MAX_FRAMES reads (no call per request).
    """

    __slots__ = ("frames", "reads", "route", "send", "size")

    def __init__(self, send: Callable[[bytes, list[bytes]], None]) -> None:
        self.send = send
        self.route: bytes | None = None
        """The connection whose replies are held (None: nothing held)."""
        self.frames: list[bytes] = []
        self.size = 0
        self.reads = 0
        """Requests read since the first reply was held (tells, and asks answered elsewhere, count too)."""

    def hold(self, route: bytes, frame: bytes) -> None:
        """Keep a reply (at most BATCH_ROOM bytes) for its connection's batch; a reply to another
        connection, or one the batch has no room for, sends what is held first."""
        if self.route != route or len(self.frames) >= BATCH_MAX_FRAMES or self.size + len(frame) > BATCH_ROOM:
            self.flush()
            self.route = route
        self.frames.append(frame)
        self.size += len(frame)

    def flush(self) -> None:
        """Send what is held (one message), if anything."""
        route = self.route
        if route is not None:
            frames = self.frames
            self.route, self.frames, self.size, self.reads = None, [], 0, 0
            self.send(route, frames)
