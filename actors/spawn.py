"""Actors in supervised processes of their own: the one child host, and ``spawn_process``.

Usage summary::

    counter = system.spawn_process(PersistentCounter, "counter.state", name="counter",
                                   persist_dir="state/counter", max_restarts=3)
    counter.ask(Incr(1), timeout=5.0)          # the same ref answers across the process's restarts
    system.spawn_process(Counter, name="far", node="tcp://10.0.0.2:7070")   # on a node agent

Every process that hosts actors runs :func:`host`: it builds an
``ActorSystem(start=False)``, spawns its actors, and only then starts the
node, so a message that waited for a restarted process never finds it
empty. The project's servers (KV server, Raft peer, the test actors) and
``spawn_process`` all use it.

``spawn_process`` puts :func:`host` under a ``Supervisor`` that this system
owns (made on first use), at an ``ipc://`` endpoint in a private directory
picked once: the endpoint, and so a :class:`ProcessRef`, stays valid across
restarts. The ref learns every death from the supervisor (or, on a node
agent, from the agent's notice), so an ask in flight when the process died
fails at once with :class:`ProcessDied` instead of waiting out its
timeout; later asks reach the new incarnation. When the supervisor gives
up (more than ``max_restarts`` deaths within ``within`` seconds) every ask
fails at once with :class:`RestartLimitReached`.

The actor's class travels as a :class:`ClassRef`: by import path when the
class can be imported by its module and name (not from ``__main__``, not a
class made inside a function), and as a cloudpickle of the class itself when
it cannot, or as a fall-back for a node that cannot import it.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle
import pykka

from actors.address import Address
from actors.errors import ActorDeadError
from actors.supervisor import ChildSpec, RestartKind, Supervisor, SupervisorEvent
from transport.private_files import private_dirs

if TYPE_CHECKING:
    from actors.system import ActorSystem
    from transport import FaultRule

log = logging.getLogger(__name__)

WATCHER_NAME = "zactor.spawn-watch"
"""The actor in a system that spawned onto a node agent and hears of its children's deaths."""


class ProcessDied(ActorDeadError):
    """The process hosting the actor died while this ask was in flight (it may be restarted)."""


class RestartLimitReached(ActorDeadError):
    """The actor's process is down for good: it died too often (the restart limit), it exited
    cleanly under ``restart="transient"`` (or at all under ``"temporary"``), or it was stopped."""


# ---- the class, by import path or by value -----------------------------------------


_by_value_lock = threading.Lock()


@dataclass(frozen=True)
class ClassRef:
    """An actor class as it travels to another process: ``module:qualname``, a cloudpickle, or both."""

    path: str | None
    blob: bytes | None = None

    @classmethod
    def of(cls, actor_class: type, *, with_blob: bool = False) -> ClassRef:
        """The class by import path when that finds this very class; by value when it does not.

        ``with_blob`` adds the by-value copy also to an importable class, for a
        node whose environment may lack the module.
        """
        if not (isinstance(actor_class, type) and issubclass(actor_class, pykka.Actor)):
            raise TypeError(f"spawn_process needs a pykka.Actor subclass, got {actor_class!r}")
        path = _import_path(actor_class)
        blob = None
        if path is None or with_blob:
            blob = _pickle_by_value(actor_class, path is not None)
        return cls(path, blob)

    @property
    def describe(self) -> str:
        return self.path or "a class sent by value"

    def load(self) -> tuple[type, str]:
        """The class and how it was found (``"import"`` or ``"cloudpickle"``)."""
        if self.path is not None:
            module, _, qualname = self.path.partition(":")
            try:
                obj: Any = importlib.import_module(module)
                for part in qualname.split("."):
                    obj = getattr(obj, part)
                return obj, "import"
            except (ImportError, AttributeError) as exc:
                if self.blob is None:
                    raise ImportError(f"cannot import actor class {self.path} here ({exc}) and it was not sent by value") from exc
                log.info("actor class %s is not importable here (%s); using the copy sent by value", self.path, exc)
        if self.blob is None:
            raise ValueError("a ClassRef needs an import path or a pickled class")
        actor_class = cloudpickle.loads(self.blob)
        if not (isinstance(actor_class, type) and issubclass(actor_class, pykka.Actor)):
            raise TypeError(f"the class sent by value is not a pykka.Actor subclass: {actor_class!r}")
        return actor_class, "cloudpickle"


def _import_path(actor_class: type) -> str | None:
    module, qualname = actor_class.__module__, actor_class.__qualname__
    if module == "__main__" or "<locals>" in qualname:
        return None
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if obj is actor_class else None


