"""The clerk: a KV client that retries through lost requests and replies until it gets an answer.

A clerk is cheap (an id, a counter and a reference): every clerk in a
process shares the process's actor system and its one connection to the
server, so tests can make a hundred thousand of them.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from actors import ActorDeadError, ActorSystem, AskTimeout
from actors.errors import NoSuchActor
from apps.kvsrv.messages import Append, BadRequest, Get, Put
from transport.probe import LinkState

SERVER_NAME = "kv"

PROBE_EVERY = 0.5
"""Seconds between two looks at why the server does not answer (a trial connection each)."""


class KVUnavailable(RuntimeError):
    """The server did not answer within the clerk's ``give_up_after``, or cannot: the text says why."""


class KVMisdirected(KVUnavailable):
    """The endpoint answered, but hosts no KV server: ``hosted`` says what it hosts instead."""

    def __init__(self, text: str, endpoint: str, hosted: tuple[str, ...]) -> None:
        super().__init__(text)
        self.endpoint = endpoint
        self.hosted = hosted


class KeyValueCalls:
    """The three calls of both clerks (this one and the replicated service's).

    A subclass sends one request until it is answered (``_call``); a write
    carries the clerk's id and its next sequence number, so the server can
    apply each write once however many times it arrives.
    """

    __slots__ = ("_seq", "client_id")

    def __init__(self) -> None:
        self.client_id = random.getrandbits(62)
        self._seq = 0

    def get(self, key: str) -> str:
        return self._call(Get(key))

    def put(self, key: str, value: str) -> None:
        self._seq += 1
        self._call(Put(key, value, self.client_id, self._seq))

    def append(self, key: str, value: str) -> str:
        """Append ``value`` to ``key``; returns the value before the append."""
        self._seq += 1
        return self._call(Append(key, value, self.client_id, self._seq))

    def _call(self, request: Get | Put | Append) -> Any:
        raise NotImplementedError


class Clerk(KeyValueCalls):
    """``get``, ``put`` and ``append`` against the KV server at ``endpoint``.

    Each try waits ``try_timeout`` seconds for a reply, then the same request
    (same sequence number) is sent again. By default a clerk retries for ever,
    as the lab's clerk does; ``give_up_after`` bounds that for interactive use.
    ``unreachable_after``: with ``give_up_after``, give up sooner once nothing
    has listened at the endpoint for that many seconds (a command a person
    waits on; a server being started needs the default, None).
    ``tell_waiting``: called once, with what a trial connection found, when
    it first finds nothing listening: a command tells its user at once why it
    waits, and still waits for a server that is starting.
    """

    __slots__ = ("_server", "_system", "give_up_after", "tell_waiting", "try_timeout", "unreachable_after")

    def __init__(
        self,
        endpoint: str,
        *,
        system: ActorSystem | None = None,
        try_timeout: float = 0.1,
        give_up_after: float | None = None,
        unreachable_after: float | None = None,
        tell_waiting: Callable[[str], None] | None = None,
    ) -> None:
        if try_timeout <= 0:
            raise ValueError(f"try_timeout must be positive seconds, got {try_timeout}")
        super().__init__()
        self._system = system or ActorSystem.shared()
        self._server = self._system.ref(endpoint, SERVER_NAME)
        self.try_timeout = try_timeout
        self.give_up_after = give_up_after
        self.unreachable_after = unreachable_after
        self.tell_waiting = tell_waiting

    def _call(self, request: Get | Put | Append) -> Any:
        """Send ``request`` until it is answered.

        A clerk with ``give_up_after`` (a person waits) also gives up early,
        with the reason, when the reason will not pass by waiting: the
        endpoint hosts another service (the node's NoSuchActor reply says what
        it hosts), this machine's key is refused, the security settings
        differ, or (with ``unreachable_after``) nothing has listened there for that long. The lab's clerk
        (no ``give_up_after``) waits out servers that are down, as the lab wants.
        """
        deadline = None if self.give_up_after is None else time.monotonic() + self.give_up_after
        next_probe = 0.0
        silent_since: float | None = None  # when a look first found nothing listening
        # Every try of one request is the same request (same sequence number),
        # so a late reply to an earlier try is as good as one to the last:
        # keep the recent tries' futures, so a reply that takes longer than
        # try_timeout (a 10 MiB value on a busy machine) still ends the wait.
        tries: deque = deque(maxlen=_KEEP_TRIES)
        while True:
            reply = _NO_REPLY
            try:
                future = self._server.ask(request, block=False, timeout=self.try_timeout * _KEEP_TRIES)
                tries.append(future)
                reply = future.get(timeout=self.try_timeout)
            except AskTimeout:
                reply = next((f.get() for f in tries if f.done and _answered(f)), _NO_REPLY)
                if reply is _NO_REPLY and deadline is not None and time.monotonic() >= next_probe:
                    silent_since = self._explain_silence(silent_since)
                    next_probe = time.monotonic() + PROBE_EVERY
            except NoSuchActor as exc:
                if exc.hosted:  # another service: no retry will change that
                    raise KVMisdirected(
                        f"{self._server.address.endpoint} is not a KV server: {exc}", self._server.address.endpoint, exc.hosted
                    ) from None
                time.sleep(self.try_timeout)  # its process is up, its actor not yet
            except ActorDeadError:  # server process up but its actor not (yet): wait a try, then again
                time.sleep(self.try_timeout)
            if reply is not _NO_REPLY:
                if isinstance(reply, BadRequest):
                    raise ValueError(f"the KV server refused {type(request).__name__}: {reply.reason}")
                return reply
            if deadline is not None and time.monotonic() > deadline:
                raise KVUnavailable(
                    f"no answer from the KV server at {self._server.address.endpoint} within {self.give_up_after} s"
                )


    def _explain_silence(self, silent_since: float | None) -> float | None:
        """Raise KVUnavailable if a trial connection finds a reason that waiting will not cure, or nothing
        has listened for ``unreachable_after`` s; since when nothing has listened (None: something does)."""
        endpoint = self._server.address.endpoint
        report = self._system.probe(endpoint)
        if report.lasting:
            raise KVUnavailable(f"no answer from the KV server at {endpoint}: {report.explanation}")
        if report.state not in (LinkState.NOTHING_LISTENING, LinkState.NO_RESPONSE):
            return None
        now = time.monotonic()
        start = f" (start one with `zactor kv serve --endpoint {endpoint}`)" if report.state is LinkState.NOTHING_LISTENING else ""
        if silent_since is None and self.tell_waiting is not None:
            self.tell_waiting(f"{report.explanation}{start}")
        since = now if silent_since is None else silent_since
        if self.unreachable_after is not None and now - since >= self.unreachable_after:
            raise KVUnavailable(f"no answer from the KV server at {endpoint}: {report.explanation}{start}")
        return since


_KEEP_TRIES = 64


def _answered(future: Any) -> bool:
    """Whether a finished try carries a reply (not a timeout or a dead actor)."""
    try:
        future.get(timeout=0)
    except Exception:
        return False
    return True


_NO_REPLY = object()
