"""A supervisor: starts child processes that host actors and restarts them when they die.

Usage summary::

    with Supervisor(max_restarts=5, within=10.0) as sup:
        sup.start_child(ChildSpec("counter", serve_counter, (endpoint, state_path)))
        sup.kill("counter")                       # SIGKILL, as a test or an operator would
        sup.wait_for(lambda: sup.restarts("counter") >= 1, timeout=5)

Children are forked from a preloaded fork server (the runtime and its
dependencies already imported), so a restart costs a fork, not an interpreter
start. A monitor thread waits on every child's sentinel; a death for any
reason (exit, exception, kill -9) is seen at once. A restart waits a back-off
that grows with the number of recent restarts (the first one is immediate);
more than ``max_restarts`` deaths within ``within`` seconds and the
supervisor gives up on that child and reports it (status ``"failed"``, an
event, and the ``on_give_up`` callback), as Erlang and Akka do, instead of
restarting a crash loop forever.

Restart kinds, per child: ``permanent`` (always restarted), ``transient``
(restarted only after an abnormal exit: non-zero code or a signal),
``temporary`` (never restarted). A child of any kind that exits with
:data:`EXIT_DONE` has finished for good (a Raft server removed from its
cluster) and is not restarted either. A ``ChildSpec`` may carry its own restart
intensity; ``add_listener`` hears every event as it is recorded (what
``spawn_process`` uses to fail asks in flight when a child dies).

Children inherit the parent's keyring with no code of theirs: the keyring
this process resolved (``ActorSystem(keys=DIR)``, ``$ZACTOR_KEYS`` or the
user's default; or ``Supervisor(keys=DIR)``) is put in each child's
environment as ``ZACTOR_KEYS`` before its target runs, and so is
``ZACTOR_INSECURE`` when the parent's environment (``--insecure``) or
``Supervisor(secure=False)`` turns security off. (The fork server
keeps the environment it started with, so setting it in the parent would
not be enough.)

Children are killed if the supervisor's process dies: each asks the kernel
for SIGKILL when its parent (the fork server, which exits with the
supervisor's process) goes away.
"""

from __future__ import annotations

import ctypes
import enum
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from actors.logs import configure_from_env
from transport.keys import INSECURE_ENV, KEYS_ENV, env_insecure, process_keyring_dir

log = logging.getLogger(__name__)

RestartKind = Literal["permanent", "transient", "temporary"]


EXIT_UNGUARDED_MAIN = 78
"""A child's exit code when it found the user's script starting actors while the child imported it."""

EXIT_DONE = 79
"""A child's exit code when its work is over for good, whatever its restart kind: a Raft server removed from its
cluster can never take part again (its number is never given twice), so starting it again would only start a
process that finds out and stops once more."""


def not_restarted(restart: RestartKind, exitcode: int | None) -> bool:
    """Whether a child of this restart kind that exited with ``exitcode`` stays down (the supervisor's rule).

    A child that died of an unguarded script would die the same way every time; one that exited with
    :data:`EXIT_DONE` said it is finished.
    """
    return restart == "temporary" or (restart == "transient" and exitcode == 0) or exitcode in (EXIT_UNGUARDED_MAIN, EXIT_DONE)


def refuse_unguarded_main() -> None:
    """End this process at once if it is a child re-running the parent's script to import it.

    Why: a child started by the fork server imports the parent's ``__main__``
    to find the classes it runs; a script with no ``if __name__ == "__main__":``
    guard then starts an actor system (and spawns) inside the child, and
    multiprocessing answers with a long traceback while the parent restarts
    the child forever. One line here and a dedicated exit code let the parent
    stop restarting and say what to change.
    """
    if not getattr(multiprocessing.current_process(), "_inheriting", False):
        return
    script = getattr(sys.modules.get("__mp_main__"), "__file__", None) or "the main script"
    print(f"zactor: {script} starts an actor system when it is imported; child processes import it to find "
          f"your classes. Put the code that starts actors under `if __name__ == \"__main__\":`.",
          file=sys.stderr, flush=True)
    os._exit(EXIT_UNGUARDED_MAIN)

