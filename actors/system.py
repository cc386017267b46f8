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
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pykka
from pykka._envelope import (
    Envelope as _PykkaEnvelope,  # the one pykka internal we use: to put an ask with our own reply future in a mailbox
)

from actors.actor import _spawning
from actors.address import Address
from actors.errors import ActorDeadError, AskTimeout, Failure, MailboxFull, SystemStopped
from actors.future import ReplyFuture, WireReply
from transport import CONTROL_NAME, ControlRequest, Envelope, FaultRule, Keyring, Kind, Node, Timer
from transport.codec import DEFAULT_MAX_FRAME_BYTES

log = logging.getLogger(__name__)

DEFAULT_ASK_TIMEOUT = 30.0
DEFAULT_MAILBOX_LIMIT = 100_000
"""Messages from the wire an actor's mailbox holds before tells are dropped and asks refused."""

_shared: dict[int, ActorSystem] = {}
_shared_lock = threading.Lock()


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
        self._current().tell(message)

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any:
        if timeout is None:
            timeout = self._system.ask_timeout
        try:
            result = self._current().ask(message, block=block, timeout=timeout)
        except AskTimeout:
            raise
        except pykka.Timeout as exc:
            raise AskTimeout(f"no reply to {type(message).__name__} from {self.address} within {timeout} s") from exc
        return result

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
        self._system._send(self.address.endpoint, Envelope(Kind.TELL, self.address.name, self._system.endpoint, 0, message))

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any:
        future = self._system._ask(self.address, message, timeout)
        return future.get() if block else future


