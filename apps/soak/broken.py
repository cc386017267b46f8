"""Deliberately broken variants of the KV service, for checking that the checkers catch them.

None of this runs unless a harness asks for it by name (``zactor soak kvraft
--broken NAME``, or ``apps.kvraft.sim.KVSim(..., broken=NAME)``). Each
variant is a subclass that the harness passes in where it starts the servers
(``ServerConfig.storage`` and ``ServerConfig.server_class``), so production
classes carry no switch for it. Each breaks one promise the service makes:

- ``ack-before-fsync``: Raft acknowledges appends and votes before they are
  durable (the journal is synced one append in 16): a crash of a lazy disk
  loses acknowledged, maybe committed, entries.
- ``stale-reads``: a leader answers a Get from its own state without
  confirming it still leads: a deposed leader serves stale values.
- ``no-dedup-in-snapshot``: snapshots leave the duplicate table out, so a
  request retried after a server restored a snapshot is applied twice.
- ``dedup-not-moved`` (shardkv): a shard moves to its new group without its
  duplicate table, so a write applied by the old owner and retried after the
  move (its answer lost or late) is applied a second time by the new one.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

from apps.kvraft.messages import Get
from apps.kvraft.server import KVRaftServer
from apps.kvraft.state import KVState
from apps.raft.core import RaftCore, Ready
from apps.raft.storage import RaftStorage
from apps.shardkv.server import ShardKVServer, ShardServerConfig
from apps.shardkv.state import ShardKVState

log = logging.getLogger(__name__)

SYNC_EVERY = 16
"""ack-before-fsync: the journal is synced once in this many appends."""


class AckBeforeFsyncStorage(RaftStorage):
    def __init__(self, directory: Any, *, fsync: bool = True, lazy_disk: bool = False) -> None:
        super().__init__(directory, fsync=False, lazy_disk=lazy_disk)
        self._appends = 0
        log.warning("raft storage: BROKEN ON PURPOSE (ack-before-fsync): appends acknowledged before fsync")

    def save(self, rd: Ready, core: RaftCore) -> None:
        super().save(rd, core)
        self._appends += 1
        if self._appends % SYNC_EVERY == 0:
            self.journal.sync()


class StaleReadServer(KVRaftServer):
    def _start_read(self, op: Get, reply_to: Any, corr: int, now: float) -> None:
        self._answer(reply_to, corr, True, self._read(op))


class _NoDedupState(KVState):
    def snapshot(self) -> bytes:
        return pickle.dumps((self.data, {}), protocol=pickle.HIGHEST_PROTOCOL)


class NoDedupInSnapshotServer(KVRaftServer):
    state_class = _NoDedupState


class _DedupLeftBehindState(ShardKVState):
    def export(self, num: int, shards: tuple[int, ...]) -> dict[int, tuple[dict, dict]] | None:
        copies = super().export(num, shards)
        return None if copies is None else {s: (data, {}) for s, (data, _) in copies.items()}


class DedupNotMovedServer(ShardKVServer):
    state_class = _DedupLeftBehindState

    def __init__(self, config: ShardServerConfig) -> None:
        super().__init__(config)
        self.state = _DedupLeftBehindState(config.gid)
        log.warning("shardkv: BROKEN ON PURPOSE (dedup-not-moved): shards move without their duplicate tables")


VARIANTS: dict[str, dict[str, Any]] = {
    "ack-before-fsync": {"storage": AckBeforeFsyncStorage},
    "stale-reads": {"server_class": StaleReadServer},
    "no-dedup-in-snapshot": {"server_class": NoDedupInSnapshotServer},
    "dedup-not-moved": {"server_class": DedupNotMovedServer},
}
"""Each variant's name and the ``ServerConfig`` fields that switch it on."""


def server_fields(name: str) -> dict[str, Any]:
    """The ServerConfig fields for the variant ``name`` ("" for none); ValueError for an unknown one."""
    if not name:
        return {}
    if name not in VARIANTS:
        raise ValueError(f"{name!r} is not a known broken variant ({', '.join(VARIANTS)})")
    log.warning("BROKEN ON PURPOSE: the %s variant is switched on (test-only)", name)
    return dict(VARIANTS[name])
