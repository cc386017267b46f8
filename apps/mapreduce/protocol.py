"""What the MapReduce coordinator, its workers and the workers' file servers say to each other."""

from __future__ import annotations

from dataclasses import field

from apps.mapreduce.files import Split
from transport.message import message


@message
class RequestTask:
    worker: str


@message
class MapTask:
    id: int
    split: Split
    n_reduce: int
    workdir: str
    """The shared directory, for a worker without its own (the lab's mode)."""
    attempt: int
    input_from: str | None = None
    """Endpoint of the coordinator's input server when inputs are shipped; None: read the path."""


@message
class ReduceTask:
    id: int
    sources: tuple[tuple[int, str | None], ...]
    """(map task, endpoint of the worker serving its output); None: in ``workdir``, shared."""
    workdir: str
    outdir: str
    attempt: int
    fetch_timeout: float = 5.0


@message
class Wait:
    """Nothing to hand out now (every task is running); ask again after ``seconds`` (0: at once)."""

    seconds: float


@message
class Exit:
    """The job is over (done or failed): the worker should stop."""

    reason: str


@message
class TaskDone:
    worker: str
    kind: str  # "map" or "reduce"
    id: int
    attempt: int
    location: str | None = None
    """For a map: the endpoint that serves its output (None: written to the shared directory)."""
    counters: dict[str, int] = field(default_factory=dict)
    peak_rss: int = 0
    """The worker process's peak resident set so far, in bytes."""


@message
class TaskFailed:
    worker: str
    kind: str
    id: int
    attempt: int
    error: str
    """The user's traceback, as text."""


@message
class FetchFailed:
    """A reduce could not fetch map output from ``endpoints``: those workers' maps must run again.

    A reducer names every worker it could not reach, not only the first one,
    so the coordinator re-runs all their maps at once (issue #14)."""

    worker: str
    reduce_id: int
    attempt: int
    endpoints: tuple[str, ...]
    error: str


@message
class WorkerLost:
    """A worker is gone, as seen by someone other than a reducer: its maps run again, its task goes elsewhere.

    ``worker`` (its id, ``host:pid``) when the supervisor saw the process die;
    ``endpoint`` when the coordinator's liveness check found its file server silent."""

    how: str
    """"supervisor" or "probe": what noticed."""
    detail: str
    worker: str | None = None
    endpoint: str | None = None


@message
class Ping:
    """Are you there? A file server answers True; the coordinator and reducers ask before they rely on one."""


@message
class ReadChunk:
    """Ask a file server for up to ``size`` bytes of file ``name`` from ``offset``; b"" is the end."""

    name: str
    offset: int
    size: int


@message
class Release:
    """Let a coordinator started with ``hold_reduces`` hand out reduces (a test's hook)."""


@message
class Status:
    """Ask for the job's ``JobStatus``. With ``newer_than`` set to the ``version`` of the last one seen,
    the answer waits until the job changes or the coordinator's next tick (``JobConfig.tick``), so a caller that
    follows a job waits on its events instead of polling."""

    newer_than: int = -1


@message
class Tick:
    pass


@message
class Probe:
    """Ping the file servers at ``endpoints`` (the coordinator's prober does it off the coordinator's thread)."""

    endpoints: tuple[str, ...]
    timeout: float


@message
class JobStatus:
    phase: str  # "map", "reduce", "done", "failed"
    maps_done: int
    maps_total: int
    reduces_done: int
    reduces_total: int
    workers_seen: int
    reassigned: int
    backups: int
    error: str | None
    reexecuted: int = 0
    """Completed maps run again because the worker holding their output was gone."""
    held: bool = False
    """Every map is done and reduces wait for ``Release``."""
    map_locations: tuple[str | None, ...] = ()
    counters: dict[str, int] = field(default_factory=dict)
    worker_peak_rss: dict[str, int] = field(default_factory=dict)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    version: int = 0
    """Counts the coordinator's changes (tasks done or failed, workers lost or joined); see ``Status``."""
