"""The MapReduce worker: an actor that asks the coordinator for tasks until told to stop.

A worker runs one task at a time in its own thread (the actor's), reports
the outcome, and asks again. It stops when the coordinator says the job is
over, or when the coordinator has not answered for ``give_up_after`` seconds
(it is gone: the job is done or lost, as in the lab).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle

from actors import Actor, ActorDeadError, ActorSystem, AskTimeout
from apps.mapreduce.app import App, load_app
from apps.mapreduce.protocol import Exit, MapTask, RequestTask, TaskDone, TaskFailed, Wait
from apps.mapreduce.tasks import TaskError, run_map, run_reduce

log = logging.getLogger(__name__)

COORDINATOR_NAME = "coordinator"
GONE = object()


@dataclass(frozen=True, slots=True)
class _Next:
    pass


class Worker(Actor):
    def __init__(self, coordinator: str, app: App, finished: threading.Event, give_up_after: float = 3.0) -> None:
        super().__init__()
        self.app = app
        self.finished = finished
        self.give_up_after = give_up_after
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        assert self.actor_system is not None
        self.coordinator = self.actor_system.ref(coordinator, COORDINATOR_NAME)
        self.tasks_done = 0

    def on_start(self) -> None:
        self.actor_ref.tell(_Next())

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Next):
            self._step()
        return None

    def _ask(self, message: Any) -> Any:
        """Ask the coordinator, retrying briefly; GONE when it does not answer."""
        deadline = time.monotonic() + self.give_up_after
        while time.monotonic() < deadline:
            try:
                return self.coordinator.ask(message, timeout=min(1.0, self.give_up_after))
            except (AskTimeout, ActorDeadError):
                continue
        return GONE

    def _step(self) -> None:
        task = self._ask(RequestTask(self.worker_id))
        if task is GONE or isinstance(task, Exit):
            log.info("worker %s: stopping (%s)", self.worker_id, "coordinator unreachable" if not isinstance(task, Exit) else task.reason)
            self.finished.set()
            return
        if isinstance(task, Wait):
            self.schedule(task.seconds, _Next())
            return
        kind = "map" if isinstance(task, MapTask) else "reduce"
        try:
            if isinstance(task, MapTask):
                run_map(self.app, task.id, task.filename, task.n_reduce, Path(task.workdir))
            else:
                run_reduce(self.app, task.id, task.n_map, Path(task.workdir), Path(task.outdir))
        except TaskError as exc:
            report: Any = TaskFailed(self.worker_id, kind, task.id, task.attempt, str(exc))
        except Exception:  # a broken input file, a missing intermediate: the attempt fails, the worker lives
            report = TaskFailed(self.worker_id, kind, task.id, task.attempt, traceback.format_exc())
        else:
            report = TaskDone(self.worker_id, kind, task.id, task.attempt)
            self.tasks_done += 1
        if self._ask(report) is GONE:
            self.finished.set()
            return
        self.actor_ref.tell(_Next())


def worker_main(coordinator: str, app: str | bytes, give_up_after: float = 3.0) -> None:
    """Run one worker process until the job ends. ``app`` is a spec for load_app, or a cloudpickled App."""
    loaded = cloudpickle.loads(app) if isinstance(app, bytes) else load_app(app)
    finished = threading.Event()
    with ActorSystem() as system:
        system.spawn(Worker, coordinator, loaded, finished, give_up_after, name="worker")
        while not finished.wait(0.5):
            pass
