"""The base class for actors hosted by an :class:`~actors.system.ActorSystem`.

It is a ``pykka.ThreadingActor`` with three additions, all of which need the
hosting system: timers that deliver into the actor's own mailbox (so the
actor is only ever touched by its own thread), the actor's name and system,
and rebuilding after a failure: when a *tell* handler raises, pykka stops the
actor and calls ``on_failure``; ours asks the system to build a fresh
instance from the same factory and arguments under the same name.
Subclasses that override ``on_failure`` must call ``super().on_failure(...)``
to keep that.
"""

from __future__ import annotations

import contextvars
import queue
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pykka

from transport.node import Timer

if TYPE_CHECKING:
    from actors.system import ActorSystem

_spawning: contextvars.ContextVar[tuple[ActorSystem, str] | None] = contextvars.ContextVar(
    "zactor_spawning", default=None
)


class Actor(pykka.ThreadingActor):
    """Subclass this and implement ``on_receive``; spawn with ``system.spawn(Cls, ..., name=...)``."""

    # A forgotten actor must never keep its process alive after the main thread exits.
    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> queue.SimpleQueue:
        # pykka's runtime hook for the mailbox. SimpleQueue (in C, unbounded
        # like pykka's own) puts and gets several times faster than
        # queue.Queue, and a remote message passes through it twice.
        return queue.SimpleQueue()

    def __init__(self) -> None:
        super().__init__()
        context = _spawning.get()
        self.actor_system: ActorSystem | None = context[0] if context else None
        self.actor_name: str = context[1] if context else self.actor_urn

    def schedule(self, delay: float, message: Any) -> Timer:
        """Deliver ``message`` to this actor instance after ``delay`` seconds."""
        ref = self.actor_ref
        return self._system().call_later(delay, lambda: _tell_if_alive(ref, message))

    def schedule_every(self, interval: float, message: Any) -> Timer:
        """Deliver ``message`` every ``interval`` seconds until cancelled or the actor stops."""
        ref = self.actor_ref
        system = self._system()
        handle = Timer(lambda: None)

        def fire() -> None:
            if not handle.cancelled and _tell_if_alive(ref, message):
                system.call_later(interval, fire)

        system.call_later(interval, fire)
        return handle

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
            self.actor_system._actor_failed(self.actor_name, self.actor_ref, exception_value)

    def _system(self) -> ActorSystem:
        if self.actor_system is None:
            raise RuntimeError(f"{self} was not spawned by an ActorSystem, so it has no timers")
        return self.actor_system


def _tell_if_alive(ref: pykka.ActorRef, message: Any) -> bool:
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        return False
    return True
