"""The controller's replicated state: every configuration so far, and each clerk's latest write.

Rebalancing is a pure function of the previous configuration and the set of
groups, and decides only by sorted gids and shard numbers (never by the
order of a dict), so every replica computes the same configuration from the
same log.
"""

from __future__ import annotations

import pickle
from typing import Any

from apps.kvraft.state import canonical_digest
from apps.shardctrler.messages import EMPTY, NSHARDS, Join, Leave, Move, ShardConfig, Write


def rebalance(shards: tuple[int, ...], gids: list[int]) -> tuple[int, ...]:
    """An even assignment of the shards to ``gids`` that moves as few shards as it can.

    Every group keeps what it has up to its target; the targets (NSHARDS //
    groups, one more for the first NSHARDS % groups of them) favour the groups
    that hold the most already, so a Join moves shards only to the new
    groups and a Leave only away from the leaving ones.
    """
    if not gids:
        return (0,) * NSHARDS
    gids = sorted(gids)
    owned: dict[int, list[int]] = {g: [] for g in gids}
    free: list[int] = []
    for s, g in enumerate(shards):
        (owned[g] if g in owned else free).append(s)
    base, extra = divmod(NSHARDS, len(gids))
    by_holding = sorted(gids, key=lambda g: (-len(owned[g]), g))
    target = {g: base + (1 if k < extra else 0) for k, g in enumerate(by_holding)}
    for g in gids:
        while len(owned[g]) > target[g]:
            free.append(owned[g].pop())
    free.sort()
    for g in gids:
        while len(owned[g]) < target[g]:
            owned[g].append(free.pop(0))
    out = [0] * NSHARDS
    for g in gids:
        for s in owned[g]:
            out[s] = g
    return tuple(out)


class CtrlerState:
    def __init__(self) -> None:
        self.configs: list[ShardConfig] = [EMPTY]
        self.latest: dict[int, int] = {}
        """client -> seq of its latest applied Join/Leave/Move (their reply is always None)."""

    def digest(self) -> str:
        """The same for every controller replica that applied the same log prefix (see ``canonical_digest``)."""
        configs = [(c.num, c.shards, sorted(c.groups.items())) for c in self.configs]
        return canonical_digest((configs, sorted(self.latest.items())))

    def query(self, num: int) -> ShardConfig:
        if num < 0 or num >= len(self.configs):
            return self.configs[-1]
        return self.configs[num]

    def duplicate(self, client: int, seq: int) -> tuple[bool, None]:
        return seq <= self.latest.get(client, 0), None

    def apply(self, op: Write) -> None:
        if self.duplicate(op.client, op.seq)[0]:
            return
        self.latest[op.client] = op.seq
        last = self.configs[-1]
        groups = dict(last.groups)
        if isinstance(op, Join):
            groups.update({g: tuple(servers) for g, servers in op.servers.items()})
            shards = rebalance(last.shards, list(groups))
        elif isinstance(op, Leave):
            for g in op.gids:
                groups.pop(g, None)
            shards = rebalance(last.shards, list(groups))
        else:
            assert isinstance(op, Move)
            moved = list(last.shards)
            moved[op.shard] = op.gid
            shards = tuple(moved)
        self.configs.append(ShardConfig(len(self.configs), shards, groups))

    def snapshot(self) -> bytes:
        return pickle.dumps((self.configs, self.latest), protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(cls, blob: bytes) -> CtrlerState:
        state = cls()
        configs, latest = pickle.loads(blob)
        if not isinstance(configs, list) or not isinstance(latest, dict):
            raise ValueError("not a shard controller snapshot")
        state.configs, state.latest = configs, latest
        return state

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, CtrlerState) and (self.configs, self.latest) == (other.configs, other.latest)