PRELOAD = ("zmq", "pykka", "cloudpickle", "transport", "actors", "actors.system", "actors.supervisor", "actors.testing")


@dataclass(frozen=True)
class ChildSpec:
    """What to run in a child: a module-level function (picklable by reference) and its arguments."""

    name: str
    target: Callable[..., Any]
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    restart: RestartKind = "permanent"
    max_restarts: int | None = None
    """This child's own restart intensity (deaths within ``within`` s); None: the supervisor's."""
    within: float | None = None

    def __post_init__(self) -> None:
        if self.restart not in ("permanent", "transient", "temporary"):
            raise ValueError(f"restart must be permanent, transient or temporary, not {self.restart!r}")
        if (self.max_restarts is not None and self.max_restarts < 0) or (self.within is not None and self.within <= 0):
            raise ValueError(f"need max_restarts >= 0 and within > 0, got {self.max_restarts} and {self.within}")


class ChildStatus(enum.StrEnum):
    """Where a child is in its life (a StrEnum: equal to the plain strings callers compare with)."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    FAILED = "failed"
    """Died too often within the restart window: the supervisor gave up on it."""
    EXITED = "exited"
    """Ended and not restarted: a transient child's exit code 0, :data:`EXIT_DONE`, or any end of a temporary one."""
    STOPPED = "stopped"


class EventKind(enum.StrEnum):
    """What a :class:`SupervisorEvent` records."""

    STARTED = "started"
    EXITED = "exited"
    GAVE_UP = "gave_up"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class SupervisorEvent:
    time: float
    child: str
    kind: EventKind
    pid: int | None = None
    exitcode: int | None = None


@dataclass
class _Child:
    spec: ChildSpec
    process: Any = None
    status: ChildStatus = ChildStatus.STARTING
    restarts: int = 0
    deaths: deque = field(default_factory=deque)
    restart_at: float | None = None


def _let_go_of_the_fork_server() -> None:
    """Close this child's copy of the fork server's "alive" pipe (write end).

    multiprocessing hands every child of its fork server the write end of the
    pipe whose closing tells the fork server that its parent is gone, and the
    fork server exits only when every copy is closed. Kept open in our
    children, it kept the fork server alive after the supervisor's process
    was killed, and so the children too (their PDEATHSIG waits for the fork
    server to die): orphans that went on serving (seen after a SIGTERM to a
    test run; tests/test_supervisor.py has the case). A child that starts
    processes of its own gets a fork server of its own (multiprocessing
    starts one when it has none), so the copy is never needed here.
    """
    try:
        from multiprocessing import forkserver  # not at the top: the module is absent where fork servers are
    except ImportError:  # pragma: no cover - platforms without fork servers
        return
    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if server is None or fd is None:
        return
    try:
        os.close(fd)
    except OSError:
        pass
    server._forkserver_alive_fd = None


def _child_main(target: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any], env: Mapping[str, str | None] = {}) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the fork server
        except (OSError, AttributeError):
            pass
    _let_go_of_the_fork_server()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    configure_from_env()  # the parent's --log-format and level: the fork server did not inherit them
    target(*args, **dict(kwargs))


