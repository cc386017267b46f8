"""What clerks and replicated KV servers say to each other, and what goes into the Raft log.

A clerk's request is an ask: the server keeps its reply target until Raft
has decided (``Actor.reply_later``), which may be long after the request
arrived. A ``Request`` sent as a tell (a shardkv server's query to the
controller, the simulation) names instead where the answer goes
(``reply_to``, an actor's address) and a number the answer carries back
(``corr``); an ask leaves both empty. The operations themselves are lab
2's ``Get``, ``Put`` and ``Append``.
"""

from __future__ import annotations

from typing import Any

from apps.kvsrv.messages import Append, BadRequest, Get, Put
from transport.message import message

__all__ = ["Append", "BadRequest", "Get", "LogGet", "NoOp", "Put", "Reply", "Request", "StateDigest"]


@message
class Request:
    op: Get | Put | Append
    reply_to: str
    """For a tell: the address (``endpoint#name``) the ``Reply`` goes to; empty in an ask."""
    corr: int


@message
class Reply:
    corr: int
    ok: bool
    """False: this server does not lead (or lost leadership before the request was decided); try another."""
    value: Any = None
    leader: str | None = None
    """On ``ok=False``: the endpoint of the server this one believes leads, if it knows one."""
    members: int = 0
    """The log index of the latest membership change this server has applied (0: none since it started): a
    clerk that sees a higher one than before asks for the members, so it follows servers being replaced."""


@message
class NoOp:
    """Proposed by a new leader so that an entry of its term commits (ReadIndex needs one)."""

    term: int


@message
class LogGet:
    """A Get that goes through the log (``read="log"``); ``read_id`` is unique to the proposing server."""

    key: str
    read_id: tuple[int, int, int]


@message
class StateDigest:
    """A read-only ask: the server answers ``(applied index, sha256 hex of its data and duplicate table)``.

    Replicas that applied the same log prefix must answer the same digest; the
    soak tool compares them after its final heal.
    """
