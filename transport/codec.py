"""Turning envelopes into frames and back, with a size limit.

A frame is a fixed binary header, three short UTF-8 strings and a pickled body::

    "ZA4" | kind u8 | corr u64 | len(body) u32 | len(dest) u16 | len(src) u16 | len(sender) u16
    dest | src | sender | body

The name lengths sit right before the names, so the bytes from the first
length to the body are one block that says everything about the names: both
sides cache that block (a process talks to few actors), and a frame's names
cost one dictionary lookup each way.

``src`` (the sending node's endpoint) is empty on a connection: the receiver
knows who is at the other end (a DEALER knows what it connected to; a ROUTER
reads it from the connection's routing id, which the DEALER set once, when it
connected; see :mod:`transport.node`).

Everything but the body is checked (magic, kind, every length against the
frame's size, the strings' encoding) before the body is unpickled, so a frame
that is not ours costs no unpickling. Frames only ever come from
authenticated peers (CURVE with an allow-list, see :mod:`transport.keys`):
the body is a pickle, and a key in the keyring is trusted with code
execution. Anything pickle refuses (lambdas, functions defined in
``__main__`` or a user's script) is encoded with cloudpickle instead, whose
output plain ``pickle.loads`` reads, so the receiving side has one decoder.
Every decoding failure is a :class:`MalformedFrame`, which the node logs and
drops.

"Frame" here means one encoded envelope, which ``max_frame_bytes`` bounds
whole. On the wire, one of more than 256 KiB travels as several ZeroMQ frames
(a multipart message, joined before decoding: see :mod:`transport.parts`),
because libzmq's per-frame limit also bounds what a stranger's handshake
can make a node hold, and must be small.

A member key is trusted with code; a *client* key (see ``zactor keys add
--role``) is not: its frames are decoded with ``trusted=False``, by an
unpickler that builds only registered message classes
(:mod:`transport.message`) and plain data (:data:`PLAIN_DATA`), so a pickle
that would call anything else (``os.system``, cloudpickle's function
rebuilding) is refused as a MalformedFrame before any of it runs.

A *batch* carries several replies to one connection in one message: a frame
of kind :data:`BATCH` with no names, whose corr is the number of frames in
its body and whose body is those reply frames end to end. A node that
answers a burst of requests sends their replies so, and the asker's side
pays one receive, one wake-up and one decryption for the lot instead of one
per reply. Requests never travel in batches (:func:`decode` refuses the
kind), and :func:`split_batch` checks that the inner frames' headers tile the
body exactly, and are replies, before any of them is decoded.
"""

from __future__ import annotations

import builtins
import io
import pickle
import struct
from typing import Any

import cloudpickle

from transport.envelope import Envelope, Failure, Kind
from transport.message import register_message, registered_message

MAGIC = b"ZA4"
"""The wire format's version too: ZA4 added batches of replies, which a ZA3 node would drop
as an unknown kind, so the two refuse each other's frames whole (counted as malformed)."""
_HEADER = struct.Struct("!3sBQIHHH")
_HEAD = struct.Struct("!3sBQI")
"""The part of the header before the name block."""
_LENGTHS = struct.Struct("!HHH")
"""The name block's first part: the lengths of dest, src and sender."""
HEADER_BYTES = _HEADER.size
_NAMES_AT = _HEAD.size
"""Where the name block (the three lengths, then the names) begins."""
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
"""The largest encoded envelope, all its wire parts together (see :mod:`transport.parts`): large enough for
the KV memory tests' 10 MiB values with room to spare."""


BATCH = 5
"""The kind byte of a batch of replies (not a :class:`~transport.envelope.Kind`: never an envelope's)."""
BATCH_MAX_BYTES = 4096
"""A batch's largest size. Every node's sockets take frames of 4096 bytes more than the
smaller of its frame limit and a wire part (:func:`transport.parts.wire_frame_limit`),
whatever that limit, so a batch this small is never refused, nor cut in parts."""
BATCH_MAX_FRAMES = 64
"""Most replies one batch holds. With the size, it bounds what splitting a batch can cost."""
_BATCH_NAMES = _LENGTHS.pack(0, 0, 0)
_REPLY_KINDS = (int(Kind.REPLY), int(Kind.ERROR))


class CodecError(Exception):
    """Base of the codec's errors."""


class MalformedFrame(CodecError):
    """A frame that is not an envelope this codec wrote."""


class RefusedFrame(MalformedFrame):
    """A client-role key's frame that named a class it may not send; nothing of its body ran.

    ``request`` is the envelope its header describes, with no body (``None``):
    enough to answer an ask with an error, so the client learns why."""

    def __init__(self, text: str, request: Envelope) -> None:
        super().__init__(text)
        self.request = request


class FrameTooLarge(CodecError):
    """An envelope whose encoding exceeds the frame size limit (``max_frame_bytes``: the whole message, all its parts)."""


_KINDS = {int(k): k for k in Kind}  # a dict lookup is much cheaper than calling the enum


