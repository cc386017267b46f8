"""Run a whole MapReduce job from Python: a coordinator actor here, supervised worker processes.

    from apps.mapreduce import run_job
    result = run_job("wc", files, workers=4, outdir="out")     # or run_job(App(...)) / (map_fn, reduce_fn)

The application travels to the workers with cloudpickle, so functions
defined in a script or a notebook work. A worker that dies (kill -9, a crash
inside the user's code) is restarted by the supervisor and its task, after
the task timeout, goes to another worker. Each worker keeps its map output
in a directory of its own and serves it to the reducers (as it would on
separate machines); a worker that died takes its map output with it, and
those maps run again. The supervisor's event of a worker's death reaches the
coordinator at once (``WorkerLost``), so its task goes to another worker and
its maps run again without waiting for a timeout or a reducer. ``run_job`` returns when every
reduce output is written, or raises :class:`JobFailed` naming what failed.

By default everything listens on this machine (ipc endpoints). A
:class:`Placement` puts the coordinator and each worker on a host of its own
and has them talk over TCP (the soak's ``--hosts netns``: a unix socket would
reach across network namespaces and no packet filter would see it).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cloudpickle

from actors import ActorSystem, ChildSpec, EventKind, Supervisor, SupervisorEvent
from apps.mapreduce.app import App, load_app
from apps.mapreduce.coordinator import JobConfig, follow, start_coordinator
from apps.mapreduce.protocol import JobStatus, WorkerLost
from apps.mapreduce.worker import worker_id, worker_main
from transport.private_files import private_dirs

log = logging.getLogger(__name__)


class JobFailed(RuntimeError):
    """The job could not finish: a task failed too often, or every worker gave up."""


class Placement(Protocol):
    """Where a job's processes listen and run, when not all on this machine's local endpoints."""

    def harness_endpoint(self) -> str:
        """The endpoint the coordinator binds (in the calling process, on the host it is in)."""
        ...

    def worker_endpoint(self, i: int) -> str:
        """The endpoint worker ``i`` binds to serve its map output, reachable from the other hosts."""
        ...

    def child_spec(self, i: int, spec: ChildSpec) -> ChildSpec:
        """``spec`` changed to run worker ``i`` on its host (the same host after every restart)."""
        ...


@dataclass(frozen=True)
class Progress:
    status: JobStatus
    workers_alive: int
    restarts: int
    elapsed: float


@dataclass(frozen=True)
class JobResult:
    outputs: list[Path]
    status: JobStatus
    seconds: float
    restarts: int


def run_job(
    app: str | App | Any,
    files: Sequence[str | Path],
    *,
    workers: int = 2,
    n_reduce: int = 10,
    outdir: str | Path = ".",
    task_timeout: float = 10.0,
    max_attempts: int = 3,
    backup_tasks: bool = False,
    use_combiner: bool = True,
    progress: Callable[[Progress], None] | None = None,
    timeout: float | None = None,
    split_bytes: int = JobConfig.split_bytes,
    fetch_timeout: float = JobConfig.fetch_timeout,
    shared_dir: bool = False,
    placement: Placement | None = None,
) -> JobResult:
    """Run ``app`` over ``files``; returns when ``outdir/mr-out-*`` are complete.

    ``shared_dir`` makes every worker write map output into one directory
    that reducers read directly (the lab's layout) instead of fetching it.
    ``placement``: where the coordinator and the workers listen and run (default: all local).
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"input files not found: {', '.join(missing[:5])}")
    loaded = app if isinstance(app, App) else load_app(app)
    if not use_combiner and loaded.combine is not None:
        loaded = App(loaded.name, loaded.map, loaded.reduce, None)
    blob = cloudpickle.dumps(loaded)
    out = Path(outdir)
    private_dirs(out)
    for stale in out.glob("mr-out-*"):
        stale.unlink()
    workdir = Path(tempfile.mkdtemp(prefix=".mr-work-", dir=out))
    config = JobConfig(
        tuple(str(Path(f).resolve()) for f in files),
        n_reduce=n_reduce,
        workdir=str(workdir),
        outdir=str(out.resolve()),
        task_timeout=task_timeout,
        max_attempts=max_attempts,
        backup_tasks=backup_tasks,
        split_bytes=split_bytes,
        fetch_timeout=fetch_timeout,
    )
    started = time.monotonic()
    names = [f"worker-{i}" for i in range(workers)]
    try:
        endpoint = placement.harness_endpoint() if placement is not None else None
        with ActorSystem(endpoint) as system, Supervisor(max_restarts=10, within=10.0) as sup:
            coordinator = start_coordinator(system, config)

            def on_event(event: SupervisorEvent) -> None:
                # On the supervisor's monitor thread: a tell, never a wait.
                if event.kind == EventKind.EXITED and event.pid is not None and event.child in names:
                    coordinator.tell(WorkerLost("supervisor", f"{event.child} exited with {event.exitcode}",
                                                worker=worker_id(event.pid)))

            sup.add_listener(on_event)
            for i, name in enumerate(names):
                sup.start_child(_worker_spec(i, name, system.endpoint, blob, None if shared_dir else str(workdir / name), placement))
            for status in follow(coordinator):
                alive = sum(sup.status(n) == "running" for n in names)
                restarts = sum(sup.restarts(n) for n in names)
                if progress is not None:
                    progress(Progress(status, alive, restarts, time.monotonic() - started))
                if status.phase in ("done", "failed"):
                    break
                if all(sup.status(n) == "failed" for n in names):
                    raise JobFailed(f"every worker crashed too often and was given up (phase {status.phase})")
                if timeout is not None and time.monotonic() - started > timeout:
                    raise JobFailed(f"the job did not finish within {timeout} s (phase {status.phase})")
            # Workers hear Exit on their next request and leave on their own.
            sup.wait_for(lambda: all(sup.status(n) != "running" for n in names), config.linger + 2.0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if status.phase == "failed":
        raise JobFailed(status.error or "the job failed")
    outputs = sorted(out.glob("mr-out-*"))
    return JobResult(outputs, status, time.monotonic() - started, restarts)


def _worker_spec(i: int, name: str, coordinator: str, blob: bytes, own: str | None, placement: Placement | None) -> ChildSpec:
    """Worker ``i``'s child: local by default; with a placement, on its host and serving on its host's address."""
    if placement is None:
        return ChildSpec(name, worker_main, (coordinator, blob, 3.0, own), restart="transient")
    spec = ChildSpec(name, worker_main, (coordinator, blob, 3.0, own, placement.worker_endpoint(i)), restart="transient")
    return placement.child_spec(i, spec)
