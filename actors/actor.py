"""The base class for actors hosted by an :class:`~actors.system.ActorSystem`.

It is a ``pykka.ThreadingActor`` with four additions, all of which need the
hosting system: timers that deliver into the actor's own mailbox (so the
actor is only ever touched by the thread that serves it), the actor's name
and system, rebuilding after a failure (when a *tell* handler raises, pykka
stops the actor and calls ``on_failure``; ours tells the host, which builds a
fresh instance from the same factory and arguments under the same name and
hands it the messages still queued), and *inline* serving.

An actor whose handlers never block (no sleeps, no blocking ask; a short
disk sync is the one deliberate exception, the Raft peer's) may set ``inline = True``: it keeps its pykka mailbox and its one-at-a-time
semantics, but its mailbox is drained by the node's I/O thread right after
the frames that filled it were read, so a remote ask wakes one thread on
this side (as a raw pyzmq echo server does) instead of two. A handler that
blocks there stalls the whole node, which is why it is opt-in; a blocking ask
from it is refused with ``BlockingOnIOThread``. An inline actor may also
answer an ask *later* (:meth:`Actor.reply_later`): a server whose answer
waits on something else (a Raft commit) keeps the ask's reply target instead
of making its client bind a reply address and wake a second thread there.

The seam to the host is public and small: :class:`Host` (what an actor
needs from its system) and :func:`hosted_by` (the context a system starts
an actor in). Subclasses that override ``on_failure`` must call
``super().on_failure(...)`` to keep rebuilding.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import queue
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

import pykka
import pykka.messages

# pykka internals this module relies on (hence pykka<5 in setup.cfg): this class (a queued message
# with its reply target), the hooks Actor overrides (_create_actor_inbox, _start_actor_loop,
# _actor_loop_running, _handle_receive) and the loop steps it calls (_actor_loop_setup, _actor_loop_teardown, _stop, _handle_failure).
from pykka._envelope import Envelope as _PykkaEnvelope

from actors.errors import SystemStopped
from transport.node import Node, Timer

if TYPE_CHECKING:
    # For the type of ``actor_system`` only (apps call the full system's methods on it); at run time an
    # actor needs just the Host seam below, so this is the one import in actors/ that points upward.
    from actors.system import ActorSystem

log = logging.getLogger(__name__)

_PYKKA_MESSAGES = pykka.messages.__name__
"""The module of pykka's own messages (stop, proxy calls): the only ones its ``_handle_receive`` treats apart."""


class Host(Protocol):
    """What an actor needs from the system that hosts it."""

    @property
    def node(self) -> Node: ...

    def call_later(self, delay: float, fn: Callable[[], Any]) -> Timer: ...

    def actor_failed(self, name: str, ref: pykka.ActorRef, exc: BaseException | None) -> None:
        """Called on the serving thread when a tell handler of the actor ``name`` raised."""

    def actor_built(self, name: str, actor: Actor) -> None:
        """Called by each new instance of the actor ``name`` (its figures are read from it)."""


_hosting: contextvars.ContextVar[tuple[Host, str] | None] = contextvars.ContextVar("zactor_hosting", default=None)


@contextlib.contextmanager
def hosted_by(host: Host, name: str) -> Iterator[None]:
    """Actors constructed inside this block belong to ``host`` under ``name``."""
    token = _hosting.set((host, name))
    try:
        yield
    finally:
        _hosting.reset(token)


class ReplyTarget(Protocol):
    """Where the answer to an ask goes (see :meth:`Actor.reply_later`); one-shot, any thread."""

    def set(self, value: Any = None) -> None: ...


