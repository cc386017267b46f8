"""Futures for remote asks: the caller's side, and the actor's side that replies over the wire."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pykka

from actors.errors import AskTimeout, Failure

_UNSET = object()


class ReplyFuture(pykka.Future):
    """The answer to one remote ask; ``get(timeout=...)`` raises AskTimeout, never hangs.

    A pre-acquired lock is the cheapest one-shot signal between two threads;
    an ask's round trip is dominated by such hand-offs.
    """

    def __init__(self, describe: str, deadline: float, forget: Callable[[], None]) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._lock.acquire()
        self._value: Any = _UNSET
        self._error: BaseException | None = None
        self.describe = describe
        self.deadline = deadline
        self._forget = forget

    def __repr__(self) -> str:
        return f"<ReplyFuture {self.describe}>"

    @property
    def done(self) -> bool:
        return self._value is not _UNSET or self._error is not None

    def get(self, *, timeout: float | None = None) -> Any:
        if not self.done:
            wait = self.deadline - time.monotonic() if timeout is None else timeout
            got = self._lock.acquire() if math.isinf(wait) else self._lock.acquire(timeout=max(0.0, wait))
            if got:
                self._lock.release()  # let later get() calls through
            elif not self.done:
                if time.monotonic() >= self.deadline:
                    self._forget()  # before its deadline it stays pending: a later get() may still succeed
                raise AskTimeout(f"no reply to {self.describe} within {max(0.0, wait):.3f} s")
        if self._error is not None:
            raise self._error
        return self._value

    def set(self, value: Any = None) -> None:
        if self.done:
            return
        self._value = value
        self._lock.release()

    def set_exception(self, exc_info: Any = None) -> None:
        if self.done:
            return
        exc = exc_info[1] if exc_info else sys.exc_info()[1]
        self._error = exc if exc is not None else RuntimeError("unknown error")
        self._lock.release()


class WireReply(pykka.Future):
    """Put in a local actor's mailbox for an ask that came over the wire.

    pykka's actor loop calls ``set`` with the handler's result, or
    ``set_exception`` when it raised (the actor goes on), or answers with
    ``ActorDeadError`` when the actor stopped first: each becomes a reply
    envelope to the asking node.
    """

    def __init__(self, send_reply: Callable[[Any, bool], None]) -> None:
        super().__init__()
        self._send_reply = send_reply

    def get(self, *, timeout: float | None = None) -> Any:
        raise RuntimeError("a wire reply is answered remotely, not read")

    def set(self, value: Any = None) -> None:
        self._send_reply(value, False)

    def set_exception(self, exc_info: Any = None) -> None:
        exc = exc_info[1] if exc_info else sys.exc_info()[1]
        self._send_reply(Failure.from_exception(exc if exc is not None else RuntimeError("unknown error")), True)
