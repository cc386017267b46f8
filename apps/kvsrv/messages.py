"""The KV server's requests and its one error reply."""

from __future__ import annotations

from transport.message import message


@message
class Get:
    key: str


@message
class Put:
    key: str
    value: str
    client: int
    seq: int


@message
class Append:
    key: str
    value: str
    client: int
    seq: int


@message
class MemoryUsage:
    """Asks the server for the bytes it holds (after a garbage collection)."""


@message
class BadRequest:
    """The reply to a request the server cannot carry out; the server goes on."""

    reason: str


Request = Get | Put | Append
