"""A message on the wire as ZeroMQ frames of at most :data:`PART_BYTES`, and why frames are kept that small.

libzmq applies a socket's ZMQ_MAXMSGSIZE to each ZMTP frame, reads a frame
whole before it looks at it, and does so for the CURVE handshake's commands
too, which arrive before the peer has proved who it is. With that limit at
the size of the largest message (64 MiB), a stranger who sent one handshake
command of nearly 64 MiB on each of 16 connections grew a server by 960 MiB
until the handshake time closed them. So a node's sockets refuse any frame
over :func:`wire_frame_limit` (256 KiB and some room for ZMTP's and CURVE's
framing), and a message larger than :data:`PART_BYTES` travels as a multipart
ZeroMQ message: its encoding cut into parts of exactly ``PART_BYTES`` (the
last one shorter or equal), which the receiver joins. A node's
``max_frame_bytes`` keeps bounding a whole message (the sum of its parts).

The shape is strict, so that a receiver can tell a message of ours from one
that is not: every part but the last is exactly ``PART_BYTES``, the last is
not empty, and the sum is within the limit; anything else is a
:class:`~transport.codec.MalformedFrame`, read to its end and dropped
undecoded. libzmq hands over no part of a multipart message before its last
part has arrived (it holds a whole message for the application), so reading
the rest of one never waits.

Only a part of exactly ``PART_BYTES`` can begin a multipart message of ours,
so the sending connections' readers (a thread's channel, the shared
DEALERs) look at ZMQ_RCVMORE only after a part of that size: a small reply
costs no extra call. A peer that sends parts of another shape there has each
read as a message of its own, as before parts existed (a server a node
dialled could send them as separate messages anyway). The bound ROUTER, which
looks at ZMQ_RCVMORE for every message already (after the routing id),
checks every message's shape.
"""

from __future__ import annotations

from typing import Any

import zmq

from transport.codec import BATCH_MAX_BYTES, MalformedFrame
from transport.rawzmq import MORE_NOBLOCK, NOBLOCK, RCVMORE, raw_get, raw_recv, raw_send
from transport.roles import USER_ID

PART_BYTES = 256 * 1024
"""The largest ZeroMQ frame a node sends, and about the most a stranger's connection can make a node hold
before its handshake: 4 MiB for 16 of them, 280 MiB for 1,100 (the open-file limit bounds how many). Much
larger than the handshake's commands (a few hundred bytes), and large enough that a message's parts cost
nothing measurable beside copying and encrypting it (a 10 MiB ask round trip: the same with 256 KiB parts,
1 MiB parts, or whole)."""

FRAMING_BYTES = 4096
"""Room above a part's size for what ZMTP and CURVE add to a frame (a CURVE MESSAGE adds 33 bytes)."""

assert BATCH_MAX_BYTES <= PART_BYTES  # a batch is never cut in parts


def wire_frame_limit(max_frame_bytes: int) -> int:
    """ZMQ_MAXMSGSIZE for a node's sockets: the largest frame it reads before libzmq drops the connection."""
    return min(max_frame_bytes, PART_BYTES) + FRAMING_BYTES


def send_parts(sock: zmq.Socket, frame: bytes) -> None:
    """Send an encoded message of more than PART_BYTES on a DEALER, in parts, without blocking.

    zmq.Again (the queue is full) can come only with the first part: a message
    libzmq has begun to take it takes whole.
    """
    view = memoryview(frame)
    last = (len(frame) - 1) // PART_BYTES * PART_BYTES
    for at in range(0, last, PART_BYTES):
        raw_send(sock, view[at : at + PART_BYTES], MORE_NOBLOCK)
    raw_send(sock, view[last:], NOBLOCK)


def send_tracked_parts(sock: zmq.Socket, frame: bytes) -> zmq.MessageTracker:
    """The parts of a large reply on a ROUTER whose routing id was just sent; the tracker of the last one,
    which is done when libzmq has let go of every part (it lets go of a message's parts in order).

    Every part but the last is copied into libzmq; the last is its own bytes, sent without a copy and
    tracked (see :mod:`transport.unread`). So nothing holds the encoded reply once the caller lets go of
    it: zero-copy parts of it would keep all of it alive until pyzmq's garbage thread had released each
    (40 releases for a 10 MiB reply), after the reply had long been read.
    """
    view = memoryview(frame)
    last = (len(frame) - 1) // PART_BYTES * PART_BYTES
    for at in range(0, last, PART_BYTES):
        raw_send(sock, view[at : at + PART_BYTES], MORE_NOBLOCK)
    return raw_send(sock, frame[last:], NOBLOCK, False, True)


def read_rest(sock: zmq.Socket, first: Any, max_bytes: int) -> bytes:
    """The message whose first part (bytes or a zmq.Frame) was just read, ZMQ_RCVMORE set, joined into one.

    MalformedFrame when its shape is not ours or its sum is over ``max_bytes``: every part is read
    first (the next message must start at its routing id), but none is kept past the first fault.
    """
    parts: list[Any] = [first]
    size = last = len(first)
    count = 1
    fault = ""
    more = True
    while more:  # the whole message is in libzmq's queue already (see the module docstring)
        try:
            part = raw_recv(sock, NOBLOCK, False)
        except zmq.Again:
            raise MalformedFrame(f"a message of {count} parts ended without its last") from None
        more = bool(raw_get(sock, RCVMORE))
        count += 1
        n = len(part)
        size += n
        if not fault:
            if last != PART_BYTES:
                fault = f"part {count - 1} has {last} bytes, not {PART_BYTES}"
            elif size > max_bytes:
                fault = f"over the frame limit of {max_bytes} bytes"
            else:
                parts.append(part)
        last = n
    if not fault and not last:
        fault = "an empty last part"
    if fault:
        parts.clear()
        raise MalformedFrame(f"a message of {count} parts and {size} bytes: {fault}")
    return b"".join(parts)


class Joined:
    """A multipart request off the ROUTER, joined, with its sender's key (``get("User-Id")``) as its
    first part had it: what :mod:`transport.roles` and :mod:`transport.unread` read of a zmq.Frame."""

    __slots__ = ("_user", "bytes")

    def __init__(self, data: bytes, first: zmq.Frame) -> None:
        self.bytes = data
        try:
            self._user: str | None = first.get(USER_ID)
        except zmq.ZMQError:
            self._user = None

    def get(self, name: bytes | str) -> str:
        if name not in (USER_ID, USER_ID.decode()) or self._user is None:
            raise zmq.ZMQError(zmq.EINVAL)
        return self._user

    def __len__(self) -> int:
        return len(self.bytes)
