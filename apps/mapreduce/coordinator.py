"""The MapReduce coordinator: an actor that hands out tasks and notices the ones that never finish.

Workers ask for work (``RequestTask``) and report (``TaskDone`` /
``TaskFailed``). Each input file is a map task; reduces start only when every
map is done. A task handed out more than ``task_timeout`` seconds ago and not
reported done goes back to the pool, so a crashed or stuck worker costs one
timeout, not the job. Reports for an attempt that was already superseded are
still welcome: the first completion of a task counts, and since task outputs
are written atomically and deterministically, a second one changes nothing.

Each map task is a split of an input file (``split_bytes``, a whole small
file is one split). When a map is done the coordinator records where its
output lives (the endpoint of the worker that serves it, or None for the
shared directory); a reduce task carries that list. A reducer that cannot
fetch from workers reports ``FetchFailed`` naming every one it could not
reach: every map those workers had completed goes back to the pool (its
output lived on their disks, MapReduce paper §3.3), and reduces are handed
out again once those maps are re-done.

A reducer is not the only one to notice a dead worker (issue #14: one report
per death, two fetch timeouts each, and deaths piled up faster than they were
found). ``run_job`` tells the coordinator ``WorkerLost`` from the
supervisor's event the moment a worker process dies; and every
``probe_every`` seconds a ``Prober`` pings, all at once, the workers that
hold completed map output, so a dead worker on another machine is found in
about two ``probe_timeout`` s whether or not a reducer is waiting on it. Either
way its completed maps run again and its running task goes to another worker
at once, not after ``task_timeout``.

With ``backup_tasks`` (the MapReduce paper's remedy for stragglers), once
nothing is left to hand out, an idle worker gets a copy of the task that has
been running longest, so one slow machine does not set the job's finishing
time.

An idle worker's request waits at the coordinator instead of polling: with
nothing to hand out, the coordinator keeps the request (it is an inline
actor, so it can answer later) and answers ``Wait(0)`` as soon as anything
changes (a task done or failed, a worker lost or joined) or at its next
tick, and the worker asks again at once. With ``Wait(0.1)`` polls, a worker
idle at the end of the maps started its reduce up to 0.1 s late, and the
job's end waited for the polls too. ``Status(newer_than=v)`` waits the same
way, for whoever follows the job.

A user function that raises fails that attempt; after ``max_attempts``
failures of one task the job fails with a message naming the task, its input
and the traceback.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from actors import Actor, ActorSystem, LocalRef, ReplyTarget
from actors.future import ReplyFuture
from apps.mapreduce.files import Split, make_splits
from apps.mapreduce.protocol import (
    Exit,
    FetchFailed,
    JobStatus,
    MapTask,
    Probe,
    ReduceTask,
    Release,
    RequestTask,
    Status,
    TaskDone,
    TaskFailed,
    Tick,
    Wait,
    WorkerLost,
)
from apps.mapreduce.shuffle import FILES_NAME, FileServer, Prober, input_resolver

log = logging.getLogger(__name__)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


PROBER_NAME = "prober"


@dataclass
class _Attempt:
    at: float
    """When it was handed out (monotonic)."""
    worker: str


@dataclass
class _Task:
    kind: str
    id: int
    started: list[_Attempt] = field(default_factory=list)  # running attempts, oldest first
    attempts: int = 0
    failures: int = 0
    done: bool = False
    location: str | None = None
    """For a done map: the endpoint serving its output (None: the shared directory)."""
    holder: str | None = None
    """For a done map: the worker that produced it."""

    def drop(self, worker: str) -> bool:
        """Forget ``worker``'s running attempt (the oldest if it has none); False if none was running."""
        for i, attempt in enumerate(self.started):
            if attempt.worker == worker:
                del self.started[i]
                return True
        if self.started:
            self.started.pop(0)
            return True
        return False