class Supervisor:
    """Starts, watches and restarts child processes; see the module docstring."""

    def __init__(
        self,
        *,
        max_restarts: int = 5,
        within: float = 10.0,
        backoff_step: float = 0.05,
        backoff_max: float = 2.0,
        preload: Iterable[str] = (),
        on_give_up: Callable[[str], None] | None = None,
        keys: str | os.PathLike[str] | None = None,
        secure: bool | None = None,
    ) -> None:
        """``keys``: the keyring children use (default: the one this process uses; see the module
        docstring); ``secure=False`` starts them without security (default: as ``$ZACTOR_INSECURE`` says)."""
        if max_restarts < 0 or within <= 0 or backoff_step < 0 or backoff_max < 0:
            raise ValueError("need max_restarts >= 0, within > 0 and non-negative back-off times")
        self.max_restarts = max_restarts
        self.within = within
        self.backoff_step = backoff_step
        self.backoff_max = backoff_max
        self._on_give_up = on_give_up
        self._keys = keys
        self._secure = secure
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload([*PRELOAD, *preload])
        self._children: dict[str, _Child] = {}
        self.events: list[SupervisorEvent] = []
        self._listeners: list[Callable[[SupervisorEvent], None]] = []
        self._cond = threading.Condition()
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._stopping = False
        self._monitor = threading.Thread(target=self._watch, name="zactor-supervisor", daemon=True)
        self._monitor.start()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the public face ----------------------------------------------------

    def start_child(self, spec: ChildSpec) -> int:
        """Start ``spec`` now; returns its pid."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("the supervisor is stopping")
            if spec.name in self._children and self._children[spec.name].status not in (ChildStatus.EXITED, ChildStatus.STOPPED, ChildStatus.FAILED):
                raise ValueError(f"a child named {spec.name!r} is already supervised")
            child = _Child(spec)
            self._children[spec.name] = child
            self._spawn(child)
            pid = child.process.pid
        self._poke()
        return pid

    def add_listener(self, listener: Callable[[SupervisorEvent], None]) -> None:
        """Call ``listener(event)`` at every event, on the thread that records it, with the
        supervisor's lock held: keep it short and never call back into the supervisor."""
        with self._cond:
            self._listeners.append(listener)

    def uptime(self, name: str) -> float | None:
        """Seconds since the child's current process started (None if it is not running)."""
        with self._cond:
            child = self._children[name]
            if child.status != "running":
                return None
            started = [e.time for e in self.events if e.child == name and e.kind == "started"]
            return time.monotonic() - started[-1] if started else None

    def stop_child(self, name: str, grace: float = 3.0) -> None:
        """Stop one child for good (SIGTERM, then SIGKILL after ``grace``)."""
        with self._cond:
            child = self._children[name]
            child.status = ChildStatus.STOPPED
            child.restart_at = None
            proc = child.process
        self._terminate([proc], grace)
        self._record(name, EventKind.STOPPED, proc.pid if proc else None, proc.exitcode if proc else None)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to the child's current process (default kill -9); returns its pid."""
        with self._cond:
            proc = self._children[name].process
        if proc is None or proc.pid is None:
            raise RuntimeError(f"child {name!r} has no running process")
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        return proc.pid

    def pid(self, name: str) -> int | None:
        with self._cond:
            child = self._children.get(name)
            if child is None or child.status != ChildStatus.RUNNING:
                return None
            return child.process.pid

    def exit_code(self, name: str) -> int | None:
        """The exit code of the child's last process to end (a negative signal number if killed), None if none has."""
        with self._cond:
            codes = [e.exitcode for e in self.events if e.child == name and e.kind == EventKind.EXITED]
        return codes[-1] if codes else None

    def restarts(self, name: str) -> int:
        with self._cond:
            return self._children[name].restarts

    def status(self, name: str) -> ChildStatus:
        with self._cond:
            return self._children[name].status

    def children(self) -> list[str]:
        with self._cond:
            return list(self._children)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds, re-checked at every supervisor event."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def stop(self, grace: float = 3.0) -> None:
        """Stop every child and the monitor; idempotent."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            procs = [c.process for c in self._children.values() if c.process is not None]
            for child in self._children.values():
                child.restart_at = None
                if child.status in (ChildStatus.RUNNING, ChildStatus.RESTARTING, ChildStatus.STARTING):
                    child.status = ChildStatus.STOPPED
        self._poke()
        self._terminate(procs, grace)
        self._monitor.join(timeout=5.0)
        self._wake_r.close()
        self._wake_w.close()

    # ---- internals -----------------------------------------------------------

    def _spawn(self, child: _Child) -> None:
        spec = child.spec
        proc = self._ctx.Process(target=_child_main, args=(spec.target, spec.args, spec.kwargs, self._child_env()), name=f"zactor:{spec.name}", daemon=True)
        proc.start()
        child.process = proc
        child.status = ChildStatus.RUNNING
        child.restart_at = None
        self._record_locked(spec.name, EventKind.STARTED, proc.pid, None)

    def _child_env(self) -> dict[str, str | None]:
        """What a child's environment must say about security (resolved now, at each start)."""
        keys = Path(self._keys) if self._keys is not None else process_keyring_dir()
        return {
            KEYS_ENV: str(keys.absolute()) if keys is not None else os.environ.get(KEYS_ENV),
            INSECURE_ENV: "1" if self._secure is False or (self._secure is None and env_insecure()) else None,
        }

    def _poke(self) -> None:
        try:
            self._wake_w.send_bytes(b"x")
        except (OSError, ValueError):
            pass

    def _record(self, name: str, kind: EventKind, pid: int | None, exitcode: int | None) -> None:
        with self._cond:
            self._record_locked(name, kind, pid, exitcode)

    def _record_locked(self, name: str, kind: EventKind, pid: int | None, exitcode: int | None) -> None:
        event = SupervisorEvent(time.monotonic(), name, kind, pid, exitcode)
        self.events.append(event)
        self._cond.notify_all()
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("supervisor listener failed on %s", event)

    def _terminate(self, procs: list[Any], grace: float) -> None:
        for proc in procs:
            if proc is not None and proc.exitcode is None:
                try:
                    proc.terminate()
                except (OSError, AttributeError):
                    pass
        deadline = time.monotonic() + grace
        for proc in procs:
            if proc is None:
                continue
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None:
                try:
                    proc.kill()
                except OSError:
                    pass
                proc.join(timeout=2.0)

    def _watch(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                sentinels = {c.process.sentinel: c for c in self._children.values() if c.status == ChildStatus.RUNNING}
                due = [c.restart_at for c in self._children.values() if c.restart_at is not None]
            timeout = max(0.0, min(due) - time.monotonic()) if due else None
            try:
                ready = multiprocessing.connection.wait([*sentinels, self._wake_r], timeout)
            except OSError:
                ready = []
            if self._wake_r in ready:
                try:
                    while self._wake_r.poll():
                        self._wake_r.recv_bytes()
                except (OSError, EOFError):
                    return
            for sentinel in ready:
                if sentinel in sentinels:
                    self._on_death(sentinels[sentinel])
            self._restart_due()

    def _on_death(self, child: _Child) -> None:
        proc = child.process
        proc.join(timeout=1.0)
        code = proc.exitcode
        name = child.spec.name
        with self._cond:
            if child.status != ChildStatus.RUNNING or self._stopping:
                return
            self._record_locked(name, EventKind.EXITED, proc.pid, code)
            if not_restarted(child.spec.restart, code):
                child.status = ChildStatus.EXITED
                return
            now = time.monotonic()
            child.deaths.append(now)
            within = child.spec.within if child.spec.within is not None else self.within
            limit = child.spec.max_restarts if child.spec.max_restarts is not None else self.max_restarts
            while child.deaths and child.deaths[0] < now - within:
                child.deaths.popleft()
            if len(child.deaths) > limit:
                child.status = ChildStatus.FAILED
                self._record_locked(name, EventKind.GAVE_UP, proc.pid, code)
                log.error(
                    "child %s died %d times within %.1f s (last exit code %s); giving up on it",
                    name, len(child.deaths), within, code,
                )
                callback = self._on_give_up
            else:
                recent = len(child.deaths)
                delay = 0.0 if recent <= 1 else min(self.backoff_max, self.backoff_step * 2 ** (recent - 2))
                child.status = ChildStatus.RESTARTING
                child.restart_at = now + delay
                log.warning("child %s (pid %s) exited with %s; restarting in %.3f s", name, proc.pid, code, delay)
                callback = None
        if callback is not None:
            try:
                callback(name)
            except Exception:
                log.exception("on_give_up callback failed for %s", name)

    def _restart_due(self) -> None:
        now = time.monotonic()
        with self._cond:
            for child in self._children.values():
                if child.restart_at is not None and child.restart_at <= now and not self._stopping:
                    child.restarts += 1
                    try:
                        self._spawn(child)
                    except Exception:
                        log.exception("could not restart child %s", child.spec.name)
                        child.restart_at = now + max(self.backoff_step, 0.1)
