"""The clerk of the replicated KV service: finds the leader, retries one request id until it is answered.

Requests are tells carrying the address of the process's reply box (one
``_ReplyBox`` actor per actor system, shared by every clerk in the process,
so a hundred clerks cost one node and one connection per server). A server
answers when Raft has decided, or "not leader" (with its guess of who leads);
the clerk then moves to that server, or the next one, and sends the same
request (same client id and seq) again. A try that gets no answer within
``try_timeout`` (a lost message, a crashed server, a leader cut off in a
minority) also moves on.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from actors import Actor, ActorSystem
from apps.kvraft.messages import Append, BadRequest, Get, Put, Reply, Request
from apps.kvraft.server import SERVER_NAME
from apps.kvsrv.client import PROBE_EVERY, KeyValueCalls, KVUnavailable
from transport.probe import LinkState

REPLY_BOX = "kvraft-replies"
_boxes_lock = threading.Lock()


class _Slot:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reply: Reply | None = None


class _ReplyBox(Actor):
    """Hands each server reply to the clerk thread waiting for its ``corr``; drops late ones."""

    def __init__(self, slots: dict[int, _Slot]) -> None:
        super().__init__()
        self.slots = slots

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Reply):
            slot = self.slots.get(message.corr)
            if slot is not None:
                slot.reply = message
                slot.event.set()
        return None


class _Box:
    """The reply box of one actor system: its address and the waiting slots."""

    _corr = itertools.count(random.getrandbits(40) << 20)

    def __init__(self, system: ActorSystem) -> None:
        self.slots: dict[int, _Slot] = {}
        system.spawn(_ReplyBox, self.slots, name=REPLY_BOX)
        self.address = f"{system.endpoint}#{REPLY_BOX}"

    def expect(self) -> tuple[int, _Slot]:
        corr = next(self._corr)
        slot = self.slots[corr] = _Slot()
        return corr, slot

    def forget(self, corr: int) -> None:
        self.slots.pop(corr, None)


_boxes: dict[int, tuple[ActorSystem, _Box]] = {}


def _box_of(system: ActorSystem) -> _Box:
    """The reply box of ``system``, spawned on first use."""
    with _boxes_lock:
        known = _boxes.get(id(system))
        if known is None or known[0] is not system or system.stopped:
            known = _boxes[id(system)] = (system, _Box(system))
        return known[1]


class Clerk(KeyValueCalls):
    """``get``, ``put`` and ``append`` against a replicated KV service at ``servers``.

    Retries for ever by default, as the lab's clerk does; ``give_up_after``
    (seconds) bounds a call for interactive use and raises ``KVUnavailable``,
    and with ``unreachable_after`` (a command a person waits on) sooner, when
    no server answers and trial connections show why none can: each refuses
    this machine's key or speaks the other security mode, or nothing has
    listened at any of them for ``unreachable_after`` seconds. (Without it no
    probe is made: a soak's or a sharded group's clerk waits out partitions.)
    ``tell_waiting``: called once, with what the trial connections found, when
    they first find nothing listening anywhere (see the single server's clerk).
    """

    def __init__(
        self,
        servers: Sequence[str],
        *,
        system: ActorSystem | None = None,
        try_timeout: float = 0.1,
        give_up_after: float | None = None,
        unreachable_after: float | None = None,
        tell_waiting: Callable[[str], None] | None = None,
    ) -> None:
        if not servers:
            raise ValueError("a clerk needs at least one server endpoint")
        if try_timeout <= 0:
            raise ValueError(f"try_timeout must be positive seconds, got {try_timeout}")
        super().__init__()
        self._system = system or ActorSystem.shared()
        self._box = _box_of(self._system)
        self.servers = list(servers)
        self._leader = 0
        self.try_timeout = try_timeout
        self.give_up_after = give_up_after
        self.unreachable_after = unreachable_after
        self.tell_waiting = tell_waiting

    @property
    def servers(self) -> list[str]:
        return self._servers

    @servers.setter
    def servers(self, endpoints: Sequence[str]) -> None:
        """The servers this clerk may talk to; a test harness narrows or widens it mid-call."""
        self._servers = list(endpoints)
        self._refs = [self._system.ref(ep, SERVER_NAME) for ep in self._servers]

    def _call(self, op: Get | Put | Append) -> Any:
        started = time.monotonic()
        refused = 0
        heard = started  # when a server last answered at all (a silent cluster is looked at after PROBE_EVERY)
        silent_since: float | None = None
        while True:
            refs = self._refs
            i = self._leader % len(refs)
            corr, slot = self._box.expect()
            try:
                refs[i].tell(Request(op, self._box.address, corr))
                slot.event.wait(self.try_timeout)
            finally:
                self._box.forget(corr)
            reply = slot.reply
            if reply is not None and reply.ok:
                self._leader = i
                if isinstance(reply.value, BadRequest):
                    raise ValueError(f"the KV service refused {type(op).__name__}: {reply.value.reason}")
                return reply.value
            servers = self._servers
            if reply is not None and reply.leader in servers and servers.index(reply.leader) != i:
                self._leader = servers.index(reply.leader)
            else:
                self._leader = i + 1
            if reply is not None:
                heard = time.monotonic()
                refused += 1
                if refused % len(refs) == 0:
                    time.sleep(0.02)  # nobody leads right now (an election): do not spin
            elif self.unreachable_after is not None and time.monotonic() - heard >= PROBE_EVERY:
                silent_since = self._explain_silence(silent_since)
                heard = time.monotonic()
            if self.give_up_after is not None and time.monotonic() - started > self.give_up_after:
                raise KVUnavailable(f"no answer from the KV service at {', '.join(self._servers)} within {self.give_up_after} s")

    def _explain_silence(self, silent_since: float | None) -> float | None:
        """Raise KVUnavailable when trial connections show that no server can answer; since when nothing
        has listened at any of them (None: some server accepts this machine, so waiting may help)."""
        reports = [self._system.probe(endpoint) for endpoint in self._servers]
        if any(r.ok or r.state is LinkState.NO_OUTCOME for r in reports):
            return None
        if all(r.lasting for r in reports):
            why = "; ".join(dict.fromkeys(r.explanation for r in reports))
            raise KVUnavailable(f"no answer from the KV service at {', '.join(self._servers)}: {why}")
        now = time.monotonic()
        why = "; ".join(dict.fromkeys(r.explanation for r in reports)) + " (start a cluster with `zactor kv cluster`)"
        if silent_since is None and self.tell_waiting is not None:
            self.tell_waiting(why)
        since = now if silent_since is None else silent_since
        if self.unreachable_after is not None and now - since >= self.unreachable_after:
            raise KVUnavailable(f"no answer from the KV service at {', '.join(self._servers)}: {why}")
        return since
