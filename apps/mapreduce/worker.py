"""The MapReduce worker: an actor that asks the coordinator for tasks until told to stop.

A worker runs one task at a time in its own thread (the actor's), reports
the outcome, and asks again. It stops when the coordinator says the job is
over, or when the coordinator has not answered for ``give_up_after`` seconds
(it is gone: the job is done or lost, as in the lab).

Two ways to keep map output. Without a working directory of its own (the
lab's mode) a worker writes into the directory the coordinator names, which
every worker shares. With one (``workdir``), it writes there and hosts a
``FileServer`` next to the worker actor; a map's completion tells the
coordinator this process's endpoint, and reducers fetch from it, as in the
MapReduce paper. A fetch that fails is reported (``FetchFailed``), so the
coordinator can run that worker's maps again.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import socket
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle

from actors import Actor, ActorDeadError, ActorSystem, AskTimeout
from apps.mapreduce.app import App, load_app
from apps.mapreduce.files import intermediate_name
from apps.mapreduce.protocol import Exit, FetchFailed, MapTask, ReduceTask, RequestTask, TaskDone, TaskFailed, Wait
from apps.mapreduce.shuffle import (
    FILES_NAME,
    FetchError,
    FileServer,
    fetch_to_file,
    intermediate_resolver,
    remote_reader,
    unreachable,
)
from apps.mapreduce.tasks import TaskError, run_map, run_reduce
from transport.private_files import private_dirs

log = logging.getLogger(__name__)

COORDINATOR_NAME = "coordinator"
GONE = object()


@dataclass(frozen=True, slots=True)
class _Next:
    pass


@dataclass
class WorkerOutcome:
    """How a worker's run ended: ``reached`` False means the coordinator never answered at all."""

    reached: bool = False
    reason: str = ""


