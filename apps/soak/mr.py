"""Soaking MapReduce: word count jobs, one after another, with workers killed on the schedule.

Each job is MapReduce's own ``run_job`` (its supervisor restarts a killed
worker; its coordinator hands a lost task to another worker); its output
must equal the sequential reference's, line for line. The nemesis finds the
job's worker processes as the grandchildren of this process (the children
of the supervisor's fork server) and kills them with SIGKILL: one, or all
at once. There is nothing to heal by hand: the supervisor's restart is the
heal, and the report says so.
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
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"zactor-soak-mr-{seed}")
        self.kills = 0

    def inflict(self, fault: Fault, event: FaultEvent) -> None:
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
        """The job's supervisor restarts killed workers by itself."""

    def heal_all(self) -> None:
        """Nothing is left broken between jobs."""


class _Interrupted(Exception):
    """Raised from a job's progress callback after Ctrl-C: the job's workers are stopped as it unwinds."""


def _unless_interrupted(config: Any) -> None:
    if config.interrupt.is_set():
        raise _Interrupted


def run_mr(config: Any, status: Any) -> tuple[Findings, dict[str, Any]]:
    findings = Findings()
    schedule = make_schedule(config.seed, config.seconds, ("kill",), WORKERS)
    events: list[FaultEvent] = []
    samples = PerSecond()
    jobs: list[dict[str, Any]] = []
    target = MRTarget(config.seed)
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
                out = Path(tmp) / f"job-{n}"
                try:
                    result = run_job(app, files, workers=WORKERS, n_reduce=5, outdir=out, task_timeout=3.0, timeout=_JOB_TIMEOUT,
                                     fetch_timeout=_FETCH_TIMEOUT, progress=lambda _: _unless_interrupted(config))
                    lines = read_output_lines(result.outputs)
                    ok = lines == reference
                    st = result.status
                    note = (f"{result.restarts} worker restarts, {st.counters.get('fetch_failures', 0)} fetch failures, "
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
        "windows": [],
    }
    return findings, extra_out
