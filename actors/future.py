"""The one future type of the runtime: the answer to an ask, local or remote.

``ReplyFuture.get(timeout=...)`` raises :class:`AskTimeout` and never
cancels the ask: a poll that times out can be retried until the ask's own
deadline, after which the future is forgotten. ``map``, ``join`` and the
rest of pykka's combinators work on it, and it is awaitable from asyncio
(``await future``) without a thread per await.

A future whose reply comes back on a caller-owned channel
(:class:`transport.node.Channel`) is completed by whichever thread waits on
it: ``get`` reads the channel itself, so the reply wakes the waiting thread
and no other. Any other future is completed by the thread that has its
answer (the node's I/O thread, an actor's thread) through ``set``.
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import pykka

from actors.errors import AskTimeout, BlockingOnIOThread

if TYPE_CHECKING:
    from transport import Envelope
    from transport.node import Channel

_UNSET = object()
_HOOK_UNSET = pykka.Future()._get_hook_result  # pykka's "no hook result yet" marker, without naming its class
_POLL_SLICE = 0.05
"""Longest a waiting thread holds a channel without looking at its own future
(which a fault-delayed reply, a stop or the sweep may complete by another way)."""


class ReplyFuture(pykka.Future):
    """The answer to one ask; see the module docstring.

    A pre-acquired lock is the cheapest one-shot signal between two threads.
    Nothing is formatted until an error needs the text (``describe``).
    """

    # pykka's own attributes, as class defaults: its __init__ is skipped (one
    # future per ask is made on the hot path) and sets nothing else.
    _get_hook = None
    _get_hook_result = _HOOK_UNSET

    def __init__(
        self,
        what: str = "",
        to: object = "",
        deadline: float = math.inf,
        forget: Callable[[], object] | None = None,
        channel: Channel | None = None,
        resolve: Callable[[Envelope], None] | None = None,
        io_thread: Callable[[], bool] | None = None,
    ) -> None:
        self._lock = lock = threading.Lock()
        lock.acquire()
        self._value: Any = _UNSET
        self._error: BaseException | None = None
        self._what = what
        self._to = to
        self.deadline = deadline
        self._forget = forget
        self._channel = channel
        self._resolve = resolve
        self._io_thread = io_thread
        self._callbacks: list[Callable[[], None]] = []

    @property
    def describe(self) -> str:
        return f"{self._what} to {self._to}"

    def __repr__(self) -> str:
        return f"<ReplyFuture {self.describe}>"

    @property
    def done(self) -> bool:
        return self._value is not _UNSET or self._error is not None

    def get(self, *, timeout: float | None = None) -> Any:
        if self._value is not _UNSET:  # the common case once answered: nothing else to look at
            return self._value
        if self._get_hook is not None:  # map/join/filter/reduce: pykka's combinators
            return super().get(timeout=timeout)
        if self._error is None:
            channel = self._channel
            # A channel is never the I/O thread's (Node.channel), so only a future without one can be waited on there.
            if channel is None and self._io_thread is not None and self._io_thread():
                raise BlockingOnIOThread(
                    f"a blocking wait for {self.describe} on the node's I/O thread would wait for itself: "
                    "use tell, ask(block=False) without get(), or a timer"
                )
            now = time.monotonic()
            end = self.deadline if timeout is None else min(self.deadline, now + max(0.0, timeout))
            if channel is not None:
                self._drive(channel, end)
            elif math.isinf(end):
                self._lock.acquire()
                self._lock.release()
            elif self._lock.acquire(timeout=max(0.0, end - now)):
                self._lock.release()  # let later get() calls through
            if self._value is not _UNSET:
                return self._value
            if self._error is None:
                if time.monotonic() >= self.deadline and self._forget is not None:
                    self._forget()  # before its deadline it stays pending: a later get() may still succeed
                waited = max(0.0, (end if not math.isinf(end) else time.monotonic()) - now)
                raise AskTimeout(f"no reply to {self.describe} within {waited:.3f} s")
        raise self._error

    def _drive(self, ch: Channel, end: float) -> None:
        """Read the channel this ask's reply comes back on until it is here or ``end``."""
        resolve = self._resolve
        assert resolve is not None
        lock = ch.lock
        while self._value is _UNSET and self._error is None:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            if ch.closed:  # the node is closing: the system completes every pending future
                if self._lock.acquire(timeout=min(remaining, 5.0)):
                    self._lock.release()
                return
            # Uncontended (the usual case: this thread alone waits on its channel), the
            # non-blocking attempt is the cheap one; else wait a slice for the lock.
            if not lock.acquire(False) and not lock.acquire(timeout=min(remaining, _POLL_SLICE)):
                continue
            try:
                if self._value is not _UNSET or self._error is not None:
                    return
                env = ch.receive(remaining if remaining < _POLL_SLICE else _POLL_SLICE)
                if env is not None:
                    resolve(env)
            finally:
                lock.release()

    def set(self, value: Any = None) -> None:
        if self._value is not _UNSET or self._error is not None:
            return
        self._value = value
        self._lock.release()
        if self._callbacks:
            self._run_callbacks()

    def set_exception(self, exc_info: Any = None) -> None:
        if self._value is not _UNSET or self._error is not None:
            return
        exc = exc_info[1] if exc_info else sys.exc_info()[1]
        self._error = exc if exc is not None else RuntimeError("unknown error")
        self._lock.release()
        if self._callbacks:
            self._run_callbacks()

    def _run_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn()

    def add_done_callback(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once the future is done (now, if it is), on the thread that completes it."""
        self._callbacks.append(fn)
        if self.done and fn in self._callbacks:  # done before it was added: run it here
            self._callbacks.remove(fn)
            fn()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._wait_async().__await__()

    __iter__ = __await__

    async def _wait_async(self) -> Any:
        if not self.done:
            if self._channel is not None:  # read by a waiting thread; asyncio code uses ask_async instead
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(None, lambda: self.get())
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()

            def wake() -> None:
                loop.call_soon_threadsafe(_finish, waiter)

            self.add_done_callback(wake)
            remaining = self.deadline - time.monotonic()
            try:
                await asyncio.wait_for(waiter, None if math.isinf(remaining) else max(0.0, remaining) + 1.0)
            except TimeoutError:
                pass
        return self.get(timeout=0)


def _finish(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
