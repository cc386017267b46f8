"""Client processes that drive any of the benchmarked key/value systems the same way.

A ``DriverPool`` starts its worker processes once; every system in a run is
then driven by those same processes, so client-side costs (the interpreter,
the scheduler, the machine's noise) are shared alike. A measurement spreads
``clients`` synchronous request loops over the workers (one thread per
client inside a worker), warms each client up, releases all of them at
once, and collects one latency per completed request.

A client is anything with ``put(key, value)`` and ``get(key)``; ``Target``
names which kind a worker should build and where it should point it.
"""

from __future__ import annotations

import array
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.percentiles import p50_p99

_READY_WAIT = 60.0
_DONE_WAIT = 60.0


@dataclass(frozen=True, slots=True)
class Target:
    """One system to drive: ``kind`` is ``zactor``, ``shardkv``, ``kvraft-groups``, ``etcd`` or ``pysyncobj``.

    ``endpoints`` are the servers; ``pin`` is the index of the one etcd and
    PySyncObj clients talk to (a zactor clerk is given them all and finds the
    leader itself). ``name`` keys the clients a worker keeps between runs.
    """

    name: str
    kind: str
    endpoints: tuple[Any, ...]
    pin: int = 0


@dataclass(frozen=True, slots=True)
class Job:
    target: Target
    op: str
    value_bytes: int
    threads: int
    warmup: float
    seconds: float


@dataclass(frozen=True, slots=True)
class Appends:
    target: Target
    count: int
    key: str


def connect(target: Target) -> Any:
    """A fresh client for ``target``; imports each system's client only when it is used."""
    if target.kind == "zactor":
        from apps.kvraft import Clerk

        return Clerk(list(target.endpoints), give_up_after=30.0)
    if target.kind == "shardkv":
        from benchmarks.shardkv_client import SpreadClerk

        return SpreadClerk(list(target.endpoints))
    if target.kind == "kvraft-groups":  # endpoints: one tuple of servers per lab-4 group
        from benchmarks.shardkv_client import StaticGroupsClerk

        return StaticGroupsClerk(target.endpoints)
    if target.kind == "etcd":
        from apps.etcd.cluster import EtcdClient

        return EtcdClient(*target.endpoints[target.pin])
    if target.kind == "pysyncobj":
        from benchmarks.pysyncobj_kv import PySyncObjClient

        return PySyncObjClient(*target.endpoints[target.pin])
    raise ValueError(f"unknown system kind {target.kind!r}")


def _run_job(conn: Any, wid: int, job: Job, clients: dict[tuple, Any]) -> None:
    n = job.threads
    warmed = threading.Barrier(n + 1)
    go = threading.Event()
    deadline = [0.0]
    latencies: list[array.array | None] = [None] * n
    errors: list[str] = []

    def body(t: int) -> None:
        call = None
        try:
            cache_key = (job.target, t)
            if cache_key not in clients:
                clients[cache_key] = connect(job.target)
            client = clients[cache_key]
            key, value = f"bench-{wid}-{t}", "v" * job.value_bytes
            if job.op == "put":
                call = lambda: client.put(key, value)  # noqa: E731
            elif job.op == "get":
                client.put(key, value)
                call = lambda: client.get(key)  # noqa: E731
            else:
                raise ValueError(f"unknown op {job.op!r}")
            until = time.perf_counter() + job.warmup
            while time.perf_counter() < until:
                call()
        except Exception as exc:
            errors.append(f"client {wid}.{t} ({job.target.name}) warming up: {type(exc).__name__}: {exc}")
            call = None
        finally:
            warmed.wait()
        go.wait()
        if call is None:
            return
        lat = array.array("d")
        try:
            while (t0 := time.perf_counter()) < deadline[0]:
                call()
                lat.append(time.perf_counter() - t0)
        except Exception as exc:
            errors.append(f"client {wid}.{t} ({job.target.name}): {type(exc).__name__}: {exc}")
        latencies[t] = lat

    threads = [threading.Thread(target=body, args=(t,), daemon=True, name=f"kvclient-{t}") for t in range(n)]
    for th in threads:
        th.start()
    try:
        warmed.wait(timeout=_READY_WAIT + job.warmup)
    except threading.BrokenBarrierError:
        errors.append(f"worker {wid}: clients of {job.target.name} not warmed up within {_READY_WAIT + job.warmup} s")
    conn.send(("ready", list(errors)))
    if conn.recv() != "go":
        deadline[0] = 0.0
        go.set()
        return
    job_clients = [clients[(job.target, t)] for t in range(n) if (job.target, t) in clients]
    retries_before = sum(getattr(c, "retries", 0) for c in job_clients)
    cpu_before = time.process_time()  # every thread of this process: clients, and the client library's own
    deadline[0] = time.perf_counter() + job.seconds
    go.set()
    join_by = time.monotonic() + job.seconds + _DONE_WAIT
    for th in threads:
        th.join(timeout=max(0.0, join_by - time.monotonic()))
    cpu = time.process_time() - cpu_before
    retries = sum(getattr(c, "retries", 0) for c in job_clients) - retries_before
    if any(th.is_alive() for th in threads):
        errors.append(f"worker {wid}: a {job.target.name} request did not return within {_DONE_WAIT} s")
    joined = array.array("d")
    for lat in latencies:
        if lat is not None:
            joined.extend(lat)
    conn.send(("done", joined.tobytes(), errors, cpu, retries))


