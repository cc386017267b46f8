"""Soaking the sharded KV service (apps.shardkv) through its own harness and clerk.

The cluster is :class:`apps.shardkv.testing.ShardCluster`: a controller and
``groups`` replica groups, each a lab-4 ``KVCluster`` of its own, so the
faults of one group (or of the controller) are :class:`KVRaftTarget`'s, aimed
at the group a per-fault draw from the seed picks: kill, pause, partition
and disk hit one group or the controller, ``net`` makes the whole service's
network unreliable. The nemesis of this system alone is ``reconfig``: a group
leaves (and joins again at the heal), shards move to a group, or a burst of
leaves, joins and moves that the groups must take one configuration at a
time, while the clerks keep writing to the shards on the move; in
``lossy-churn`` the burst comes with the lab's unreliable network (as in the
lab's unreliable tests), so that answers to writes are lost just as their
shards move and the clerks retry them at the new owner; in ``crash-churn`` a
whole group is SIGKILLed as the burst begins and restarted from its disk as
it ends (the lab's concurrent-restart test): writes it had logged but not
yet answered are applied when it comes back, while their clerks have gone
to ask the controller and wait at the shards' new owners to retry them. In
``muted-leave`` a group's answers to the clerks are all lost for a moment
before it leaves: every write it takes in that moment is applied with its
answer lost, and its clerk retries it at the shard's next owner. That is
the one moment a shard's duplicate table exists for, so this variant makes
it happen on every run instead of by the luck of the draw.

The workload's keys all begin with ``w`` (one shard of ten); the clients here
put each key behind a prefix drawn from it (:func:`spread`), so a window's keys
land on several shards and the moves hit them. The history holds the
workload's own keys. After the last heal: every group must be in the latest
configuration with every shard it owns, every list-append key is read once
more (lost, duplicated, reordered and phantom appends), and the replicas of
each group and of the controller must hold the same state.
"""

from __future__ import annotations

import logging
import random
import time
import zlib
from pathlib import Path
from typing import Any

from apps.kvsrv.client import KVUnavailable
from apps.raft.testing import HarnessFailure
from apps.shardctrler.messages import NSHARDS
from apps.shardkv.testing import ShardCluster
from apps.soak.broken import server_fields
from apps.soak.kvraft import KVRaftTarget
from apps.soak.run import FaultEvent, drive
from apps.soak.schedule import Fault, make_schedule
from apps.soak.verdict import HISTORY_FILE, FinalReadFailed, Findings, WindowChecker, check_final_reads
from apps.soak.workload import Workload
from transport.faults import FaultRule

log = logging.getLogger(__name__)

NEMESES = ("kill", "pause", "partition", "net", "disk", "reconfig")
GIVE_UP = 8.0
"""Seconds a workload call keeps retrying before it gives up: longer than kvraft's, as a call to a shard
on its way waits for the old owner (perhaps just killed) to hand it over."""
CHURN_STEPS = 4
"""Reconfigurations in one ``reconfig/churn`` fault."""
CHURN_GAP = 0.25
"""Seconds between a churn's reconfigurations: the groups are still moving shards when the next one comes."""
_FINAL_READ_WAIT = 60.0
_CONVERGE_WAIT = 60.0
CTRLER = "ctrler"
MUTE_LEAD = 0.5
"""Seconds a ``muted-leave`` group takes writes with their answers lost before it leaves: several calls per
clerk at the workload's rate, so every clerk whose key the group owns has one applied and unanswered."""
_MUTED = [FaultRule("*", "out", types=("Reply",), drop=1.0)]
"""What a muted group's servers send the clerks: nothing (their Raft and shard traffic goes on)."""


def spread(key: str) -> str:
    """The key the service stores for the workload's ``key``: a prefix that puts it in shard crc32(key) mod 10.

    ``key2shard`` is the first byte mod 10, and ``chr(100 + s)`` ('d'..'m') has exactly that remainder ``s``.
    """
    return chr(100 + zlib.crc32(key.encode()) % NSHARDS) + key


class SpreadClerk:
    """A sharded-KV clerk whose keys go through :func:`spread`; a call that gives up raises."""

    def __init__(self, clerk: Any) -> None:
        self.clerk = clerk

    def get(self, key: str) -> str:
        return self.clerk.get(spread(key))

    def put(self, key: str, value: str) -> None:
        self.clerk.put(spread(key), value)

    def append(self, key: str, value: str) -> str:
        return self.clerk.append(spread(key), value)


