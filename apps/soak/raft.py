"""Soaking the bare Raft log through the lab's harness (:class:`apps.raft.testing.Cluster`).

Clients propose unique commands with the harness's ``one`` (a command is
acknowledged once a majority applied it at one index); the harness's applier
checks every apply of every peer as it comes (the same command at the same
index everywhere, in order). After the final heal one more command must reach
every peer, and then every acknowledged command must still be at its index
on every peer: a committed entry is never lost or replaced. Peers snapshot
as they go (the harness's digest snapshots), so InstallSnapshot and restarts
from a snapshot are part of every run.

The nemeses are kvraft's (the same :class:`~apps.soak.kvraft.KVRaftTarget`):
the Cluster has the partitions into groups, ``heal`` and ``wait_for_leader``
that the KV harness inherits from it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from apps.raft.testing import Cluster, HarnessFailure
from apps.soak.kvraft import KVRaftTarget
from apps.soak.netns import raft_cluster
from apps.soak.run import FaultEvent, bounded, heal_everything, keep_going, nemesis_still_healing, play, status_line, wait_while_running
from apps.soak.schedule import make_schedule
from apps.soak.verdict import Findings
from apps.soak.workload import PerSecond, Sample

log = logging.getLogger(__name__)

NEMESES = ("kill", "pause", "partition", "net", "disk")

SNAPSHOT_EVERY = 100
"""Peers snapshot every this many indexes: a restarted peer applies at most this many entries again, so a
whole-cluster restart late in a run is as short as an early one (without snapshots the replay grew with
the run: 2 s at 25 s, 13 s at 550 s, and the 10-minute soak on hosts went invalid)."""


def run_raft(config: Any, status: Any) -> tuple[Findings, dict[str, Any]]:
    findings = Findings()
    schedule = make_schedule(config.seed, config.seconds, config.nemeses, config.servers)
    events: list[FaultEvent] = []
    samples = PerSecond()
    acked: list[tuple[int, str]] = []
    counts = {"errors": 0}
    lock = threading.Lock()
    stop = threading.Event()
    done = threading.Event()

    with raft_cluster(config, config.servers, reliable=True, seed=config.seed, lazy_disk="disk" in config.nemeses,
                      damage_expected="disk" in config.nemeses, snapshot=True, snapshot_every=SNAPSHOT_EVERY) as cluster:
        target = KVRaftTarget(cluster, config.seed, findings)  # type: ignore[arg-type]
        majority = config.servers // 2 + 1
        started = time.monotonic()

        def clock() -> float:
            return time.monotonic() - started

        def client(c: int) -> None:
            n = 0
            leader = 0  # the server that took the last command: offered the next one first
            while not done.is_set():
                n += 1
                command = f"c{c}.{n}"
                began = time.monotonic()
                ok = False
                try:
                    index, leader = cluster.one_from(leader, command, majority, retry=True)
                    ok = True
                    with lock:
                        acked.append((index, command))
                except Exception as exc:  # HarnessFailure; or, once the run is over, the teardown under a call in flight
                    if done.is_set() and not isinstance(exc, HarnessFailure):
                        return
                    with lock:
                        counts["errors"] += 1
                    with cluster._lock:
                        if cluster.errors:  # the applier saw a violation: every later one() fails at once
                            return
                end = time.monotonic()
                with lock:
                    samples.add(Sample(end - started, end - began, ok, "start"))

        threads = [threading.Thread(target=client, args=(c,), name=f"soak-raft-client-{c}", daemon=True) for c in range(config.clients)]
        for t in threads:
            t.start()
        status.start(lambda: status_line(config, status, clock(), len(acked), "commands", counts["errors"], findings))
        nemesis = threading.Thread(target=play, args=(schedule, target, clock, stop, events, status), name="soak-nemesis", daemon=True)
        nemesis.start()
        try:
            while keep_going(config, clock(), findings, len(cluster.errors)):
                wait_while_running(config, min(0.5, config.seconds - clock()))
        finally:
            stop.set()
            ran = status.end_timed_part(clock())
            nemesis.join(bounded(config, 60.0))
            done.set()
            deadline = time.monotonic() + bounded(config, 15.0)  # one bound for all the clients, not one each
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            status.phase = "final heal"
            final: dict[str, Any] = {}
            if not nemesis_still_healing(nemesis, final) and heal_everything(target, findings):
                if config.interrupt.is_set():
                    with cluster._lock:
                        findings.violations.extend(f"apply check: {e}" for e in cluster.errors[:20])
                    final = {"final_check": "skipped: interrupted"}
                else:
                    status.phase = "final check"
                    final = _final_check(cluster, acked, findings)
            status.stop()
    extra: dict[str, Any] = {
        "seconds": round(ran, 2),
        "schedule": [f.to_json() for f in schedule],
        "events": [e.to_json() for e in events],
        "samples": samples,
        "errors": counts["errors"],
        "windows": [],
        "acknowledged": len(acked),
        "snapshots_installed": cluster.snapshots_installed,
        "corrupt_journals": dict(target.corruptions),
        **final,
    }
    return findings, extra


def _final_check(cluster: Cluster, acked: list[tuple[int, str]], findings: Findings) -> dict[str, Any]:
    with cluster._lock:
        findings.violations.extend(f"apply check: {e}" for e in cluster.errors[:20])
    try:
        cluster.wait_for_leader(30.0)
        last = cluster.one("final", cluster.n, retry=True)  # every peer has applied everything before it
    except HarnessFailure as exc:
        findings.invalid.append(f"after the final heal no command reached every peer: {exc}")
        return {}
    lost = []
    with cluster._lock:
        for index, command in acked:
            for i in range(cluster.n):
                if cluster.logs[i].get(index) != command:
                    lost.append(f"index {index}: {command!r} acknowledged, peer {i} has {cluster.logs[i].get(index)!r}")
                    break
    if lost:
        findings.violations.append(f"{len(lost)} acknowledged command(s) lost or replaced, e.g. {lost[:3]}")
    return {"final_index": last, "checked_commands": len(acked)}
