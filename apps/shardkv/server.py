"""The sharded KV server: lab 4's replicated server, serving only its group's shards and moving them between groups.

Requests, Raft, waiting, duplicate detection and snapshots are
:class:`apps.kvraft.server.KVRaftServer`'s. This class adds what lab 5 needs:

- a write or read is served only if the group serves the key's shard in its
  current configuration (checked at apply time for writes, at answer time
  for reads); otherwise the reply is ``WrongGroup``;
- every ``poll`` seconds the leader asks the controller's servers for the
  next configuration (only once every shard is settled: one at a time, in
  order) and proposes it to its log; the ask is a ``NextConfig`` tell that
  only a server holding that configuration answers, so polling costs the
  controller no Raft round and no reply while nothing changes;
- for each shard it now owns but lacks, it asks the previous owner's
  servers for it; any of them that has applied the same configuration holds
  the final copy (no write to a shard applies after the configuration that
  gave it away) and answers; the leader puts the data into its own log;
- for each shard it installed, it tells the previous owner to delete its
  copy, until that owner answers that it has (its delete went through its
  log); then it records the release in its own log.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from apps.kvraft.messages import Append, Get, Put, Reply
from apps.kvraft.server import SERVER_NAME, KVRaftServer, ServerConfig
from apps.kvraft.server import serve as serve_kv
from apps.raft.peer import Start
from apps.shardctrler.messages import NSHARDS, NextConfig, ShardConfig
from apps.shardkv.messages import (
    DeleteAck,
    DeleteRequest,
    DeleteShards,
    InstallShards,
    NewConfig,
    PullShards,
    ShardData,
    ShardsReleased,
    WrongGroup,
    key2shard,
)
from apps.shardkv.state import PULLING, RELEASING, ShardKVState
from transport import FaultRule
from transport.message import message

log = logging.getLogger(__name__)

_REPROPOSE = 1.0
"""Seconds before the same configuration, shard data or release is proposed again (if it has not applied)."""


@dataclass(frozen=True)
class ShardServerConfig(ServerConfig):
    gid: int = 0
    ctrlers: tuple[str, ...] = ()
    """Endpoints of the shard controller's servers."""
    poll: float = 0.1
    """Seconds between the leader's rounds of polling and shard messages."""


@message
class _Poll:
    pass


@message
class ShardStatus:
    """Asked of a server: ``(configuration number, {shard: status})`` (for harnesses and operators)."""