def _run_appends(conn: Any, job: Appends, clients: dict[tuple, Any]) -> None:
    try:
        cache_key = (job.target, "appends")
        if cache_key not in clients:
            clients[cache_key] = connect(job.target)
        clerk = clients[cache_key]
        clerk.put(job.key, "")
        started = time.perf_counter()
        for _ in range(job.count):
            clerk.append(job.key, "x")
        elapsed = time.perf_counter() - started
        length = len(clerk.get(job.key))
        if length != job.count:
            raise RuntimeError(f"{job.count} appends of one byte left a value of {length} bytes")
        conn.send(("done", elapsed, []))
    except Exception as exc:
        conn.send(("done", 0.0, [f"appends to {job.target.name}: {type(exc).__name__}: {exc}"]))


def _worker(conn: Any, wid: int) -> None:
    """Child-process target: runs the jobs the pool sends until it sends None."""
    clients: dict[tuple, Any] = {}
    try:
        while (job := conn.recv()) is not None:
            if isinstance(job, Job):
                _run_job(conn, wid, job, clients)
            elif isinstance(job, Appends):
                _run_appends(conn, job, clients)
    finally:
        for client in clients.values():
            close = getattr(client, "close", None)
            if close is not None:
                close()


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU time used so far by every thread of ``pids``, in seconds (nanosecond counters, not clock ticks)."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # gone: it has nothing more to count
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # the thread ended meanwhile
    return total / 1e9


@dataclass(slots=True)
class Batch:
    """What one measured batch (or several, merged with ``+=``) produced."""

    latencies: array.array = field(default_factory=lambda: array.array("d"))
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    retries: int = 0
    """Requests the etcd and PySyncObj clients had to repeat (a leader change); zactor's clerk retries unseen."""

    def __iadd__(self, other: Batch) -> Batch:
        self.latencies.extend(other.latencies)
        self.retries += other.retries
        self.server_cpu += other.server_cpu
        self.client_cpu += other.client_cpu
        return self

    def summary(self, seconds: float) -> dict[str, Any]:
        """Requests per second over ``seconds`` of measuring, p50 and p99 latency in ms, CPU per request in µs."""
        n = len(self.latencies)
        if not n:
            return {"ops": 0, "ops_per_s": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"),
                    "server_cpu_us_per_op": float("nan"), "client_cpu_us_per_op": float("nan"), "retries": self.retries}
        p50, p99 = p50_p99(list(self.latencies))
        return {
            "ops": n,
            "ops_per_s": round(n / seconds, 1),
            "p50_ms": round(p50 * 1e3, 3),
            "p99_ms": round(p99 * 1e3, 3),
            "server_cpu_us_per_op": round(self.server_cpu / n * 1e6, 1),
            "client_cpu_us_per_op": round(self.client_cpu / n * 1e6, 1),
            "retries": self.retries,
        }


class DriverError(RuntimeError):
    """A client failed or stalled during a measurement."""


class DriverPool:
    """Context manager: ``procs`` client processes, reused for every measurement of every system."""

    def __init__(self, procs: int = 4) -> None:
        if procs < 1:
            raise ValueError(f"need at least one client process, got {procs}")
        self.procs = procs
        self._conns: list[Any] = []
        self._workers: list[Any] = []

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def __enter__(self) -> DriverPool:
        ctx = multiprocessing.get_context("forkserver")
        try:
            for wid in range(self.procs):
                ours, theirs = ctx.Pipe()
                worker = ctx.Process(target=_worker, args=(theirs, wid), name=f"kvdriver-{wid}", daemon=True)
                worker.start()
                theirs.close()
                self._conns.append(ours)
                self._workers.append(worker)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _recv(self, i: int, timeout: float) -> Any:
        if not self._conns[i].poll(timeout):
            raise DriverError(f"client process {i} did not answer within {timeout:.0f} s")
        return self._conns[i].recv()

    def measure(
        self, target: Target, op: str, value_bytes: int, clients: int, warmup: float, seconds: float, server_pids: Sequence[int] = ()
    ) -> Batch:
        """``clients`` request loops against ``target`` for ``seconds``: every request's latency, and the CPU spent.

        CPU is counted over the measured time only (not the warm-up): in the
        client processes, and in ``server_pids`` (all their threads).
        """
        used = min(clients, self.procs)
        shares = [clients // used + (1 if i < clients % used else 0) for i in range(used)]
        for i, share in enumerate(shares):
            self._conns[i].send(Job(target, op, value_bytes, share, warmup, seconds))
        errors: list[str] = []
        for i in range(used):
            _kind, errs = self._recv(i, _READY_WAIT + warmup + 5)
            errors += errs
        verdict = "abort" if errors else "go"
        server_cpu = -cpu_seconds(server_pids)
        for i in range(used):
            self._conns[i].send(verdict)
        if errors:
            raise DriverError("; ".join(errors[:3]))
        batch = Batch()
        for i in range(used):
            _kind, data, errs, cpu, retries = self._recv(i, seconds + _DONE_WAIT + 5)
            batch.latencies.frombytes(data)
            batch.client_cpu += cpu
            batch.retries += retries
            errors += errs
        batch.server_cpu = server_cpu + cpu_seconds(server_pids)
        if errors:
            raise DriverError("; ".join(errors[:3]))
        return batch

    def appends(self, target: Target, count: int, key: str) -> float:
        """Average milliseconds of ``count`` sequential one-byte appends by one clerk (checked afterwards)."""
        self._conns[0].send(Appends(target, count, key))
        _kind, elapsed, errors = self._recv(0, count * 1.0 + _DONE_WAIT)
        if errors:
            raise DriverError("; ".join(errors))
        return elapsed / count * 1e3

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(None)
            except OSError:
                pass
        for w in self._workers:
            w.join(timeout=5)
            if w.is_alive():
                w.kill()
                w.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._conns, self._workers = [], []
