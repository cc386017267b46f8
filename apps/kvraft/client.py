"""The clerk of the replicated KV service: finds the leader, retries one request id until it is answered.

A request is an ask, sent and read back on the calling thread's own
connection to that server: the server keeps the ask's reply target until
Raft has decided (``Actor.reply_later``), so nothing in the clerk's process
binds a reply address or wakes a second thread for it. A server answers
when Raft has decided, or "not leader" (with its guess of who leads); the
clerk then moves to that server, or the next one, and sends the same request
(same client id and seq) again. A try that gets no answer within
``try_timeout`` (a lost message, a crashed server, a leader cut off in a
minority) also moves on, and so does one that reaches a process not (yet)
serving the KV service.

A cluster's members change (``zactor kv cluster add/remove/replace``): a
reply that says a change has been applied since the clerk last looked, or a
"not leader" that names a leader outside the clerk's list, makes it ask that
server's Raft peer who the members are now, and take that list; so a clerk
started before its servers were replaced, one after the other, finds the new
ones without a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from actors import ActorDeadError, ActorSystem, AskTimeout, MailboxFull
from actors.errors import NoSuchActor
from apps.kvraft.messages import Append, BadRequest, Get, Put, Reply, Request
from apps.kvraft.server import SERVER_NAME
from apps.kvsrv.client import PROBE_EVERY, KeyValueCalls, KVMisdirected, KVUnavailable
from apps.raft.peer import PEER_NAME
from apps.raft.roster import Members, MembersInfo
from transport.probe import LinkState

_NOT_SERVING = Reply(0, False, None, None)
"""What a try counts as when the process there answered but hosts no KV server, or its mailbox is full."""


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
    ``learn``: take the cluster's own list of members when a server names a
    leader this clerk does not know (off: keep to ``servers``, as a test that
    binds a clerk to some servers needs).
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
        learn: bool = True,
    ) -> None:
        if not servers:
            raise ValueError("a clerk needs at least one server endpoint")
        if try_timeout <= 0:
            raise ValueError(f"try_timeout must be positive seconds, got {try_timeout}")
        super().__init__()
        self._system = system or ActorSystem.shared()
        self.servers = list(servers)
        self._leader = 0
        self.try_timeout = try_timeout
        self.give_up_after = give_up_after
        self.unreachable_after = unreachable_after
        self.tell_waiting = tell_waiting
        self.learn = learn
        self._members_seen = 0

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
        elsewhere: set[str] = set()  # endpoints that host another service
        while True:
            refs = self._refs
            i = self._leader % len(refs)
            reply: Reply | None
            try:
                reply = refs[i].ask(Request(op, "", 0), timeout=self.try_timeout)
            except AskTimeout:
                reply = None
            except NoSuchActor as exc:
                reply = _NOT_SERVING
                if exc.hosted and SERVER_NAME not in exc.hosted and PEER_NAME not in exc.hosted:
                    elsewhere.add(self._servers[i])  # not a replicated KV server, not one starting up
                    if elsewhere.issuperset(self._servers):  # and no server in the list is: no retry helps
                        raise KVMisdirected(
                            f"{', '.join(self._servers)}: not a replicated KV server ({exc}); "
                            "`zactor kv cluster` starts one, `zactor kv get --server` talks to a single KV server",
                            self._servers[i], exc.hosted,
                        ) from None
            except (ActorDeadError, MailboxFull):
                reply = _NOT_SERVING
            if reply is not None and type(reply) is not Reply:  # some other actor by that name
                reply = _NOT_SERVING
            if reply is not None and reply.members > self._members_seen and self.learn:
                self._members_seen = reply.members  # the cluster changed since this clerk last looked
                answered = self._servers[i]
                self._learn(answered)
                i = self._servers.index(answered) if answered in self._servers else 0
                refs = self._refs
            if reply is not None and reply.ok:
                self._leader = i
                if isinstance(reply.value, BadRequest):
                    raise ValueError(f"the KV service refused {type(op).__name__}: {reply.value.reason}")
                return reply.value
            servers = self._servers
            if reply is not None and reply.leader is not None and reply.leader not in servers and self.learn:
                servers = self._learn(reply.leader)
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

    def _learn(self, leader: str) -> list[str]:
        """Take the members the named leader's Raft peer lists (the list as it was, if it does not answer)."""
        try:
            info = self._system.ref(leader, PEER_NAME).ask(Members(), timeout=self.try_timeout)
        except (AskTimeout, NoSuchActor, ActorDeadError, MailboxFull):
            return self._servers
        if isinstance(info, MembersInfo) and info.endpoints:
            self.servers = [ep for _, ep in info.endpoints]
        return self._servers

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