class ShardKVServer(KVRaftServer):
    state_class = ShardKVState
    write_types = (Put, Append)

    def __init__(self, config: ShardServerConfig) -> None:
        super().__init__(config)
        self.config: ShardServerConfig = config
        self.state: ShardKVState = ShardKVState(config.gid)
        self.address = f"{config.endpoints[config.me]}#{SERVER_NAME}"
        self._proposed: dict[tuple, tuple[int, float]] = {}

    def on_start(self) -> None:
        super().on_start()
        self.schedule_every(self.config.poll, _Poll())

    # ---- clerks' requests -----------------------------------------------------------------------

    def _duplicate(self, op: Any) -> tuple[bool, Any]:
        return self.state.duplicate(op)

    def _refuse(self, op: Any) -> Any:
        return None if self.state.serves(key2shard(op.key)) else WrongGroup()

    def _read(self, op: Get) -> Any:
        shard = key2shard(op.key)
        return self.state.shards[shard].get(op.key) if self.state.serves(shard) else WrongGroup()

    def _apply_write(self, cmd: Put | Append) -> Any:
        shard = key2shard(cmd.key)
        if not self.state.serves(shard):
            return WrongGroup()  # not applied, not in any duplicate table: the clerk tries the right group
        return self.state.shards[shard].apply(cmd)

    def _apply(self, cmd: Any) -> None:
        if isinstance(cmd, NewConfig):
            self.state.apply_config(cmd)
        elif isinstance(cmd, InstallShards):
            self.state.install(cmd)
        elif isinstance(cmd, DeleteShards):
            self.state.delete(cmd)
        elif isinstance(cmd, ShardsReleased):
            self.state.released(cmd)
        else:
            super()._apply(cmd)

    # ---- the configuration and the shards' moves ------------------------------------------------

    def _other(self, message: Any) -> Any:
        if isinstance(message, (PullShards, ShardData, DeleteRequest, DeleteAck)) and not _well_formed(message):
            log.warning("shardkv %d/%d: ignored a malformed %s", self.config.gid, self.config.me, type(message).__name__)
            return None
        if isinstance(message, _Poll):
            self._poll()
        elif isinstance(message, Reply):
            self._controller_said(message)
        elif isinstance(message, PullShards):
            data = self.state.export(message.num, tuple(message.shards))
            if data is not None:
                self._tell(message.reply_to, ShardData(message.num, data))
        elif isinstance(message, ShardData):
            if self.leading and message.num == self.state.cur.num:
                self._propose(InstallShards(message.num, message.shards), ("install", message.num, tuple(sorted(message.shards))))
        elif isinstance(message, DeleteRequest):
            gone = self.state.deleted(message.num, tuple(message.shards))
            if gone:
                self._tell(message.reply_to, DeleteAck(message.num, message.shards))
            elif gone is False and self.leading:
                shards = tuple(message.shards)
                self._propose(DeleteShards(message.num, shards), ("delete", message.num, shards))
        elif isinstance(message, DeleteAck):
            if self.leading and message.num == self.state.cur.num:
                shards = tuple(message.shards)
                self._propose(ShardsReleased(message.num, shards), ("released", message.num, shards))
        elif isinstance(message, ShardStatus):
            return self.state.cur.num, dict(self.state.status)
        else:
            return super()._other(message)
        return None

    def _poll(self) -> None:
        if not self.leading:
            return
        st = self.state
        if st.settled():
            ask = NextConfig(st.cur.num + 1, self.address)
            for ep in self.config.ctrlers:
                self._tell(f"{ep}#{SERVER_NAME}", ask)
        for gid, shards in st.waiting(PULLING).items():
            for ep in st.prev.groups.get(gid, ()):
                self._tell(f"{ep}#{SERVER_NAME}", PullShards(st.cur.num, tuple(shards), self.address))
        for gid, shards in st.waiting(RELEASING).items():
            for ep in st.prev.groups.get(gid, ()):
                self._tell(f"{ep}#{SERVER_NAME}", DeleteRequest(st.cur.num, tuple(shards), self.address))

    def _controller_said(self, reply: Reply) -> None:
        config = reply.value
        if reply.ok and isinstance(config, ShardConfig) and self.leading and config.num == self.state.cur.num + 1:
            self._propose(NewConfig(config), ("config", config.num))

    def _propose(self, entry: Any, key: tuple) -> None:
        """Propose ``entry`` unless the same one was proposed in this term within ``_REPROPOSE`` seconds.

        Every server of the other group answers each round, so the same data
        would otherwise go into the log several times (applied once, but
        logged and snapshotted each time).
        """
        now = time.monotonic()
        self._proposed = {k: t for k, t in self._proposed.items() if now - t[1] < _REPROPOSE}
        last = self._proposed.get(key)
        if last is not None and last[0] == self.term:
            return
        self._proposed[key] = (self.term, now)
        self.raft.tell(Start(entry))

    def _tell(self, address: str, message: Any) -> None:
        try:
            self.actor_system.ref(address).tell(message)  # type: ignore[union-attr]
        except Exception as exc:  # a bad endpoint in a configuration must not stop the server
            log.warning("shardkv %d/%d: cannot reach %s: %s", self.config.gid, self.config.me, address, exc)


def _well_formed(message: Any) -> bool:
    """Whether a group's message has the shape this server relies on (a bad one must never reach the log)."""
    if type(message.num) is not int:
        return False
    if isinstance(message, (PullShards, DeleteRequest)) and type(message.reply_to) is not str:
        return False
    shards = message.shards
    if isinstance(message, ShardData):
        return isinstance(shards, dict) and all(
            type(s) is int and 0 <= s < NSHARDS and isinstance(v, tuple) and len(v) == 2
            and isinstance(v[0], dict) and isinstance(v[1], dict)
            and all(type(k) is str and type(x) is str for k, x in v[0].items())
            for s, v in shards.items()
        )
    return isinstance(shards, (tuple, list)) and all(type(s) is int and 0 <= s < NSHARDS for s in shards)


def serve(config: ShardServerConfig, faults: list[FaultRule] | None = None) -> None:
    """Child-process target: server ``config.me`` of group ``config.gid`` and its Raft peer, until stopped."""
    serve_kv(replace(config, server_class=ShardKVServer), faults)
