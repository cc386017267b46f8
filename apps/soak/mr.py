"""Soaking MapReduce: word count jobs, one after another, with workers killed on the schedule.

Each job is MapReduce's own ``run_job`` (its supervisor restarts a killed
worker; its coordinator hands a lost task to another worker); its output
must equal the sequential reference's, line for line. The nemesis finds the
job's worker processes as the grandchildren of this process (the children
of the supervisor's fork server) and kills them with SIGKILL: one, or all
at once. There is nothing to heal by hand: the supervisor's restart is the
heal, and the report says so.

On namespace hosts (``--hosts netns``, :mod:`apps.soak.netns`) each worker
runs on a host of its own and the coordinator stays in this process, on the
clerks' host, all over TCP. There a ``partition`` cuts one worker's host off
from everyone for the fault's duration: its running task times out and goes
elsewhere, its map output is declared lost (by the coordinator's pings, a
reducer's fetch, or the worker giving up on a silent coordinator) and runs
again, and the output must still equal the reference. ``net`` drops packets
on, or flaps, every worker's link. The summary's ``after_partition`` counts
what the coordinator re-ran in the jobs a partition overlapped and no other
fault did, so the re-runs of kills (or of lost packets) are not counted as the
partitions'.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from apps.mapreduce.app import load_app
from apps.mapreduce.corpus import generate_corpus
from apps.mapreduce.job import JobFailed, run_job
from apps.mapreduce.sequential import read_output_lines, run_sequential
from apps.soak.netns import PacketNetwork, mr_network
from apps.soak.run import FaultEvent, bounded, keep_going, play, status_line
from apps.soak.schedule import Fault, make_schedule
from apps.soak.verdict import Findings
from apps.soak.workload import PerSecond, Sample

log = logging.getLogger(__name__)

WORKERS = 3
_JOB_TIMEOUT = 120.0
_FETCH_TIMEOUT = 1.0
"""Seconds a reducer waits for one chunk of map output (two tries) before it reports the mapper gone.

Kept as a second line of defence. Since the issue #14 follow-up the
supervisor's death event reaches the coordinator at once and a reducer names
every dead mapper in one report; with those, seed 7 for 2 minutes passed at
the default 5 s too (40 of 40 jobs, the longest 9.0 s; every death found by
the supervisor). Before them a reducer was the only detector of a dead
mapper, and it named one per attempt. At run_job's default (5 s, so 10 s per detection) a
schedule that kills a worker every 2-7 s, or all three at once, kills mappers
faster than they are found, and a job can stall until its timeout (seen:
seed 7, job 20 ran 121 s in its reduce phase while the ones before took under
1 s). A live worker answers a chunk in milliseconds; one that misses a second
twice only has its maps run again, which costs time, not correctness.
"""


def worker_pids() -> list[int]:
    """Processes whose parent is a child of this process: the workers of the running job."""
    me = os.getpid()
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses; the fields after the last ')' do not.
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
    children = {pid for pid, ppid in parents.items() if ppid == me}
    return sorted(pid for pid, ppid in parents.items() if ppid in children)


class MRTarget:
    """Kills workers; given the hosts' network (``--hosts netns``), also cuts a worker's host off, or makes every
    worker's link lossy or flap."""

    def __init__(self, seed: int, net: PacketNetwork | None = None) -> None:
        self.rng = random.Random(f"zactor-soak-mr-{seed}")
        self.kills = 0
        self.net = net
        self.jobdir: Path | None = None
        """The running job's output directory (its workers' map output is under it)."""

    def inflict(self, fault: Fault, event: FaultEvent) -> None:
        if fault.kind == "kill":
            self._kill(fault, event)
        elif fault.kind in ("partition", "net"):
            self._packet_fault(fault, event)
        else:
            raise ValueError(f"mr takes no {fault.kind} fault")

    def _packet_fault(self, fault: Fault, event: FaultEvent) -> None:
        if self.net is None:
            raise ValueError(f"{fault.kind} needs --hosts netns for mr")
        if fault.kind == "net":
            if fault.variant == "unreliable":
                self.net.unreliable(True)
            else:
                self.net.flapping(True)
            event.targets = list(range(WORKERS))
            event.note = f"every worker's link {'drops some packets' if fault.variant == 'unreliable' else 'flaps'}"
            return
        # Every variant cuts one worker off (MapReduce has no majority to split). In place of a leader,
        # leader-isolated cuts off the worker the job most depends on: the one holding the most map output.
        busiest = None if fault.targets else self._await_busiest(fault.duration / 2)
        victim = fault.targets[0] % WORKERS if fault.targets else busiest if busiest is not None else self.rng.randrange(WORKERS)
        self.net.cut_off(victim)
        event.targets = [victim]
        event.note = (f"worker {victim}'s host cut off from the coordinator and the other workers"
                      + (" (it held the most map output)" if busiest is not None else ""))

    def _await_busiest(self, within: float) -> int | None:
        """The worker holding the most map output, waiting up to ``within`` s for one to hold any.

        Between jobs, or before a job's first map is done, a worker cut off holds nothing the job needs: it
        is merely missing. Waiting (at most half the fault's duration, so the cut still lasts a second or
        more) makes the cut land mid-job, where its map output must be found lost and made again.
        Polled: nothing signals a file appearing in a worker's directory."""
        deadline = time.monotonic() + within
        while True:
            found = self._busiest()
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(0.02)

    def _busiest(self) -> int | None:
        """The worker holding map output of the most map tasks in the running job; None if none holds any yet."""
        if self.jobdir is None:
            return None
        try:
            held = {i: len({f.name.split("-")[1] for f in self.jobdir.glob(f".mr-work-*/worker-{i}/mr-*-*")}) for i in range(WORKERS)}
        except OSError:  # the job ended and its directory went meanwhile
            return None
        best = max(held, key=lambda i: held[i])
        return best if held[best] else None

    def _kill(self, fault: Fault, event: FaultEvent) -> None:
        pids = worker_pids()
        if not pids:
            event.note = "no worker running (between jobs)"
            return
        victims = pids if fault.variant == "all" else [pids[(fault.targets[0] if fault.targets else self.rng.randrange(len(pids))) % len(pids)]]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
                self.kills += 1
            except ProcessLookupError:
                pass
        event.targets = victims
        event.note = f"SIGKILL of {len(victims)} worker(s) (pids); the supervisor restarts them"

    def heal(self, fault: Fault, event: FaultEvent) -> None:
        """The job's supervisor restarts killed workers by itself; a packet fault is taken out of the hosts."""
        if self.net is None or fault.kind == "kill":
            return
        if fault.kind == "partition":
            self.net.heal()
        elif fault.variant == "unreliable":
            self.net.unreliable(False)
        else:
            self.net.flapping(False)

    def heal_all(self) -> None:
        """Nothing is left broken between jobs."""


