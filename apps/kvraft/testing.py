"""The lab's KV-on-Raft harness, on real server processes: importable for your own tests.

    with KVCluster(5, maxraftstate=1000) as cluster:
        ck = cluster.make_clerk()
        ck.put("k", "v"); assert ck.get("k") == "v"
        cluster.partition([[0, 1, 2], [3, 4]]); cluster.heal()
        cluster.crash(2); cluster.restart(2)
        cluster.set_unreliable(True)
        cluster.check_linearizable()

It is :class:`apps.raft.testing.Cluster` (processes under a supervisor,
SIGKILL crashes, restarts from the data directory, the transport's fault
rules as the network) with the KV server hosted beside each peer, the lab's
partitions into groups, the unreliable network extended to clerk traffic
(10% of requests and of replies lost, requests delayed 0-26 ms), clerks
bound to a subset of servers, and every clerk operation recorded for the
project's linearizability checker. The check must reach a verdict: a budget
that runs out fails the test, as a non-linearizable history does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actors import ActorDeadError, AskTimeout, ChildSpec
from apps.kvraft.client import Clerk
from apps.kvraft.server import KVRaftServer, ServerConfig, serve
from apps.linearizability import CheckResult, KVModel, Recorder, Verdict, check, render_html
from apps.raft.core import Config
from apps.raft.testing import Cluster, HarnessFailure
from transport import FaultRule

log = logging.getLogger(__name__)

__all__ = ["HarnessFailure", "KVCluster", "RecordingClerk"]


class RecordingClerk:
    """A clerk whose every call is recorded (call and return times, input, output) in the cluster's history."""

    def __init__(self, clerk: Clerk, recorder: Recorder, client: int) -> None:
        self.clerk = clerk
        self.recorder = recorder
        self.client = client

    @property
    def servers(self) -> list[str]:
        return self.clerk.servers

    def get(self, key: str) -> str:
        with self.recorder.op(self.client, {"op": "get", "key": key}) as rec:
            rec.output = self.clerk.get(key)
        return rec.output

    def put(self, key: str, value: str) -> None:
        with self.recorder.op(self.client, {"op": "put", "key": key, "value": value}) as rec:
            self.clerk.put(key, value)
            rec.output = None

    def append(self, key: str, value: str) -> str:
        with self.recorder.op(self.client, {"op": "append", "key": key, "value": value}) as rec:
            rec.output = self.clerk.append(key, value)
        return rec.output


