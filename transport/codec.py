"""Turning envelopes into frames and back, with a size limit.

A frame is a fixed binary header, three short UTF-8 strings and a pickled body::

    "ZA2" | kind u8 | corr u64 | len(dest) u16 | len(src) u16 | len(sender) u16 | len(body) u32
    dest | src | sender | body

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
"""

from __future__ import annotations

import pickle
import struct

import cloudpickle

from transport.envelope import Envelope, Kind

MAGIC = b"ZA2"
_HEADER = struct.Struct("!3sBQHHHI")
HEADER_BYTES = _HEADER.size
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
"""Large enough for the KV memory tests' 10 MiB values with room to spare."""


class CodecError(Exception):
    """Base of the codec's errors."""


class MalformedFrame(CodecError):
    """A frame that is not an envelope this codec wrote."""


class FrameTooLarge(CodecError):
    """An envelope whose encoding exceeds the frame size limit."""


_KINDS = {int(k): k for k in Kind}  # a dict lookup is much cheaper than calling the enum


_NAMES_CACHE_LIMIT = 4096
_names_cache: dict[tuple[str, str, str], tuple[bytes, int, int, int]] = {}
"""The encoded names of recent (dest, src, sender) triples: a process talks to
few actors, and encoding three strings per message is a measurable share of a
small message's cost. Bounded: cleared when full."""


def _names(dest: str, src: str, sender: str) -> tuple[bytes, int, int, int]:
    """Encode and cache one triple (``encode`` looks in the cache first)."""
    d, s, n = dest.encode(), src.encode(), sender.encode()
    if len(d) > 0xFFFF or len(s) > 0xFFFF or len(n) > 0xFFFF:
        raise ValueError(f"envelope names over 65535 bytes ({len(d)}, {len(s)}, {len(n)})")
    if len(_names_cache) >= _NAMES_CACHE_LIMIT:
        _names_cache.clear()
    hit = _names_cache[(dest, src, sender)] = (d + s + n, len(d), len(s), len(n))
    return hit


def encode(env: Envelope, max_bytes: int = DEFAULT_MAX_FRAME_BYTES, *, with_src: bool = True) -> bytes:
    """Encode an envelope; raises FrameTooLarge past ``max_bytes``, ValueError for over-long names.

    ``with_src=False`` leaves the sending node's endpoint out (a zero-length
    ``src``): for a frame on a connection whose other end knows it already
    (see ``decode``'s ``peer``), so an endpoint crosses once per connection,
    not once per message.
    """
    key = (env.dest, env.src if with_src else "", env.sender)
    names, n_dest, n_src, n_sender = _names_cache.get(key) or _names(*key)
    try:  # pickle first; cloudpickle for what it refuses (lambdas, a script's functions)
        body = pickle.dumps(env.body, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        body = cloudpickle.dumps(env.body, protocol=pickle.HIGHEST_PROTOCOL)
    size = HEADER_BYTES + len(names) + len(body)
    if size > max_bytes:
        raise FrameTooLarge(
            f"{type(env.body).__name__} to {env.dest!r} encodes to {size} bytes, "
            f"over the frame limit of {max_bytes} bytes"
        )
    try:
        header = _HEADER.pack(MAGIC, env.kind, env.corr, n_dest, n_src, n_sender, len(body))
    except struct.error as exc:
        raise ValueError(f"envelope fields out of range (corr not a u64): {exc}") from None
    return b"".join((header, names, body))


def decode(frame: bytes | memoryview, route: bytes | None = None, peer: str = "") -> Envelope:
    """Decode a frame; raises MalformedFrame for anything else, checking the header before unpickling.

    ``peer``: the endpoint of the node at the other end of the connection the
    frame came in on, which is the envelope's ``src`` when the frame left it out.
    """
    size = len(frame)
    if size < HEADER_BYTES:
        raise MalformedFrame(f"frame of {size} bytes is shorter than the {HEADER_BYTES}-byte header")
    magic, kind, corr, n_dest, n_src, n_sender, n_body = _HEADER.unpack_from(frame)
    if magic != MAGIC:
        raise MalformedFrame(f"bad magic {bytes(frame[:8])!r} ({size} bytes)")
    if kind not in _KINDS:
        raise MalformedFrame(f"unknown envelope kind {kind}")
    if HEADER_BYTES + n_dest + n_src + n_sender + n_body != size:
        raise MalformedFrame(f"header lengths ({n_dest}, {n_src}, {n_sender}, {n_body}) do not add up to the frame's {size} bytes")
    view = memoryview(frame)
    at = HEADER_BYTES + n_dest + n_src + n_sender
    raw_names = bytes(view[HEADER_BYTES:at])
    names = _decoded.get(raw_names)
    if names is None or names[3] != (n_dest, n_src):
        names = _decode_names(raw_names, n_dest, n_src)
    try:
        body = pickle.loads(view[at:])
    except Exception as exc:  # any unpickling failure means a bad frame
        raise MalformedFrame(f"undecodable body ({n_body} bytes): {exc!r}") from exc
    return _new_envelope(Envelope, (_KINDS[kind], names[0], names[1] if n_src else peer, corr, body, names[2], route))


_decoded: dict[bytes, tuple[str, str, str, tuple[int, int]]] = {}
"""The decoded names of recent frames, keyed by their bytes (and split points):
the mirror of ``_names_cache`` on the receiving side. Bounded: cleared when full."""

_new_envelope = tuple.__new__
"""Builds an Envelope from a complete tuple of its fields without the NamedTuple's
Python-level constructor (every field is given, in order, so nothing is lost)."""


def _decode_names(raw: bytes, n_dest: int, n_src: int) -> tuple[str, str, str, tuple[int, int]]:
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
    hit = _decoded[raw] = (dest, src, sender, (n_dest, n_src))
    return hit
