"""The lab's sharded-KV harness, on real processes: a controller and replica groups, importable for your own tests.

    with ShardCluster(ngroups=3, maxraftstate=1000) as cluster:
        ck = cluster.make_clerk()
        cluster.join(0); ck.put("a", "1")
        cluster.join(1); cluster.leave(0)
        cluster.shutdown_group(1); cluster.start_group(1)
        cluster.set_unreliable(True)
        cluster.check_linearizable()

The controller is a :class:`CtrlerCluster` and each group (gid 100, 101, ...)
a :class:`GroupCluster`, both lab 4's ``KVCluster`` with another server in
the processes: every server its own OS process under a supervisor, crashes
SIGKILL, restarts from the data directory, partitions within a group, and
the unreliable network (clerks' requests and replies, and the groups'
shard messages, lost or delayed). Clerk operations are recorded for the
project's linearizability checker, which must reach a verdict.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

from actors import ActorSystem, AskTimeout
from actors.errors import ActorDeadError
from apps.kvraft.server import SERVER_NAME
from apps.kvraft.testing import KVCluster, RecordingClerk
from apps.linearizability import CheckResult, KVModel, Recorder, Verdict, check, render_html
from apps.raft.testing import HarnessFailure
from apps.shardctrler.testing import CtrlerCluster
from apps.shardkv.client import Clerk
from apps.shardkv.server import ShardKVServer, ShardServerConfig, ShardStatus
from apps.shardkv.state import PULLING
from transport import FaultRule

__all__ = ["GroupCluster", "HarnessFailure", "ShardCluster"]

FIRST_GID = 100
_GROUP_TYPES = ("PullShards", "ShardData", "DeleteRequest", "DeleteAck")


class GroupCluster(KVCluster):
    """One replica group: ``n`` sharded KV servers of gid ``gid`` polling the controller at ``ctrlers``."""

    server_class = ShardKVServer

    def __init__(self, gid: int, n: int, ctrlers: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(n, **kwargs)
        self.gid = gid
        self.ctrlers = ctrlers

    def _server_config(self, i: int) -> ShardServerConfig:
        base = super()._server_config(i)
        return ShardServerConfig(**{**base.__dict__, "gid": self.gid, "ctrlers": self.ctrlers})

    def _rules_for(self, i: int) -> list[FaultRule]:
        rules = super()._rules_for(i)
        if not self.reliable:  # the groups' own messages, as lossy as the clerks'
            rules.append(FaultRule("*", "out", types=_GROUP_TYPES, drop=0.1, delay=(0.0, 0.026)))
        return rules

    def shard_status(self, i: int) -> tuple[int, dict[int, str]]:
        """Server i's (configuration number, {shard: status})."""
        return self._system.ref(self.endpoints[i], SERVER_NAME).ask(ShardStatus(), timeout=5.0)

    def persisted_bytes(self) -> int:
        """Raft state plus snapshot, over every running server of the group."""
        return sum(self.raft_state_size(i) + self.snapshot_size(i) for i in range(self.n) if self.running[i])


