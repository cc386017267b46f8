"""pyzmq's compiled socket calls and plain-int flags, for the paths every message takes.

Why a room: the node's I/O loop and every channel call ZeroMQ a few times per
message. Through pyzmq's pure-Python layer (argument checks, enum wrapping,
multipart loops) each call costs a few microseconds, and ``&`` on pyzmq's
flag enums runs Python code too, so those paths call the compiled methods
with plain ints, from this one place. Reading ZMQ_EVENTS costs about 4 us
here (libzmq processes the socket's pending commands): callers read it only
where no poll has just said what it would.
"""

from __future__ import annotations

import zmq

EVENTS = int(zmq.EVENTS)
POLLIN = int(zmq.POLLIN)
NOBLOCK = int(zmq.NOBLOCK)
RCVMORE = int(zmq.RCVMORE)
RCVTIMEO = int(zmq.RCVTIMEO)
MORE_NOBLOCK = int(zmq.SNDMORE) | NOBLOCK

raw_send = zmq.backend.Socket.send
raw_recv = zmq.backend.Socket.recv
raw_get = zmq.backend.Socket.get
raw_set = zmq.backend.Socket.set


def events(sock: zmq.Socket) -> int:
    """The socket's ZMQ_EVENTS bits."""
    return raw_get(sock, EVENTS)  # type: ignore[return-value]  # an int for EVENTS; no typing.cast, a Python call per request
