"""The controller's harness: lab 4's KVCluster with controller servers in the processes, and controller clerks.

    with CtrlerCluster(3) as cluster:
        ck = cluster.make_clerk()
        ck.join({1: ["ipc://x"]}); assert ck.query().shards == (1,) * 10
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from apps.kvraft.testing import KVCluster
from apps.shardctrler.client import CtrlerClerk
from apps.shardctrler.server import CtrlerServer


class CtrlerCluster(KVCluster):
    server_class = CtrlerServer

    def make_clerk(self, servers: Sequence[int] | None = None, *, record: bool = False) -> Any:
        """A controller clerk bound to ``servers`` (default all); its calls are not recorded."""
        return CtrlerClerk(self._endpoints_of(servers), system=self._system)