def _pickle_by_value(actor_class: type, importable: bool) -> bytes:
    module = sys.modules.get(actor_class.__module__)
    if not importable or module is None or module.__name__ == "__main__":
        return cloudpickle.dumps(actor_class)  # cloudpickle sends these by value on its own
    with _by_value_lock:  # a process-wide cloudpickle setting: set and unset it around this one dump
        cloudpickle.register_pickle_by_value(module)
        try:
            return cloudpickle.dumps(actor_class)
        finally:
            cloudpickle.unregister_pickle_by_value(module)


# ---- the one child host -------------------------------------------------------------


@dataclass(frozen=True)
class Hosted:
    """One actor a hosting process runs: its name, class (or ClassRef) and arguments."""

    name: str
    cls: type | ClassRef
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


def host(
    endpoint: str,
    actors: Sequence[Hosted],
    *,
    faults: list[FaultRule] | None = None,
    workdir: str | None = None,
    announce: str | None = None,
    **system_options: Any,
) -> None:
    """Child-process target: host ``actors`` at ``endpoint`` until SIGTERM, SIGINT or ``stop()``.

    ``workdir`` (made if missing) becomes the process's working directory
    first, so an actor's relative state paths land there. ``announce`` is
    printed to stderr once the endpoint is bound, ``{endpoint}`` filled in.
    ``system_options`` go to the ``ActorSystem`` (``secure``, ``keys``, ``mailbox_limit``...).
    """
    from actors.system import ActorSystem  # the system imports this module for spawn_process

    if workdir is not None:
        private_dirs(workdir)
        os.chdir(workdir)
    with ActorSystem(endpoint, start=False, **system_options) as system:
        if faults:
            system.node.set_faults(faults)
        for actor in actors:
            cls = actor.cls.load()[0] if isinstance(actor.cls, ClassRef) else actor.cls
            system.spawn(cls, *actor.args, name=actor.name, kwargs=actor.kwargs)
        system.start()
        if announce:
            print(announce.format(endpoint=system.endpoint), file=sys.stderr, flush=True)
        system.run_until_stopped()


def host_one(endpoint: str, name: str, cls: type | ClassRef, args: tuple, kwargs: dict, workdir: str | None) -> None:
    """Child-process target of ``spawn_process``: one actor."""
    host(endpoint, [Hosted(name, cls, args, kwargs)], workdir=workdir)


# ---- the caller's side: a ref that outlives its process -------------------------------


