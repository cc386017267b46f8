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

The ``membership`` nemesis replaces a server while the traffic runs: a new,
empty server is added as a learner, promoted once it has caught up, and the
old one removed, killed and its data directory deleted (``replace-one``, and
``replace-leader`` on the leader, which removes itself); ``replace-dead``
kills the old one and deletes its data first, as when its disk dies, and
replaces it after. The schedule's targets are *slots* 0..n-1, drawn before
the run: each slot holds one server at a time, and a replacement puts the
new server in its old one's slot, so every other fault, and the clerks, act
on the servers in the cluster now, never on one taken out. A server whose
data was deleted is never started again.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors import ActorDeadError, ActorSystem, AskTimeout
from actors.journal import record_spans
from apps.kvraft.client import Clerk
from apps.kvraft.messages import StateDigest
from apps.kvraft.server import SERVER_NAME
from apps.kvraft.testing import KVCluster
from apps.raft.admin import MembershipError
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

NEMESES = ("kill", "pause", "partition", "net", "disk", *TARGETED, "membership")
GIVE_UP = 5.0
"""Seconds a workload call keeps retrying before it gives up (and is recorded as never answered)."""
_FINAL_READ_WAIT = 60.0
_CONVERGE_WAIT = 30.0
APPLY_DIR = "applied"
"""Where in the report directory each server's apply log goes (see ``apps/soak/applied.py``)."""
REPLACE_WITHIN = 40.0
"""Seconds one try at a replacement (add, promote, remove, each asked of the leader) may take before it has
failed; well inside the 60 s the run's end waits for the nemesis's last fault."""


@dataclass
class Replacement:
    """One server replaced by the ``membership`` nemesis: how far it got, for the report and for finishing it."""

    slot: int
    old: int
    variant: str
    new: int | None = None
    wiped: bool = False
    done: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"slot": self.slot, "old": self.old, "new": self.new, "variant": self.variant, "done": self.done,
                "seconds": round(self.seconds, 2)}


