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

``wait(futures, timeout)`` is that for many asks at once (``concurrent.futures.wait``'s
shape): one thread reads every channel its futures' replies come back on in
one ``zmq_poll``, and wakes as well for those another thread completes, so
asks to several nodes cost one wait, not a turn each.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pykka
import zmq

from actors.errors import AskTimeout, BlockingOnIOThread

if TYPE_CHECKING:
    from transport import Envelope
    from transport.node import Channel

log = logging.getLogger(__name__)
_UNSET = object()
_HOOK_UNSET = pykka.Future()._get_hook_result  # pykka's "no hook result yet" marker, without naming its class
_POLL_SLICE = 0.05
"""Longest a waiting thread holds a channel without looking at its own future
(which a fault-delayed reply, a stop or the sweep may complete by another way)."""


class _Owner(Protocol):
    """What a future needs from whoever sent its ask (the system's :class:`~actors.wire.Wire`)."""

    def on_io_thread(self) -> bool: ...

    def forget(self, corr: int) -> None: ...

    def resolve(self, env: Envelope) -> None: ...


class ReplyFuture(pykka.Future):
    """The answer to one ask; see the module docstring.

    A pre-acquired lock is the cheapest one-shot signal between two threads.
    Completion (``set``/``set_exception``) is idempotent from any number of
    threads: the first to claim it wins, the others return; a late reply, the
    sweep, a process death and the system's teardown may all try.
    Nothing is formatted until an error needs the text (``describe``).
    ``owner`` is the wire that sent the ask: it says whether a waiter is the
    I/O thread (which must not wait), forgets the ask (``corr``) once its
    deadline has passed, and completes whatever reply a waiter reads off
    ``channel`` (which may be another ask's).
    """

    # Slots for the fields read on every turn of a wait (faster reads; pykka.Future itself
    # has none, so instances keep a __dict__). pykka's own two attributes are among them,
    # set here since its __init__ is skipped.
    __slots__ = (
        "_callbacks", "_channel", "_corr", "_error", "_get_hook", "_get_hook_result",
        "_lock", "_owner", "_to", "_unclaimed", "_value", "_what", "deadline",
    )  # fmt: skip

    def __init__(
        self,
        what: type | str = "",
        to: object = "",
        deadline: float = math.inf,
        owner: _Owner | None = None,
        corr: int = -1,
        channel: Channel | None = None,
    ) -> None:
        self._lock = lock = threading.Lock()
        lock.acquire()
        self._unclaimed = [True]  # completion claims it by popping (atomic): two completers never both release the lock
        self._what = what
        self._to = to
        self.deadline = deadline
        self._owner = owner
        self._corr = corr
        self._channel = channel
        self._callbacks: list[Callable[[], None]] = []
        self._value: Any = _UNSET
        self._error: BaseException | None = None
        self._get_hook: Any = None
        self._get_hook_result: Any = _HOOK_UNSET

    @property
    def describe(self) -> str:
        what = self._what
        return f"{what if isinstance(what, str) else what.__name__} to {self._to}"

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
            owner = self._owner
            # The I/O thread never makes a channel, but a future made on another thread may be handed to it.
            if owner is not None and owner.on_io_thread():
                raise BlockingOnIOThread(
                    f"a blocking wait for {self.describe} on the node's I/O thread would wait for itself: "
                    "use tell, ask(block=False) without get(), or a timer"
                )
            now = time.monotonic()
            end = self.deadline if timeout is None else min(self.deadline, now + max(0.0, timeout))
            if channel is not None:
                self._drive(channel, end, now)
            elif math.isinf(end):
                self._lock.acquire()
                self._lock.release()
            elif self._lock.acquire(timeout=max(0.0, end - now)):
                self._lock.release()  # let later get() calls through
            if self._value is not _UNSET:
                return self._value
            if self._error is None:
                if time.monotonic() >= self.deadline and owner is not None:
                    owner.forget(self._corr)  # before its deadline it stays pending: a later get() may still succeed
                waited = max(0.0, (end if not math.isinf(end) else time.monotonic()) - now)
                raise AskTimeout(f"no reply to {self.describe} within {waited:.3f} s")
        raise self._error

    def _drive(self, ch: Channel, end: float, now: float) -> None:
        """Read the channel this ask's reply comes back on until it is here or ``end``.

        ``now``: the caller's clock reading, so the usual ask, answered on the first read, reads the clock no more."""
        assert self._owner is not None
        resolve = self._owner.resolve
        lock = ch.lock
        remaining = end - now
        while self._value is _UNSET and self._error is None:
            if remaining <= 0:
                return
            if ch.closed:  # the node is closing: the system completes every pending future
                if self._lock.acquire(timeout=min(remaining, 5.0)):
                    self._lock.release()
                return
            # Uncontended (the usual case: this thread alone waits on its channel), the
            # non-blocking attempt is the cheap one; else wait a slice for the lock.
            if lock.acquire(False) or lock.acquire(timeout=min(remaining, _POLL_SLICE)):
                try:
                    if self._value is not _UNSET or self._error is not None:
                        return
                    for env in ch.receive(remaining if remaining < _POLL_SLICE else _POLL_SLICE):
                        resolve(env)
                finally:
                    lock.release()
            remaining = end - time.monotonic()

    def set(self, value: Any = None) -> None:
        if self._value is not _UNSET or self._error is not None:
            return  # the common late answer: nothing to claim
        try:
            self._unclaimed.pop()
        except IndexError:
            return  # another thread completes it at this very moment: the first claim stands
        self._value = value
        self._lock.release()
        if self._callbacks:
            self._run_callbacks()

    def set_exception(self, exc_info: Any = None) -> None:
        if self._value is not _UNSET or self._error is not None:
            return
        exc = exc_info[1] if exc_info else sys.exc_info()[1]
        try:
            self._unclaimed.pop()
        except IndexError:
            return  # completed by another thread meanwhile (the system's teardown, an actor's thread)
        self._error = exc if exc is not None else RuntimeError("unknown error")
        self._lock.release()
        if self._callbacks:
            self._run_callbacks()

    def _run_callbacks(self) -> None:
        """Run the done-callbacks; one that raises is logged, as concurrent.futures does.

        It runs on whichever thread completes the future, often in the middle of
        completing others (every reply of a batch): an exception that escaped
        here would leave those waiting until their deadline.
        """
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            try:
                fn()
            except Exception:
                log.exception("a done-callback of %s raised", self.describe)

    def add_done_callback(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once the future is done (now, if it is), on the thread that completes it."""
        self._callbacks.append(fn)
        if self.done:  # done before (or while) it was added: run it here unless the completer took it
            try:
                self._callbacks.remove(fn)
            except ValueError:
                return  # the completing thread swapped the list out and runs it
            fn()

    def _discard_callback(self, fn: Callable[[], None]) -> None:
        """Forget a done-callback that is no longer wanted (``wait`` returned first)."""
        try:
            self._callbacks.remove(fn)
        except ValueError:
            pass  # it ran already, or is running now

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


F = TypeVar("F", bound=pykka.Future[Any])

_HOOK_TURN = 0.01
"""Longest ``wait`` gives one future with a get hook (``map``, ``join``...) per pass while it has
other futures to watch: such a future is a function of others it cannot see, so it gets a turn."""
_CONTENDED_TURN = 0.005
"""Longest ``wait`` goes without retrying the lock of a channel another thread is driving."""
_DRAIN_MAX = 1000
"""Most replies read off one channel in one pass (the rest on the next)."""


def wait(
    futures: Iterable[F], timeout: float | None = None, return_when: str = ALL_COMPLETED
) -> tuple[set[F], set[F]]:
    """Wait on many futures at once; ``(done, not_done)``, as :func:`concurrent.futures.wait`.

    ``return_when`` is one of ``concurrent.futures``' constants: ``ALL_COMPLETED``
    (default), ``FIRST_COMPLETED``, ``FIRST_EXCEPTION``. A future is done once
    it has a value or an error (read either with ``get(timeout=0)``).

    Why it exists: a thread's remote ask is completed only while someone
    reads the thread's channel to that node, so asks to several nodes waited
    on one after another either starve the later ones or cost a turn each.
    Here every channel of the pending futures is read in one ``zmq_poll``
    (each under its lock, taken without blocking: a channel another thread
    is driving is left to it and its lock retried every few ms); futures that
    other threads complete (local asks, ``ask_async``'s, those on a channel
    someone else drives) wake the same poll through a pipe their
    done-callbacks write to. Futures with a get hook (pykka's ``map``,
    ``join``...) depend on futures ``wait`` cannot see: each gets a short
    ``get`` turn per pass.

    Never cancels an ask: what is not done when the time is up stays pending
    and a later ``wait`` or ``get`` may still complete it. ``timeout=None``
    waits until the latest deadline of the pending asks (for hooked futures,
    which have none, as long as they take). Refused on a node's I/O thread
    with :class:`BlockingOnIOThread`, as a blocking ``get`` is.
    """
    if return_when not in (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION):
        raise ValueError(f"return_when must be ALL_COMPLETED, FIRST_COMPLETED or FIRST_EXCEPTION, got {return_when!r}")
    unique = list(dict.fromkeys(futures))
    strangers = [f for f in unique if not isinstance(f, pykka.Future)]
    if strangers:
        raise TypeError(f"wait takes futures (ask(..., block=False)), got {type(strangers[0]).__name__}")
    return _Waiting(unique, return_when).run(timeout)


class _Waiting:
    """The state of one ``wait`` call: which futures it reads itself and which it is woken for."""

    def __init__(self, futures: list[Any], return_when: str) -> None:
        self.futures = futures
        self.return_when = return_when
        # A ReplyFuture without a hook says whether it is done; any other is known done once a get returned.
        self.plain: list[ReplyFuture] = [f for f in futures if isinstance(f, ReplyFuture) and f._get_hook is None]
        plain_ids = {id(f) for f in self.plain}
        self.hooked: list[pykka.Future[Any]] = [f for f in futures if id(f) not in plain_ids]
        self.hooked_failed: dict[int, bool] = {}  # id -> whether its get raised
        self.waker: _Waker | None = None

    def settled(self, f: Any) -> bool:
        return f.done if isinstance(f, ReplyFuture) and f._get_hook is None else id(f) in self.hooked_failed

    def failed(self, f: Any) -> bool:
        if isinstance(f, ReplyFuture) and f._get_hook is None:
            return f._error is not None
        return self.hooked_failed.get(id(f), False)

    def finished(self) -> bool:
        if self.return_when == FIRST_COMPLETED:
            return any(self.settled(f) for f in self.futures) or not self.futures
        if self.return_when == FIRST_EXCEPTION and any(self.failed(f) for f in self.futures):
            return True
        return all(self.settled(f) for f in self.futures)

    def run(self, timeout: float | None) -> tuple[set[Any], set[Any]]:
        for f in self.plain:
            if not f.done and f._owner is not None and f._owner.on_io_thread():
                raise BlockingOnIOThread(
                    f"a blocking wait for {f.describe} on the node's I/O thread would wait for itself: "
                    "use tell, ask(block=False) without waiting, or a timer"
                )
        end = math.inf if timeout is None else time.monotonic() + max(0.0, timeout)
        try:
            while not self.finished():
                pending = [f for f in self.plain if not f.done]
                hooked = [f for f in self.hooked if id(f) not in self.hooked_failed]
                limit = end
                if pending and not hooked:  # nothing left that get() would still wait for
                    limit = min(end, max(f.deadline for f in pending))
                remaining = limit - time.monotonic()
                self.one_pass(pending, hooked, max(0.0, remaining))
                if remaining <= 0:  # that was the last pass: a non-blocking read of what had come
                    break
        finally:
            if self.waker is not None:
                self.waker.close()
        settled = [(f, self.settled(f)) for f in self.futures]  # once each: another thread may complete one meanwhile
        return {f for f, yes in settled if yes}, {f for f, yes in settled if not yes}

    def one_pass(self, pending: list[ReplyFuture], hooked: list[pykka.Future[Any]], remaining: float) -> None:
        """Read the channels this thread can take for up to one slice, then give hooked futures a turn."""
        held: dict[Channel, Callable[[Envelope], None]] = {}
        usable: dict[Channel, bool] = {}
        contended = False
        try:
            for f in pending:
                ch = f._channel
                if ch is not None and ch not in usable:
                    if ch.lock.acquire(False):
                        if ch.closed:  # closing: the system completes its futures (the waker hears it)
                            ch.lock.release()
                            usable[ch] = False
                        else:
                            assert f._owner is not None
                            held[ch] = f._owner.resolve
                            usable[ch] = True
                    else:
                        usable[ch] = False
                        contended = True
                if ch is None or not usable[ch]:
                    if self.waker is None:
                        self.waker = _Waker()
                    self.waker.watch(f)
            slice_ = _HOOK_TURN if hooked else _CONTENDED_TURN if contended else _POLL_SLICE
            items: list[tuple[Any, int]] = [(ch.socket, zmq.POLLIN) for ch in held]
            if self.waker is not None:
                items.append((self.waker.fd, zmq.POLLIN))
            if items:
                by_socket = {id(ch.socket): ch for ch in held}
                ms = math.ceil(min(remaining, slice_) * 1000)
                for what, _events in zmq.zmq_poll(items, ms):
                    ch_ready = by_socket.get(id(what))
                    if ch_ready is None:
                        assert self.waker is not None
                        self.waker.drain()
                        continue
                    resolve = held[ch_ready]
                    for _ in range(_DRAIN_MAX):
                        envs = ch_ready.receive(0)
                        if not envs:
                            break
                        for env in envs:
                            resolve(env)
        finally:
            for ch in held:
                ch.lock.release()
        turn = min(remaining, _HOOK_TURN if pending else _POLL_SLICE)
        for h in hooked:
            try:
                h.get(timeout=turn)
            except BlockingOnIOThread:
                raise
            except pykka.Timeout:
                continue  # not yet (an ask swept at its deadline looks the same: it waits for the timeout)
            except Exception:  # the future's outcome is an error: done all the same
                self.hooked_failed[id(h)] = True
            else:
                self.hooked_failed[id(h)] = False


class _Waker:
    """A pipe that futures completed by other threads write a byte to when they complete,
    so the waiting thread's one ``zmq_poll`` wakes for them as for a reply on its own sockets."""

    def __init__(self) -> None:
        self.fd, self._w = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._w, False)
        self._lock = threading.Lock()  # a callback never writes to a closed (maybe reused) descriptor
        self._open = True
        self._watched: dict[int, ReplyFuture] = {}
        self._wake = self.wake

    def watch(self, future: ReplyFuture) -> None:
        if id(future) not in self._watched:
            self._watched[id(future)] = future
            future.add_done_callback(self._wake)

    def wake(self) -> None:
        with self._lock:
            if self._open:
                try:
                    os.write(self._w, b"\0")
                except BlockingIOError:
                    pass  # the pipe is full: the waiting thread has wake-ups to read already

    def drain(self) -> None:
        try:
            for _ in range(_DRAIN_MAX):
                if not os.read(self.fd, 4096):
                    break
        except BlockingIOError:
            pass  # empty

    def close(self) -> None:
        for future in self._watched.values():
            future._discard_callback(self._wake)
        with self._lock:
            self._open = False
            os.close(self.fd)
            os.close(self._w)