def _overlapped_by(events: list[FaultEvent], start: float, end: float) -> set[str]:
    """The kinds of the faults in force at some moment between ``start`` and ``end`` (seconds of the run's clock)."""
    return {e.fault.kind for e in list(events) if e.started < end and (e.healed is None or e.healed > start)}


class _Interrupted(Exception):
    """Raised from a job's progress callback after Ctrl-C: the job's workers are stopped as it unwinds."""


def _unless_interrupted(config: Any) -> None:
    if config.interrupt.is_set():
        raise _Interrupted


def run_mr(config: Any, status: Any) -> tuple[Findings, dict[str, Any]]:
    findings = Findings()
    schedule = make_schedule(config.seed, config.seconds, config.nemeses, WORKERS)
    events: list[FaultEvent] = []
    samples = PerSecond()
    jobs: list[dict[str, Any]] = []
    target = MRTarget(config.seed, mr_network(config, config.seed))
    after_partition = {"jobs": 0, "maps_run_again": 0, "tasks_reassigned": 0}
    stop = threading.Event()
    started = time.monotonic()

    def clock() -> float:
        return time.monotonic() - started

    with tempfile.TemporaryDirectory(prefix="zactor-soak-mr-") as tmp:
        files = generate_corpus(Path(tmp) / "in", total_bytes=3_000_000, n_files=8, seed=config.seed)
        app = load_app("wc")
        reference = read_output_lines([run_sequential(app, [str(f) for f in files], Path(tmp) / "reference.txt")])
        status.start(lambda: status_line(config, status, clock(), sum(1 for j in jobs if j["ok"]), "jobs",
                                         sum(1 for j in jobs if not j["ok"]), findings, f"worker kills {target.kills}"))
        nemesis = threading.Thread(target=play, args=(schedule, target, clock, stop, events, status), name="soak-nemesis", daemon=True)
        nemesis.start()
        try:
            n = 0
            while keep_going(config, clock(), findings):
                n += 1
                began = time.monotonic()
                since = clock()
                out = target.jobdir = Path(tmp) / f"job-{n}"
                try:
                    result = run_job(app, files, workers=WORKERS, n_reduce=5, outdir=out, task_timeout=3.0, timeout=_JOB_TIMEOUT,
                                     fetch_timeout=_FETCH_TIMEOUT, progress=lambda _: _unless_interrupted(config),
                                     placement=target.net)
                    lines = read_output_lines(result.outputs)
                    ok = lines == reference
                    st = result.status
                    if _overlapped_by(events, since, clock()) == {"partition"}:
                        after_partition["jobs"] += 1
                        after_partition["maps_run_again"] += st.reexecuted
                        after_partition["tasks_reassigned"] += st.reassigned
                    phases = st.phase_seconds
                    note = (f"map {phases.get('map', 0):g} s, reduce {phases.get('reduce', 0):g} s, "
                            f"{st.workers_seen} workers seen, {result.restarts} worker restarts, {st.counters.get('fetch_failures', 0)} fetch failures, "
                            f"{st.reexecuted} maps run again, {st.reassigned} tasks reassigned, dead workers found by "
                            + ", ".join(f"{how} {st.counters.get(f'workers_lost_{how}', 0)}"
                                        for how in ("supervisor", "probe", "fetch")))
                    if not ok:
                        missing = len(set(reference) - set(lines))
                        extra = len(set(lines) - set(reference))
                        findings.violations.append(f"job {n}: output differs from the sequential reference "
                                                   f"({missing} lines missing or wrong, {extra} unexpected)")
                except _Interrupted:
                    break  # the job cut short is neither passed nor failed
                except JobFailed as exc:
                    ok, note = False, f"failed: {exc}"
                    findings.violations.append(f"job {n} failed: {exc}")
                end = time.monotonic()
                samples.add(Sample(end - started, end - began, ok, "job"))
                jobs.append({"job": n, "ok": ok, "seconds": round(end - began, 2), "note": note})
                shutil.rmtree(out, ignore_errors=True)
        finally:
            stop.set()
            ran = status.end_timed_part(clock())
            nemesis.join(bounded(config, 30.0))
            status.stop()
    if not any(j["ok"] for j in jobs):
        findings.invalid.append("no job completed")
    extra_out: dict[str, Any] = {
        "seconds": round(ran, 2),
        "schedule": [f.to_json() for f in schedule],
        "events": [e.to_json() for e in events],
        "samples": samples,
        "jobs": jobs,
        "worker_kills": target.kills,
        **({"after_partition": after_partition} if "partition" in config.nemeses else {}),
        "windows": [],
    }
    return findings, extra_out
