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
fetch from a worker reports ``FetchFailed``: every map that worker had
completed goes back to the pool (its output lived on its disk, MapReduce
paper §3.3), and reduces are handed out again once those maps are re-done.

With ``backup_tasks`` (the MapReduce paper's remedy for stragglers), once
nothing is left to hand out, an idle worker gets a copy of the task that has
been running longest, so one slow machine does not set the job's finishing
time.

A user function that raises fails that attempt; after ``max_attempts``
failures of one task the job fails with a message naming the task, its input
and the traceback.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from actors import Actor, ActorSystem, LocalRef
from apps.mapreduce.files import Split, make_splits
from apps.mapreduce.protocol import (
    Exit,
    FetchFailed,
    JobStatus,
    MapTask,
    ReduceTask,
    Release,
    RequestTask,
    Status,
    TaskDone,
    TaskFailed,
    Tick,
    Wait,
)

log = logging.getLogger(__name__)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


@dataclass
class _Task:
    kind: str
    id: int
    started: list[float] = field(default_factory=list)  # start times of running attempts
    attempts: int = 0
    failures: int = 0
    done: bool = False
    location: str | None = None
    """For a done map: the endpoint serving its output (None: the shared directory)."""


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

    def __post_init__(self) -> None:
        if self.n_reduce < 1:
            raise ValueError(f"n_reduce must be at least 1, got {self.n_reduce}")
        if self.task_timeout <= 0 or self.max_attempts < 1:
            raise ValueError("task_timeout must be positive and max_attempts at least 1")
        if self.split_bytes < 1 or self.fetch_timeout <= 0:
            raise ValueError("split_bytes and fetch_timeout must be positive")


COUNTERS = (
    "input_bytes", "map_output_records", "combine_input_records", "combine_output_records",
    "spills", "spilled_records", "map_output_bytes", "shuffle_bytes",
    "reduce_input_groups", "reduce_input_records", "reduce_output_records",
)
"""The job's counters, summed over the reports of completed task attempts (as Hadoop counts)."""


def start_coordinator(system: ActorSystem, config: JobConfig) -> LocalRef:
    """Spawn the coordinator (and, with ``ship_input``, the file server for the inputs) on ``system``."""
    if config.ship_input:
        from apps.mapreduce.shuffle import FileServer, input_resolver

        system.spawn(FileServer, input_resolver(config.files), name="files")
    return system.spawn(Coordinator, config, name="coordinator")


class Coordinator(Actor):
    def __init__(self, config: JobConfig) -> None:
        super().__init__()
        self.config = config
        self.splits: list[Split] = make_splits(config.files, config.split_bytes)
        self.maps = [_Task("map", i) for i in range(len(self.splits))]
        self.reduces = [_Task("reduce", i) for i in range(config.n_reduce)]
        self.workers: set[str] = set()
        self.reassigned = 0
        self.backups = 0
        self.reexecuted = 0
        self.fetch_failures = 0
        self.held = config.hold_reduces
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.peak_rss: dict[str, int] = {}
        self.started_at = time.monotonic()
        self.maps_done_at: float | None = None
        self.error: str | None = None
        self.finished_at: float | None = None

    def on_start(self) -> None:
        self.schedule_every(0.25, Tick())

    # ---- the protocol ---------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RequestTask):
            self.workers.add(message.worker)
            return self._hand_out()
        if isinstance(message, TaskDone):
            self._done(message)
            return True
        if isinstance(message, TaskFailed):
            self._failed(message)
            return True
        if isinstance(message, FetchFailed):
            self._fetch_failed(message)
            return True
        if isinstance(message, Release):
            self.held = False
            return True
        if isinstance(message, Status):
            return self.status()
        if isinstance(message, Tick):
            self._reclaim_timed_out()
            return None
        log.warning("coordinator: ignored a %s", type(message).__name__)
        return None

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
                      "reassigned_tasks": self.reassigned, "fetch_failures": self.fetch_failures},
            worker_peak_rss=dict(self.peak_rss),
            phase_seconds=self._phase_seconds(),
        )

    def _phase_seconds(self) -> dict[str, float]:
        end = self.finished_at or time.monotonic()
        maps_end = self.maps_done_at or end
        return {"map": round(maps_end - self.started_at, 3), "reduce": round(end - maps_end, 3) if self.maps_done_at else 0.0,
                "total": round(end - self.started_at, 3)}

    def _hand_out(self) -> MapTask | ReduceTask | Wait | Exit:
        phase = self.phase
        if phase in ("done", "failed"):
            return Exit("job failed" if phase == "failed" else "job done")
        if (phase == "reduce" and self.held) or len(self.workers) < self.config.min_workers:
            return Wait(0.1)
        pool = self.maps if phase == "map" else self.reduces
        task = next((t for t in pool if not t.done and not t.started), None)
        if task is None and self.config.backup_tasks:
            running = [t for t in pool if not t.done and len(t.started) == 1]
            if running:
                task = min(running, key=lambda t: t.started[0])
                self.backups += 1
                log.info("coordinator: backup attempt of %s task %d", task.kind, task.id)
        if task is None:
            return Wait(0.1)
        task.attempts += 1
        task.started.append(time.monotonic())
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
        if not task.done:
            task.done = True
            task.location = msg.location
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
        if task.started:
            task.started.pop(0)
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
        """The mapper at ``msg.endpoint`` is gone: its completed maps run again, the reduce waits for them."""
        self.fetch_failures += 1
        reduce = self._task("reduce", msg.reduce_id)
        if reduce is not None and not reduce.done and reduce.started:
            reduce.started.pop(0)
        lost = [t for t in self.maps if t.done and t.location == msg.endpoint]
        for task in lost:
            task.done = False
            task.location = None
            task.started.clear()
        if lost:
            self.reexecuted += len(lost)
            self.maps_done_at = None
            log.warning("coordinator: worker at %s is gone (%s); %d completed maps run again",
                        msg.endpoint, msg.error, len(lost))

    def _reclaim_timed_out(self) -> None:
        now = time.monotonic()
        for task in (*self.maps, *self.reduces):
            if not task.done and task.started:
                alive = [t for t in task.started if now - t < self.config.task_timeout]
                if len(alive) < len(task.started):
                    self.reassigned += len(task.started) - len(alive)
                    task.started = alive
                    log.info("coordinator: %s task %d timed out; it goes to another worker", task.kind, task.id)
