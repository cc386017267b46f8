"""The sharded service's client as the benchmark drivers (``benchmarks.kvdriver``) use it, and its control without a controller."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from apps.kvraft import Clerk as GroupClerk
from apps.shardctrler.messages import EMPTY
from apps.shardctrler.state import rebalance
from apps.shardkv import Clerk, key2shard


def spread(key: str) -> str:
    """The driver's key with a first character that puts it on one of the shards (the drivers' keys share a first letter)."""
    return f"{zlib.crc32(key.encode()) % 10}{key}"


class SpreadClerk:
    """A sharded clerk whose keys are spread over every shard."""

    def __init__(self, ctrlers: list[str]) -> None:
        self.clerk = Clerk(ctrlers, give_up_after=30.0)

    def put(self, key: str, value: str) -> None:
        self.clerk.put(spread(key), value)

    def get(self, key: str) -> str:
        return self.clerk.get(spread(key))

    def append(self, key: str, value: str) -> str:
        return self.clerk.append(spread(key), value)


class StaticGroupsClerk:
    """The same keys on G independent lab-4 groups, each shard on the group the controller would give it.

    The control for the sharded service: the same Raft groups with the same
    clients each, but no controller, no configuration, no shard checks and no
    idle groups, so the sharded service's CPU per operation over this one's is
    what the sharding layer costs, and this one's over a single group's is what
    more Raft groups than cores cost on the machine.
    """

    def __init__(self, groups: Sequence[Sequence[str]]) -> None:
        shards = EMPTY.shards
        for g in range(1, len(groups) + 1):  # joined one at a time, as the benchmark joins them
            shards = rebalance(shards, list(range(1, g + 1)))
        self.owner = shards
        self.clerks = [GroupClerk(list(eps), give_up_after=30.0) for eps in groups]

    def _clerk(self, key: str) -> GroupClerk:
        return self.clerks[self.owner[key2shard(key)] - 1]

    def put(self, key: str, value: str) -> None:
        key = spread(key)
        self._clerk(key).put(key, value)

    def get(self, key: str) -> str:
        key = spread(key)
        return self._clerk(key).get(key)

    def append(self, key: str, value: str) -> str:
        key = spread(key)
        return self._clerk(key).append(key, value)
