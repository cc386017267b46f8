"""Workload clients: threads that call a KV service and record every call as a history.

Two workloads run side by side, as in Jepsen and etcd's robustness suite:

- **register**: Get and Put on a few hot keys, every Put's value unique;
- **list-append**: Append of a unique token (``c3.17 ``) to a few hot keys,
  with a Get now and then; the final read of every key then shows which
  acknowledged appends were lost, duplicated or reordered.

Keys are named for the *window* they are used in (``w4:l1``): every
``window`` seconds the clients move to fresh keys. A window's history is then
complete soon after it closes (its slowest call has given up), and its keys
are never touched again, so it can be checked on its own while the run goes
on: a ten-hour run never needs a ten-hour check at the end.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from apps.linearizability import Operation, Recorder

log = logging.getLogger(__name__)

HOT_KEYS = 3
"""Keys per workload per window: few, so that clients contend on them."""


class KVClient(Protocol):
    """What a workload needs of a system's client; a call that gives up raises."""

    def get(self, key: str) -> str: ...

    def put(self, key: str, value: str) -> None: ...

    def append(self, key: str, value: str) -> Any: ...


@dataclass
class Window:
    """One window of the run: its keys, its history, how many of its calls are still out."""

    number: int
    started: float
    recorder: Recorder | None = field(default_factory=Recorder)
    in_flight: int = 0
    closed_at: float | None = None
    appends: dict[str, list[tuple[str, int, int | None]]] | None = None
    """After :meth:`compact`: per list-append key, (value, call, return) of each append; all the final read needs."""

    def keys(self, workload: str) -> list[str]:
        return [f"w{self.number}:{workload[0]}{k}" for k in range(HOT_KEYS)]

    def history(self) -> list[Operation]:
        """The window's history (only its appends once compacted)."""
        if self.recorder is not None:
            return self.recorder.history()
        return [
            Operation(0, {"op": "append", "key": key, "value": value}, call, None, ret)
            for key, rows in (self.appends or {}).items()
            for value, call, ret in rows
        ]

    def compact(self) -> None:
        """Drop everything but the appends, once the window is checked: a ten-hour run must not keep every call."""
        if self.recorder is None:
            return
        appends: dict[str, list[tuple[str, int, int | None]]] = {}
        for op in self.recorder.history():
            if op.input["op"] == "append":
                appends.setdefault(op.input["key"], []).append((op.input["value"], op.call, op.ret))
        self.appends, self.recorder = appends, None


@dataclass(frozen=True, slots=True)
class Sample:
    """One finished call, for the throughput and latency charts."""

    at: float
    """Seconds from the start of the run, when the call returned or gave up."""
    latency: float
    ok: bool
    op: str


