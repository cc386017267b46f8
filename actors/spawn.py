"""Actors in supervised processes of their own: ``spawn_process``, here or on a node agent.

Usage summary::

    counter = system.spawn_process(PersistentCounter, "counter.state", name="counter",
                                   persist_dir="state/counter", max_restarts=3)
    counter.ask(Incr(1), timeout=5.0)          # the same ref answers across the process's restarts
    system.spawn_process(Counter, name="far", node="tcp://10.0.0.2:7070")   # on a node agent
    node_children(system, "tcp://10.0.0.2:7070")                            # what that agent hosts

``spawn_process`` puts the one child host (:func:`actors.host.host_one`)
under a ``Supervisor`` that this system owns (made on first use), at an
``ipc://`` endpoint in a private directory picked once: the endpoint, and so
a :class:`~actors.process_ref.ProcessRef`, stays valid across restarts. The
ref learns every death from the supervisor (or, on a node agent, from the
agent's ``ChildDied`` notice to this system's :class:`DeathWatcher`), so an
ask in flight when the process died fails at once with ``ProcessDied``
instead of waiting out its timeout; later asks reach the new incarnation.
When the supervisor gives up (more than ``max_restarts`` deaths within
``within`` seconds) every ask fails at once with ``RestartLimitReached``.

A process lives as long as the system that spawned it: local ones are its
supervisor's children, and those placed on node agents are stopped when the
system stops, unless spawned with ``detached=True`` (then ``zactor node
stop NAME`` or ``system.stop_process(NAME, node=...)`` ends them). Without
that, a script's second run would find its first run's actors still there.

The actor's class travels as a :class:`~actors.classref.ClassRef`. One
:class:`Spawner` per system holds all of this (``spawner_of(system)``, a
system extension); it is the system's process layer too, which
``system.spawn_process`` and ``system.lookup`` forward to.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.actor import Actor
from actors.address import Address, check_name
from actors.agent_protocol import AGENT_NAME, ChildDied, ChildInfo, ListChildren, Spawned, SpawnRequest, StopChild
from actors.classref import ClassRef
from actors.directory import find_on_nodes
from actors.errors import NoNodeAgent, NoSuchActor
from actors.explain import ask_or_explain
from actors.host import host_one
from actors.process_ref import ProcessRef, RestartLimitReached
from actors.supervisor import EXIT_UNGUARDED_MAIN, ChildSpec, RestartKind, Supervisor, SupervisorEvent, not_restarted
from actors.system import ActorSystem, factory_kwargs, plug_process_layer

WATCHER_NAME = "zactor.spawn-watch"
"""The actor in a system that spawned onto a node agent and hears of its children's deaths."""

_unnamed = itertools.count(1)
log = logging.getLogger(__name__)


@dataclass
class _Local:
    ref: ProcessRef
    limit: int
    within: float
    restart: RestartKind