class _InlineInbox:
    """The mailbox of an inline actor: a deque its node's I/O thread drains.

    ``put`` from any thread; the first put after a drain schedules one drain
    (the flag is cleared before draining, so a put during the drain is
    either drained now or schedules the next one).
    """

    __slots__ = ("_actor", "_node", "_q", "_scheduled", "_serving")

    def __init__(self, node: Node, actor: Actor) -> None:
        self._q: deque[Any] = deque()
        self._node = node
        self._actor = actor
        self._scheduled = True  # set until ``start``'s setup has run: what comes first waits behind it
        self._serving = False  # a handler of this actor is running (possibly lower on this stack)

    def put(self, envelope: Any, /) -> None:
        self._q.append(envelope)
        if not self._scheduled:
            self._scheduled = True
            self._node.run_soon(self._drain)

    def arrive(self, message: Any, reply_to: Any, /) -> None:
        """A message from the network, on the I/O thread: served at once when nothing is ahead of it.

        This skips the queue, the deferred drain and pykka's envelope for the
        common case (one request at a time). With anything queued, or this
        actor's handler already on the stack (a message it sent to its own
        node came straight back), it waits its turn like any other.
        """
        actor = self._actor
        if self._q or self._scheduled or self._serving or actor.actor_stopped.is_set():
            self.put(_PykkaEnvelope(message, reply_to=reply_to))  # a stopped actor's drain answers it
            return
        self._serving = True
        try:
            actor._serve_one(message, reply_to)
        finally:
            self._serving = False
        if actor.actor_stopped.is_set():
            actor._actor_loop_teardown()

    def start(self) -> None:
        """Have the I/O thread run the actor's ``on_start``, then drain what came meanwhile.

        pykka's ordering: nothing is handled before ``on_start``. Until the setup has run
        the inbox counts as scheduled, so ``arrive`` queues a message instead of serving it.
        """
        self._node.run_soon(self._setup)

    def _setup(self) -> None:
        if not self._actor.actor_stopped.is_set():
            self._actor._actor_loop_setup()
        self._drain()

    def get(self) -> Any:
        return self._q.popleft()

    def empty(self) -> bool:
        return not self._q

    def qsize(self) -> int:
        return len(self._q)

    def stop_here(self) -> None:
        """Stop the actor on the calling thread (when the I/O thread is not there to do it)."""
        if not self._actor.actor_stopped.is_set():
            self._actor._stop()
        self._actor._actor_loop_teardown()

    def _drain(self) -> None:
        self._scheduled = False
        actor, q = self._actor, self._q
        self._serving = True
        try:
            for _ in range(1_000):  # bounded: other actors and the sockets get their turn
                if not q or actor.actor_stopped.is_set():
                    break
                envelope = q.popleft()
                actor._serve_one(envelope.message, envelope.reply_to)
        finally:
            self._serving = False
        if actor.actor_stopped.is_set():
            actor._actor_loop_teardown()
        elif q and not self._scheduled:
            self._scheduled = True
            self._node.run_soon(self._drain)


_TOOK_RING = 256
"""Handling times kept per actor for its p99 (the last this many messages)."""


