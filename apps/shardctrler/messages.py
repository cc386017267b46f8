"""The shard controller's operations, its configurations, and what goes into its Raft log.

Join, Leave and Move are writes: they carry the clerk's id and sequence
number, as lab 4's Put does, so a retried one is applied once. Query is a
read (a ReadIndex read, answered from the configurations applied so far).
``NextConfig`` is a replica group's poll, answered without Raft (see there).
"""

from __future__ import annotations

from transport.message import members_only, message

NSHARDS = 10
"""Shards of the key space, as in the lab."""


@message
class ShardConfig:
    """Configuration ``num``: which gid serves each shard (0: nobody) and the servers of each group."""

    num: int
    shards: tuple[int, ...]
    groups: dict[int, tuple[str, ...]]

    def shards_of(self, gid: int) -> list[int]:
        return [s for s, g in enumerate(self.shards) if g == gid]


EMPTY = ShardConfig(0, (0,) * NSHARDS, {})
"""Configuration 0: no groups, every shard assigned to gid 0."""


@message
class Join:
    servers: dict[int, tuple[str, ...]]
    """gid -> the endpoints of that group's servers."""
    client: int
    seq: int


@message
class Leave:
    gids: tuple[int, ...]
    client: int
    seq: int


@message
class Move:
    shard: int
    gid: int
    client: int
    seq: int


@message
class Query:
    num: int
    """A configuration number; -1 (or one not reached yet) asks for the latest."""


@members_only
@message
class NextConfig:
    """A replica group's leader asking for configuration ``num`` (a tell, to every controller server).

    Members only: every controller server answers it with a tell to ``reply_to``, whatever address that
    names, so from a client key it would turn the controller into a reflector of its traffic.

    Any server that has applied configuration ``num`` answers it, leader or
    not, at once and from memory: a configuration, once applied, is committed
    and never changes, so a follower's copy is as good as the leader's, and
    the group uses an answer only if it is exactly the configuration after its
    own. A server that has not applied it does not answer at all. So a poll
    while nothing changes (nearly every poll) costs one message in and none
    out, where a ``Query`` costs a ReadIndex heartbeat round and a reply from
    every server; a follower that lags only answers later.
    """

    num: int
    reply_to: str
    """Address of the asking server (``endpoint#kvraft``); the answer is a ``Reply`` tell carrying the ``ShardConfig``."""


Write = Join | Leave | Move
