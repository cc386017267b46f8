"""One ActorSystem per OS process: pykka actors on one side, a transport node on the other.

Usage summary::

    with ActorSystem("ipc:///tmp/a.sock") as system:       # or tcp://127.0.0.1:0, or None
        counter = system.spawn(Counter, name="counter")    # a LocalRef
        counter.tell(Incr(1))
        far = system.ref("ipc:///tmp/b.sock#counter")       # a RemoteRef, same tell/ask
        far.ask(Get(), timeout=1.0)                         # AskTimeout if no reply in time
        fut = far.ask(Get(), block=False)                   # pipelining: many in flight
        system.control("ipc:///tmp/b.sock").set_faults(unreliable())

Incoming tells go straight into the named actor's pykka mailbox; incoming
asks go in as a pykka envelope whose future sends the result (or the
exception, or ``ActorDeadError``) back over the wire, so a remote ask has
exactly pykka's semantics: an exception goes back to the asker and the actor
carries on. An ask to a name nobody hosts is answered at once with
``ActorDeadError`` rather than left to time out.

Mailboxes are bounded (``mailbox_limit`` messages, from the wire): over it,
a tell is dropped and counted (``dropped_full``), an ask is answered at once
with ``MailboxFull`` (counted in ``busy``) so the asker backs off instead of
the node's memory growing. Local tells and asks (same process) are not
bounded: they are the caller's own back-pressure.

Security: ``keys=`` names the keyring and ``secure=False`` turns CURVE off
(see :mod:`transport.keys`); both default to the environment
(``ZACTOR_KEYS``, ``ZACTOR_INSECURE``) and then to the user's keyring.

Every remote ask has a deadline (``ask_timeout`` unless given); a sweep
drops expired ones, so lost replies never accumulate.

This module hosts and rebuilds actors; the wire side (asks in flight, their
replies, asks that arrive, node control) is :mod:`actors.wire`. Actors in
processes of their own (``spawn_process``, ``lookup`` beyond this system)
are the layer above, :mod:`actors.spawn`: it plugs itself in with
:func:`plug_process_layer` when imported (the package ``actors`` imports
it), so this module never imports it. The layers above keep their
per-system state as extensions (:meth:`ActorSystem.extension`), closed when
the system stops.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import pykka

from actors.actor import Actor, _InlineInbox, _PykkaEnvelope, hosted_by
from actors.address import Address, check_endpoint
from actors.errors import ActorDeadError, SystemStopped
from actors.future import ReplyFuture
from actors.signals import setting
from actors.supervisor import refuse_unguarded_main
from actors.wire import NodeControl, Wire
from transport import Envelope, Keyring, Node, Timer
from transport.codec import DEFAULT_MAX_FRAME_BYTES
from transport.probe import PROBE_TIMEOUT, LinkReport
from transport.unread import DEFAULT_MAX_UNREAD_BYTES

log = logging.getLogger(__name__)

DEFAULT_ASK_TIMEOUT = 30.0
DEFAULT_MAILBOX_LIMIT = 100_000
"""Messages from the wire an actor's mailbox holds before tells are dropped and asks refused."""

_shared: dict[int, ActorSystem] = {}
_shared_lock = threading.Lock()


class Extension(Protocol):
    """Per-system state of a layer above the system (see :meth:`ActorSystem.extension`)."""

    def close(self) -> None:
        """Release what it holds (processes, directories); called once, by ``ActorSystem.stop()``."""


E = TypeVar("E", bound=Extension)


class ProcessLayer(Extension, Protocol):
    """What ``spawn_process`` and ``lookup`` forward to: actors in processes of their own.

    :class:`actors.spawn.Spawner` is the one there is; see :func:`plug_process_layer`.
    """

    def spawn_process(self, factory: type[pykka.Actor], args: tuple, name: str | None, node: str | None, options: dict[str, Any]) -> Any: ...

    def lookup(self, name: str, timeout: float) -> Any:
        """A ref to ``name`` in a process this system spawned or on a known node; ``LookupError`` if none."""

    def stop_process(self, name: str, node: str | None, timeout: float) -> None:
        """Stop ``name`` for good (here, or on the agent at ``node``); ``LookupError`` if there is none."""


