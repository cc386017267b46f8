"""What sharded KV servers say to each other and put into their Raft logs, and the clerk's one new reply.

Clerks speak lab 4's ``Request``/``Reply`` with lab 2's ``Get``, ``Put`` and
``Append``; a server that does not serve the key's shard answers
``WrongGroup``. Between groups: the new owner of a shard pulls it
(``PullShards`` -> ``ShardData``) and, once it is in its own log, tells the
old owner to delete its copy (``DeleteRequest`` -> ``DeleteAck``). Every one
of these is a tell that names where the answer goes and is retried until the
answer's effect is in the asker's log, so a lost message costs only time.
"""

from __future__ import annotations

from typing import Any

from apps.shardctrler.messages import NSHARDS, ShardConfig
from transport.message import message


def key2shard(key: str) -> int:
    """The lab's shard of a key: its first byte modulo NSHARDS (shard 0 for the empty key)."""
    raw = key.encode()
    return raw[0] % NSHARDS if raw else 0


@message
class WrongGroup:
    """The reply to a request for a shard this group does not serve (now, or yet): ask the controller again."""


# ---- Raft log entries ---------------------------------------------------------------------------


@message
class NewConfig:
    """Move to ``config`` (always the one after the current one)."""

    config: ShardConfig


@message
class InstallShards:
    """The data and duplicate tables of shards pulled for configuration ``num``."""

    num: int
    shards: dict[int, tuple[dict[str, str], dict[int, Any]]]


@message
class DeleteShards:
    """At the old owner: drop the shards handed over in configuration ``num`` (the new owner has them in its log)."""

    num: int
    shards: tuple[int, ...]


@message
class ShardsReleased:
    """At the new owner: the old owner has deleted its copies; the shards need no more messages."""

    num: int
    shards: tuple[int, ...]


# ---- between groups -----------------------------------------------------------------------------


@message
class PullShards:
    num: int
    shards: tuple[int, ...]
    reply_to: str


@message
class ShardData:
    num: int
    shards: dict[int, tuple[dict[str, str], dict[int, Any]]]


@message
class DeleteRequest:
    num: int
    shards: tuple[int, ...]
    reply_to: str


@message
class DeleteAck:
    num: int
    shards: tuple[int, ...]
