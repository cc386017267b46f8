"""The sharded service's client as the benchmark drivers (``benchmarks.kvdriver``) use it."""

from __future__ import annotations

import zlib

from apps.shardkv import Clerk


class SpreadClerk:
    """A sharded clerk whose keys are spread over every shard (the drivers' keys share a first letter)."""

    def __init__(self, ctrlers: list[str]) -> None:
        self.clerk = Clerk(ctrlers, give_up_after=30.0)

    @staticmethod
    def _key(key: str) -> str:
        return f"{zlib.crc32(key.encode()) % 10}{key}"

    def put(self, key: str, value: str) -> None:
        self.clerk.put(self._key(key), value)

    def get(self, key: str) -> str:
        return self.clerk.get(self._key(key))

    def append(self, key: str, value: str) -> str:
        return self.clerk.append(self._key(key), value)
