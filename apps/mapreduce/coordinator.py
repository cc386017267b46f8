"""The MapReduce coordinator: an actor that hands out tasks and notices the ones that never finish.

Workers ask for work (``RequestTask``) and report (``TaskDone`` /
``TaskFailed``). Each input file is a map task; reduces start only when every
map is done. A task handed out more than ``task_timeout`` seconds ago and not
reported done goes back to the pool, so a crashed or stuck worker costs one
timeout, not the job. Reports for an attempt that was already superseded are
still welcome: the first completion of a task counts, and since task outputs
are written atomically and deterministically, a second one changes nothing.

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
import time
from dataclasses import dataclass, field
from typing import Any

from actors import Actor
from apps.mapreduce.protocol import (
    Exit,
    JobStatus,
    MapTask,
    ReduceTask,
    RequestTask,
    Status,
    TaskDone,
    TaskFailed,
    Tick,
    Wait,
)

log = logging.getLogger(__name__)


@dataclass
class _Task:
    kind: str
    id: int
    started: list[float] = field(default_factory=list)  # start times of running attempts
    attempts: int = 0
    failures: int = 0
    done: bool = False


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

    def __post_init__(self) -> None:
        if self.n_reduce < 1:
            raise ValueError(f"n_reduce must be at least 1, got {self.n_reduce}")
        if self.task_timeout <= 0 or self.max_attempts < 1:
            raise ValueError("task_timeout must be positive and max_attempts at least 1")


class Coordinator(Actor):
    def __init__(self, config: JobConfig) -> None:
        super().__init__()
        self.config = config
        self.maps = [_Task("map", i) for i in range(len(config.files))]
        self.reduces = [_Task("reduce", i) for i in range(config.n_reduce)]
        self.workers: set[str] = set()
        self.reassigned = 0
        self.backups = 0
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
        )

    def _hand_out(self) -> MapTask | ReduceTask | Wait | Exit:
        phase = self.phase
        if phase in ("done", "failed"):
            return Exit("job failed" if phase == "failed" else "job done")
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
            return MapTask(task.id, cfg.files[task.id], cfg.n_reduce, cfg.workdir, task.attempts)
        return ReduceTask(task.id, len(self.maps), cfg.workdir, cfg.outdir, task.attempts)

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
        if not task.done:
            task.done = True
            task.started.clear()
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
        what = f"{msg.kind} task {msg.id}" + (f" (input {self.config.files[msg.id]})" if msg.kind == "map" else "")
        log.warning("coordinator: %s failed on worker %s (failure %d)", what, msg.worker, task.failures)
        if task.failures >= self.config.max_attempts and self.error is None:
            self.error = f"{what} failed {task.failures} times; last error:\n{msg.error}"
            self.finished_at = time.monotonic()

    def _reclaim_timed_out(self) -> None:
        now = time.monotonic()
        for task in (*self.maps, *self.reduces):
            if not task.done and task.started:
                alive = [t for t in task.started if now - t < self.config.task_timeout]
                if len(alive) < len(task.started):
                    self.reassigned += len(task.started) - len(alive)
                    task.started = alive
                    log.info("coordinator: %s task %d timed out; it goes to another worker", task.kind, task.id)
