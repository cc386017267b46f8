"""Turning envelopes into frames and back, with a size limit.

Cluster traffic is trusted: frames are pickles. Anything pickle refuses
(lambdas, functions defined in ``__main__`` or a user's script) is encoded
with cloudpickle instead, whose output plain ``pickle.loads`` reads, so the
receiving side has one decoder. Every decoding failure is a
:class:`MalformedFrame`, which the node logs and drops.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

from transport.envelope import Envelope, Kind

MAGIC = b"ZA1"
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
"""Large enough for the KV memory tests' 10 MiB values with room to spare."""


class CodecError(Exception):
    """Base of the codec's errors."""


class MalformedFrame(CodecError):
    """A frame that is not an envelope this codec wrote."""


class FrameTooLarge(CodecError):
    """An envelope whose encoding exceeds the frame size limit."""


_KINDS = {int(k): k for k in Kind}  # a dict lookup is much cheaper than calling the enum


def _dumps(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def encode(env: Envelope, max_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """Encode an envelope; raises FrameTooLarge past ``max_bytes``."""
    frame = MAGIC + _dumps((int(env.kind), env.dest, env.src, env.corr, env.sender, env.body))
    if len(frame) > max_bytes:
        raise FrameTooLarge(
            f"{type(env.body).__name__} to {env.dest!r} encodes to {len(frame)} bytes, "
            f"over the frame limit of {max_bytes} bytes"
        )
    return frame


def decode(frame: bytes | memoryview) -> Envelope:
    """Decode a frame; raises MalformedFrame for anything else."""
    if bytes(frame[: len(MAGIC)]) != MAGIC:
        raise MalformedFrame(f"bad magic {bytes(frame[:8])!r} ({len(frame)} bytes)")
    try:
        fields = pickle.loads(frame[len(MAGIC) :])
    except Exception as exc:  # any unpickling failure means a bad frame
        raise MalformedFrame(f"undecodable body ({len(frame)} bytes): {exc!r}") from exc
    if not (isinstance(fields, tuple) and len(fields) == 6):
        raise MalformedFrame(f"not an envelope tuple: {type(fields).__name__}")
    kind, dest, src, corr, sender, body = fields
    if not (
        isinstance(kind, int)
        and isinstance(dest, str)
        and isinstance(src, str)
        and isinstance(corr, int)
        and isinstance(sender, str)
    ):
        raise MalformedFrame("envelope fields of the wrong types")
    if kind not in _KINDS:
        raise MalformedFrame(f"unknown envelope kind {kind}")
    return Envelope(_KINDS[kind], dest, src, corr, body, sender)
