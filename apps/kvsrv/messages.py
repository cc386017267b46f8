"""The KV server's requests and its one error reply."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Get:
    key: str


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: str
    client: int
    seq: int


@dataclass(frozen=True, slots=True)
class Append:
    key: str
    value: str
    client: int
    seq: int


@dataclass(frozen=True, slots=True)
class MemoryUsage:
    """Asks the server for the bytes it holds (after a garbage collection)."""


@dataclass(frozen=True, slots=True)
class BadRequest:
    """The reply to a request the server cannot carry out; the server goes on."""

    reason: str


Request = Get | Put | Append
