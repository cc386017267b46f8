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

from apps.linearizability import Recorder

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
    recorder: Recorder = field(default_factory=Recorder)
    in_flight: int = 0
    closed_at: float | None = None

    def keys(self, workload: str) -> list[str]:
        return [f"w{self.number}:{workload[0]}{k}" for k in range(HOT_KEYS)]


@dataclass(frozen=True, slots=True)
class Sample:
    """One finished call, for the throughput and latency charts."""

    at: float
    """Seconds from the start of the run, when the call returned or gave up."""
    latency: float
    ok: bool
    op: str


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
        self.samples: list[Sample] = []
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
            finally:
                end = time.monotonic()
                with self._lock:
                    w.in_flight -= 1
                    self.samples.append(Sample(end - self.started, end - began, ok, op))

    # ---- reading -----------------------------------------------------------------------------

    def ops(self) -> int:
        """Calls answered so far."""
        with self._lock:
            return len(self.samples) - self.errors

    def finished_windows(self, grace: float) -> list[Window]:
        """Closed windows with no call still out (or closed more than ``grace`` seconds ago)."""
        now = self.elapsed()
        with self._lock:
            return [w for w in self.windows if w.closed_at is not None and (w.in_flight == 0 or now - w.closed_at > grace)]