_NAMES_CACHE_LIMIT = 4096
_names_cache: dict[tuple[str, str, str], bytes] = {}
"""The name blocks of recent (dest, src, sender) triples: encoding three
strings per message is a measurable share of a small message's cost.
Bounded: cleared when full."""


def _name_block(key: tuple[str, str, str]) -> bytes:
    """Encode and cache one triple's name block (``encode_fields`` looks in the cache first)."""
    d, s, n = (name.encode() for name in key)
    if len(d) > 0xFFFF or len(s) > 0xFFFF or len(n) > 0xFFFF:
        raise ValueError(f"envelope names over 65535 bytes ({len(d)}, {len(s)}, {len(n)})")
    if len(_names_cache) >= _NAMES_CACHE_LIMIT:
        _names_cache.clear()
    block = _names_cache[key] = _LENGTHS.pack(len(d), len(s), len(n)) + d + s + n
    return block


_dumps = pickle.dumps
_PROTOCOL = pickle.HIGHEST_PROTOCOL


def encode_fields(
    kind: int, dest: str, src: str, sender: str, corr: int, body: Any, max_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> bytes:
    """``encode`` from the fields themselves, for a sender that has no Envelope to hand
    (a channel's request): one object fewer per message."""
    key = (dest, src, sender)
    names = _names_cache.get(key) or _name_block(key)
    try:  # pickle first; cloudpickle for what it refuses (lambdas, a script's functions)
        data = _dumps(body, protocol=_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        data = cloudpickle.dumps(body, protocol=_PROTOCOL)
    n_body = len(data)
    size = _NAMES_AT + len(names) + n_body
    if size > max_bytes:
        raise FrameTooLarge(
            f"{type(body).__name__} to {dest!r} encodes to {size} bytes, over the frame limit of {max_bytes} bytes"
        )
    try:
        head = _HEAD.pack(MAGIC, kind, corr, n_body)
    except struct.error as exc:
        raise ValueError(f"envelope fields out of range (corr not a u64): {exc}") from None
    return b"".join((head, names, data))


def encode(env: Envelope, max_bytes: int = DEFAULT_MAX_FRAME_BYTES, *, with_src: bool = True) -> bytes:
    """Encode an envelope; raises FrameTooLarge past ``max_bytes``, ValueError for over-long names.

    ``with_src=False`` leaves the sending node's endpoint out (a zero-length
    ``src``): for a frame on a connection whose other end knows it already
    (see ``decode``'s ``peer``), so an endpoint crosses once per connection,
    not once per message.
    """
    return encode_fields(env.kind, env.dest, env.src if with_src else "", env.sender, env.corr, env.body, max_bytes)


def encode_batch(frames: list[bytes]) -> bytes:
    """One message of several encoded replies for the same connection (see the module docstring)."""
    body = b"".join(frames)
    return b"".join((_HEAD.pack(MAGIC, BATCH, len(frames), len(body)), _BATCH_NAMES, body))


def is_batch(frame: bytes) -> bool:
    """Whether ``frame`` claims to be a batch (checked in full by :func:`split_batch`)."""
    return len(frame) > 3 and frame[3] == BATCH


def split_batch(frame: bytes) -> list[bytes]:
    """The reply frames of a batch, each still to be decoded; MalformedFrame unless they tile it exactly."""
    size = len(frame)
    if size < HEADER_BYTES:
        raise MalformedFrame(f"batch of {size} bytes is shorter than the {HEADER_BYTES}-byte header")
    if size > BATCH_MAX_BYTES:
        raise MalformedFrame(f"batch of {size} bytes, over the {BATCH_MAX_BYTES}-byte limit")
    magic, kind, count, n_body, *names = _unpack_header(frame)
    if magic != MAGIC or kind != BATCH or any(names) or HEADER_BYTES + n_body != size or not 0 < count <= BATCH_MAX_FRAMES:
        raise MalformedFrame(f"bad batch header ({magic!r}, kind {kind}, {count} frames, {n_body} of {size} bytes)")
    frames: list[bytes] = []
    at = HEADER_BYTES
    for _ in range(count):
        if size - at < HEADER_BYTES:
            raise MalformedFrame(f"batch ends inside the header of frame {len(frames) + 1} of {count}")
        magic, kind, _, n, n_dest, n_src, n_sender = _unpack_header(frame, at)
        if magic != MAGIC or kind not in _REPLY_KINDS:
            raise MalformedFrame(f"frame {len(frames) + 1} of a batch is not a reply (kind {kind})")
        end = at + HEADER_BYTES + n_dest + n_src + n_sender + n
        if end > size:
            raise MalformedFrame(f"frame {len(frames) + 1} of {count} runs past the batch's end")
        frames.append(frame[at:end])
        at = end
    if at != size:
        raise MalformedFrame(f"{size - at} bytes left over after a batch's {count} frames")
    return frames


_unpack_header = _HEADER.unpack_from
_loads = pickle.loads


def decode(frame: bytes, route: bytes | None = None, peer: str = "", *, trusted: bool = True) -> Envelope:
    """Decode a frame; raises MalformedFrame for anything else, checking the header before unpickling.

    ``peer``: the endpoint of the node at the other end of the connection the
    frame came in on, which is the envelope's ``src`` when the frame left it out.
    ``trusted=False`` (a frame from a client-role key): the body is unpickled by
    :func:`restricted_loads`, and anything else it names makes it malformed.
    """
    size = len(frame)
    if size < HEADER_BYTES:
        raise MalformedFrame(f"frame of {size} bytes is shorter than the {HEADER_BYTES}-byte header")
    magic, kind, corr, n_body, n_dest, n_src, n_sender = _unpack_header(frame)
    at = HEADER_BYTES + n_dest + n_src + n_sender
    if magic != MAGIC or at + n_body != size or kind not in _KINDS:
        raise MalformedFrame(_what_is_wrong(frame, magic, kind, (n_dest, n_src, n_sender, n_body)))
    block = frame[_NAMES_AT:at]
    names = _decoded.get(block) or _decode_names(block, n_dest, n_src)
    loads = _loads if trusted else restricted_loads
    try:  # a memoryview: a large body is not copied before unpickling
        body = loads(memoryview(frame)[at:]) if n_body > 4096 else loads(frame[at:])
    except RefusedClass as exc:  # a client key's frame naming code: refused before it ran
        request = _new_envelope(Envelope, (_KINDS[kind], names[0], names[1] if n_src else peer, corr, None, names[2], route))
        raise RefusedFrame(f"refused a client key's frame: {exc}", request) from exc
    except Exception as exc:  # any unpickling failure means a bad frame
        raise MalformedFrame(f"undecodable body ({n_body} bytes): {exc!r}") from exc
    return _new_envelope(Envelope, (_KINDS[kind], names[0], names[1] if n_src else peer, corr, body, names[2], route))


def _what_is_wrong(frame: bytes, magic: bytes, kind: int, lengths: tuple[int, int, int, int]) -> str:
    if magic != MAGIC:
        return f"bad magic {bytes(frame[:8])!r} ({len(frame)} bytes)"
    if kind not in _KINDS:
        return f"unknown envelope kind {kind}"
    return f"header lengths {lengths} (dest, src, sender, body) do not add up to the frame's {len(frame)} bytes"


_decoded: dict[bytes, tuple[str, str, str]] = {}
"""The decoded names of recent frames, keyed by their name block (lengths and
names): the mirror of ``_names_cache`` on the receiving side. Bounded: cleared when full."""

_new_envelope = tuple.__new__
"""Builds an Envelope from a complete tuple of its fields without the NamedTuple's
Python-level constructor (every field is given, in order, so nothing is lost)."""


def _decode_names(block: bytes, n_dest: int, n_src: int) -> tuple[str, str, str]:
    raw = block[_LENGTHS.size :]
    try:
        dest, src, sender = (
            raw[:n_dest].decode("utf-8"),
            raw[n_dest : n_dest + n_src].decode("utf-8"),
            raw[n_dest + n_src :].decode("utf-8"),
        )
    except UnicodeDecodeError as exc:
        raise MalformedFrame(f"names that are not UTF-8: {exc}") from None
    if len(_decoded) >= _NAMES_CACHE_LIMIT:
        _decoded.clear()
    hit = _decoded[block] = (dest, src, sender)
    return hit


# ---- the restricted unpickler, for frames of client-role keys ----------------------

_DATA_BUILTINS = (
    "bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list", "range",
    "set", "slice", "str", "tuple",
)  # fmt: skip
PLAIN_DATA: frozenset[tuple[str, str]] = frozenset(
    [("builtins", name) for name in _DATA_BUILTINS]
    + [  # the built-in exceptions, so a Failure carrying one still decodes
        ("builtins", name)
        for name, value in vars(builtins).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    ]
    + [
        ("collections", "OrderedDict"),
        ("collections", "deque"),
        ("datetime", "date"),
        ("datetime", "datetime"),
        ("datetime", "time"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        ("decimal", "Decimal"),
        ("fractions", "Fraction"),
        ("uuid", "UUID"),
    ]
)
"""What a client-role key may send besides registered messages: the standard library's
value types, in the spirit of the ``find_class`` allow-list of pickle's own documentation."""

register_message(Failure)  # an error reply: type name, text, traceback text, and a built-in exception at most


class RefusedClass(pickle.UnpicklingError):
    """A client-role frame named a class or function that is neither a registered message nor plain data."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in PLAIN_DATA:
            return super().find_class(module, name)
        cls = registered_message(module, name)
        if cls is None:
            raise RefusedClass(f"{module}.{name} is neither a registered message class nor plain data")
        return cls


def restricted_loads(data: bytes | memoryview) -> Any:
    """Unpickle ``data`` building only registered message classes and plain data (RefusedClass otherwise)."""
    return _RestrictedUnpickler(io.BytesIO(data)).load()