class KVRaftTarget:
    """Inflicts and heals faults on a running KVCluster; maps the schedule's slots to the servers holding them."""

    def __init__(self, cluster: KVCluster, seed: int, findings: Findings, applied: AppliedChecker | None = None) -> None:
        self.cluster = cluster
        self.rng = random.Random(f"zactor-soak-targets-{seed}")  # only for choices the schedule could not make
        self.findings = findings
        self.applied = applied
        self.paused: set[int] = set()
        self.corruptions = {"refused": 0, "loaded": 0, "skipped": 0}
        self.slots = list(range(cluster.n))
        """The server in each slot now (a new list after each replacement: the clerks' threads read it)."""
        self.replacements: list[Replacement] = []
        self.pending: Replacement | None = None
        """A replacement that failed part-way, finished at its heal (or at the final heal)."""
        self.replace_within = REPLACE_WITHIN

    def members(self) -> list[int]:
        """The servers faults and clerks may reach now: the slots' servers, less any whose data is gone."""
        removed = self.cluster.removed
        return [i for i in self.slots if i not in removed]

    def _leader_or_any(self) -> int:
        who = self.cluster.leader()
        return who if who is not None else self.rng.choice(self.members())

    def inflict(self, fault: Fault, event: FaultEvent) -> None:
        c = self.cluster
        if fault.kind == "membership":
            self._replace(fault, event)
            return
        targets = [self.slots[s] for s in fault.targets] or [self._leader_or_any()]
        event.targets = targets
        if fault.kind == "kill" or (fault.kind == "disk" and fault.variant.startswith("lose-unsynced")):
            if len(targets) == len(self.slots):
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
            if fault.variant == "bridge":
                half = len(targets) // 2
                groups = [targets[: half + 1], targets[half:]]
                event.note = f"bridge {targets[half]}"
            else:  # majority-minority (targets: the minority), leader-isolated
                groups = [targets, [j for j in self.slots if j not in targets]]
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
            targeted.inflict(c, self.rng, fault.kind, fault.variant, c.leader(), event, self.members())
        else:
            raise ValueError(f"no such fault: {fault.kind}/{fault.variant}")

    def heal(self, fault: Fault, event: FaultEvent) -> None:
        c = self.cluster
        if fault.kind == "kill" or fault.kind == "disk":
            if len(event.targets) == len(self.slots):
                c.restart_all()  # never a removed server: the harness starts those no more
            else:
                self._restart_down(event.targets)
        elif fault.kind == "pause":
            self._resume_all()
        elif fault.kind == "partition":
            c.heal()
        elif fault.kind == "net":
            c.set_long_reordering(False)
            c.set_unreliable(False)
        elif fault.kind in TARGETED:
            targeted.heal(c, fault.kind, event.targets)
        elif fault.kind == "membership" and self.pending is not None:
            # Nothing to undo (a replacement stays), but one the fault left half-done is finished now.
            r = self.pending
            try:
                self._finish(r)
            except Exception as exc:
                event.note += f"; still not finished at the heal ({type(exc).__name__}: {exc})"
                raise
            event.note += f"; finished at the heal: {self._done_words(r)}"

    def _restart_down(self, servers: list[int]) -> None:
        c = self.cluster
        for i in servers:
            if i not in c.removed and (not c.running[i] or c.pid(i) is None):
                c.restart(i)

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
        self._restart_down(list(range(c.n)))
        if self.pending is not None:
            r = self.pending
            try:
                self._finish(r)
            except Exception as exc:
                raise HarnessFailure(f"the replacement of server {r.old} could not be finished: {type(exc).__name__}: {exc}") from exc

    # ---- the membership nemesis --------------------------------------------------------------

    def _replace(self, fault: Fault, event: FaultEvent) -> None:
        """Replace the server in the fault's slot (or the leader): see the module's docstring."""
        c = self.cluster
        if self.pending is not None:  # an earlier one the heals could not finish: that one first
            r = self.pending
            event.note = f"server {r.old} not yet replaced: finishing that first; "
        else:
            if fault.targets:
                slot = fault.targets[0]
                old = self.slots[slot]
            else:
                old = self._leader_or_any()
                slot = self.slots.index(old)
            r = Replacement(slot, old, fault.variant)
            self.pending = r
            if fault.variant == "replace-dead":
                c.crash(old)
                c.removed.add(old)  # its disk is dead: never started again, even before the cluster hears of it
                self._wipe(r)
        event.targets = [r.old]
        began = time.monotonic()
        try:
            self._finish(r)
        except Exception as exc:
            r.seconds += time.monotonic() - began
            event.note += (f"replacing server {r.old} (slot {r.slot}) failed after {r.seconds:.1f} s: {type(exc).__name__}: {exc}; "
                           "its heal finishes it")
            raise
        r.seconds += time.monotonic() - began
        event.note += self._done_words(r)

    def _done_words(self, r: Replacement) -> str:
        steps = "the new one added as a learner, promoted, the old one removed"
        how = (f"the old one killed and its data deleted first, then {steps}" if r.variant == "replace-dead"
               else f"{steps}, killed and its data deleted")
        return f"server {r.old} replaced by server {r.new} in slot {r.slot} ({how}; {r.seconds:.1f} s)"

    def _finish(self, r: Replacement) -> None:
        """The replacement's steps that are not yet done, each skipped if the cluster shows it done already.

        A step refused for good is looked at again: the leader asked for the configuration may have been a
        deposed one still in charge in its own eyes (a partition just healed), whose view a new leader's log
        does not share.
        """
        deadline = time.monotonic() + self.replace_within

        def left() -> float:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MembershipError(f"the replacement of server {r.old} took more than {self.replace_within:g} s")
            return remaining

        while True:
            try:
                self._steps(r, left)
                break
            except MembershipError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
        self._wipe(r)
        assert r.new is not None  # the steps set it
        slots = list(self.slots)
        slots[r.slot] = r.new
        self.slots = slots
        r.done = True
        self.replacements.append(r)
        self.pending = None

    def _steps(self, r: Replacement, left: Callable[[], float]) -> None:
        c = self.cluster
        if r.new is None:
            before = c.n
            try:
                r.new = c.add_server(left())
            except Exception:
                if c.n > before:  # the harness took the number (and maybe started the process) before it failed
                    r.new = before
                raise
            finally:
                if self.applied is not None:
                    self.applied.grow(c.n)
        else:  # a second try: what the cluster shows done is not done again (an add is a new process, then the change)
            info = c.members_info(left())
            if r.new not in info.voters and r.new not in info.learners:
                c.restart(r.new)  # a fresh process (the first may never have come up), from what it holds
                c.add_learner(r.new, left())
        if r.new not in c.members_info(left()).voters:
            c.promote(r.new, left())
        info = c.members_info(left())
        if r.old in info.voters or r.old in info.learners:
            c.remove_server(r.old, left())  # then SIGKILL
        else:  # removed by an attempt that timed out before it saw the commit
            c.removed.add(r.old)
            c.crash(r.old)

    def _wipe(self, r: Replacement) -> None:
        if not r.wiped:
            shutil.rmtree(self.cluster.data_dir(r.old), ignore_errors=True)
            r.wiped = True

    def _bitflip(self, i: int, event: FaultEvent) -> None:
        """Stop server i, flip one bit inside an acknowledged journal record, and expect a refusal to start."""
        c = self.cluster
        c.crash(i)
        path = Path(c.data_dir(i)) / JOURNAL_NAME
        raw = path.read_bytes() if path.exists() else b""
        spans = record_spans(raw)
        if len(spans) < 2:
            # With one record (or none), damage to it would look like a torn
            # last append, which is cut by design: not a test of refusal.
            self.corruptions["skipped"] += 1
            event.note = f"journal has {len(spans)} record(s): skipped"
            return
        backup = path.with_name(path.name + ".soak-backup")
        shutil.copyfile(path, backup)
        pos = self.rng.randrange(*spans[0])  # in the first record, header or payload: a valid one follows
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
        clerk = Clerk(c.member_endpoints(), system=ActorSystem.shared(), give_up_after=_FINAL_READ_WAIT)

        def read(key: str) -> str:
            try:
                return clerk.get(key)
            except Exception as exc:  # the clerk gave up, or the service refused: the run cannot be judged
                raise FinalReadFailed(str(exc)) from exc

        checked = check_final_reads(workload.windows, read, findings)
        if checked is None:
            return out
        out["final_reads"] = checked
        out["members"] = self.current()
        out["replicas"] = self._compare_replicas(findings, out["members"])
        out["corrupt_journals"] = dict(self.corruptions)
        return out

    def current(self) -> list[int]:
        """The servers in the cluster now, as the harness knows them: every one not removed (learners too)."""
        return [i for i in range(self.cluster.n) if i not in self.cluster.removed]

    def summary(self) -> dict[str, Any]:
        """The summary's account of the membership nemesis: who replaced whom, and who holds each slot now."""
        out: dict[str, Any] = {"replacements": [r.to_json() for r in self.replacements], "slots": list(self.slots)}
        if self.pending is not None:
            out["unfinished_replacement"] = self.pending.to_json()
        return out

    def _compare_replicas(self, findings: Findings, servers: list[int] | None = None) -> list[Any]:
        """Every current server's (applied index, digest), once all have applied the same prefix."""
        servers = self.current() if servers is None else servers
        system = ActorSystem.shared()
        deadline = time.monotonic() + _CONVERGE_WAIT
        digests: list[Any] = []
        while time.monotonic() < deadline:
            digests = []
            for ep in [self.cluster.endpoints[i] for i in servers]:
                try:
                    digests.append(system.ref(ep, SERVER_NAME).ask(StateDigest(), timeout=2.0))
                except (AskTimeout, ActorDeadError):
                    digests.append(None)
            applied = {d[0] for d in digests if d is not None}
            if None not in digests and len(applied) == 1:
                if len({d[1] for d in digests}) != 1:
                    findings.violations.append(
                        "replicas differ after the final heal at applied index "
                        f"{digests[0][0]}: " + ", ".join(f"{i}:{d[1][:12]}" for i, d in zip(servers, digests, strict=True))
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

    def __init__(self, cluster: KVCluster, seed: str, members: Callable[[], list[int]]) -> None:
        self.cluster = cluster
        self.members = members
        self.clerk = cluster.make_clerk(record=False)
        self.clerk.give_up_after = GIVE_UP
        self.rng = random.Random(seed)

    def _wander(self) -> None:
        """Rebind to the current members in a new order (still learning of changes, as a clerk bound to all does)."""
        if self.rng.random() < self.WANDER:
            members = self.members()
            self.cluster.connect_clerk(self.clerk, self.rng.sample(members, len(members)), learn=True)

    def get(self, key: str) -> str:
        self._wander()
        return self.clerk.get(key)

    def put(self, key: str, value: str) -> None:
        self._wander()
        self.clerk.put(key, value)

    def append(self, key: str, value: str) -> str:
        self._wander()
        return self.clerk.append(key, value)


def make_client_factory(cluster: KVCluster, seed: int, members: Callable[[], list[int]]) -> Any:
    """Clerks on the harness's node, so the ``net`` nemesis reaches their traffic too; the workload records them.

    ``members``: the servers a clerk may wander to now (see :meth:`KVRaftTarget.members`).
    """

    def make(c: int) -> WanderingClerk:
        return WanderingClerk(cluster, f"{seed}-wander-{c}", members)

    return make


def run_kvraft(config: Any, status: Any) -> tuple[Findings, dict[str, Any]]:
    """The whole run: cluster up, schedule and workload, final heal and checks; always tears the cluster down."""
    findings = Findings()
    schedule = make_schedule(config.seed, config.seconds, config.nemeses, config.servers)
    applied = AppliedChecker(Path(config.out).resolve() / APPLY_DIR, config.servers, findings)
    fields = {**server_fields(config.broken), "apply_log": str(applied.directory), "damage_expected": "disk" in config.nemeses}
    with kv_cluster(config, config.servers, maxraftstate=config.maxraftstate, seed=config.seed, lazy_disk="disk" in config.nemeses,
                    server_fields=fields) as cluster:
        target = KVRaftTarget(cluster, config.seed, findings, applied)
        applied.start()
        workload = Workload(make_client_factory(cluster, config.seed, target.members), config.clients, config.window, config.seed)
        checker = WindowChecker(workload, findings, config.check_budget, grace=GIVE_UP + 2.0,
                                    history=Path(config.out) / HISTORY_FILE if config.history else None)
        extra = drive(config, target, workload, checker, schedule, findings, status)
        extra["state_machine_safety"] = applied.finish()  # after the final heal and reads: every server caught up
        if "membership" in config.nemeses:
            extra.update(target.summary())
    return findings, extra