class Actor(pykka.ThreadingActor):
    """Subclass this and implement ``on_receive``; spawn with ``system.spawn(Cls, ..., name=...)``."""

    # A forgotten actor must never keep its process alive after the main thread exits.
    use_daemon_thread = True

    inline: ClassVar[bool] = False
    """Serve this actor on its node's I/O thread (handlers must never block); see the module docstring."""

    def __init__(self) -> None:
        context = _hosting.get()
        # The full system (apps use its refs); the actor itself only needs the Host seam.
        self.actor_system: ActorSystem | None = cast("ActorSystem", context[0]) if context else None
        super().__init__()
        self.actor_name: str = context[1] if context else self.actor_urn
        # What `zactor top` shows: written by the serving thread alone, read by the I/O
        # thread (a count and a fixed ring of list slots: each read one atomic operation).
        # Prefixed: a subclass's own `handled` or `_took` must not collide with them.
        self._zactor_handled = 0
        self._zactor_took: list[float] = [0.0] * _TOOK_RING
        self._zactor_reply: Any = None  # the reply target of the ask being served inline, until taken
        if context:
            context[0].actor_built(self.actor_name, self)

    def _create_actor_inbox(self) -> Any:  # type: ignore[override]  # pykka's hook, per instance here
        # SimpleQueue (in C, unbounded like pykka's own) puts and gets several
        # times faster than queue.Queue, and a remote message passes through it twice.
        if type(self).inline and self.actor_system is not None:
            return _InlineInbox(self.actor_system.node, self)
        return queue.SimpleQueue()

    def _start_actor_loop(self) -> None:
        if isinstance(self.actor_inbox, _InlineInbox):
            self.actor_inbox.start()
            return
        super()._start_actor_loop()

    def _actor_loop_running(self) -> None:
        # pykka's loop, each turn taken by _serve_one as an inline actor's is: the one place that knows
        # whether the message being handled is an ask, which decides what a handler's error becomes.
        inbox, stopped = self.actor_inbox, self.actor_stopped
        while not stopped.is_set():
            envelope = inbox.get()
            try:
                self._serve_one(envelope.message, envelope.reply_to)
            except BaseException:  # a handler's SystemExit or KeyboardInterrupt: as pykka, stop them all
                log.debug("%s: %r in a handler; stopping all actors", self, sys.exc_info()[1])
                self._stop()
                pykka.ActorRegistry.stop_all()

    def _serve_one(self, message: Any, reply_to: Any) -> None:
        """One turn of the actor loop, for a threaded actor and an inline one alike (pykka's semantics)."""
        self._zactor_reply = reply_to
        try:
            response = self._handle_receive(message)
            if self._zactor_reply is not None:  # None: a tell, or the handler answers later
                reply_to.set(response)
        except Exception as exc:
            if reply_to is not None:
                # One-shot targets: a later answer from the handler is ignored. A SystemStopped goes
                # to the asker as it is: its question was not answered, and None would say it was.
                reply_to.set_exception()
            elif isinstance(exc, SystemStopped) and self.actor_system is not None and self.actor_system.stopped:
                # A tell or ask made while this actor's own system stops (its process got SIGTERM, say):
                # the process is going away, not failing. Raised on, it was a traceback and a failure.
                log.debug("%s: its system stopped during a %s", self, type(message).__name__)
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:
                    self._handle_failure(*sys.exc_info())
        finally:
            self._zactor_reply = None

    def reply_later(self) -> ReplyTarget | None:
        """Take the reply target of the ask being handled (None for a tell): the handler's return
        value is then not sent, and whoever holds the target answers once with ``set(value)``.

        For inline actors only: their handlers run where the ask's connection
        is served, so holding the target costs nothing; a threaded actor's
        answer would go back through the I/O thread all the same, so it raises instead.
        """
        if not type(self).inline:
            raise RuntimeError(f"{type(self).__name__} is not inline: only an inline actor can answer an ask later")
        target, self._zactor_reply = self._zactor_reply, None
        return cast("ReplyTarget | None", target)

    def schedule(self, delay: float, message: Any) -> Timer:
        """Deliver ``message`` to this actor instance after ``delay`` seconds.

        Once ``cancel()`` returns, the actor never handles the message, even
        if the timer had already put it in the mailbox.
        """
        ref = self.actor_ref
        handle = Timer(lambda: None)
        self._system().call_later(delay, lambda: _tell_if_alive(ref, _TimerMessage(handle, message)))
        return handle

    def schedule_every(self, interval: float, message: Any) -> Timer:
        """Deliver ``message`` every ``interval`` seconds until cancelled or the actor stops.

        As with ``schedule``, a tick already queued when ``cancel()`` is called is not handled.
        """
        ref = self.actor_ref
        system = self._system()
        handle = Timer(lambda: None)
        tick = _TimerMessage(handle, message)

        def fire() -> None:
            if not handle.cancelled and _tell_if_alive(ref, tick):
                system.call_later(interval, fire)

        system.call_later(interval, fire)
        return handle

    def _handle_receive(self, message: Any) -> Any:
        # Timer messages are checked here, on the actor's own thread, so a
        # cancel() made by a handler covers the ticks queued behind it.
        if type(message) is _TimerMessage:
            if message.handle.cancelled:
                return None
            message = message.message
        if type(message).__module__ == _PYKKA_MESSAGES:  # a stop or a proxy call: pykka's to serve
            return super()._handle_receive(message)
        start = time.perf_counter()
        try:
            return self.on_receive(message)  # the rest, as pykka would after four isinstance checks
        finally:
            self._zactor_took[self._zactor_handled % _TOOK_RING] = time.perf_counter() - start
            self._zactor_handled += 1

    def handled_count(self) -> int:
        """How many messages this instance has handled (pykka's own stop and proxy calls aside)."""
        return self._zactor_handled

    def handling_p99(self) -> float | None:
        """Seconds: the 99th percentile of the last handled messages' handling time (None before any)."""
        n = min(self._zactor_handled, _TOOK_RING)
        if n == 0:
            return None
        took = sorted(self._zactor_took[:n])
        return took[min(n - 1, int(n * 0.99))]

    def more_waiting(self) -> bool:
        """Whether more messages wait in the mailbox already.

        An actor that does expensive work per state change (an fsync, a
        network flush) can defer it while this is true and do it once for the
        whole run of messages: that is how group commit is built.
        """
        return not self.actor_inbox.empty()

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.actor_system is not None:
            self.actor_system.actor_failed(self.actor_name, self.actor_ref, exception_value)

    def _system(self) -> Host:
        if self.actor_system is None:
            raise RuntimeError(f"{self} was not spawned by an ActorSystem, so it has no timers")
        return self.actor_system


class _TimerMessage:
    """A timer's message on its way to the mailbox, with the handle that can still cancel it."""

    __slots__ = ("handle", "message")

    def __init__(self, handle: Timer, message: Any) -> None:
        self.handle = handle
        self.message = message


def _tell_if_alive(ref: pykka.ActorRef, message: Any) -> bool:
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        return False
    return True