@dataclass(frozen=True)
class JobConfig:
    files: tuple[str, ...]
    n_reduce: int = 10
    workdir: str = "."
    outdir: str = "."
    task_timeout: float = 10.0
    """Seconds before a task not reported done is handed to another worker (the lab's 10 s)."""
    max_attempts: int = 3
    """Failures (a raising Map or Reduce) of one task before the job fails."""
    backup_tasks: bool = False
    linger: float = 1.0
    """Seconds the coordinator keeps answering ``Exit`` after the job ends, so workers hear it."""
    split_bytes: int = 8_000_000
    """Input bytes per map task: a bigger file is several maps (bounds a worker's memory)."""
    ship_input: bool = False
    """Workers read inputs from the coordinator's file server instead of by path."""
    fetch_timeout: float = 5.0
    """Seconds a reducer waits for one chunk from a mapper before it reports the mapper gone."""
    min_workers: int = 1
    """Hand out nothing until this many workers have asked, so early ones do not take every map."""
    hold_reduces: bool = False
    """Hand out no reduce until a ``Release`` message arrives: a test's hook to act in between."""
    probe_every: float = 2.0
    """Seconds between liveness checks of the workers holding map output (each waits up to two
    ``probe_timeout``); 0 turns them off, leaving reducers and the supervisor to notice deaths."""
    probe_timeout: float = 5.0
    """Seconds a liveness check waits for a worker's ping reply before asking once more (two silent
    pings: gone). Its own, not ``fetch_timeout``: a short fetch timeout (the soak's 1 s) on a loaded
    machine would call slow live workers dead, and each false call re-runs their maps."""
    tick: float = 0.25
    """Seconds between the coordinator's rounds of checks (timed-out tasks, liveness); also the
    longest it holds an idle worker's request or a ``Status`` wait with nothing changing."""

    def __post_init__(self) -> None:
        if self.n_reduce < 1:
            raise ValueError(f"n_reduce must be at least 1, got {self.n_reduce}")
        if self.task_timeout <= 0 or self.max_attempts < 1:
            raise ValueError("task_timeout must be positive and max_attempts at least 1")
        if self.split_bytes < 1 or self.fetch_timeout <= 0:
            raise ValueError("split_bytes and fetch_timeout must be positive")
        if self.probe_every < 0:
            raise ValueError(f"probe_every must be 0 (off) or positive, got {self.probe_every}")
        if self.probe_timeout <= 0:
            raise ValueError(f"probe_timeout must be positive, got {self.probe_timeout}")
        if self.tick <= 0:
            raise ValueError(f"tick must be positive, got {self.tick}")


COUNTERS = (
    "input_bytes", "map_output_records", "combine_input_records", "combine_output_records",
    "spills", "spilled_records", "map_output_bytes", "shuffle_bytes",
    "reduce_input_groups", "reduce_input_records", "reduce_output_records",
)
"""The job's counters, summed over the reports of completed task attempts (as Hadoop counts)."""


def start_coordinator(system: ActorSystem, config: JobConfig) -> LocalRef:
    """Spawn the coordinator, its prober (and, with ``ship_input``, the inputs' file server) on ``system``."""
    if config.ship_input:
        system.spawn(FileServer, input_resolver(config.files), name=FILES_NAME)
    if config.probe_every > 0:
        system.spawn(Prober, name=PROBER_NAME)
    return system.spawn(Coordinator, config, name="coordinator")


def follow(coordinator: Any, timeout: float = 10.0) -> Iterator[JobStatus]:
    """The job's status at each change of it (at least once a tick), the last one done or failed.

    Each ask names the version seen last, so the coordinator answers when
    the job changes: whoever follows the job waits on its events, not on a poll.
    """
    version = -1
    while True:
        status: JobStatus = coordinator.ask(Status(newer_than=version), timeout=timeout)
        yield status
        if status.phase in ("done", "failed"):
            return
        version = status.version


