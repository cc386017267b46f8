"""The wire side of an ActorSystem: asks in flight, their replies, and asks that arrive.

:class:`Wire` keeps the asks this process has in flight (a correlation id
each, a deadline each, swept once a second), sends them, and completes their
futures when replies come back; it also takes every envelope the node
delivers and puts it in the named actor's mailbox, with a :class:`WireReply`
that sends the actor's answer back over the request's own connection.
:class:`NodeControl` is the client of a node's control name.

How an ask travels (no thread in between that is not needed):

* a thread that asks sends on its own :class:`~transport.node.Channel` to the
  destination and, when it waits, reads the reply off that channel itself;
* its tells to that node take the same channel, so one thread's messages to
  one node arrive in the order sent (fault rules apply on the channel too);
* ``ask_async`` (and everything its thread sends from then on) and whatever
  the I/O thread sends go on the node's shared connection, and the I/O
  thread completes their futures.
"""

from __future__ import annotations

import itertools
import logging
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import pykka

from actors.actor import _InlineInbox, _PykkaEnvelope
from actors.address import Address
from actors.errors import ActorDeadError, AskTimeout, Failure, MailboxFull, NoSuchActor
from actors.future import ReplyFuture
from transport import CONTROL_NAME, ControlRequest, Envelope, FaultSpec, Kind, Node, flatten
from transport.control import ControlOp
from transport.envelope import KIND_ASK, KIND_REPLY, KIND_TELL
from transport.once import OncePerCause

log = logging.getLogger(__name__)


class WireReply:
    """The reply target of an ask that came over the wire, in place of a local future.

    Whoever serves the ask calls ``set`` with the handler's result, or
    ``set_exception`` when it raised (the actor goes on), or answers with
    ``ActorDeadError`` when the actor stopped first (pykka's stop-time
    drain): each becomes a reply envelope to the asking node. One-shot: the
    stop-time drain and the system's own check after a put may both answer;
    only the first goes. Not a pykka future (nothing ever reads it here), so
    it costs one small object per ask.
    """

    __slots__ = ("_request", "_wire")

    def __init__(self, wire: Wire, request: Envelope) -> None:
        self._wire: Wire | None = wire
        self._request = request

    def set(self, value: Any = None) -> None:
        wire, self._wire = self._wire, None
        if wire is not None:
            try:  # Wire.reply's usual case without its call: every answer to a remote ask comes this way
                wire._node.reply(self._request, value, Kind.REPLY)
            except Exception as exc:  # an unpicklable or oversized result: tell the asker why
                wire.reply(self._request, Failure.from_exception(exc), True)

    def set_exception(self, exc_info: Any = None) -> None:
        wire, self._wire = self._wire, None
        if wire is not None:
            exc = exc_info[1] if exc_info else sys.exc_info()[1]
            wire.reply(self._request, Failure.from_exception(exc if exc is not None else RuntimeError("unknown error")), True)


