"""A replica group's replicated state: the configuration it is in, and each shard it holds with its own duplicate table.

Each shard is a lab-4 ``KVState`` (data and the table of each client's latest
write), so the duplicate entries travel with their shard: a write retried
after its shard moved is recognised by the new owner. A shard's status says
what this group may do with it in the current configuration:

- ``SERVING``: owned and here; requests are served.
- ``PULLING``: owned, but the data is still at the previous owner.
- ``GIVING``: no longer owned; the frozen copy waits for the new owner to pull it
  and to say it has it (then it is deleted: challenge 1).
- ``RELEASING``: owned, here and served; the previous owner has not yet
  confirmed that it deleted its copy.

The group moves to the next configuration only when every shard is SERVING
(or not held), so configurations are taken one at a time, in order; a shard
that is SERVING or RELEASING is served whatever other shards are doing
(challenge 2).
"""

from __future__ import annotations

import pickle
from typing import Any

from apps.kvraft.state import KVState, canonical_digest
from apps.kvsrv.messages import Append, Put
from apps.shardctrler.messages import EMPTY, NSHARDS, ShardConfig
from apps.shardkv.messages import DeleteShards, InstallShards, NewConfig, ShardsReleased, key2shard

SERVING, PULLING, GIVING, RELEASING = "serving", "pulling", "giving", "releasing"


class ShardKVState:
    def __init__(self, gid: int = 0) -> None:
        self.gid = gid
        self.cur: ShardConfig = EMPTY
        self.prev: ShardConfig = EMPTY
        self.shards: dict[int, KVState] = {}
        self.status: dict[int, str] = {}

    # ---- what may be served -------------------------------------------------------------------

    def serves(self, shard: int) -> bool:
        return self.cur.shards[shard] == self.gid and self.status.get(shard) in (SERVING, RELEASING)

    def settled(self) -> bool:
        """Every shard this group holds is SERVING: it may take the next configuration."""
        return all(st == SERVING for st in self.status.values())

    def waiting(self, status: str) -> dict[int, list[int]]:
        """Shards in ``status``, by the gid that owned them in the previous configuration."""
        out: dict[int, list[int]] = {}
        for s in sorted(self.status):
            if self.status[s] == status:
                out.setdefault(self.prev.shards[s], []).append(s)
        return out

    def export(self, num: int, shards: tuple[int, ...]) -> dict[int, tuple[dict, dict]] | None:
        """Copies of ``shards`` for their new owner, if this group handed them over in ``num`` and still has them."""
        if self.cur.num != num or any(self.status.get(s) != GIVING for s in shards):
            return None
        return {s: (dict(self.shards[s].data), dict(self.shards[s].latest)) for s in shards}

    def deleted(self, num: int, shards: tuple[int, ...]) -> bool | None:
        """True if this group has dropped ``shards`` handed over in ``num``; None if it cannot tell yet."""
        if self.cur.num > num:
            return True
        if self.cur.num < num:
            return None
        return all(self.status.get(s) != GIVING for s in shards)

    def duplicate(self, op: Put | Append) -> tuple[bool, Any]:
        held = self.shards.get(key2shard(op.key))
        return held.duplicate(op.client, op.seq) if held is not None else (False, None)

    # ---- the log ------------------------------------------------------------------------------

    def apply_config(self, entry: NewConfig) -> None:
        new = entry.config
        if new.num != self.cur.num + 1 or not self.settled():
            return  # a duplicate proposal, or one made before the last move finished
        for s in range(NSHARDS):
            was, now = self.cur.shards[s], new.shards[s]
            if now == self.gid and was != self.gid:
                if was == 0:
                    self.shards[s], self.status[s] = KVState(), SERVING
                else:
                    self.status[s] = PULLING
            elif was == self.gid and now != self.gid:
                self.status[s] = GIVING
        self.prev, self.cur = self.cur, new

    def install(self, entry: InstallShards) -> None:
        if entry.num != self.cur.num:
            return
        for s, (data, latest) in entry.shards.items():
            if self.status.get(s) == PULLING:
                kv = KVState()
                kv.data, kv.latest = dict(data), dict(latest)
                self.shards[s], self.status[s] = kv, RELEASING

    def delete(self, entry: DeleteShards) -> None:
        if entry.num != self.cur.num:
            return
        for s in entry.shards:
            if self.status.get(s) == GIVING:
                del self.shards[s], self.status[s]

    def released(self, entry: ShardsReleased) -> None:
        if entry.num != self.cur.num:
            return
        for s in entry.shards:
            if self.status.get(s) == RELEASING:
                self.status[s] = SERVING

    def digest(self) -> str:
        """The same for every replica of the group that applied the same log prefix (see ``canonical_digest``)."""
        shards = sorted((s, sorted(kv.data.items()), sorted(kv.latest.items())) for s, kv in self.shards.items())
        return canonical_digest((self.cur.num, self.prev.num, sorted(self.status.items()), shards))

    # ---- snapshots ----------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        shards = {s: (kv.data, kv.latest) for s, kv in self.shards.items()}
        return pickle.dumps((self.gid, self.cur, self.prev, shards, self.status), protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(cls, blob: bytes) -> ShardKVState:
        gid, cur, prev, shards, status = pickle.loads(blob)
        if not isinstance(cur, ShardConfig) or not isinstance(shards, dict) or not isinstance(status, dict):
            raise ValueError("not a sharded KV snapshot")
        state = cls(gid)
        state.cur, state.prev, state.status = cur, prev, status
        for s, (data, latest) in shards.items():
            kv = KVState()
            kv.data, kv.latest = data, latest
            state.shards[s] = kv
        return state