class Coordinator(Actor):
    inline = True
    """Its handlers only count and decide (no file or network waits), and inline it can answer a
    request later: an idle worker's request waits here for work instead of polling."""

    def __init__(self, config: JobConfig) -> None:
        super().__init__()
        self.config = config
        self.parked: dict[str, ReplyTarget] = {}
        """Idle workers' requests, by worker: answered ``Wait(0)`` at the next change or tick."""
        self.watchers: list[ReplyTarget] = []
        """``Status`` asks waiting for the next change or tick."""
        self.version = 0
        self.splits: list[Split] = make_splits(config.files, config.split_bytes)
        self.maps = [_Task("map", i) for i in range(len(self.splits))]
        self.reduces = [_Task("reduce", i) for i in range(config.n_reduce)]
        self.workers: set[str] = set()
        self.reassigned = 0
        self.backups = 0
        self.reexecuted = 0
        self.fetch_failures = 0
        self.lost = {"supervisor": 0, "probe": 0, "fetch": 0}
        """Workers found gone, by what noticed first."""
        self.gone: set[str] = set()
        """Endpoints and worker ids already declared gone (a death counts once, however often reported)."""
        self.dead: set[str] = set()
        """Worker ids whose process the supervisor saw die: certain, unlike a silent endpoint."""
        self.endpoint_of: dict[str, str] = {}
        """Worker id -> the endpoint serving its map output, learned from its reports."""
        self.probe: ReplyFuture | None = None
        self.probed_at = time.monotonic()
        self.held = config.hold_reduces
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.peak_rss: dict[str, int] = {}
        self.started_at = time.monotonic()
        self.maps_done_at: float | None = None
        self.error: str | None = None
        self.finished_at: float | None = None

    def on_start(self) -> None:
        self.schedule_every(self.config.tick, Tick())

    # ---- the protocol ---------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Status):
            if message.newer_than != self.version:
                return self.status()
            target = self.reply_later()
            if target is not None:
                self.watchers.append(target)
            return None
        if isinstance(message, RequestTask):
            joined = message.worker not in self.workers
            self.workers.add(message.worker)
            if joined:
                self._changed()  # min_workers may be reached now
            answer = self._hand_out(message.worker)
            return self._park(message.worker) if answer is None else answer
        if isinstance(message, Tick):
            self._reclaim_timed_out()
            self._check_liveness()
            self._answer_waiting()  # nobody waits longer than a tick, whatever happens
            return None
        answer = self._update(message)
        if answer is True:  # what it ignored (unknown, malformed) wakes nobody
            self._changed()
        return answer

    def _update(self, message: Any) -> Any:
        if isinstance(message, TaskDone):
            self._done(message)
            return True
        if isinstance(message, TaskFailed):
            self._failed(message)
            return True
        if isinstance(message, FetchFailed):
            self._fetch_failed(message)
            return True
        if isinstance(message, WorkerLost):
            worker, endpoint = message.worker, message.endpoint
            if message.how not in self.lost or not isinstance(worker, str | None) or not isinstance(endpoint, str | None):
                log.warning("coordinator: ignored a malformed %r", message)
                return False
            self._lose(message.how, str(message.detail), worker=worker, endpoint=endpoint)
            return True
        if isinstance(message, Release):
            self.held = False
            return True
        log.warning("coordinator: ignored a %s", type(message).__name__)
        return None

    def _park(self, worker: str) -> None:
        """Keep an idle worker's request to answer later (a tell has nobody to answer)."""
        target = self.reply_later()
        if target is None:
            return
        earlier = self.parked.pop(worker, None)
        if earlier is not None:  # its asker gave up on it (a timeout) and asked again
            earlier.set(Wait(0.0))
        self.parked[worker] = target

    def _changed(self) -> None:
        self.version += 1
        self._answer_waiting()

    def _answer_waiting(self) -> None:
        """Idle workers ask again now; those following the job get its status."""
        parked, self.parked = self.parked, {}
        for target in parked.values():
            target.set(Wait(0.0))
        if self.watchers:
            status = self.status()
            watchers, self.watchers = self.watchers, []
            for target in watchers:
                target.set(status)

    @property
    def phase(self) -> str:
        if self.error is not None:
            return "failed"
        if not all(t.done for t in self.maps):
            return "map"
        if not all(t.done for t in self.reduces):
            return "reduce"
        return "done"

    def status(self) -> JobStatus:
        return JobStatus(
            phase=self.phase,
            maps_done=sum(t.done for t in self.maps),
            maps_total=len(self.maps),
            reduces_done=sum(t.done for t in self.reduces),
            reduces_total=len(self.reduces),
            workers_seen=len(self.workers),
            reassigned=self.reassigned,
            backups=self.backups,
            error=self.error,
            reexecuted=self.reexecuted,
            held=self.held and self.phase == "reduce",
            map_locations=tuple(t.location if t.done else None for t in self.maps),
            counters={**self.counters, "reexecuted_maps": self.reexecuted, "backup_tasks": self.backups,
                      "reassigned_tasks": self.reassigned, "fetch_failures": self.fetch_failures,
                      **{f"workers_lost_{how}": n for how, n in self.lost.items()}},
            worker_peak_rss=dict(self.peak_rss),
            phase_seconds=self._phase_seconds(),
            version=self.version,
        )

    def _phase_seconds(self) -> dict[str, float]:
        end = self.finished_at or time.monotonic()
        maps_end = self.maps_done_at or end
        return {"map": round(maps_end - self.started_at, 3), "reduce": round(end - maps_end, 3) if self.maps_done_at else 0.0,
                "total": round(end - self.started_at, 3)}

    def _hand_out(self, worker: str) -> MapTask | ReduceTask | Exit | None:
        """What ``worker`` does next; None when there is nothing for it now (its request then waits)."""
        phase = self.phase
        if phase in ("done", "failed"):
            return Exit("job failed" if phase == "failed" else "job done")
        if (phase == "reduce" and self.held) or len(self.workers) < self.config.min_workers:
            return None
        pool = self.maps if phase == "map" else self.reduces
        task = next((t for t in pool if not t.done and not t.started), None)
        if task is None and self.config.backup_tasks:
            running = [t for t in pool if not t.done and len(t.started) == 1]
            if running:
                task = min(running, key=lambda t: t.started[0].at)
                self.backups += 1
                log.info("coordinator: backup attempt of %s task %d", task.kind, task.id)
        if task is None:
            return None
        task.attempts += 1
        task.started.append(_Attempt(time.monotonic(), worker))
        cfg = self.config
        if task.kind == "map":
            input_from = self.actor_system.endpoint if cfg.ship_input and self.actor_system else None
            return MapTask(task.id, self.splits[task.id], cfg.n_reduce, cfg.workdir, task.attempts, input_from)
        sources = tuple((m.id, m.location) for m in self.maps)
        return ReduceTask(task.id, sources, cfg.workdir, cfg.outdir, task.attempts, cfg.fetch_timeout)

    def _task(self, kind: str, task_id: int) -> _Task | None:
        pool = self.maps if kind == "map" else self.reduces if kind == "reduce" else None
        if pool is None or not 0 <= task_id < len(pool):
            return None
        return pool[task_id]

    def _done(self, msg: TaskDone) -> None:
        task = self._task(msg.kind, msg.id)
        if task is None:
            log.warning("coordinator: report for unknown task %s %s", msg.kind, msg.id)
            return
        if msg.peak_rss:
            self.peak_rss[msg.worker] = max(self.peak_rss.get(msg.worker, 0), msg.peak_rss)
        if msg.worker in self.dead and msg.kind == "map" and msg.location is not None:
            # Sent just before the kill and overtaken by the supervisor's (local) report: the output died with it.
            log.info("coordinator: map %s done by %s, which is dead; its output is lost", msg.id, msg.worker)
            return
        self.gone.discard(msg.worker)  # it reports: alive after all
        if msg.location is not None:
            self.endpoint_of[msg.worker] = msg.location
            self.gone.discard(msg.location)
        if not task.done:
            task.done = True
            task.location = msg.location
            task.holder = msg.worker
            task.started.clear()
            for name, value in msg.counters.items():
                if name in self.counters and isinstance(value, int):
                    self.counters[name] += value
            if msg.kind == "map" and self.maps_done_at is None and all(t.done for t in self.maps):
                self.maps_done_at = time.monotonic()
            if self.phase == "done":
                self.finished_at = time.monotonic()
                log.info("coordinator: job done")

    def _failed(self, msg: TaskFailed) -> None:
        task = self._task(msg.kind, msg.id)
        if task is None or task.done:
            return
        task.failures += 1
        task.drop(msg.worker)
        what = f"{msg.kind} task {msg.id}" + (f" (input {self._describe(self.splits[msg.id])})" if msg.kind == "map" else "")
        log.warning("coordinator: %s failed on worker %s (failure %d)", what, msg.worker, task.failures)
        if task.failures >= self.config.max_attempts and self.error is None:
            self.error = f"{what} failed {task.failures} times; last error:\n{msg.error}"
            self.finished_at = time.monotonic()

    @staticmethod
    def _describe(split: Split) -> str:
        whole = split.start == 0 and split.end == _size(split.filename)
        return split.filename if whole else f"{split.filename} bytes {split.start}-{split.end}"

    def _fetch_failed(self, msg: FetchFailed) -> None:
        """The mappers at ``msg.endpoints`` are gone: their completed maps run again, the reduce waits for them."""
        self.fetch_failures += 1
        reduce = self._task("reduce", msg.reduce_id)
        if reduce is not None and not reduce.done:
            reduce.drop(msg.worker)
        endpoints = msg.endpoints if isinstance(msg.endpoints, tuple) else ()
        for endpoint in endpoints:
            if isinstance(endpoint, str):
                self._lose("fetch", msg.error, endpoint=endpoint)

    def _lose(self, how: str, detail: str, *, worker: str | None = None, endpoint: str | None = None) -> None:
        """A worker is gone: every completed map whose output it held runs again, and its running task
        goes to another worker now (not after ``task_timeout``). Known by its id, its endpoint or both."""
        if self.phase in ("done", "failed"):
            return  # workers leave when the job is over; nothing of theirs is needed any more
        if how == "supervisor" and worker is not None:
            self.dead.add(worker)
        if endpoint is None and worker is not None:
            endpoint = self.endpoint_of.get(worker)
        ids = {w for w, ep in self.endpoint_of.items() if endpoint is not None and ep == endpoint}
        if worker is not None:
            ids.add(worker)
        lost = [t for t in self.maps if t.done and t.location is not None
                and (t.location == endpoint or t.holder in ids)]
        for task in lost:
            task.done = False
            task.location = None
            task.holder = None
            task.started.clear()
        reassigned = 0
        for task in (*self.maps, *self.reduces):
            if not task.done:
                kept = [a for a in task.started if a.worker not in ids]
                reassigned += len(task.started) - len(kept)
                task.started = kept
        self.reassigned += reassigned
        if lost:
            self.reexecuted += len(lost)
            self.maps_done_at = None
        keys = {k for k in (endpoint, *ids) if k is not None}
        if keys and not keys & self.gone:
            self.lost[how] += 1
        self.gone |= keys
        if lost or reassigned:
            log.warning("coordinator: worker %s is gone (%s: %s); %d completed maps run again, %d tasks reassigned",
                        worker or endpoint, how, detail, len(lost), reassigned)

    def _check_liveness(self) -> None:
        """Every ``probe_every`` s, ping the workers holding completed map output (off this thread)."""
        cfg = self.config
        if cfg.probe_every <= 0 or self.actor_system is None or self.phase in ("done", "failed"):
            return
        now = time.monotonic()
        if self.probe is not None:
            if self.probe.done:
                future, self.probe = self.probe, None
                self.probed_at = now
                try:
                    silent = future.get()
                except Exception:  # the prober failed or stopped: skip this round, try again later
                    log.exception("coordinator: a liveness check failed")
                    return
                for endpoint in silent if isinstance(silent, list) else ():
                    self._lose("probe", f"no answer to two pings of {cfg.probe_timeout} s", endpoint=endpoint)
            elif now > self.probe.deadline:
                self.probe, self.probed_at = None, now
            return
        if now - self.probed_at < cfg.probe_every:
            return
        holders = tuple(dict.fromkeys(t.location for t in self.maps if t.done and t.location is not None))
        if not holders:
            return
        prober = self.actor_system.ref(self.actor_system.endpoint, PROBER_NAME)
        try:
            self.probe = prober.ask(Probe(holders, cfg.probe_timeout), block=False, timeout=2 * cfg.probe_timeout + 5.0)
        except Exception:  # no prober on this system (a coordinator spawned without start_coordinator)
            log.warning("coordinator: no prober; liveness checks are off")
            self.config = dataclasses.replace(cfg, probe_every=0)

    def _reclaim_timed_out(self) -> None:
        now = time.monotonic()
        for task in (*self.maps, *self.reduces):
            if not task.done and task.started:
                alive = [a for a in task.started if now - a.at < self.config.task_timeout]
                if len(alive) < len(task.started):
                    self.reassigned += len(task.started) - len(alive)
                    task.started = alive
                    log.info("coordinator: %s task %d timed out; it goes to another worker", task.kind, task.id)