class PerSecond:
    """Answered and failed calls, p50 and p99 latency, for each second of the run, in bounded memory.

    Latencies are kept only for the last few seconds; a second older than
    that is reduced to its four numbers (a late call still counts).
    """

    _OPEN = 5

    def __init__(self) -> None:
        self.answered = 0
        self.failed = 0
        self._open: dict[int, tuple[list[int], list[float]]] = {}
        self._closed: dict[int, list[Any]] = {}
        self._newest = 0
        self._lock = threading.Lock()

    def add(self, sample: Sample) -> None:
        b = int(sample.at)
        with self._lock:
            if sample.ok:
                self.answered += 1
            else:
                self.failed += 1
            if b in self._closed:
                self._closed[b][0 if sample.ok else 1] += 1
                return
            counts, latencies = self._open.setdefault(b, ([0, 0], []))
            counts[0 if sample.ok else 1] += 1
            if sample.ok:
                latencies.append(sample.latency * 1000.0)
            if b > self._newest:
                self._newest = b
                for old in [k for k in self._open if k < b - self._OPEN]:
                    self._close(old)

    def _close(self, b: int) -> None:
        counts, latencies = self._open.pop(b)
        latencies.sort()
        p50 = latencies[len(latencies) // 2] if latencies else None
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else None
        self._closed[b] = [counts[0], counts[1], p50, p99]

    def series(self, seconds: float) -> dict[str, list[Any]]:
        with self._lock:
            for b in list(self._open):
                self._close(b)
            n = max(int(seconds) + 1, max(self._closed, default=0) + 1)
            rows = [self._closed.get(b, [0, 0, None, None]) for b in range(n)]
        return {"t": list(range(n)), "ok": [r[0] for r in rows], "failed": [r[1] for r in rows],
                "p50": [r[2] for r in rows], "p99": [r[3] for r in rows]}


class Workload:
    """Runs ``clients`` client threads until :meth:`stop`; half register, half list-append."""

    def __init__(self, make_client: Callable[[int], KVClient], clients: int, window: float, seed: int) -> None:
        if clients < 1:
            raise ValueError(f"a workload needs at least one client, got {clients}")
        self.make_client = make_client
        self.clients = clients
        self.window_seconds = window
        self.seed = seed
        self.started = time.monotonic()
        self.windows: list[Window] = [Window(0, 0.0)]
        self.samples = PerSecond()
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- running -----------------------------------------------------------------------------

    def start(self) -> None:
        self.started = time.monotonic()
        for c in range(self.clients):
            kind = "register" if c % 2 == 0 else "list-append"
            t = threading.Thread(target=self._client, args=(c, kind), name=f"soak-client-{c}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every client after its current call and close the last window."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if self.windows[-1].closed_at is None:
                self.windows[-1].closed_at = self.elapsed()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def current_window(self) -> Window:
        """The window calls start in now; opens the next one when its time has come."""
        with self._lock:
            w = self.windows[-1]
            if self.elapsed() >= w.started + self.window_seconds and not self._stop.is_set():
                w.closed_at = self.elapsed()
                w = Window(w.number + 1, w.closed_at)
                self.windows.append(w)
            return w

    def _client(self, c: int, kind: str) -> None:
        rng = random.Random(f"{self.seed}-client-{c}")
        try:
            client = self.make_client(c)
        except Exception:
            log.exception("soak client %d could not start", c)
            return
        n = 0
        session = 0
        while not self._stop.is_set():
            n += 1
            w = self.current_window()
            if w.number != session:
                # A new client session each window (a fresh client id), as client
                # processes come and go: the servers' duplicate tables then hold
                # retired clients too, which every replica must agree on.
                session = w.number
                try:
                    client = self.make_client(c)
                except Exception:
                    log.exception("soak client %d could not start a new session", c)
                    return
            key = rng.choice(w.keys(kind))
            if kind == "register":
                op = "get" if rng.random() < 0.5 else "put"
            else:
                op = "get" if rng.random() < 0.2 else "append"
            value = f"c{c}.{n} " if kind == "list-append" else f"c{c}.{n}"
            with self._lock:
                w.in_flight += 1
            began = time.monotonic()
            ok = False
            try:
                assert w.recorder is not None  # a window is compacted only after its last call
                with w.recorder.op(c, {"op": op, "key": key, "value": value if op != "get" else ""}) as rec:
                    if op == "get":
                        rec.output = client.get(key)
                    elif op == "put":
                        client.put(key, value)
                        rec.output = None
                    else:
                        rec.output = client.append(key, value)
                ok = True
            except Exception as exc:  # the call gave up: recorded as never answered
                with self._lock:
                    self.errors += 1
                    name = type(exc).__name__
                    self.error_kinds[name] = self.error_kinds.get(name, 0) + 1
                self._stop.wait(0.1)  # a client that just failed backs off a moment rather than spin
            finally:
                end = time.monotonic()
                with self._lock:
                    w.in_flight -= 1
                self.samples.add(Sample(end - self.started, end - began, ok, op))

    # ---- reading -----------------------------------------------------------------------------

    def ops(self) -> int:
        """Calls answered so far."""
        return self.samples.answered

    def finished_windows(self, grace: float) -> list[Window]:
        """Closed windows with no call still out (or closed more than ``grace`` seconds ago)."""
        now = self.elapsed()
        with self._lock:
            return [w for w in self.windows if w.closed_at is not None and (w.in_flight == 0 or now - w.closed_at > grace)]