class ShardKVTarget:
    """Inflicts and heals faults on a running ShardCluster: one group's (or the controller's), or the whole service's."""

    def __init__(self, cluster: ShardCluster, seed: int, findings: Findings) -> None:
        self.cluster = cluster
        self.seed = seed
        self.findings = findings
        self.parts: dict[Any, KVRaftTarget] = {CTRLER: KVRaftTarget(cluster.ctrler, seed, findings)}
        for g, group in enumerate(cluster.groups):
            self.parts[g] = KVRaftTarget(group, seed, findings)
        self.hit: dict[Fault, Any] = {}
        """The part each fault went to, for its heal."""
        self.left: set[int] = set()
        """Groups that left in a reconfig fault and join again at its heal."""
        self.crashed: set[int] = set()
        """Groups killed by a crash-churn fault, restarted as its burst ends (or at the heal, if the burst failed)."""
        self.muted: set[int] = set()
        """Groups whose answers to clerks a muted-leave fault drops, until its heal."""

    def _rng(self, fault: Fault) -> random.Random:
        """The draws of one fault, from the seed and its offset alone (so a replay draws the same)."""
        return random.Random(f"zactor-soak-shardkv-{self.seed}-{fault.offset}")

    def _part(self, fault: Fault) -> Any:
        """The controller or one group: the controller one time in ``groups + 1``."""
        pick = self._rng(fault).randrange(len(self.cluster.groups) + 1)
        return CTRLER if pick == len(self.cluster.groups) else pick

    def _name(self, part: Any) -> str:
        return "controller" if part == CTRLER else f"group {self.cluster.gid(part)}"

    def inflict(self, fault: Fault, event: FaultEvent) -> None:
        c = self.cluster
        if fault.kind == "reconfig":
            self._reconfigure(fault, event)
        elif fault.kind == "net":
            event.targets = list(range(c.n))
            c.set_unreliable(True)
            if fault.variant == "long-reordering":
                for part in self.parts.values():
                    part.cluster.set_long_reordering(True)
            event.note = "the whole service"
        else:
            part = self.hit[fault] = self._part(fault)
            try:
                self.parts[part].inflict(fault, event)
            finally:
                event.note = f"{self._name(part)}" + (f": {event.note}" if event.note else "")

    def heal(self, fault: Fault, event: FaultEvent) -> None:
        c = self.cluster
        if fault.kind == "reconfig":
            c.set_unreliable(False)
            self._unmute()
            self._restart()
            self._rejoin()
        elif fault.kind == "net":
            for part in self.parts.values():
                part.cluster.set_long_reordering(False)
            c.set_unreliable(False)
        else:
            self.parts[self.hit.pop(fault)].heal(fault, event)

    def heal_all(self) -> None:
        for part in self.parts.values():
            part.heal_all()
        self.cluster.set_unreliable(False)
        self.crashed.clear()  # the parts' heal_all restarted them
        self._unmute()
        self._rejoin()

    # ---- the reconfig nemesis ------------------------------------------------------------------

    def _reconfigure(self, fault: Fault, event: FaultEvent) -> None:
        c = self.cluster
        rng = self._rng(fault)
        g = fault.targets[0] % len(c.groups) if fault.targets else rng.randrange(len(c.groups))
        event.targets = [g]
        if fault.variant == "leave":
            event.note = self._leave(g)
        elif fault.variant == "move":
            event.note = self._move(rng, g)
        elif fault.variant == "muted-leave":
            if g in self.left or len(self.left) >= len(c.groups) - 1:
                event.note = self._move(rng, g)  # g cannot leave: the last group in the configuration
                return
            self._mute(g)
            time.sleep(MUTE_LEAD)
            event.note = f"group {c.gid(g)} muted; " + self._leave(g)
        elif fault.variant in ("churn", "lossy-churn", "crash-churn"):
            steps = []
            if fault.variant == "lossy-churn":
                c.set_unreliable(True)
            elif fault.variant == "crash-churn":
                self.crashed.add(g)
                c.shutdown_group(g)
                steps.append(f"group {c.gid(g)} killed")
            for step in range(CHURN_STEPS):
                if step:
                    time.sleep(CHURN_GAP)
                g = rng.randrange(len(c.groups))
                if g in self.left:
                    steps.append(self._join(g))
                elif rng.random() < 0.5 and len(self.left) < len(c.groups) - 1:
                    steps.append(self._leave(g))
                else:
                    steps.append(self._move(rng, g))
            if fault.variant == "crash-churn":
                self._restart()
                steps.append(f"group {c.gid(event.targets[0])} restarted")
            event.note = "; ".join(steps)
        else:
            raise ValueError(f"no such fault: {fault.kind}/{fault.variant}")

    def _leave(self, g: int) -> str:
        self.cluster.leave(g)
        self.left.add(g)
        return f"group {self.cluster.gid(g)} left"

    def _join(self, g: int) -> str:
        self.cluster.join(g)
        self.left.discard(g)
        return f"group {self.cluster.gid(g)} joined"

    def _move(self, rng: random.Random, g: int) -> str:
        """One to three shards, picked at random, moved to group g (which must be in the configuration)."""
        if g in self.left:
            return self._join(g)
        shards = sorted(rng.sample(range(NSHARDS), rng.randint(1, 3)))
        for s in shards:
            self.cluster.mck.move(s, self.cluster.gid(g))
        return f"shards {','.join(map(str, shards))} moved to group {self.cluster.gid(g)}"

    def _mute(self, g: int) -> None:
        self.muted.add(g)
        group = self.cluster.groups[g]
        for i in range(group.n):
            group.set_peer_rules(i, _MUTED)

    def _unmute(self) -> None:
        for g in sorted(self.muted):
            group = self.cluster.groups[g]
            for i in range(group.n):
                group.set_peer_rules(i, [])
        self.muted.clear()

    def _restart(self) -> None:
        for g in sorted(self.crashed):
            self.cluster.start_group(g)
        self.crashed.clear()

    def _rejoin(self) -> None:
        if self.left:
            self.cluster.joinm(sorted(self.left))
            self.left.clear()

    # ---- after the last heal -----------------------------------------------------------------

    def final_checks(self, workload: Any, findings: Findings) -> dict[str, Any]:
        c = self.cluster
        out: dict[str, Any] = {}
        try:
            for part in self.parts.values():
                part.cluster.wait_for_leader(30.0)
            out["final_config"] = max(c.wait_caught_up(g, _CONVERGE_WAIT) for g in range(len(c.groups)))
        except HarnessFailure as exc:
            findings.invalid.append(f"the service did not settle after the final heal: {exc}")
            return out
        clerk = c.make_clerk(record=False, give_up_after=_FINAL_READ_WAIT)

        def read(key: str) -> str:
            try:
                return clerk.get(spread(key))
            except KVUnavailable as exc:
                raise FinalReadFailed(str(exc)) from exc

        checked = check_final_reads(workload.windows, read, findings)
        if checked is None:
            return out
        out["final_reads"] = checked
        out["replicas"] = {self._name(part): target._compare_replicas(findings) for part, target in self.parts.items()}
        out["diverged"] = self._diverged(out["replicas"])
        out["corrupt_journals"] = {k: sum(t.corruptions[k] for t in self.parts.values()) for k in ("refused", "loaded", "skipped")}
        return out


    def _diverged(self, replicas: dict[str, Any]) -> dict[str, Any]:
        """For each group whose replicas differ: each server's configuration and shard statuses, the first clue
        to whether they differ in what they own or in the data of a shard."""
        out: dict[str, Any] = {}
        for g, group in enumerate(self.cluster.groups):
            digests = replicas.get(self._name(g)) or []
            if len({tuple(d) for d in digests if d is not None}) > 1:
                statuses: list[Any] = []
                for i in range(group.n):
                    try:
                        statuses.append(group.shard_status(i))
                    except Exception as exc:  # a clue only: a server that does not answer is noted, not fatal
                        statuses.append(f"{type(exc).__name__}: {exc}")
                out[self._name(g)] = statuses
        return out


def run_shardkv(config: Any, status: Any) -> tuple[Findings, dict[str, Any]]:
    """The whole run: controller and groups up and joined, schedule and workload, final heal and checks; always
    tears the cluster down."""
    findings = Findings()
    schedule = make_schedule(config.seed, config.seconds, config.nemeses, config.servers)
    with ShardCluster(config.groups, config.servers, maxraftstate=config.maxraftstate, seed=config.seed,
                      lazy_disk="disk" in config.nemeses, server_fields={**server_fields(config.broken), "damage_expected": "disk" in config.nemeses}) as cluster:
        cluster.joinm(range(config.groups))
        target = ShardKVTarget(cluster, config.seed, findings)

        def make_client(c: int) -> SpreadClerk:
            return SpreadClerk(cluster.make_clerk(record=False, give_up_after=GIVE_UP))

        workload = Workload(make_client, config.clients, config.window, config.seed)
        checker = WindowChecker(workload, findings, config.check_budget, grace=GIVE_UP + 2.0,
                                history=Path(config.out) / HISTORY_FILE if config.history else None)
        extra = drive(config, target, workload, checker, schedule, findings, status)
    extra["groups"] = config.groups
    return findings, extra
