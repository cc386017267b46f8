"""What the MapReduce coordinator and its workers say to each other."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestTask:
    worker: str


@dataclass(frozen=True, slots=True)
class MapTask:
    id: int
    filename: str
    n_reduce: int
    workdir: str
    attempt: int


@dataclass(frozen=True, slots=True)
class ReduceTask:
    id: int
    n_map: int
    workdir: str
    outdir: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to hand out now (every task is running); ask again after ``seconds``."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Exit:
    """The job is over (done or failed): the worker should stop."""

    reason: str


@dataclass(frozen=True, slots=True)
class TaskDone:
    worker: str
    kind: str  # "map" or "reduce"
    id: int
    attempt: int


@dataclass(frozen=True, slots=True)
class TaskFailed:
    worker: str
    kind: str
    id: int
    attempt: int
    error: str
    """The user's traceback, as text."""


@dataclass(frozen=True, slots=True)
class Status:
    pass


@dataclass(frozen=True, slots=True)
class Tick:
    pass


@dataclass(frozen=True, slots=True)
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
