"""The one face every actor reference has, local or remote.

``LocalRef`` (an actor of this process) and ``RemoteRef`` (an actor on
another node) both satisfy :class:`ActorRef`, so code written against it
runs unchanged whichever side of a process boundary the actor is on.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from actors.address import Address


@runtime_checkable
class ActorRef(Protocol):
    """A reference to an actor by address.

    * ``tell(msg)``: send and forget; messages from one thread to one actor
      arrive in the order sent.
    * ``ask(msg, timeout=...)``: send and wait for the handler's result (or
      its exception); ``AskTimeout`` if none comes in time.
    * ``ask(msg, block=False)``: a :class:`~actors.future.ReplyFuture` at
      once, for pipelining; ``get(timeout)`` on it may be retried until the
      ask's own deadline, and ``map``/``join`` compose it.
    * ``await ask_async(msg)``: the same from asyncio code, without a thread
      per request.
    """

    address: Address

    @property
    def name(self) -> str: ...

    def tell(self, message: Any) -> None: ...

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any: ...

    async def ask_async(self, message: Any, *, timeout: float | None = None) -> Any: ...