def worker_id(pid: int) -> str:
    """How a worker names itself to the coordinator: a supervisor on this host can name it from the pid."""
    return f"{socket.gethostname()}:{pid}"


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Worker(Actor):
    def __init__(
        self,
        coordinator: str,
        app: App,
        finished: threading.Event,
        give_up_after: float = 3.0,
        workdir: str | None = None,
        outcome: WorkerOutcome | None = None,
    ) -> None:
        super().__init__()
        self.app = app
        self.finished = finished
        self.give_up_after = give_up_after
        self.outcome = outcome if outcome is not None else WorkerOutcome()
        self.worker_id = worker_id(os.getpid())
        assert self.actor_system is not None
        self.coordinator = self.actor_system.ref(coordinator, COORDINATOR_NAME)
        self.workdir = Path(workdir) if workdir else None
        self.location = self.actor_system.endpoint if workdir else None
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
                answer = self.coordinator.ask(message, timeout=min(1.0, self.give_up_after))
            except (AskTimeout, ActorDeadError):
                continue
            self.outcome.reached = True
            return answer
        return GONE

    def _leave(self, reason: str) -> None:
        log.info("worker %s: stopping (%s)", self.worker_id, reason)
        self.outcome.reason = reason
        self.finished.set()

    def _step(self) -> None:
        task = self._ask(RequestTask(self.worker_id))
        if task is GONE or isinstance(task, Exit):
            self._leave("coordinator unreachable" if not isinstance(task, Exit) else task.reason)
            return
        if isinstance(task, Wait):
            if task.seconds > 0:
                self.schedule(task.seconds, _Next())
            else:  # the coordinator held the request until something changed: ask again now
                self.actor_ref.tell(_Next())
            return
        if isinstance(task, MapTask):
            report = self._map(task)
        elif isinstance(task, ReduceTask):
            report = self._reduce(task)
        else:
            log.warning("worker %s: the coordinator sent a %s; asking again", self.worker_id, type(task).__name__)
            self.schedule(0.1, _Next())
            return
        if isinstance(report, TaskDone):
            self.tasks_done += 1
        if self._ask(report) is GONE:
            self._leave("coordinator unreachable")
            return
        self.actor_ref.tell(_Next())

    def _map(self, task: MapTask) -> Any:
        workdir = self.workdir or Path(task.workdir)
        try:
            read_at = None
            if task.input_from is not None:
                assert self.actor_system is not None  # spawned by a system
                server = self.actor_system.ref(task.input_from, FILES_NAME)
                read_at = remote_reader(server, f"input-{task.split.index}", timeout=10.0)
            result = run_map(self.app, task.id, task.split, task.n_reduce, workdir, read_at=read_at)
        except TaskError as exc:
            return TaskFailed(self.worker_id, "map", task.id, task.attempt, str(exc))
        except Exception:  # a broken input file, an unreachable input server: the attempt fails, the worker lives
            return TaskFailed(self.worker_id, "map", task.id, task.attempt, traceback.format_exc())
        return TaskDone(self.worker_id, "map", task.id, task.attempt, self.location, result.counters, peak_rss_bytes())

    def _reduce(self, task: ReduceTask) -> Any:
        assert self.actor_system is not None  # spawned by a system
        system = self.actor_system
        remote = list(dict.fromkeys(ep for _, ep in task.sources if ep is not None and ep != self.location))
        # Ask every mapper at once before fetching: all the dead ones are named in one report (issue #14).
        dead = unreachable(system, remote, task.fetch_timeout)
        if dead:
            log.warning("worker %s: reduce %d: %d mappers did not answer: %s", self.worker_id, task.id, len(dead), dead)
            return FetchFailed(self.worker_id, task.id, task.attempt, tuple(dead), "did not answer a ping")
        fetched_dir = None
        try:
            runs = []
            shuffle_bytes = 0
            for map_id, endpoint in task.sources:
                name = intermediate_name(map_id, task.id)
                if endpoint is None:
                    path = Path(task.workdir) / name
                elif endpoint == self.location and self.workdir is not None:
                    path = self.workdir / name
                else:
                    if fetched_dir is None:
                        base = self.workdir or Path(tempfile.gettempdir())
                        private_dirs(base)
                        fetched_dir = Path(tempfile.mkdtemp(prefix=f".fetch-{task.id}-", dir=base))
                    path = fetched_dir / name
                    server = system.ref(endpoint, FILES_NAME)
                    try:
                        shuffle_bytes += fetch_to_file(server, name, path, task.fetch_timeout)
                    except FetchError as exc:
                        # Died (or lost the file) mid-shuffle: the others may have too; name them all.
                        others = unreachable(system, [ep for ep in remote if ep != endpoint], task.fetch_timeout)
                        log.warning("worker %s: fetch of %s from %s failed: %s; also silent: %s",
                                    self.worker_id, name, endpoint, exc, others)
                        return FetchFailed(self.worker_id, task.id, task.attempt, (endpoint, *others), str(exc))
                    runs.append(path)
                    continue
                shuffle_bytes += path.stat().st_size if path.exists() else 0
                runs.append(path)
            result = run_reduce(self.app, task.id, runs, Path(task.outdir))
        except TaskError as exc:
            return TaskFailed(self.worker_id, "reduce", task.id, task.attempt, str(exc))
        except Exception:
            return TaskFailed(self.worker_id, "reduce", task.id, task.attempt, traceback.format_exc())
        finally:
            if fetched_dir is not None:
                shutil.rmtree(fetched_dir, ignore_errors=True)
        counters = {**result.counters, "shuffle_bytes": shuffle_bytes}
        return TaskDone(self.worker_id, "reduce", task.id, task.attempt, None, counters, peak_rss_bytes())


def worker_main(
    coordinator: str,
    app: str | bytes,
    give_up_after: float = 3.0,
    workdir: str | None = None,
    endpoint: str | None = None,
) -> WorkerOutcome:
    """Run one worker process until the job ends. ``app`` is a spec for load_app, or a cloudpickled App.

    With ``workdir``, map output stays in that directory and is served from
    this process's ``endpoint`` (default: a fresh ipc endpoint).
    """
    loaded = cloudpickle.loads(app) if isinstance(app, bytes) else load_app(app)
    finished = threading.Event()
    outcome = WorkerOutcome()
    if workdir is not None:
        private_dirs(workdir)
    with ActorSystem(endpoint, start=False) as system:
        if workdir is not None:
            system.spawn(FileServer, intermediate_resolver(Path(workdir)), name=FILES_NAME)
        system.spawn(Worker, coordinator, loaded, finished, give_up_after, workdir, outcome, name="worker")
        system.start()
        while not finished.wait(0.5):
            pass
    return outcome
