"""Soaking the replicated KV service (apps.kvraft) through its own harness and clerk.

The cluster is :class:`apps.kvraft.testing.KVCluster`: five server processes
under a supervisor, SIGKILL crashes and restarts from disk, partitions and
the lab's unreliable network as the transport's fault rules. Pauses are
SIGSTOP and SIGCONT of a server's process. The ``disk`` nemesis runs every
server on the lazy disk (``KVCluster(lazy_disk=True)``: an append reaches the
file only at its fsync) so that a kill loses what a power cut would, and flips a
bit in a stopped server's journal, which the server must refuse to load.

After the last heal: a leader must be elected, every list-append key is read
once more (lost, duplicated, reordered and phantom appends), and every
server's state digest must match once they have applied the same log. All
through the run, every server's apply log (index -> command digest) is
compared with the others' (``apps/soak/applied.py``): no two servers may
ever apply different commands at the same index.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from actors import ActorDeadError, ActorSystem, AskTimeout
from apps.kvraft.client import Clerk
from apps.kvraft.messages import StateDigest
from apps.kvraft.server import SERVER_NAME
from apps.kvraft.testing import KVCluster
from apps.raft.storage import JOURNAL_NAME
from apps.raft.testing import HarnessFailure
from apps.soak import targeted
from apps.soak.applied import AppliedChecker
from apps.soak.broken import server_fields
from apps.soak.netns import kv_cluster
from apps.soak.run import FaultEvent, drive
from apps.soak.schedule import Fault, make_schedule
from apps.soak.targeted import TARGETED
from apps.soak.verdict import HISTORY_FILE, FinalReadFailed, Findings, WindowChecker, check_final_reads
from apps.soak.workload import Workload

log = logging.getLogger(__name__)

NEMESES = ("kill", "pause", "partition", "net", "disk", *TARGETED)
GIVE_UP = 5.0
"""Seconds a workload call keeps retrying before it gives up (and is recorded as never answered)."""
_FINAL_READ_WAIT = 60.0
_CONVERGE_WAIT = 30.0
APPLY_DIR = "applied"
"""Where in the report directory each server's apply log goes (see ``apps/soak/applied.py``)."""