class KVCluster(Cluster):
    def __init__(
        self,
        n: int,
        *,
        data_dir: str | Path | None = None,
        maxraftstate: int = -1,
        read: str = "index",
        unreliable: bool = False,
        config: Config | None = None,
        tick: float = 0.01,
        seed: int | None = None,
        lazy_disk: bool = False,
        server_fields: dict[str, Any] | None = None,
    ) -> None:
        """``server_fields``: more ``ServerConfig`` fields for every server (a broken variant's, say)."""
        ServerConfig(0, ("x",), "", maxraftstate=maxraftstate, read=read)  # validates both, before any process starts
        super().__init__(n, reliable=not unreliable, config=config, tick=tick, seed=seed, lazy_disk=lazy_disk)
        self.server_fields = dict(server_fields or {})
        self.maxraftstate = maxraftstate
        self.read = read
        self.recorder = Recorder()
        self._clients = 0
        self._own_data = Path(data_dir) if data_dir is not None else None

    def __enter__(self) -> KVCluster:
        super().__enter__()
        self._system.node.set_faults(self._clerk_rules())
        return self

    # ---- servers -----------------------------------------------------------------------------

    def data_dir(self, i: int) -> Path:
        if self._own_data is not None:
            return self._own_data / f"server-{i}"
        return super().data_dir(i)

    server_class: type[KVRaftServer] | None = None
    """What each server process hosts beside its Raft peer (None: the KV server); a subclass serves another service."""

    def _server_config(self, i: int) -> ServerConfig:
        return ServerConfig(
            me=i,
            endpoints=self.endpoints,
            data_dir=str(self.data_dir(i)),
            maxraftstate=self.maxraftstate,
            read=self.read,
            raft=self.config,
            tick=self.tick,
            lazy_disk=self.lazy_disk,
            initial=self.initial,
            **{"server_class": self.server_class, **self.server_fields},
        )

    def _child_spec(self, i: int) -> ChildSpec:
        return ChildSpec(f"peer-{i}", serve, (self._server_config(i), self._rules_for(i)), restart="temporary")

    def raft_state_size(self, i: int) -> int:
        return self.peer(i).status().raft_state_size

    def snapshot_size(self, i: int) -> int:
        return self.peer(i).status().snapshot_size

    def max_snapshot_size(self) -> int:
        return max((self.snapshot_size(i) for i in range(self.n) if self.running[i]), default=0)

    # ---- the network -------------------------------------------------------------------------
    # partition() and heal() are Cluster's: groups cut links between servers only, so a clerk
    # still reaches every server it is bound to (connect_clerk narrows that).

    def set_unreliable(self, unreliable: bool) -> None:
        super().set_unreliable(unreliable)
        self._system.node.set_faults(self._clerk_rules())

    def _rules_for(self, i: int) -> list[FaultRule]:
        rules = super()._rules_for(i)
        if not self.reliable:  # replies to clerks: a tell named Reply
            rules.append(FaultRule("*", "out", types=("Reply",), drop=0.1))
        return rules

    def _clerk_rules(self) -> list[FaultRule]:
        if self.reliable:
            return []
        return [FaultRule("*", "out", types=("Request",), drop=0.1, delay=(0.0, 0.026))]

    # ---- clerks and the history --------------------------------------------------------------

    def make_clerk(self, servers: Sequence[int] | None = None, *, record: bool = True) -> Any:
        """A clerk bound to ``servers`` (default all); recorded in the history unless ``record=False``.

        One bound to all follows membership changes as a user's clerk does; one bound to some keeps to them.
        """
        clerk = Clerk(self._endpoints_of(servers), system=self._system, learn=servers is None)
        if not record:
            return clerk
        self._clients += 1
        return RecordingClerk(clerk, self.recorder, self._clients)

    def connect_clerk(self, clerk: Clerk | RecordingClerk, servers: Sequence[int] | None = None, *,
                      learn: bool | None = None) -> None:
        """Rebind a clerk (even one in the middle of a call) to ``servers`` (default all).

        ``learn``: whether it follows membership changes (default: only when bound to all); a soak's clerk
        bound to every member in an order of its own still follows them.
        """
        target = clerk.clerk if isinstance(clerk, RecordingClerk) else clerk
        target.servers = self._endpoints_of(servers)
        target.learn = servers is None if learn is None else learn

    def _endpoints_of(self, servers: Sequence[int] | None) -> list[str]:
        return self.member_endpoints() if servers is None else [self.endpoints[j] for j in servers]

    def check_linearizable(self, timeout: float = 60.0, html: Path | None = None) -> CheckResult:
        """Check every recorded operation; fails on a non-linearizable history and on no verdict."""
        history = self.recorder.history()
        result = check(history, KVModel(), timeout=timeout)
        if result.verdict is Verdict.ILLEGAL:
            page = html or (self._dir / "history.html")
            render_html(history, KVModel(), result, page)
            raise HarnessFailure(f"history of {len(history)} operations is not linearizable; see {page}")
        if result.verdict is not Verdict.OK:
            raise HarnessFailure(f"the linearizability check reached no verdict in {timeout} s ({len(history)} operations)")
        return result

    def status_all(self) -> list[Any]:
        out = []
        for i in range(self.n):
            try:
                out.append(self.peer(i).status() if self.running[i] else None)
            except (AskTimeout, ActorDeadError):
                out.append(None)
        return out
