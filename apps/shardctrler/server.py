"""The shard controller server: lab 4's replicated server with the controller's state machine.

Everything about Raft, waiting requests, leadership changes, duplicate
detection and snapshots is :class:`apps.kvraft.server.KVRaftServer`'s; this
class names the operations (Query a read, Join/Leave/Move writes), checks
them, and applies them to :class:`CtrlerState`; it also answers the groups'
polls (``NextConfig``) from the configurations applied so far.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from apps.kvraft.server import KVRaftServer, ServerConfig
from apps.kvraft.server import serve as serve_kv
from apps.shardctrler.messages import NSHARDS, Join, Leave, Move, NextConfig, Query
from apps.shardctrler.state import CtrlerState
from transport import FaultRule

log = logging.getLogger(__name__)


class CtrlerServer(KVRaftServer):
    state_class = CtrlerState
    write_types = (Join, Leave, Move)

    def _classify(self, op: Any) -> tuple[str, str | None]:
        if isinstance(op, Query):
            return "read", None if type(op.num) is int else "Query needs an integer configuration number"
        if isinstance(op, Join):
            ok = isinstance(op.servers, dict) and op.servers and all(
                type(g) is int and g > 0 and isinstance(s, (tuple, list)) and s and all(type(e) is str for e in s)
                for g, s in op.servers.items()
            )
            return "write", None if ok else "Join needs {gid > 0: [endpoint, ...]} with at least one group"
        if isinstance(op, Leave):
            ok = isinstance(op.gids, (tuple, list)) and all(type(g) is int and g > 0 for g in op.gids)
            return "write", None if ok else "Leave needs a list of gids > 0"
        if isinstance(op, Move):
            ok = type(op.shard) is int and 0 <= op.shard < NSHARDS and type(op.gid) is int and op.gid >= 0
            return "write", None if ok else f"Move needs a shard in 0..{NSHARDS - 1} and a gid >= 0"
        return "bad", f"not a shard controller request: {type(op).__name__}"

    def _read(self, op: Any) -> Any:
        return self.state.query(op.num)

    def _other(self, message: Any) -> Any:
        if isinstance(message, NextConfig):
            self._next_config(message)
            return None
        return super()._other(message)

    def _next_config(self, poll: NextConfig) -> None:
        """Answer a group's poll with configuration ``poll.num`` if it has applied here; say nothing otherwise."""
        if type(poll.num) is not int or type(poll.reply_to) is not str:
            log.warning("shard controller %d: ignored a malformed NextConfig", self.config.me)
            return
        if 0 < poll.num < len(self.state.configs):
            self._answer(poll.reply_to, 0, True, self.state.configs[poll.num])


def serve(config: ServerConfig, faults: list[FaultRule] | None = None) -> None:
    """Child-process target: controller server ``config.me`` and its Raft peer, until stopped."""
    serve_kv(replace(config, server_class=CtrlerServer), faults)