class KVRaftTarget:
    """Inflicts and heals faults on a running KVCluster."""

    def __init__(self, cluster: KVCluster, seed: int, findings: Findings) -> None:
        self.cluster = cluster
        self.rng = random.Random(f"zactor-soak-targets-{seed}")  # only for choices the schedule could not make
        self.findings = findings
        self.paused: set[int] = set()
        self.corruptions = {"refused": 0, "loaded": 0, "skipped": 0}

    def _leader_or_any(self) -> int:
        who = self.cluster.leader()
        return who if who is not None else self.rng.randrange(self.cluster.n)

    def inflict(self, fault: Fault, event: FaultEvent) -> None:
        c = self.cluster
        targets = list(fault.targets) or [self._leader_or_any()]
        event.targets = targets
        if fault.kind == "kill" or (fault.kind == "disk" and fault.variant.startswith("lose-unsynced")):
            if len(targets) == c.n:
                c.crash_all()  # all at once: a power cut, not one server after another
            else:
                for i in targets:
                    c.crash(i)
        elif fault.kind == "pause":
            for i in targets:
                pid = c.pid(i)
                if pid is not None:
                    os.kill(pid, signal.SIGSTOP)
                    self.paused.add(i)
        elif fault.kind == "partition":
            if fault.variant == "leader-isolated":
                groups = [targets, [j for j in range(c.n) if j not in targets]]
            elif fault.variant == "bridge":
                half = c.n // 2
                groups = [targets[: half + 1], targets[half:]]
                event.note = f"bridge {targets[half]}"
            else:
                groups = [targets, [j for j in range(c.n) if j not in targets]]
            event.note = (event.note + " " if event.note else "") + "groups " + " | ".join(",".join(map(str, g)) for g in groups)
            c.partition(groups)
        elif fault.kind == "net":
            if fault.variant == "unreliable":
                c.set_unreliable(True)
            else:
                c.set_unreliable(True)
                c.set_long_reordering(True)
        elif fault.kind == "disk" and fault.variant == "bitflip":
            self._bitflip(targets[0], event)
        elif fault.kind in TARGETED:
            targeted.inflict(c, self.rng, fault.kind, fault.variant, c.leader(), event)
        else:
            raise ValueError(f"no such fault: {fault.kind}/{fault.variant}")

    def heal(self, fault: Fault, event: FaultEvent) -> None:
        c = self.cluster
        if fault.kind == "kill" or fault.kind == "disk":
            if len(event.targets) == c.n:
                c.restart_all()
            else:
                for i in event.targets:
                    if not c.running[i] or c.pid(i) is None:
                        c.restart(i)
        elif fault.kind == "pause":
            self._resume_all()
        elif fault.kind == "partition":
            c.heal()
        elif fault.kind == "net":
            c.set_long_reordering(False)
            c.set_unreliable(False)
        elif fault.kind in TARGETED:
            targeted.heal(c, fault.kind, event.targets)

    def _resume_all(self) -> None:
        for i in sorted(self.paused):
            pid = self.cluster.pid(i)
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        self.paused.clear()

    def heal_all(self) -> None:
        c = self.cluster
        self._resume_all()
        for i in list(c.extra_rules):
            c.set_peer_rules(i, [])
        c.set_long_reordering(False)
        c.set_unreliable(False)
        c.heal()
        for i in range(c.n):
            if not c.running[i] or c.pid(i) is None:
                c.restart(i)

    def _bitflip(self, i: int, event: FaultEvent) -> None:
        """Stop server i, flip one bit inside an acknowledged journal record, and expect a refusal to start."""
        c = self.cluster
        c.crash(i)
        path = Path(c.data_dir(i)) / JOURNAL_NAME
        raw = path.read_bytes() if path.exists() else b""
        header = 4
        if len(raw) < header + 8:
            self.corruptions["skipped"] += 1
            event.note = "journal empty: nothing to flip"
            return
        first_len = int.from_bytes(raw[header : header + 4], "big")
        first_end = header + 8 + first_len
        if first_len == 0 or first_end >= len(raw):
            # One record only: damage to it would look like a torn last append,
            # which is cut by design. Not a test of refusal; skip it.
            self.corruptions["skipped"] += 1
            event.note = "journal has one record: skipped"
            return
        backup = path.with_name(path.name + ".soak-backup")
        shutil.copyfile(path, backup)
        pos = self.rng.randrange(header + 8, first_end)
        bit = self.rng.randrange(8)
        damaged = bytearray(raw)
        damaged[pos] ^= 1 << bit
        path.write_bytes(bytes(damaged))
        event.note = f"flipped bit {bit} of byte {pos} of {len(raw)}"
        try:
            c.start(i)
        except HarnessFailure:
            self.corruptions["refused"] += 1
            event.note += f"; refused (exit code {c.exit_code(i)})"
        else:
            self.corruptions["loaded"] += 1
            self.findings.violations.append(f"server {i} started from a journal with a flipped bit ({event.note})")
            c.crash(i)
        shutil.move(backup, path)  # the heal: the undamaged journal back, then a restart

    # ---- after the last heal -----------------------------------------------------------------

    def final_checks(self, workload: Any, findings: Findings) -> dict[str, Any]:
        c = self.cluster
        out: dict[str, Any] = {}
        try:
            c.wait_for_leader(30.0)
        except HarnessFailure as exc:
            findings.invalid.append(f"no leader after the final heal: {exc}")
            return out
        clerk = Clerk(list(c.endpoints), system=ActorSystem.shared(), give_up_after=_FINAL_READ_WAIT)

        def read(key: str) -> str:
            try:
                return clerk.get(key)
            except Exception as exc:  # the clerk gave up, or the service refused: the run cannot be judged
                raise FinalReadFailed(str(exc)) from exc

        checked = check_final_reads(workload.windows, read, findings)
        if checked is None:
            return out
        out["final_reads"] = checked
        out["replicas"] = self._compare_replicas(findings)
        out["corrupt_journals"] = dict(self.corruptions)
        return out

    def _compare_replicas(self, findings: Findings) -> list[Any]:
        """Every server's (applied index, digest), once all have applied the same prefix."""
        system = ActorSystem.shared()
        deadline = time.monotonic() + _CONVERGE_WAIT
        digests: list[Any] = []
        while time.monotonic() < deadline:
            digests = []
            for ep in self.cluster.endpoints:
                try:
                    digests.append(system.ref(ep, SERVER_NAME).ask(StateDigest(), timeout=2.0))
                except (AskTimeout, ActorDeadError):
                    digests.append(None)
            applied = {d[0] for d in digests if d is not None}
            if None not in digests and len(applied) == 1:
                if len({d[1] for d in digests}) != 1:
                    findings.violations.append(
                        "replicas differ after the final heal at applied index "
                        f"{digests[0][0]}: " + ", ".join(f"{i}:{d[1][:12]}" for i, d in enumerate(digests))
                    )
                return [list(d) for d in digests]
            time.sleep(0.2)
        findings.invalid.append(f"replicas did not reach the same applied index within {_CONVERGE_WAIT} s: {digests}")
        return [None if d is None else list(d) for d in digests]