class Spawner:
    """The supervisor and the refs of the processes one system spawned; see the module docstring."""

    def __init__(self, system: ActorSystem) -> None:
        self._system = system
        self._lock = threading.Lock()
        self._sup: Supervisor | None = None
        self._dir: str | None = None
        self._local: dict[str, _Local] = {}
        self._remote: dict[tuple[str, str], ProcessRef] = {}
        self._owned: set[tuple[str, str]] = set()  # (node, name) placed on agents, stopped with the system
        self._watcher = False
        self._count = 0

    # ---- the system's process layer (what its spawn_process and lookup forward to) ----------

    def spawn_process(self, factory: type, args: tuple, name: str | None, node: str | None, options: dict[str, Any]) -> ProcessRef:
        return spawn_process(self._system, factory, *args, name=name, node=node, **options)

    def stop_process(self, name: str, node: str | None, timeout: float) -> None:
        """Stop the process ``name`` for good: one this system spawned, or one the agent at ``node`` hosts."""
        if node is None:
            local = self.local_ref(name)
            if local is None:
                raise LookupError(f"{self._system} spawned no process named {name!r} (give node= for one on a node agent)")
            self.stop(local, timeout)
            return
        with self._lock:
            ref = self._remote.get((node, name))
        if ref is not None:
            self.stop(ref, timeout)
        else:
            stop_on_node(self._system, node, name, timeout)

    def lookup(self, name: str, timeout: float) -> ProcessRef:
        """A process this system spawned by that name, else one a known node hosts (``LookupError`` if none)."""
        local = self.local_ref(name)
        if local is not None:
            return local
        node, found = find_on_nodes(self._system, name, self.watcher(), timeout)
        return self.remember_remote(ProcessRef(self._system, Address(found.endpoint, name), self, node=node, via=found.via))

    # ---- local processes -----------------------------------------------------------

    def supervisor(self) -> Supervisor:
        with self._lock:
            if self._sup is None:
                self._dir = tempfile.mkdtemp(prefix="zactor-spawn-")  # mode 0700: only we may connect
                self._sup = Supervisor()
                self._sup.add_listener(self._on_event)
            return self._sup

    def spawn_local(
        self,
        actor_class: type,
        args: tuple,
        kwargs: dict,
        *,
        name: str,
        restart: RestartKind,
        max_restarts: int,
        within: float,
        persist_dir: str | os.PathLike[str] | None,
    ) -> ProcessRef:
        sup = self.supervisor()
        ref_class = ClassRef.of(actor_class)
        with self._lock:
            if name in self._local:
                raise ValueError(f"a process named {name!r} was already spawned by {self._system}")
            self._count += 1
            endpoint = f"ipc://{self._dir}/{self._count}.sock"
            ref = ProcessRef(self._system, Address(endpoint, name), self, via="import" if ref_class.path else "cloudpickle")
            self._local[name] = _Local(ref, max_restarts, within, restart)
        workdir = str(Path(persist_dir).absolute()) if persist_dir is not None else None
        spec = ChildSpec(name, host_one, (endpoint, name, ref_class, args, kwargs, workdir), restart=restart, max_restarts=max_restarts, within=within)
        try:
            sup.start_child(spec)
        except BaseException:
            with self._lock:
                self._local.pop(name, None)
            raise
        return ref

    def _on_event(self, event: SupervisorEvent) -> None:
        """Supervisor listener (its lock held): tell the ref of a death or of the end."""
        entry = self._local.get(event.child)
        if entry is None:
            return
        if event.kind == "exited":
            final = None
            if event.exitcode == EXIT_UNGUARDED_MAIN:
                final = RestartLimitReached(
                    f"{event.child!r} cannot start: the script that spawned it starts actors at import time, "
                    "and its child processes import it; put that code under `if __name__ == \"__main__\":`")
            elif not_restarted(entry.restart, event.exitcode):
                final = RestartLimitReached(f"{event.child!r} exited with {event.exitcode} and is not restarted (restart={entry.restart!r})")
            entry.ref._died(event.exitcode, final)
        elif event.kind == "gave_up":
            entry.ref._died(event.exitcode, RestartLimitReached(
                f"the supervisor gave up on {event.child!r}: its process died more than {entry.limit} times "
                f"within {entry.within:g} s (last exit code {event.exitcode}); it is not restarted"
            ))

    # ---- what a ProcessRef asks of its owner (process_ref.Owner) ------------------------

    def pid(self, ref: ProcessRef) -> int | None:
        if ref.node is not None:
            info = {c.name: c for c in node_children(self._system, ref.node)}.get(ref.name)
            return info.pid if info else None
        return self.supervisor().pid(ref.name)

    def restarts(self, ref: ProcessRef) -> int:
        if ref.node is not None:
            info = {c.name: c for c in node_children(self._system, ref.node)}.get(ref.name)
            return info.restarts if info else 0
        return self.supervisor().restarts(ref.name)

    def stop(self, ref: ProcessRef, timeout: float) -> None:
        final = RestartLimitReached(f"{ref.name!r} was stopped with stop()")
        if ref.node is not None:
            stop_on_node(self._system, ref.node, ref.name, timeout)
            with self._lock:
                self._owned.discard((ref.node, ref.name))
            ref._died(None, final)
            return
        with self._lock:
            entry = self._local.pop(ref.name, None)
        if entry is not None and self._sup is not None:
            self._sup.stop_child(ref.name, grace=timeout)
            entry.ref._died(None, final)

    def local_ref(self, name: str) -> ProcessRef | None:
        with self._lock:
            entry = self._local.get(name)
            return entry.ref if entry else None

    # ---- processes on node agents ------------------------------------------------------

    def watcher(self) -> str:
        """This system's address for node agents' death notices (its actor made on first use)."""
        with self._lock:
            if not self._watcher:
                self._system.spawn(DeathWatcher, self, name=WATCHER_NAME)
                self._watcher = True
        return str(Address(self._system.endpoint, WATCHER_NAME))

    def own(self, node: str, name: str) -> None:
        """Stop ``name`` on ``node`` when this system stops."""
        with self._lock:
            self._owned.add((node, name))

    def remember_remote(self, ref: ProcessRef) -> ProcessRef:
        assert ref.node is not None
        with self._lock:
            return self._remote.setdefault((ref.node, ref.name), ref)

    def remote_died(self, node: str, name: str, exitcode: int | None, gave_up: str | None) -> None:
        with self._lock:
            ref = self._remote.get((node, name))
        if ref is not None:
            ref._died(exitcode, RestartLimitReached(gave_up) if gave_up else None)

    # ---- the end -------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            owned, self._owned = sorted(self._owned), set()
        unreachable: set[str] = set()
        for node, name in owned:
            if node in unreachable:
                continue
            try:
                stop_on_node(self._system, node, name, timeout=2.0)
            except LookupError:
                pass  # stopped by someone else already
            except Exception as exc:  # the agent may be gone: then so is what it hosted
                unreachable.add(node)
                log.warning("could not stop %r on the node agent at %s: %s", name, node, exc)
        with self._lock:
            sup, self._sup = self._sup, None
            directory, self._dir = self._dir, None
        if sup is not None:
            sup.stop()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