_process_layer: list[Callable[[ActorSystem], ProcessLayer]] = []


def plug_process_layer(make: Callable[[ActorSystem], ProcessLayer]) -> None:
    """Called once, by :mod:`actors.spawn` when it is imported: ``make(system)`` is the system's
    process layer (made on first use, an extension of it). The layer lies above this module, so
    it plugs in here instead of this module importing it."""
    _process_layer[:] = [make]


@dataclass(frozen=True, slots=True)
class RestartLimit:
    """How often an actor that raises is rebuilt before the system gives up on it."""

    max_restarts: int = 5
    within: float = 10.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.within <= 0:
            raise ValueError(f"need max_restarts >= 0 and within > 0, got {self}")


@dataclass
class _Hosted:
    factory: type[pykka.Actor]
    args: tuple
    kwargs: dict
    limit: RestartLimit
    ref: pykka.ActorRef | None = None
    actor: Actor | None = None  # the current instance, for describe()
    failures: deque = field(default_factory=deque)
    restarts: int = 0
    gave_up: BaseException | None = None


class LocalRef:
    """A reference by name to an actor of this system; survives the actor's rebuilds."""

    def __init__(self, system: ActorSystem, name: str) -> None:
        self._system = system
        self.address = Address(system.endpoint, name)

    def __repr__(self) -> str:
        return f"<LocalRef {self.address}>"

    @property
    def name(self) -> str:
        return self.address.name

    def _current(self) -> pykka.ActorRef:
        return self._system._pykka_ref(self.address.name)

    def is_alive(self) -> bool:
        try:
            return self._current().is_alive()
        except ActorDeadError:
            return False

    def tell(self, message: Any) -> None:
        try:
            self._current().tell(message)
        except ActorDeadError:
            if not self._system.stopped:
                raise
            # Its system is stopping and has stopped that actor already. A tell it had queued would be
            # dropped by its stop; one that comes a moment later is dropped too, and the sender goes on.
            log.debug("%s: stopped with its system; a %s to it dropped", self.address, type(message).__name__)

    def _ask(self, message: Any, timeout: float | None) -> ReplyFuture:
        ref = self._current()
        if not ref.is_alive():
            raise ActorDeadError(f"{self.address} is not running")
        wait = self._system.ask_timeout if timeout is None else timeout
        future = ReplyFuture(type(message), self.address, time.monotonic() + wait, self._system._wire)
        ref.actor_inbox.put(_PykkaEnvelope(message, reply_to=future))
        if not ref.is_alive():  # stopped between the check and the put: its drain may be over already
            future.set_exception((ActorDeadError, ActorDeadError(f"{self.address} stopped"), None))
        return future

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any:
        future = self._ask(message, timeout)
        return future.get() if block else future

    async def ask_async(self, message: Any, *, timeout: float | None = None) -> Any:
        """``ask`` for asyncio code: awaits the reply without blocking the event loop."""
        return await self._ask(message, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._system.stop_actor(self.address.name, timeout=timeout)


class RemoteRef:
    """A reference to an actor on another node; ``tell`` and ``ask`` as on a LocalRef."""

    def __init__(self, system: ActorSystem, address: Address) -> None:
        self._system = system
        self.address = address

    def __repr__(self) -> str:
        return f"<RemoteRef {self.address}>"

    @property
    def name(self) -> str:
        return self.address.name

    def tell(self, message: Any) -> None:
        self._system._check_running()
        self._system._wire.tell(self.address, message)

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any:
        future = self._send_ask(message, timeout, shared=False)
        return future.get() if block else future

    async def ask_async(self, message: Any, *, timeout: float | None = None) -> Any:
        """``ask`` for asyncio code: the node's I/O thread completes it, no thread per request."""
        return await self._send_ask(message, timeout, shared=True)

    def _send_ask(self, message: Any, timeout: float | None, shared: bool) -> ReplyFuture:
        """Send an ask; its future (``shared``: completed by the I/O thread, for asyncio).

        The one way out of every ask of a remote ref, so a subclass (``ProcessRef``) wraps it once.
        """
        system = self._system
        if system._stopped.is_set():  # _check_running, inline: every remote ask comes this way
            raise SystemStopped(f"{system} is stopped")
        return system._wire.ask(self.address, message, timeout, shared=shared)


class ActorSystem:
    """Hosts actors in this process and connects them to every other node."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        ask_timeout: float = DEFAULT_ASK_TIMEOUT,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        fault_seed: int | None = None,
        start: bool = True,
        keys: str | os.PathLike[str] | Keyring | None = None,
        secure: bool | None = None,
        mailbox_limit: int = DEFAULT_MAILBOX_LIMIT,
        nodes: Sequence[str] = (),
        max_unread_bytes: int = DEFAULT_MAX_UNREAD_BYTES,
    ) -> None:
        """``nodes``: node agents' endpoints that ``lookup`` searches (``join`` adds more).
        ``max_unread_bytes``: large replies one connection may leave unread before its further
        requests are held back until it reads (see :mod:`transport.unread`).

        ``start=False`` binds the endpoint but handles no traffic until ``start()``:
        a process that hosts actors spawns them first, so a message that was
        waiting for the restarted process never finds an empty system."""
        refuse_unguarded_main()
        if ask_timeout <= 0:
            raise ValueError(f"ask_timeout must be positive seconds, got {ask_timeout}")
        if mailbox_limit < 1:
            raise ValueError(f"mailbox_limit must be at least 1, got {mailbox_limit}")
        self.ask_timeout = ask_timeout
        self.mailbox_limit = mailbox_limit
        self._hosted: dict[str, _Hosted] = {}
        self._lock = threading.RLock()
        self._names = itertools.count(1)
        self._stopped = threading.Event()
        self._closing = False  # stop() has begun (it sets _stopped once extensions are closed)
        self._stop_asked = threading.Event()
        """What ``run_until_stopped`` waits for: ``stop()`` or a stop signal. Not ``_stopped``, which says the
        actors are being stopped: a signal that set it would leave them running, their ``on_stop`` never called."""
        self.nodes: list[str] = list(nodes)
        self._extensions: dict[Callable[[ActorSystem], Extension], Extension] = {}  # see extension()
        self._node = Node(
            endpoint,
            on_message=lambda env: None,  # the wire's, below (it needs the node first)
            max_frame_bytes=max_frame_bytes,
            fault_seed=fault_seed,
            start=False,
            keys=keys,
            secure=secure,
            max_unread_bytes=max_unread_bytes,
        )
        self.endpoint = self._node.endpoint
        self._wire = Wire(self._node, ask_timeout=ask_timeout, mailbox_limit=mailbox_limit, lookup=self._lookup, label=repr(self),
                          names=lambda: sorted(self._hosted))
        self._node.on_message = self._wire.on_message
        self._node.describe = self.describe
        self._node.call_later(1.0, self._wire.sweep)
        if start:
            self._node.start()

    def start(self) -> None:
        """Start handling traffic (only needed after ``ActorSystem(..., start=False)``)."""
        self._node.start()

    @classmethod
    def shared(cls) -> ActorSystem:
        """This process's shared system, made on first use and stopped at exit.

        For clients that only talk to actors elsewhere (a KV clerk, a CLI
        command): every such object in a process shares one node, one I/O
        thread and one connection per peer, so a hundred thousand of them
        cost no more sockets than one. Keyed by pid, so a forked child makes
        its own.
        """
        pid = os.getpid()
        with _shared_lock:
            system = _shared.get(pid)
            if system is None or system.stopped:
                system = _shared[pid] = cls()
                atexit.register(system.stop)
            return system

    # ---- lifecycle --------------------------------------------------------

    def __enter__(self) -> ActorSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ActorSystem {self.endpoint}>"

    @property
    def node(self) -> Node:
        return self._node

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every hosted actor, fail pending asks, close the node; idempotent.

        Extensions close first, while this system can still ask other nodes:
        the process layer stops what it placed on node agents.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            extensions = list(self._extensions.values())
        self._stop_asked.set()
        for extension in extensions:
            extension.close()
        self._stopped.set()
        self._wire.stopping = True
        # The actors stay listed while they stop, one after another: a tell from one still running to
        # a sibling not yet stopped is delivered as ever (to one stopped already, dropped: LocalRef.tell).
        with self._lock:
            refs = [h.ref for h in self._hosted.values() if h.ref is not None]
        for ref in refs:
            self._stop_ref(ref, timeout)
        with self._lock:
            self._hosted.clear()
        self._wire.fail_all(SystemStopped(f"{self} stopped"))
        self._node.close()

    def _stop_ref(self, ref: pykka.ActorRef, timeout: float) -> None:
        if isinstance(ref.actor_inbox, _InlineInbox) and (not self._node.started or self._node.on_io_thread()):
            ref.actor_inbox.stop_here()  # nobody else would serve the stop
            return
        try:
            ref.stop(block=True, timeout=timeout)
        except (pykka.Timeout, ActorDeadError):
            pass

    def catch_stop_signals(self) -> None:
        """From now on SIGTERM and SIGINT ask this system to stop (``run_until_stopped`` returns) instead
        of ending the process at once. From the main thread only; elsewhere it does nothing.

        A hosting process calls it before its actors start: a SIGTERM that came
        after an actor's ``on_start`` but before the wait began killed the
        process, and that actor's ``on_stop`` never ran.
        """
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                if signal.getsignal(sig) is not signal.SIG_IGN:  # a supervised child leaves Ctrl-C to its supervisor
                    signal.signal(sig, setting(self._stop_asked))

    def run_until_stopped(self) -> None:
        """Block until ``stop()`` is called or the process gets SIGTERM or SIGINT.

        What a child process that only hosts actors does with its main thread.
        """
        self.catch_stop_signals()
        while not self._stop_asked.wait(0.5):
            pass
        self.stop()

    # ---- hosting ----------------------------------------------------------

    def spawn(
        self,
        factory: type[pykka.Actor],
        *args: Any,
        name: str | None = None,
        restart: RestartLimit | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **more: Any,
    ) -> LocalRef:
        """Start ``factory(*args, **kwargs, **more)`` as the actor ``name`` of this system.

        ``kwargs``: the factory's keyword arguments as a mapping, for one whose
        name ``spawn`` itself takes (``name``, ``restart``, ``kwargs``).
        """
        kwargs = factory_kwargs(kwargs, more)
        if self._stopped.is_set():
            raise SystemStopped(f"{self} is stopped")
        if not (isinstance(factory, type) and issubclass(factory, pykka.Actor)):
            raise TypeError(f"spawn needs a pykka.Actor subclass, got {factory!r}")
        name = name or f"{factory.__name__}-{next(self._names)}"
        Address(self.endpoint, name)  # validates the name
        with self._lock:
            if name in self._hosted:
                raise ValueError(f"an actor named {name!r} already runs on {self.endpoint}")
            hosted = _Hosted(factory, args, kwargs, restart or RestartLimit())
            self._hosted[name] = hosted
        try:
            hosted.ref = self._start(name, hosted)
        except BaseException:
            with self._lock:
                self._hosted.pop(name, None)
            raise
        return LocalRef(self, name)

    def spawn_process(self, factory: type[pykka.Actor], *args: Any, name: str | None = None, node: str | None = None, **options: Any) -> Any:
        """Start ``factory(*args)`` in a supervised process of its own (or on the node agent ``node``).

        Returns a ``ProcessRef``, valid across the process's restarts: at once,
        or with ``node`` once the agent has started it (``timeout`` s at most,
        default 10; ignored without ``node``). Other options: ``restart``,
        ``max_restarts``, ``within``, ``persist_dir``, and keyword arguments for
        the factory; ``kwargs=`` (a mapping) carries those whose names are
        among these options. With ``node``, the process is stopped when this
        system stops unless ``detached=True``. See :mod:`actors.spawn`.
        """
        return self._processes().spawn_process(factory, args, name, node, options)

    def stop_process(self, name: str, *, node: str | None = None, timeout: float = 5.0) -> None:
        """Stop the process ``name`` for good: one this system spawned, or (``node``) one a node agent hosts."""
        self._processes().stop_process(name, node, timeout)

    def lookup(self, name: str, timeout: float = 5.0) -> Any:
        """A ref to the actor ``name`` here, in a process this system spawned, or on a known node.

        Raises ``LookupError`` naming where it looked. See :mod:`actors.directory`.
        """
        hosted = self._hosted.get(name)
        if hosted is not None and hosted.ref is not None:
            return LocalRef(self, name)
        return self._processes().lookup(name, timeout)

    def join(self, node: str) -> None:
        """Add the node agent at ``node`` to those ``lookup`` searches."""
        check_endpoint(node)
        with self._lock:
            if node not in self.nodes:
                self.nodes.append(node)

    def extension(self, make: Callable[[ActorSystem], E]) -> E:
        """This system's one ``make(self)``, made on first use and closed by ``stop()``.

        How a layer above the system keeps per-system state without the
        system knowing it: ``spawn_process``'s supervisor and its refs are
        ``system.extension(Spawner)``. ``SystemStopped`` once the system is
        stopped (nothing would close a new one).
        """
        with self._lock:
            if self._stopped.is_set():
                raise SystemStopped(f"{self} is stopped")
            extension = self._extensions.get(make)
            if extension is None:
                extension = self._extensions[make] = make(self)
            return cast(E, extension)  # keyed by its maker: it is what make returned

    def _processes(self) -> ProcessLayer:
        if not _process_layer:
            raise RuntimeError("no process layer: import actors.spawn (importing the package actors does)")
        return self.extension(_process_layer[0])

    def _start(self, name: str, hosted: _Hosted) -> pykka.ActorRef:
        with hosted_by(self, name):
            return hosted.factory.start(*hosted.args, **hosted.kwargs)

    def stop_actor(self, name: str, timeout: float = 5.0) -> None:
        with self._lock:
            hosted = self._hosted.pop(name, None)
        if hosted is not None and hosted.ref is not None:
            self._stop_ref(hosted.ref, timeout)

    def describe(self) -> list[dict[str, Any]]:
        """Each hosted actor's figures for a live view (``zactor top``): cheap, and safe on any thread."""
        with self._lock:
            hosted = [(name, h) for name, h in self._hosted.items() if h.ref is not None]
        rows = []
        for name, h in hosted:
            ref = h.ref
            assert ref is not None
            actor = h.actor
            inbox = ref.actor_inbox
            p99 = actor.handling_p99() if isinstance(actor, Actor) else None
            rows.append({
                "name": name,
                "class": h.factory.__name__,
                "mailbox": inbox.qsize() if hasattr(inbox, "qsize") else None,
                "handled": actor.handled_count() if isinstance(actor, Actor) else None,
                "p99_ms": None if p99 is None else round(p99 * 1000, 3),
                "restarts": h.restarts,
            })
        return rows

    def actor_built(self, name: str, actor: Actor) -> None:
        with self._lock:
            hosted = self._hosted.get(name)
            if hosted is not None:
                hosted.actor = actor

    def restarts(self, name: str) -> int:
        """How many times the actor ``name`` has been rebuilt after a failure."""
        with self._lock:
            hosted = self._hosted.get(name)
            return hosted.restarts if hosted else 0

    def actor_failed(self, name: str, ref: pykka.ActorRef, exc: BaseException | None) -> None:
        """Called on the thread serving the failed actor by ``Actor.on_failure`` (the :class:`Host` seam).

        The fresh instance gets the messages still queued for the failed one
        (its mailbox is not drained yet: pykka drains it after this returns).
        """
        with self._lock:
            hosted = self._hosted.get(name)
            if hosted is None or hosted.ref is not ref or self._stopped.is_set():
                return
            now = time.monotonic()
            hosted.failures.append(now)
            while hosted.failures and hosted.failures[0] < now - hosted.limit.within:
                hosted.failures.popleft()
            if len(hosted.failures) > hosted.limit.max_restarts:
                hosted.gave_up = exc
                hosted.ref = None
                log.error(
                    "actor %s failed %d times within %.1f s; not restarting it (last error: %r)",
                    name, len(hosted.failures), hosted.limit.within, exc,
                )
                return
            hosted.restarts += 1
            log.warning("actor %s failed (%r); rebuilding it from its factory", name, exc)
            try:
                hosted.ref = self._start(name, hosted)
            except Exception:
                hosted.ref = None
                log.exception("actor %s could not be rebuilt", name)
                return
            moved = _move_mailbox(ref.actor_inbox, hosted.ref.actor_inbox)
            if moved:
                log.info("actor %s: %d queued messages handed to its rebuilt instance", name, moved)

    def _lookup(self, name: str) -> pykka.ActorRef | None:
        hosted = self._hosted.get(name)
        return hosted.ref if hosted is not None else None

    def _pykka_ref(self, name: str) -> pykka.ActorRef:
        hosted = self._hosted.get(name)
        if hosted is None or hosted.ref is None:
            why = f" (gave up after repeated failures: {hosted.gave_up!r})" if hosted and hosted.gave_up else ""
            raise ActorDeadError(f"no actor named {name!r} on {self.endpoint}{why}")
        return hosted.ref

    # ---- references and messaging ------------------------------------------

    def ref(self, address: str | Address, name: str | None = None) -> LocalRef | RemoteRef:
        """A reference from ``"endpoint#name"`` (or endpoint and name)."""
        addr = Address(str(address), name) if name is not None else Address.parse(address)
        if addr.endpoint == self.endpoint:
            return LocalRef(self, addr.name)
        return RemoteRef(self, addr)

    def control(self, endpoint: str | None = None, timeout: float = 5.0) -> NodeControl:
        """Control of the node at ``endpoint`` (this node by default)."""
        return NodeControl(self._wire, endpoint or self.endpoint, timeout)

    def probe(self, endpoint: str, timeout: float = PROBE_TIMEOUT) -> LinkReport:
        """Why the node at ``endpoint`` might not answer (nothing listening, this key refused...):
        a trial connection with this system's keys, watched by ZeroMQ's monitor (see :mod:`transport.probe`)."""
        self._check_running()
        return self._node.probe(endpoint, timeout)

    def call_later(self, delay: float, fn: Callable[[], Any]) -> Timer:
        """Run ``fn`` after ``delay`` seconds on the I/O thread: keep it short, e.g. a tell."""
        return self._node.call_later(delay, fn)

    def _check_running(self) -> None:
        if self._stopped.is_set():
            raise SystemStopped(f"{self} is stopped")

    def _send(self, endpoint: str, env: Envelope) -> None:
        self._check_running()
        self._node.send(endpoint, env)


def factory_kwargs(kwargs: Mapping[str, Any] | None, more: dict[str, Any]) -> dict[str, Any]:
    """An actor factory's keyword arguments: the ``kwargs=`` mapping and the loose ones, which may not repeat a name."""
    if not kwargs:
        return more
    twice = sorted(set(kwargs) & set(more))
    if twice:
        raise TypeError(f"keyword arguments given both in kwargs= and loose: {', '.join(twice)}")
    return {**kwargs, **more}


def _move_mailbox(old: Any, new: Any) -> int:
    """Move what waits in ``old`` (a failed actor's mailbox) to ``new``; how many moved."""
    moved = 0
    for _ in range(10_000_000):  # bounded by what can be queued
        if old.empty():
            break
        new.put(old.get())
        moved += 1
    return moved