class WanderingClerk:
    """A clerk that now and then starts its next call at another server, as clients behind a load balancer do.

    A clerk that stays with the server that last answered never asks a leader
    that was deposed behind its back; Jepsen's clients are bound to nodes for
    the same reason. A correct server only costs one redirect for it.
    """

    WANDER = 0.2

    def __init__(self, cluster: KVCluster, seed: str) -> None:
        self.cluster = cluster
        self.clerk = cluster.make_clerk(record=False)
        self.clerk.give_up_after = GIVE_UP
        self.rng = random.Random(seed)

    def _wander(self) -> None:
        if self.rng.random() < self.WANDER:
            self.cluster.connect_clerk(self.clerk, self.rng.sample(range(self.cluster.n), self.cluster.n))

    def get(self, key: str) -> str:
        self._wander()
        return self.clerk.get(key)

    def put(self, key: str, value: str) -> None:
        self._wander()
        self.clerk.put(key, value)

    def append(self, key: str, value: str) -> str:
        self._wander()
        return self.clerk.append(key, value)


def make_client_factory(cluster: KVCluster, seed: int) -> Any:
    """Clerks on the harness's node, so the ``net`` nemesis reaches their traffic too; the workload records them."""

    def make(c: int) -> WanderingClerk:
        return WanderingClerk(cluster, f"{seed}-wander-{c}")

    return make


def run_kvraft(config: Any, status: Any) -> tuple[Findings, dict[str, Any]]:
    """The whole run: cluster up, schedule and workload, final heal and checks; always tears the cluster down."""
    findings = Findings()
    schedule = make_schedule(config.seed, config.seconds, config.nemeses, config.servers)
    applied = AppliedChecker(Path(config.out).resolve() / APPLY_DIR, config.servers, findings)
    fields = {**server_fields(config.broken), "apply_log": str(applied.directory), "damage_expected": "disk" in config.nemeses}
    with kv_cluster(config, config.servers, maxraftstate=config.maxraftstate, seed=config.seed, lazy_disk="disk" in config.nemeses,
                    server_fields=fields) as cluster:
        target = KVRaftTarget(cluster, config.seed, findings)
        applied.start()
        workload = Workload(make_client_factory(cluster, config.seed), config.clients, config.window, config.seed)
        checker = WindowChecker(workload, findings, config.check_budget, grace=GIVE_UP + 2.0,
                                    history=Path(config.out) / HISTORY_FILE if config.history else None)
        extra = drive(config, target, workload, checker, schedule, findings, status)
        extra["state_machine_safety"] = applied.finish()  # after the final heal and reads: every server caught up
    return findings, extra