class ProcessRef:
    """A reference to an actor in a supervised process; valid across that process's restarts.

    ``tell`` and ``ask`` as on any ref. An ask in flight when the process
    dies fails with :class:`ProcessDied`; after the supervisor gives up,
    every ask fails at once with :class:`RestartLimitReached`.
    """

    def __init__(self, system: ActorSystem, address: Address, *, node: str | None = None, via: str = "import") -> None:
        from actors.system import RemoteRef

        self._system = system
        self._remote = RemoteRef(system, address)
        self.address = address
        self.node = node
        """The node agent hosting it, or None for this system's own supervisor."""
        self.via = via
        """How the class reached the process: ``"import"`` or ``"cloudpickle"``."""
        self._lock = threading.Lock()
        self._inflight: dict[int, Any] = {}
        self._ended: BaseException | None = None
        self.deaths = 0

    def __repr__(self) -> str:
        where = f" on node {self.node}" if self.node else ""
        return f"<ProcessRef {self.address}{where}>"

    @property
    def name(self) -> str:
        return self.address.name

    def tell(self, message: Any) -> None:
        self._check()
        self._remote.tell(message)

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any:
        self._check()
        future = self._remote.ask(message, block=False, timeout=timeout)
        key = id(future)
        with self._lock:
            if len(self._inflight) > 256:  # forget answered ones now and then: the table stays small
                self._inflight = {k: f for k, f in self._inflight.items() if not f.done}
            self._inflight[key] = future
            ended = self._ended
        if ended is not None:  # gave up while we sent
            future.set_exception((type(ended), ended, None))
        if not block:
            return future
        try:
            return future.get()
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def _check(self) -> None:
        if self._ended is not None:
            raise self._ended

    def _died(self, exitcode: int | None, final: BaseException | None) -> None:
        """The hosting process died (exit code, or None if unknown); ``final`` if it stays dead."""
        with self._lock:
            self.deaths += 1
            if final is not None:
                self._ended = final
            pending, self._inflight = list(self._inflight.values()), {}
        error = ProcessDied(
            f"the process hosting {self.address.name!r} died (exit code {exitcode}) while this ask was in flight"
            + ("" if final is not None else "; unless its restart limit is reached it is restarted, and later asks reach the new process")
        )
        for future in pending:
            if not future.done:
                future.set_exception((ProcessDied, error, None))

    def pid(self) -> int | None:
        """The pid of the process hosting the actor now (on its node's machine), None if none runs."""
        return spawner_of(self._system).pid(self)

    def restarts(self) -> int:
        """How many times its supervisor (or node agent) has restarted the process."""
        return spawner_of(self._system).restarts(self)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the process for good (it is not restarted)."""
        spawner_of(self._system).stop(self, timeout)


# ---- this system's supervisor of spawned processes -------------------------------------


@dataclass
class _Local:
    ref: ProcessRef
    limit: int
    within: float
    restart: RestartKind


def not_restarted(restart: RestartKind, exitcode: int | None) -> bool:
    """Whether a child of this restart kind that exited with ``exitcode`` stays down (as the supervisor decides)."""
    return restart == "temporary" or (restart == "transient" and exitcode == 0)


class Spawner:
    """The supervisor and the refs of the processes one system spawned; see the module docstring."""

    def __init__(self, system: ActorSystem) -> None:
        self._system = system
        self._lock = threading.Lock()
        self._sup: Supervisor | None = None
        self._dir: str | None = None
        self._local: dict[str, _Local] = {}
        self._remote: dict[tuple[str, str], ProcessRef] = {}
        self._watcher = False
        self._count = 0

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
            ref = ProcessRef(self._system, Address(endpoint, name), via="import" if ref_class.path else "cloudpickle")
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
            if not_restarted(entry.restart, event.exitcode):
                final = RestartLimitReached(f"{event.child!r} exited with {event.exitcode} and is not restarted (restart={entry.restart!r})")
            entry.ref._died(event.exitcode, final)
        elif event.kind == "gave_up":
            entry.ref._died(event.exitcode, RestartLimitReached(
                f"the supervisor gave up on {event.child!r}: its process died more than {entry.limit} times "
                f"within {entry.within:g} s (last exit code {event.exitcode}); it is not restarted"
            ))

    def pid(self, ref: ProcessRef) -> int | None:
        if ref.node is not None:
            from actors.agent import node_children

            info = {c.name: c for c in node_children(self._system, ref.node)}.get(ref.name)
            return info.pid if info else None
        return self.supervisor().pid(ref.name)

    def restarts(self, ref: ProcessRef) -> int:
        if ref.node is not None:
            from actors.agent import node_children

            info = {c.name: c for c in node_children(self._system, ref.node)}.get(ref.name)
            return info.restarts if info else 0
        return self.supervisor().restarts(ref.name)

    def local_ref(self, name: str) -> ProcessRef | None:
        with self._lock:
            entry = self._local.get(name)
            return entry.ref if entry else None

    def stop(self, ref: ProcessRef, timeout: float) -> None:
        final = RestartLimitReached(f"{ref.name!r} was stopped with stop()")
        if ref.node is not None:
            from actors.agent import stop_on_node

            stop_on_node(self._system, ref.node, ref.name, timeout)
            ref._died(None, final)
            return
        with self._lock:
            entry = self._local.pop(ref.name, None)
        if entry is not None and self._sup is not None:
            self._sup.stop_child(ref.name, grace=timeout)
            entry.ref._died(None, final)

    # ---- processes on node agents ------------------------------------------------------

    def watcher(self) -> str:
        """This system's address for node agents' death notices (its actor made on first use)."""
        from actors.agent import DeathWatcher

        with self._lock:
            if not self._watcher:
                self._system.spawn(DeathWatcher, self, name=WATCHER_NAME)
                self._watcher = True
        return str(Address(self._system.endpoint, WATCHER_NAME))

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
            sup, self._sup = self._sup, None
            directory, self._dir = self._dir, None
        if sup is not None:
            sup.stop()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


_unnamed = itertools.count(1)
_spawners_lock = threading.Lock()


def spawner_of(system: ActorSystem) -> Spawner:
    """The system's Spawner, made on first use and closed when the system stops."""
    with _spawners_lock:
        spawner = system._extensions.get("spawn")
        if spawner is None:
            spawner = system._extensions["spawn"] = Spawner(system)
        return spawner


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
    kwargs: Mapping[str, Any] | None = None,
    **more: Any,
) -> ProcessRef:
    """What ``ActorSystem.spawn_process`` does; see the module docstring."""
    from actors.system import factory_kwargs  # the system imports this module

    kwargs = factory_kwargs(kwargs, more)
    if max_restarts < 0 or within <= 0:
        raise ValueError(f"need max_restarts >= 0 and within > 0, got {max_restarts} and {within}")
    name = name or f"{getattr(actor_class, '__name__', 'actor')}-{next(_unnamed)}"
    Address("ipc://x", name)  # validates the name
    if node is None:
        return spawner_of(system).spawn_local(
            actor_class, args, kwargs, name=name, restart=restart, max_restarts=max_restarts, within=within, persist_dir=persist_dir
        )
    from actors.agent import spawn_on_node

    return spawn_on_node(
        system, node, actor_class, args, kwargs, name=name, restart=restart, max_restarts=max_restarts,
        within=within, persist_dir=None if persist_dir is None else str(persist_dir), timeout=timeout,
    )