class DeathWatcher(Actor):
    """In a system that spawned onto node agents: fails in-flight asks when an agent reports a death."""

    def __init__(self, spawner: Spawner) -> None:
        super().__init__()
        self.spawner = spawner

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ChildDied):
            self.spawner.remote_died(message.node, message.name, message.exitcode, message.gave_up)
            return None
        raise TypeError(f"the spawn watcher does not understand {type(message).__name__}")


def spawner_of(system: ActorSystem) -> Spawner:
    """The system's Spawner, made on first use and closed when the system stops."""
    return system.extension(Spawner)


plug_process_layer(Spawner)


def spawn_process(
    system: ActorSystem,
    actor_class: type,
    *args: Any,
    name: str | None = None,
    node: str | None = None,
    restart: RestartKind = "permanent",
    max_restarts: int = 5,
    within: float = 10.0,
    persist_dir: str | os.PathLike[str] | None = None,
    timeout: float = 10.0,
    detached: bool = False,
    kwargs: Mapping[str, Any] | None = None,
    **more: Any,
) -> ProcessRef:
    """What ``ActorSystem.spawn_process`` does; see the module docstring."""
    kwargs = factory_kwargs(kwargs, more)
    if detached and node is None:
        raise ValueError("detached=True needs node=: a process spawned here is a child of this system's supervisor")
    if max_restarts < 0 or within <= 0:
        raise ValueError(f"need max_restarts >= 0 and within > 0, got {max_restarts} and {within}")
    name = name or f"{getattr(actor_class, '__name__', 'actor')}-{next(_unnamed)}"
    check_name(name)
    if node is None:
        return spawner_of(system).spawn_local(
            actor_class, args, kwargs, name=name, restart=restart, max_restarts=max_restarts, within=within, persist_dir=persist_dir
        )
    return spawn_on_node(
        system, node, actor_class, args, kwargs, name=name, restart=restart, max_restarts=max_restarts,
        within=within, persist_dir=None if persist_dir is None else str(persist_dir), timeout=timeout, detached=detached,
    )


# ---- a node agent's client side ---------------------------------------------------------


def _agent(system: ActorSystem, node: str) -> Any:
    return system.ref(Address(node, AGENT_NAME))


def start_agent_hint(node: str) -> str:
    """The command that starts a node agent at ``node`` (run on that machine)."""
    return f"start a node agent there with `zactor node --endpoint {node} --dir DIR` (on the machine that owns that address)"


def ask_agent(system: ActorSystem, node: str, message: Any, timeout: float) -> Any:
    """Ask the agent at ``node``; a clear error at once when nothing (or no agent) can answer there.

    Unreachable (a ConnectionError) when a trial connection shows the node
    cannot answer (nothing listening, key refused...); NoNodeAgent when the
    node answers but hosts no agent (another service at that address).
    """
    try:
        return ask_or_explain(system, Address(node, AGENT_NAME), message, timeout, hint=start_agent_hint(node))
    except NoSuchActor as exc:
        raise NoNodeAgent(f"no node agent at {node}: the node there hosts {', '.join(map(repr, exc.hosted)) or 'nothing'} "
                          f"(another service?); {start_agent_hint(node)}") from None


def spawn_on_node(system: ActorSystem, node: str, actor_class: type, args: tuple, kwargs: dict, *, name: str, timeout: float,
                  detached: bool = False, **options: Any) -> ProcessRef:
    """Ask the agent at ``node`` to host the actor; the ref is watched for deaths."""
    spawner = spawner_of(system)
    req = SpawnRequest(name, ClassRef.of(actor_class, with_blob=True), tuple(args), dict(kwargs), watcher=spawner.watcher(), **options)
    done: Spawned = ask_agent(system, node, req, timeout)
    if not detached:
        spawner.own(node, name)
    system.join(node)
    return spawner.remember_remote(ProcessRef(system, Address(done.endpoint, name), spawner, node=node, via=done.via))


def node_children(system: ActorSystem, node: str, timeout: float = 5.0) -> list[ChildInfo]:
    """What the agent at ``node`` hosts."""
    return _agent(system, node).ask(ListChildren(), timeout=timeout)


def stop_on_node(system: ActorSystem, node: str, name: str, timeout: float = 5.0) -> None:
    _agent(system, node).ask(StopChild(name), timeout=timeout + 5.0)


def wait_for_node(system: ActorSystem, node: str, timeout: float = 10.0) -> None:
    """Block until the agent at ``node`` answers (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            node_children(system, node, timeout=min(1.0, max(0.05, deadline - time.monotonic())))
            return
        except Exception as exc:
            last = exc
    raise TimeoutError(f"node agent at {node} did not answer within {timeout} s ({last!r})")
