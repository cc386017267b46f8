"""The controller's clerk: lab 4's clerk (leader finding, retries, exactly-once ids) with the controller's calls."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from apps.kvraft.client import Clerk
from apps.shardctrler.messages import Join, Leave, Move, Query, ShardConfig


class CtrlerClerk(Clerk):
    """``join``, ``leave``, ``move`` and ``query`` against the shard controller's servers."""

    def query(self, num: int = -1) -> ShardConfig:
        return self._call(Query(num))  # type: ignore[arg-type]

    def join(self, servers: Mapping[int, Sequence[str]]) -> None:
        self._seq += 1
        self._call(Join({int(g): tuple(s) for g, s in servers.items()}, self.client_id, self._seq))  # type: ignore[arg-type]

    def leave(self, gids: Iterable[int]) -> None:
        self._seq += 1
        self._call(Leave(tuple(gids), self.client_id, self._seq))  # type: ignore[arg-type]

    def move(self, shard: int, gid: int) -> None:
        self._seq += 1
        self._call(Move(shard, gid, self.client_id, self._seq))  # type: ignore[arg-type]