class Wire:
    """Asks in flight and asks arriving, for one ActorSystem's node; see the module docstring."""

    def __init__(
        self,
        node: Node,
        *,
        ask_timeout: float,
        mailbox_limit: int,
        lookup: Callable[[str], pykka.ActorRef | None],
        label: str,
        names: Callable[[], list[str]] = list,
    ) -> None:
        """``names``: what the system hosts, told to an asker of a name it does not host."""
        self._node = node
        self.ask_timeout = ask_timeout
        self.mailbox_limit = mailbox_limit
        self._lookup = lookup
        self._names = names
        self._label = label
        self._notices = OncePerCause(log)
        self._pending: dict[int, ReplyFuture] = {}
        # Random start: a reply meant for an earlier incarnation of this node
        # (same endpoint, before a restart) matches nothing and is dropped.
        self._corr = itertools.count(random.getrandbits(48) << 16)
        self._stopped = False
        self.stopping = False
        """Set by the system as it begins to stop its actors: a message for one of them from then on is
        expected (its senders do not know yet), so it is counted and logged at debug, not warned of."""
        self.on_io_thread = node.on_io_thread
        """Whether the calling thread is the node's I/O thread (which must never wait on a reply)."""

    # ---- asks this process makes ------------------------------------------

    def tell(self, address: Address, message: Any) -> None:
        """Send a tell on the same connection this thread's asks to that node take (so they stay in order)."""
        node = self._node
        channel = node.channel(address.endpoint)
        if channel is not None:
            channel.request(KIND_TELL, address.name, 0, message)
        else:
            node.send(address.endpoint, Envelope(Kind.TELL, address.name, node.endpoint, 0, message))

    def ask(self, address: Address, message: Any, timeout: float | None, *, shared: bool = False) -> ReplyFuture:
        """Send an ask; its future. ``shared``: the I/O thread completes it (for asyncio)."""
        node = self._node
        if shared:
            node.use_shared_connections()  # this thread's tells must not overtake its asks
            channel = None
        else:
            channel = node.channel(address.endpoint)
        corr = next(self._corr)
        future = ReplyFuture(
            type(message),
            address,
            time.monotonic() + (self.ask_timeout if timeout is None else timeout),
            self,
            corr,
            channel,
        )
        self._pending[corr] = future
        try:
            if channel is not None:
                channel.request(KIND_ASK, address.name, corr, message)
            else:
                node.send(address.endpoint, Envelope(Kind.ASK, address.name, node.endpoint, corr, message))
        except BaseException:
            self._pending.pop(corr, None)
            raise
        return future

    def forget(self, corr: int) -> None:
        """Stop waiting for the reply to ask ``corr`` (its deadline has passed)."""
        self._pending.pop(corr, None)

    def resolve(self, env: Envelope) -> None:
        """Complete the future a reply is for (any thread)."""
        future = self._pending.pop(env.corr, None)
        if future is None:
            log.debug("%s: reply %d matches no pending ask (late or from an earlier incarnation)", self._label, env.corr)
        elif env.kind == KIND_REPLY:
            future.set(env.body)
        else:
            exc = env.body.to_exception() if isinstance(env.body, Failure) else RuntimeError(repr(env.body))
            future.set_exception((type(exc), exc, None))

    def sweep(self) -> None:
        """Fail every ask past its deadline (on the I/O thread, once a second)."""
        now = time.monotonic()
        for corr, fut in list(self._pending.items()):
            if fut.deadline < now and self._pending.pop(corr, None) is not None:
                fut.set_exception((AskTimeout, AskTimeout(f"no reply to {fut.describe} before its deadline"), None))
        if not self._stopped:
            self._node.call_later(1.0, self.sweep)

    def fail_all(self, exc: BaseException) -> None:
        self._stopped = True
        for corr in list(self._pending):
            fut = self._pending.pop(corr, None)
            if fut is not None:
                fut.set_exception((type(exc), exc, None))

    # ---- asks and tells that arrive ---------------------------------------

    def on_message(self, env: Envelope) -> None:
        """Runs on the I/O thread for every delivered envelope."""
        if env.kind >= KIND_REPLY:
            self.resolve(env)
            return
        ref = self._lookup(env.dest)
        if ref is None or ref.actor_stopped.is_set():
            self._dead(env)
            return
        inbox = ref.actor_inbox
        if inbox.qsize() >= self.mailbox_limit:  # type: ignore[attr-defined]  # our inboxes have qsize
            self._refuse_full(env)
            return
        reply = WireReply(self, env) if env.kind == KIND_ASK else None
        if type(inbox) is _InlineInbox:
            # Served at once when the actor is idle; else queued, and a stopped
            # actor's queue is answered by its next drain, on this same thread.
            inbox.arrive(env.body, reply)
            return
        inbox.put(_PykkaEnvelope(env.body, reply_to=reply))  # type: ignore[arg-type]  # duck-typed reply target
        if reply is not None and ref.actor_stopped.is_set():
            # It stopped between the check and the put: its stop-time drain
            # may have run already, so answer now (WireReply is one-shot).
            reply.set_exception((ActorDeadError, ActorDeadError(f"actor {env.dest!r} on {self._node.endpoint} stopped"), None))

    def _dead(self, env: Envelope) -> None:
        self._node.counters.add("unknown_actor")
        answered = "answered with NoSuchActor" if env.kind == Kind.ASK else "dropped"
        if self.stopping:
            log.debug("%s: stopping; a %s for actor %r %s", self._label, type(env.body).__name__, env.dest, answered)
        else:
            self._notices.warn(
                ("unknown actor", env.dest),
                "%s: a %s for actor %r, which this node does not host (%s; further ones counted in unknown_actor)",
                self._label, type(env.body).__name__, env.dest, answered,
            )
        if env.kind == Kind.ASK:
            self.reply(env, Failure.from_exception(NoSuchActor(env.dest, self._node.endpoint, tuple(self._names()))), True)

    def _refuse_full(self, env: Envelope) -> None:
        counters = self._node.counters
        if env.kind == Kind.TELL:
            counters.add("dropped_full")
            dropped = counters.dropped_full
            if dropped & (dropped - 1) == 0:  # 1, 2, 4, 8...: logs stay small
                log.warning("%s: mailbox of %r full (%d); %d tells dropped so far", self._label, env.dest, self.mailbox_limit, dropped)
            return
        counters.add("busy")
        busy = MailboxFull(
            f"actor {env.dest!r} on {self._node.endpoint} is busy: its mailbox holds {self.mailbox_limit} messages; retry later"
        )
        self.reply(env, Failure.from_exception(busy), True)

    def reply(self, request: Envelope, value: Any, failed: bool) -> None:
        """Answer ``request`` over its own connection (any thread)."""
        try:
            self._node.reply(request, value, Kind.ERROR if failed else Kind.REPLY)
        except Exception as exc:  # an unpicklable or oversized result: tell the asker why
            if failed:
                log.exception("%s: could not send an error reply", self._label)
                return
            self._node.reply(request, Failure.from_exception(exc), Kind.ERROR)


class NodeControl:
    """Control of a (possibly remote) node: faults and counters; never subject to faults."""

    def __init__(self, wire: Wire, endpoint: str, timeout: float) -> None:
        self._wire = wire
        self.endpoint = endpoint
        self._timeout = timeout

    def _call(self, op: ControlOp, arg: Any = None) -> Any:
        return self._wire.ask(Address(self.endpoint, CONTROL_NAME), ControlRequest(op, arg), self._timeout).get()

    def ping(self) -> dict:
        return self._call(ControlOp.PING)

    def set_faults(self, rules: FaultSpec) -> None:
        """Replace the node's fault rules: a rule, or a list of rules and lists (``[unreliable(), disconnected(p)]``)."""
        self._call(ControlOp.SET_FAULTS, list(flatten(rules)))

    def counters(self) -> dict:
        return self._call(ControlOp.COUNTERS)

    def reset_counters(self) -> None:
        self._call(ControlOp.RESET_COUNTERS)

    def stats(self) -> dict:
        """The node's counters and its actors' figures (what ``zactor top`` shows)."""
        return self._call(ControlOp.STATS)
