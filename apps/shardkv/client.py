"""The sharded service's clerk: finds the key's group in a cached configuration, asks the controller again when refused.

For each group it keeps one lab-4 clerk (which finds that group's leader
and retries). A ``WrongGroup`` answer, or a group that does not answer
within ``group_timeout`` (dead, or no longer the owner and gone), sends the
clerk back to the controller for the latest configuration; the request
keeps its client id and sequence number throughout, so it is applied once
whichever group applies it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from actors import ActorSystem
from apps.kvraft.client import Clerk as GroupClerk
from apps.kvraft.messages import Append, Get, Put
from apps.kvsrv.client import KeyValueCalls, KVUnavailable
from apps.shardctrler.client import CtrlerClerk
from apps.shardctrler.messages import ShardConfig
from apps.shardkv.messages import WrongGroup, key2shard

_REFUSED_PAUSE = 0.05
"""Seconds between asking the controller again after a refusal (a shard on its way: do not spin)."""


class Clerk(KeyValueCalls):
    """``get``, ``put`` and ``append`` against the sharded KV service whose controller is at ``ctrlers``."""

    def __init__(
        self,
        ctrlers: Sequence[str],
        *,
        system: ActorSystem | None = None,
        try_timeout: float = 0.1,
        group_timeout: float = 1.0,
        give_up_after: float | None = None,
    ) -> None:
        if group_timeout <= 0:
            raise ValueError(f"group_timeout must be positive seconds, got {group_timeout}")
        super().__init__()
        self._system = system or ActorSystem.shared()
        self.ctrler = CtrlerClerk(ctrlers, system=self._system, try_timeout=try_timeout, give_up_after=give_up_after)
        self.try_timeout = try_timeout
        self.group_timeout = group_timeout
        self.give_up_after = give_up_after
        self.config: ShardConfig | None = None
        self._groups: dict[int, GroupClerk] = {}

    def _group(self, gid: int, servers: tuple[str, ...]) -> GroupClerk:
        clerk = self._groups.get(gid)
        if clerk is None or clerk.servers != list(servers):
            clerk = self._groups[gid] = GroupClerk(
                servers, system=self._system, try_timeout=self.try_timeout, give_up_after=self.group_timeout
            )
        return clerk

    def _call(self, op: Get | Put | Append) -> Any:
        started = time.monotonic()
        if type(op.key) is not str:
            raise ValueError(f"key must be a string, not {type(op.key).__name__}")
        shard = key2shard(op.key)
        while True:
            if self.config is None:
                self.config = self.ctrler.query(-1)
            gid = self.config.shards[shard]
            servers = self.config.groups.get(gid)
            if servers:
                try:
                    reply = self._group(gid, servers)._call(op)
                    if not isinstance(reply, WrongGroup):
                        return reply
                    time.sleep(_REFUSED_PAUSE)
                except KVUnavailable:
                    pass
            else:
                time.sleep(_REFUSED_PAUSE)  # nobody serves the shard yet
            if self.give_up_after is not None and time.monotonic() - started > self.give_up_after:
                raise KVUnavailable(f"no group served {type(op).__name__} {op.key!r} within {self.give_up_after} s")
            self.config = self.ctrler.query(-1)
