"""The caller's side of an actor in a supervised process: a ref that outlives the process.

A :class:`ProcessRef` is what ``spawn_process`` and ``lookup`` return. Its
owner (the system's :class:`~actors.spawn.Spawner`) hears of every death of
the hosting process, from the supervisor or from a node agent's notice, and
calls ``_died``: asks in flight then fail at once with :class:`ProcessDied`
instead of waiting out their timeout, and later asks reach the new
incarnation. When the process stays down (the restart limit, a clean exit
of a transient child, ``stop()``) every ask fails at once with
:class:`RestartLimitReached`.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from actors.address import Address
from actors.errors import ActorDeadError
from actors.future import ReplyFuture
from actors.system import ActorSystem, RemoteRef


class ProcessDied(ActorDeadError):
    """The process hosting the actor died while this ask was in flight (it may be restarted)."""


class RestartLimitReached(ActorDeadError):
    """The actor's process is down for good: it died too often (the restart limit), it exited
    cleanly under ``restart="transient"`` (or at all under ``"temporary"``), or it was stopped."""


class Owner(Protocol):
    """What a ProcessRef asks of whoever spawned (or found) its process: the Spawner, one layer up."""

    def pid(self, ref: ProcessRef) -> int | None: ...

    def restarts(self, ref: ProcessRef) -> int: ...

    def stop(self, ref: ProcessRef, timeout: float) -> None: ...


class ProcessRef(RemoteRef):
    """A reference to an actor in a supervised process; valid across that process's restarts.

    ``tell``, ``ask`` and ``ask_async`` as on any remote ref. An ask in
    flight when the process dies fails with :class:`ProcessDied`; after the
    supervisor gives up, every ask fails at once with :class:`RestartLimitReached`.
    """

    def __init__(self, system: ActorSystem, address: Address, owner: Owner, *, node: str | None = None, via: str = "import") -> None:
        super().__init__(system, address)
        self._owner = owner
        self.node = node
        """The node agent hosting it, or None for this system's own supervisor."""
        self.via = via
        """How the class reached the process: ``"import"`` or ``"cloudpickle"``."""
        self._lock = threading.Lock()
        self._inflight: dict[int, ReplyFuture] = {}
        self._ended: BaseException | None = None
        self._last_death: ProcessDied | None = None
        self.deaths = 0

    def __repr__(self) -> str:
        where = f" on node {self.node}" if self.node else ""
        return f"<ProcessRef {self.address}{where}>"

    def tell(self, message: Any) -> None:
        self._check()
        super().tell(message)

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any:
        future = self._send_ask(message, timeout, shared=False)
        if not block:
            return future
        try:
            return future.get()
        finally:
            self._forget(future)

    async def ask_async(self, message: Any, *, timeout: float | None = None) -> Any:
        """``ask`` for asyncio code; a death of the process fails it as it fails a blocking ask."""
        future = self._send_ask(message, timeout, shared=True)
        try:
            return await future
        finally:
            self._forget(future)

    def _send_ask(self, message: Any, timeout: float | None, shared: bool) -> ReplyFuture:
        """Send the ask, watched for the process's death from before it leaves.

        The death count is read before the send: a death reported while the
        ask is being sent (after it began, before it is in ``_inflight``) is
        one it was in flight for, and fails it as any later one would.
        """
        self._check()
        with self._lock:
            deaths = self.deaths
        future = super()._send_ask(message, timeout, shared)
        with self._lock:
            if len(self._inflight) > 256:  # forget answered ones now and then: the table stays small
                self._inflight = {k: f for k, f in self._inflight.items() if not f.done}
            self._inflight[id(future)] = future
            ended = self._ended
            missed = self._last_death if self.deaths != deaths else None
        if ended is not None:  # gave up while we sent
            future.set_exception((type(ended), ended, None))
        elif missed is not None:  # died while we sent
            future.set_exception((ProcessDied, missed, None))
        return future

    def _forget(self, future: ReplyFuture) -> None:
        with self._lock:
            self._inflight.pop(id(future), None)

    def _check(self) -> None:
        if self._ended is not None:
            raise self._ended

    def _died(self, exitcode: int | None, final: BaseException | None) -> None:
        """The hosting process died (exit code, or None if unknown); ``final`` if it stays dead."""
        error = ProcessDied(
            f"the process hosting {self.address.name!r} died (exit code {exitcode}) while this ask was in flight"
            + (f": {final}" if final is not None else "; unless its restart limit is reached it is restarted, and later asks reach the new process")
        )
        with self._lock:
            self.deaths += 1
            self._last_death = error
            if final is not None:
                self._ended = final
            pending, self._inflight = list(self._inflight.values()), {}
        for future in pending:
            future.set_exception((ProcessDied, error, None))  # one-shot: an answer that won the race stands

    def pid(self) -> int | None:
        """The pid of the process hosting the actor now (on its node's machine), None if none runs."""
        return self._owner.pid(self)

    def restarts(self) -> int:
        """How many times its supervisor (or node agent) has restarted the process."""
        return self._owner.restarts(self)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the process for good (it is not restarted)."""
        self._owner.stop(self, timeout)