class ShardCluster:
    def __init__(
        self,
        ngroups: int = 3,
        n: int = 3,
        *,
        maxraftstate: int = -1,
        unreliable: bool = False,
        nctrlers: int = 3,
        seed: int | None = None,
        lazy_disk: bool = False,
        server_fields: dict[str, Any] | None = None,
    ) -> None:
        """``lazy_disk``: every server's writes reach its files only at fsync (as ``KVCluster``'s);
        ``server_fields``: more ``ShardServerConfig`` fields for every group's server (a broken variant's, say)."""
        # The controller's servers share only the harness's word on damage done on purpose (a broken variant's
        # fields are for the groups' servers).
        expected = {k: v for k, v in (server_fields or {}).items() if k == "damage_expected"}
        self.ctrler = CtrlerCluster(nctrlers, unreliable=unreliable, seed=seed, lazy_disk=lazy_disk, server_fields=expected)
        self.lazy_disk = lazy_disk
        self.server_fields = dict(server_fields or {})
        self.groups: list[GroupCluster] = []
        self.ngroups, self.n, self.maxraftstate = ngroups, n, maxraftstate
        self.unreliable = unreliable
        self.seed = seed
        self.recorder = Recorder()
        self._clients = 0
        self._clients_lock = threading.Lock()
        self._system = ActorSystem(ask_timeout=5.0)

    def __enter__(self) -> Self:
        try:
            self.ctrler.__enter__()
            for g in range(self.ngroups):
                group = GroupCluster(
                    FIRST_GID + g, self.n, self.ctrler.endpoints, maxraftstate=self.maxraftstate,
                    unreliable=self.unreliable, seed=self.seed, lazy_disk=self.lazy_disk, server_fields=self.server_fields,
                )
                self.groups.append(group)
                group.__enter__()
            self._system.node.set_faults(self._clerk_rules())
            self.mck = self.ctrler.make_clerk()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        for group in self.groups:
            group.cleanup()
        self.ctrler.cleanup()
        self._system.stop()

    # ---- the controller's view -----------------------------------------------------------------

    def gid(self, g: int) -> int:
        return self.groups[g].gid

    def servers(self, g: int) -> tuple[str, ...]:
        return self.groups[g].endpoints

    def join(self, g: int) -> None:
        self.joinm([g])

    def joinm(self, gs: Iterable[int]) -> None:
        self.mck.join({self.gid(g): self.servers(g) for g in gs})

    def leave(self, g: int) -> None:
        self.leavem([g])

    def leavem(self, gs: Iterable[int]) -> None:
        self.mck.leave([self.gid(g) for g in gs])

    # ---- groups --------------------------------------------------------------------------------

    def shutdown_group(self, g: int) -> None:
        """Every server of group g SIGKILLed."""
        self.groups[g].crash_all()

    def start_group(self, g: int) -> None:
        """Every server of group g back from what it persisted."""
        self.groups[g].start_all()

    def shutdown_server(self, g: int, i: int) -> None:
        self.groups[g].crash(i)

    def start_server(self, g: int, i: int) -> None:
        self.groups[g].restart(i)

    def set_unreliable(self, unreliable: bool) -> None:
        self.unreliable = unreliable
        self.ctrler.set_unreliable(unreliable)
        for group in self.groups:
            group.set_unreliable(unreliable)
        self._system.node.set_faults(self._clerk_rules())

    def _clerk_rules(self) -> list[FaultRule]:
        if not self.unreliable:
            return []
        return [FaultRule("*", "out", types=("Request",), drop=0.1, delay=(0.0, 0.026))]

    def persisted_bytes(self) -> int:
        """Raft state plus snapshot of every running server of every group (challenge 1's measure)."""
        return sum(group.persisted_bytes() for group in self.groups)

    def check_logs(self) -> None:
        """The lab's checklogs: raft state within 8 x maxraftstate, and no snapshot at all with maxraftstate -1."""
        for group in self.groups:
            for i in range(self.n):
                if not group.running[i]:
                    continue
                raft, snap = group.raft_state_size(i), group.snapshot_size(i)
                if self.maxraftstate > 0 and raft > 8 * self.maxraftstate:
                    raise HarnessFailure(f"group {group.gid} server {i}: raft state {raft} > 8 x maxraftstate {self.maxraftstate}")
                if self.maxraftstate < 0 and snap > 0:
                    raise HarnessFailure(f"group {group.gid} server {i}: maxraftstate is -1, but a snapshot exists")

    def wait_caught_up(self, g: int, timeout: float = 60.0) -> int:
        """Until every running server of group g is in the controller's latest configuration and holds
        every shard it owns there (none still to pull); returns that configuration's number."""
        latest = self.mck.query(-1).num
        deadline = time.monotonic() + timeout
        while True:
            seen = [s for s, up in zip(self._statuses(g), self.groups[g].running, strict=True) if up]
            if seen and all(st is not None and st[0] >= latest and PULLING not in st[1].values() for st in seen):
                return latest
            if time.monotonic() > deadline:
                raise HarnessFailure(f"group {self.gid(g)} not caught up with configuration {latest} after {timeout} s: {seen}")
            time.sleep(0.05)

    def _statuses(self, g: int) -> list[tuple[int, dict[int, str]] | None]:
        out: list[tuple[int, dict[int, str]] | None] = []
        for i in range(self.n):
            try:
                out.append(self.groups[g].shard_status(i) if self.groups[g].running[i] else None)
            except (AskTimeout, ActorDeadError):
                out.append(None)
        return out

    def configs_applied(self, g: int) -> list[int | None]:
        """The configuration number each server of group g is in (None: down or not answering)."""
        return [st[0] if st is not None else None for st in self._statuses(g)]

    # ---- clerks and the history ----------------------------------------------------------------

    def make_clerk(self, *, record: bool = True, ctrlers: tuple[str, ...] | None = None, **kwargs: Any) -> Any:
        """A clerk of the service (recorded in the history unless ``record=False``)."""
        clerk = Clerk(ctrlers or self.ctrler.endpoints, system=self._system, **kwargs)
        if not record:
            return clerk
        with self._clients_lock:
            self._clients += 1
            return RecordingClerk(clerk, self.recorder, self._clients)  # type: ignore[arg-type]

    def check_linearizable(self, timeout: float = 60.0, html: Path | None = None) -> CheckResult:
        """Check every recorded operation; fails on a non-linearizable history and on no verdict."""
        history = self.recorder.history()
        result = check(history, KVModel(), timeout=timeout)
        if result.verdict is Verdict.ILLEGAL:
            page = html or (self.ctrler._dir / "history.html")
            render_html(history, KVModel(), result, page)
            raise HarnessFailure(f"history of {len(history)} operations is not linearizable; see {page}")
        if result.verdict is not Verdict.OK:
            raise HarnessFailure(f"the linearizability check reached no verdict in {timeout} s ({len(history)} operations)")
        return result