class NodeControl:
    """Control of a (possibly remote) node: faults and counters; never subject to faults."""

    def __init__(self, system: ActorSystem, endpoint: str, timeout: float) -> None:
        self._system = system
        self.endpoint = endpoint
        self._timeout = timeout

    def _call(self, op: str, arg: Any = None) -> Any:
        return self._system._ask(Address(self.endpoint, CONTROL_NAME), ControlRequest(op, arg), self._timeout).get()

    def ping(self) -> dict:
        return self._call("ping")

    def set_faults(self, rules: Sequence[FaultRule]) -> None:
        self._call("set_faults", list(rules))

    def counters(self) -> dict:
        return self._call("counters")

    def reset_counters(self) -> None:
        self._call("reset_counters")


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
    ) -> None:
        """``start=False`` binds the endpoint but handles no traffic until ``start()``:
        a process that hosts actors spawns them first, so a message that was
        waiting for the restarted process never finds an empty system."""
        if ask_timeout <= 0:
            raise ValueError(f"ask_timeout must be positive seconds, got {ask_timeout}")
        if mailbox_limit < 1:
            raise ValueError(f"mailbox_limit must be at least 1, got {mailbox_limit}")
        self.ask_timeout = ask_timeout
        self.mailbox_limit = mailbox_limit
        self._hosted: dict[str, _Hosted] = {}
        self._lock = threading.RLock()
        self._pending: dict[int, ReplyFuture] = {}
        # Random start: a reply meant for an earlier incarnation of this node
        # (same endpoint, before a restart) matches nothing and is dropped.
        self._corr = itertools.count(random.getrandbits(48) << 16)
        self._names = itertools.count(1)
        self._stopped = threading.Event()
        self._node = Node(
            endpoint,
            on_message=self._on_message,
            max_frame_bytes=max_frame_bytes,
            fault_seed=fault_seed,
            start=False,
            keys=keys,
            secure=secure,
        )
        self.endpoint = self._node.endpoint
        self._node.call_later(1.0, self._sweep)
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
        """Stop every hosted actor, fail pending asks, close the node; idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        with self._lock:
            refs = [h.ref for h in self._hosted.values() if h.ref is not None]
            self._hosted.clear()
        for ref in refs:
            try:
                ref.stop(block=True, timeout=timeout)
            except (pykka.Timeout, ActorDeadError):
                pass
        for corr in list(self._pending):
            fut = self._pending.pop(corr, None)
            if fut is not None:
                fut.set_exception((SystemStopped, SystemStopped(f"{self} stopped"), None))
        self._node.close()

    def run_until_stopped(self) -> None:
        """Block until ``stop()`` is called or the process gets SIGTERM or SIGINT.

        What a child process that only hosts actors does with its main thread.
        """
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self._stopped.set())
        while not self._stopped.wait(0.5):
            pass
        self.stop()

    # ---- hosting ----------------------------------------------------------

    def spawn(
        self,
        factory: type[pykka.Actor],
        *args: Any,
        name: str | None = None,
        restart: RestartLimit | None = None,
        **kwargs: Any,
    ) -> LocalRef:
        """Start ``factory(*args, **kwargs)`` as the actor ``name`` of this system."""
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

    def _start(self, name: str, hosted: _Hosted) -> pykka.ActorRef:
        token = _spawning.set((self, name))
        try:
            return hosted.factory.start(*hosted.args, **hosted.kwargs)
        finally:
            _spawning.reset(token)

    def stop_actor(self, name: str, timeout: float = 5.0) -> None:
        with self._lock:
            hosted = self._hosted.pop(name, None)
        if hosted is not None and hosted.ref is not None:
            try:
                hosted.ref.stop(block=True, timeout=timeout)
            except ActorDeadError:
                pass

    def restarts(self, name: str) -> int:
        """How many times the actor ``name`` has been rebuilt after a failure."""
        with self._lock:
            hosted = self._hosted.get(name)
            return hosted.restarts if hosted else 0

    def _actor_failed(self, name: str, ref: pykka.ActorRef, exc: BaseException | None) -> None:
        """Called on the failed actor's own thread by ``Actor.on_failure``."""
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
        return NodeControl(self, endpoint or self.endpoint, timeout)

    def call_later(self, delay: float, fn: Callable[[], Any]) -> Timer:
        """Run ``fn`` after ``delay`` seconds on the I/O thread: keep it short, e.g. a tell."""
        return self._node.call_later(delay, fn)

    def _send(self, endpoint: str, env: Envelope) -> None:
        if self._stopped.is_set():
            raise SystemStopped(f"{self} is stopped")
        self._node.send(endpoint, env)

    def _ask(self, address: Address, message: Any, timeout: float | None) -> ReplyFuture:
        corr = next(self._corr)
        wait = self.ask_timeout if timeout is None else timeout
        describe = f"{type(message).__name__} to {address}"
        future = ReplyFuture(describe, time.monotonic() + wait, lambda: self._forget(corr))
        self._pending[corr] = future
        try:
            self._send(address.endpoint, Envelope(Kind.ASK, address.name, self.endpoint, corr, message))
        except BaseException:
            self._pending.pop(corr, None)
            raise
        return future

    def _forget(self, corr: int) -> None:
        self._pending.pop(corr, None)

    def _sweep(self) -> None:
        now = time.monotonic()
        for corr, fut in list(self._pending.items()):
            if fut.deadline < now and self._pending.pop(corr, None) is not None:
                fut.set_exception((AskTimeout, AskTimeout(f"no reply to {fut.describe} before its deadline"), None))
        if not self._stopped.is_set():
            self._node.call_later(1.0, self._sweep)

    def _on_message(self, env: Envelope) -> None:
        """Runs on the I/O thread for every delivered envelope."""
        if env.kind.is_reply:
            future = self._pending.pop(env.corr, None)
            if future is None:
                log.debug("%s: reply %d matches no pending ask (late or from an earlier incarnation)", self, env.corr)
            elif env.kind == Kind.REPLY:
                future.set(env.body)
            else:
                exc = env.body.to_exception() if isinstance(env.body, Failure) else RuntimeError(repr(env.body))
                future.set_exception((type(exc), exc, None))
            return
        hosted = self._hosted.get(env.dest)
        ref = hosted.ref if hosted is not None else None
        if ref is None or not ref.is_alive():
            self._node.counters.unknown_actor += 1
            log.warning("%s: %s for unknown actor %r from %s dropped", self, type(env.body).__name__, env.dest, env.src)
            if env.kind == Kind.ASK:
                self._reply(env, Failure.from_exception(ActorDeadError(f"no actor named {env.dest!r} on {self.endpoint}")), True)
            return
        inbox = ref.actor_inbox
        if inbox.qsize() >= self.mailbox_limit:  # type: ignore[attr-defined]  # a SimpleQueue, see Actor
            self._refuse_full(env)
            return
        if env.kind == Kind.TELL:
            inbox.put(_PykkaEnvelope(env.body))
        else:
            inbox.put(_PykkaEnvelope(env.body, reply_to=WireReply(lambda value, failed: self._reply(env, value, failed))))

    def _refuse_full(self, env: Envelope) -> None:
        counters = self._node.counters
        if env.kind == Kind.TELL:
            counters.dropped_full += 1
            if counters.dropped_full & (counters.dropped_full - 1) == 0:  # 1, 2, 4, 8...: logs stay small
                log.warning("%s: mailbox of %r full (%d); %d tells dropped so far", self, env.dest, self.mailbox_limit, counters.dropped_full)
            return
        counters.busy += 1
        busy = MailboxFull(f"actor {env.dest!r} on {self.endpoint} is busy: its mailbox holds {self.mailbox_limit} messages; retry later")
        self._reply(env, Failure.from_exception(busy), True)

    def _reply(self, request: Envelope, value: Any, failed: bool) -> None:
        kind = Kind.ERROR if failed else Kind.REPLY
        try:
            self._node.reply(request, Envelope(kind, "", self.endpoint, request.corr, value, request.dest))
        except Exception as exc:  # an unpicklable or oversized result: tell the asker why
            if failed:
                log.exception("%s: could not send an error reply", self)
                return
            self._node.reply(request, Envelope(Kind.ERROR, "", self.endpoint, request.corr, Failure.from_exception(exc), request.dest))
