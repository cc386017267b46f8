"""A deterministic simulation of the whole replicated KV service, one seed per run.

The real soak (``zactor soak kvraft``) runs real processes, sockets and
fsyncs, and so lines up rare interleavings only rarely. Here the same code
runs in one process on a simulated clock, so a seed replays exactly and a
run takes a fraction of a second:

- each server is the real :class:`~apps.kvraft.server.KVRaftServer` (its
  duplicate table, waiting requests, ReadIndex reads, snapshots), beside the
  real :class:`~apps.raft.core.RaftCore`, on the real
  :class:`~apps.raft.storage.RaftStorage` over a lazy-disk journal in a
  scratch directory: a crash loses exactly what was not fsync'd;
- the network is a heap of messages with delivery times: delays, loss,
  duplicates, reordering, and partitions between servers (clerks reach every
  server, so they also talk to deposed leaders);
- clerks run the real clerk's protocol (``apps/kvraft/client.py``: same
  client id and seq on every retry, the named leader or the next server
  after a refusal or a timeout, and the cluster's own member list asked for
  when a reply says the membership changed or names a leader the clerk does
  not know), and every call is recorded;
- with the ``membership`` switch, an operator changes the cluster while
  every other fault goes on, as ``zactor kv cluster add/remove/replace``
  does (``apps.raft.admin``: the leader asked, the change waited for until
  committed, asked again if a new leader lost it): it replaces a server (a
  new learner on a number never used, promoted once caught up, then the old
  one removed: the leader too, a crashed one, or one whose disk is wiped for
  good), grows the cluster (two learners at once now and then) and shrinks
  it. The changes go through the peer actor's own ``ChangeMembers`` and
  ``Members`` handling (``apps.raft.roster.Roster``, which the real peer
  holds) into the real core. ``hasty_operator`` asks for the next change as soon as
  the last is appended, leaving the one-change-at-a-time rule to the leader;
  ``reused_numbers`` now and then asks to add a server under the number of
  one that left (the leader must refuse); ``membership_cuts`` cuts a leader
  off right after it appended a change of voters (a new leader is then asked
  for a change while that one is uncommitted: the 2015 bug's schedule), and
  cuts a leader off from its fellow voters while its learners still hear it.

Faults come from the seed, and BUGGIFY-style switches (each on or off per
seed) make rare paths common: messages held back past several terms, old
messages duplicated and delivered late, some held for hundreds of ticks
(past terms and restarts of their sender), and the messages a server was
sent in earlier terms delivered to it again right as it becomes leader, a crash right after a granted vote
or right after an fsync (before the Ready's messages leave), a leader
isolated right after it appended a burst of entries (longer than one
AppendEntries batch), a tiny ``maxraftstate`` so snapshots race with
InstallSnapshot, and (``starved``) servers that may not lead for stretches
of ticks, as a host out of open files (``RaftCore.tick(may_lead=False)``:
a leader steps down within its term). ``starved`` is drawn from a side
generator of its own, so every seed's other switches and faults are what
they were before it existed.

Checked per seed, each failure naming the seed and the command that replays
it: election safety (one leader per term, and each leader holds votes granted
in its own term from a majority of the voters of its configuration); the newest leader's match index for each
follower is backed by that follower's log; vote durability (a restarted server is
past the term of every vote it sent, or votes the same); every committed entry stays committed with the same
term and command on every core that has it (no committed entry lost); a new
leader holds every committed entry (leader completeness); no two servers
apply different commands at one index, and each applies in order; after the
faults stop, every member converges to the same state; the clerks' history
is linearizable (``apps.linearizability``); and every acknowledged append is
in the final value exactly once (exactly-once, ``check_appends``).

Not covered: real time (the sweeps that answer requests after ``MAX_WAIT``),
the actor runtime and the transport (mailbox order, message encoding,
process restarts by the supervisor), torn writes and bit flips (the journal's
own tests and the soak's ``disk`` nemesis do those), and the operator's tool
itself (``apps.raft.admin`` over real sockets: the membership tests and the
soak's ``membership`` nemesis run it).

    python -m apps.kvraft.sim --seed 17              one seed, verbosely
    python -m apps.kvraft.sim --seeds 500            seeds 1..500, a summary
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps.kvraft.messages import Append, Get, Reply, Request
from apps.kvraft.server import KVRaftServer, ServerConfig
from apps.linearizability import KVModel, Operation, Verdict, check
from apps.raft.admin import _in_force, plan_join
from apps.raft.core import Config, RaftCore, Ready, Role
from apps.raft.membership import ADD_LEARNER, PROMOTE, REMOVE, ConfEntry, Membership
from apps.raft.messages import ApplyMsg, RequestVoteReply
from apps.raft.peer import (
    Applied,
    ReadIndex,
    RoleChanged,
    Start,
    TakeSnapshot,
    drain_ready,
)
from apps.raft.roster import ChangeAccepted, ChangeMembers, ChangeRefused, MembersInfo, Roster
from apps.raft.sim import Stretches, scratch_dir
from apps.raft.storage import RaftStorage
from apps.soak.broken import server_fields
from apps.soak.verdict import check_appends

REPLAY = "python -m apps.kvraft.sim --seed {seed}"
SWITCHES = ("long_delays", "duplicates", "crash_after_vote", "crash_after_fsync", "isolate_after_burst", "tiny_snapshots",
            "lossy", "crashes", "partitions", "old_messages", "membership", "hasty_operator", "reused_numbers",
            "membership_cuts", "starved")
"""The BUGGIFY switches; each seed turns each on or off (``hasty_operator``, ``reused_numbers`` and
``membership_cuts`` act only with ``membership``)."""
_SIDE_SWITCHES = ("starved",)
"""Drawn from ``KVSim.side``, not the seed's main generator (see the module docstring)."""

MAX_VOTERS = 7
MAX_SERVERS = 16
"""Servers a seed may ever start (the starting ones included): growth stops there."""
TRY_TICKS = 25
"""A clerk's try_timeout, in ticks."""


class SimFailure(AssertionError):
    """A safety property broke; the message names the seed and how to replay it."""


@dataclass(frozen=True)
class SimOptions:
    servers: int = 0
    """0: 3 or 5, from the seed."""
    ticks: int = 700
    """Simulated ticks of faults and traffic (a tick is 10 ms of the real service's time)."""
    clerks: int = 4
    keys: int = 2
    settle_ticks: int = 4000
    broken: str = ""
    """A broken variant of ``apps/soak/broken.py`` to run instead of the real classes."""
    switches: tuple[str, ...] | None = None
    """Force exactly these BUGGIFY switches on (None: from the seed)."""


@dataclass
class _Clerk:
    client: int
    servers: list[str]
    """The endpoints this clerk knows, as the real clerk's list (``apps/kvraft/client.py``): learned from the cluster."""
    leader: int = 0
    """Index into ``servers`` of the one to try next."""
    seq: int = 0
    op: dict[str, Any] | None = None
    call: int = 0
    corr: int = 0
    deadline: int = 0
    next_op_at: int = 0
    members_seen: int = 0
    learning: tuple[Reply, str, bool] | None = None
    """While the clerk asks a server for the members: (the reply that made it ask, the endpoint that gave it,
    whether it asks because of a leader outside its list)."""




@dataclass(frozen=True)
class _MembersAsk:
    """A clerk's ``Members`` ask to a server's Raft peer, over the simulated network."""

    client: int
    corr: int


@dataclass(frozen=True)
class _MembersAnswer:
    corr: int
    info: MembersInfo


@dataclass
class _Step:
    """One change of the operator's plan, made as ``apps.raft.admin.change_membership`` makes it."""

    op: str
    server: int | None = None
    """None: for an add, the cluster's fresh number, taken when first asked; for a remove, any voter, chosen
    anew at each ask (an operator who wants "one server fewer" and does not mind which)."""
    label: str = ""
    """An add's name for the server it adds, by which a later promote of the same plan finds its number."""
    proposed: bool = False
    term: int = 0
    """The term of the leader that took the change."""
    reused: bool = False


@dataclass(order=True)
class _InFlight:
    at: int
    order: float
    msg: Any = field(compare=False)
    dst: Any = field(compare=False)
    """A server number, or ("clerk", client)."""
    src: int | None = field(compare=False, default=None)


class _Crashed(Exception):
    """Raised inside a Ready cycle to crash the server at that very point."""


class _CrashAfterSave:
    """Wraps a server's storage: now and then the server dies right after an fsync, before the Ready's messages leave."""

    def __init__(self, sim: KVSim, storage: RaftStorage) -> None:
        self.sim, self.storage = sim, storage

    def save(self, rd: Ready, core: RaftCore) -> None:
        self.storage.save(rd, core)
        if "crash_after_fsync" in self.sim.on and self.sim.rng.random() < 0.01:
            raise _Crashed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)


class _RaftPort:
    """What the server takes for its Raft peer's ref: tells are queued and handled after the current Ready."""

    def __init__(self, sim: KVSim, i: int) -> None:
        self.sim, self.i = sim, i

    def tell(self, msg: Any) -> None:
        self.sim.tells.setdefault(self.i, []).append(msg)


class _Server:
    def __init__(self, sim: KVSim, i: int) -> None:
        self.i = i
        endpoints = sim.books.get(i) or tuple(_endpoint(j) for j in range(sim.n))
        directory = sim.dir / f"server-{i}" / f"disk-{sim.disks.get(i, 0)}"
        storage: RaftStorage = sim.storage_class(directory, fsync=True, lazy_disk=True)
        restored = storage.load()
        self.storage: Any = _CrashAfterSave(sim, storage)
        self.core = RaftCore(i, sim.n, sim.config, random.Random(sim.rng.random()), restored)
        self.shell = Roster(self.core, endpoints)  # the real peer's membership answers, on this core
        config = ServerConfig(i, endpoints, str(directory), maxraftstate=sim.maxraftstate, raft=sim.config, initial=sim.n)
        self.kv: KVRaftServer = sim.server_class(config, raft=_RaftPort(sim, i), answer=sim.reply_from(i))
        self.role: tuple[int, bool, int | None] | None = None
        self.applied_upto = 0
        self.committed_checked = self.core.commit_index


def _endpoint(i: int) -> str:
    return f"sim://{i}"


def _number(endpoint: str) -> int:
    return int(endpoint.rpartition("/")[2])


class KVSim:
    def __init__(self, seed: int, options: SimOptions | None = None, directory: Path | None = None) -> None:
        self.seed = seed
        self.opt = opt = options or SimOptions()
        self.rng = random.Random(seed)
        rng = self.rng
        self.n = opt.servers or rng.choice((3, 5))
        """How many servers the cluster started with (0..n-1); every core is built with it."""
        self.side = random.Random(seed * 7919 + 1)
        """The generator of the switches added after the main schedule was fixed, and of their faults."""
        if opt.switches is None:
            self.on = {s for s in SWITCHES if s not in _SIDE_SWITCHES and rng.random() < 0.5}
            self.on |= {s for s in _SIDE_SWITCHES if self.side.random() < 0.5}
        else:
            unknown = set(opt.switches) - set(SWITCHES)
            if unknown:
                raise ValueError(f"unknown switch(es) {sorted(unknown)}; known: {', '.join(SWITCHES)}")
            self.on = set(opt.switches)
        self.switches = sorted(self.on)
        self.config = Config(election_ticks_min=10, election_ticks_max=20, heartbeat_ticks=3, max_batch=4, max_inflight=2,
                             catch_up_entries=4, pipeline_partial_batches=True)
        self.maxraftstate = rng.choice((600, 1200)) if "tiny_snapshots" in self.on else rng.choice((-1, 6000))
        fields = server_fields(opt.broken)
        self.storage_class: Callable[..., RaftStorage] = fields.get("storage", RaftStorage)
        self.server_class: Callable[..., KVRaftServer] = fields.get("server_class") or KVRaftServer
        self._own_dir = directory is None
        self.dir = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="zactor-kvsim-", dir=_scratch()))
        self.now = 0
        self.net: list[_InFlight] = []
        self.cut: set[frozenset[int]] = set()
        self.tells: dict[int, list[Any]] = {}
        self.votes_given: dict[int, tuple[int, int]] = {}
        self.max_term = 0
        self.held: dict[int, list[Any]] = {}
        """The latest Raft messages sent to each server, for the old_messages switch to deliver again."""
        self.grants: dict[int, set[tuple[int, int]]] = {}
        """term -> (voter, candidate) of every vote granted in it."""
        self.servers: dict[int, _Server | None] = {}
        """Every server number ever started -> the running server (None: crashed, or stopped for good)."""
        self.gone: set[int] = set()
        """Servers stopped for good: removed from the cluster, or wiped to be replaced; never restarted."""
        self.books: dict[int, tuple[str, ...]] = {}
        """A server added later: the address book it started with (``plan_join``)."""
        self.disks: dict[int, int] = {}
        """A server number -> which of its disks it runs on (a new server on a reused number gets a new one)."""
        self.incarnation: dict[int, int] = {}
        self.leaders: dict[int, int] = {}
        self.committed: dict[int, tuple[int, Any]] = {}
        self.applied: dict[int, Any] = {}
        self.conf_committed: tuple[int, Membership] = (0, Membership.of(self.n))
        """The configuration committed as of the highest commit index seen: (that index, the configuration)."""
        self.plan: list[_Step] = []
        self.labels: dict[str, int] = {}
        self.retired: list[int] = []
        self.leaving: list[int] = []
        self.split: tuple[int, int, int] | None = None
        """membership_cuts: (old leader, the follower it kept, its term) until a new leader is elected."""
        """Servers the operator removed whose removal is not yet seen committed."""
        """Numbers of the servers the operator removed (what the reused_numbers switch asks to add again)."""
        self.clerks = [_Clerk(c + 1, [_endpoint(j) for j in range(self.n)], leader=rng.randrange(self.n)) for c in range(opt.clerks)]
        self.history: list[Operation] = []
        self.corr = 0
        self.heal_at = -1
        self.final_members: list[_Server] = []
        self.stretch = Stretches(self.side, 0.001, 10, 200)
        """With ``starved``: the stretches in which a server may not lead, drawn from the side generator."""
        self.stats = {"starved": 0, "crashes": 0, "messages": 0, "elections": 0, "snapshots_applied": 0, "ops": 0,
                      "conf_changes": 0, "conf_refused": 0, "servers_added": 0, "servers_removed": 0, "leaders_removed": 0,
                      "wiped": 0, "clerk_lists_learned": 0, "voters": self.n}
        try:
            for i in range(self.n):
                self._boot(i)
        except BaseException:
            self.close()
            raise

    # ---- plumbing ----------------------------------------------------------------------------

    def fail(self, what: str) -> None:
        raise SimFailure(f"seed {self.seed}, tick {self.now}: {what}\n  replay: {REPLAY.format(seed=self.seed)}"
                         + (f" --broken {self.opt.broken}" if self.opt.broken else ""))

    def reply_from(self, i: int) -> Callable[[str, Reply], None]:
        def answer(reply_to: str, reply: Reply) -> None:
            self._send(reply, ("clerk", int(reply_to.rpartition("-")[2])), None, clerk_link=True)

        return answer

    def _live(self) -> list[_Server]:
        return [s for s in self.servers.values() if s is not None]

    def _boot(self, i: int) -> None:
        self.incarnation[i] = self.incarnation.get(i, 0) + 1
        s = self.servers[i] = _Server(self, i)
        given = self.votes_given.get(i)
        if given is not None:
            # A vote that left is durable: the restarted peer is past that term, or still votes the same.
            hs = s.core.hard_state
            if hs.term < given[0] or (hs.term == given[0] and hs.voted_for != given[1]):
                self.fail(f"vote durability: server {i} granted its vote in term {given[0]} to {given[1]}, "
                          f"but restarted with term {hs.term}, vote {hs.voted_for}")
        self._process(i)

    def _crash(self, i: int) -> None:
        s = self.servers.get(i)
        if s is None:
            return
        self.stats["crashes"] += 1
        s.storage.close()  # unsynced appends die with the process
        self.servers[i] = None
        self.tells[i] = []

    def _stop(self, i: int) -> None:
        """Stop server ``i`` for good (removed, or its disk is wiped): it never restarts."""
        self._crash(i)
        self.gone.add(i)

    def _send(self, msg: Any, dst: Any, src: int | None, clerk_link: bool = False) -> None:
        rng, on = self.rng, self.on
        self.stats["messages"] += 1
        if "lossy" in on and rng.random() < 0.05:
            return
        delay = rng.randint(1, 3)
        if "long_delays" in on and rng.random() < 0.03:
            delay = rng.randint(20, 150)  # past an election or several
        heapq.heappush(self.net, _InFlight(self.now + delay, rng.random(), msg, dst, src))
        if "duplicates" in on and rng.random() < 0.05:
            heapq.heappush(self.net, _InFlight(self.now + rng.randint(1, 120), rng.random(), msg, dst, src))
        if src is not None and not clerk_link:
            held = self.held.setdefault(dst, [])
            held.append(msg)
            if len(held) > 40:
                del held[:20]
        if "old_messages" in on and src is not None and rng.random() < 0.02:
            # Held back and delivered much later, typically terms and incarnations after it was sent.
            heapq.heappush(self.net, _InFlight(self.now + rng.randint(100, 500), rng.random(), msg, dst, src))

    # ---- one server's Ready cycle --------------------------------------------------------------

    def _process(self, i: int) -> None:
        while True:
            s = self.servers.get(i)
            if s is None:
                return
            core = s.core
            try:
                drain_ready(core, s.storage, lambda msg: self._send_raft(i, msg), lambda rd: self._deliver_applies(s, rd))
            except _Crashed:
                self._crash(i)
                return
            role = (core.term, core.is_leader, core.leader_hint)
            if role != s.role:
                became = core.is_leader and not (s.role and s.role[1] and s.role[0] == core.term)
                s.role = role
                if became:
                    self._on_new_leader(s)
                    if self.split is not None:
                        self._split(s)
                    if "old_messages" in self.on and self.rng.random() < 0.5:
                        # What was said to it in earlier terms comes back just as it takes over.
                        for msg in self.held.get(i, ()):
                            if msg.term < core.term:
                                heapq.heappush(self.net, _InFlight(self.now + self.rng.randint(1, 10), self.rng.random(), msg, i, msg.src))
                s.kv._role_changed(RoleChanged(i, self.incarnation[i], *role, s.shell.endpoint_of(role[2])))
            if not self.tells.get(i):
                return
            tells, self.tells[i] = self.tells[i], []
            for msg in tells:
                if isinstance(msg, Start):
                    core.propose(msg.command)
                elif isinstance(msg, ReadIndex):
                    core.read_index(msg.request_id)
                elif isinstance(msg, TakeSnapshot):
                    core.snapshot(msg.index, msg.data)

    # ---- checks ---------------------------------------------------------------------------------

    def _send_raft(self, i: int, msg: Any) -> None:
        self._send(msg, msg.dst, i)
        if isinstance(msg, RequestVoteReply) and msg.granted:
            self.votes_given[i] = (msg.term, msg.dst)
            self.grants.setdefault(msg.term, set()).add((i, msg.dst))
        if "crash_after_vote" in self.on and isinstance(msg, RequestVoteReply) and msg.granted and self.rng.random() < 0.2:
            raise _Crashed  # the vote is on disk and on its way; the voter dies before anything else

    def _deliver_applies(self, s: _Server, rd: Ready) -> None:
        self._check_applies(s, rd.apply)
        try:
            s.kv._applied(Applied(s.i, self.incarnation[s.i], rd.apply, rd.read_states, s.storage.raft_state_size))
        except RuntimeError as exc:
            self.fail(f"server {s.i}: {exc}")

    def _check_applies(self, s: _Server, msgs: tuple[ApplyMsg, ...]) -> None:
        for msg in msgs:
            if msg.snapshot_valid:
                s.applied_upto = max(s.applied_upto, msg.snapshot_index)
                self.stats["snapshots_applied"] += 1
                continue
            index = msg.command_index
            if index != s.applied_upto + 1:
                self.fail(f"server {s.i} applied index {index} after {s.applied_upto}")
            seen = self.applied.setdefault(index, msg.command)
            if seen != msg.command:
                self.fail(f"state machine safety: server {s.i} applied {msg.command!r} at {index}, another applied {seen!r}")
            s.applied_upto = index

    def _check_commits(self) -> None:
        live = self._live()
        top = max((s.core.term for s in live), default=0)
        self.max_term = max(self.max_term, top)
        for s in live:
            core = s.core
            if core.role is Role.LEADER and core.term == self.max_term:
                self._check_matches(s)
            if core.role is Role.LEADER:
                if self.stretch.starved(s.i):
                    self.fail(f"server {s.i} leads term {core.term} while it may not (its host cannot serve clients)")
                other = self.leaders.setdefault(core.term, core.me)
                if other != core.me:
                    self.fail(f"election safety: two leaders in term {core.term}: {other} and {core.me}")
            start = max(s.committed_checked, core.log.snapshot_index) + 1
            for index in range(start, min(core.commit_index, core.log.last_index) + 1):
                e = core.log.entry(index)
                if isinstance(e.command, ConfEntry) and index not in self.committed:
                    self.stats["conf_changes"] += 1
                seen = self.committed.setdefault(index, (e.term, e.command))
                if seen != (e.term, e.command):
                    self.fail(f"server {s.i} committed {(e.term, e.command)!r} at {index}, but {seen!r} was committed there")
            s.committed_checked = max(s.committed_checked, core.commit_index)
            if core.commit_index > self.conf_committed[0]:
                # The configuration as of the highest commit index anywhere (its entry may be in a snapshot by now).
                self.conf_committed = (core.commit_index, core.confs.at(core.commit_index))

    def _check_matches(self, s: _Server) -> None:
        """The newest leader's match index for a follower is never beyond what that follower's log holds.

        Nobody can have cut the follower's log since it answered, because no
        term above this leader's has been seen; so a match index the follower
        does not back (a reply of another term taken for this one's, say) is a bug.
        """
        log = s.core.log
        for peer, prog in s.core.progress.items():
            other = self.servers.get(peer)
            m = prog.match_index
            if other is None or m <= max(other.core.log.snapshot_index, log.snapshot_index):
                continue
            if other.core.log.term_at(m) != log.term_at(m):
                self.fail(f"leader {s.i} of term {s.core.term} takes server {peer} to match it through {m}, "
                          f"but {peer} has term {other.core.log.term_at(m)} there, the leader {log.term_at(m)}")

    def _on_new_leader(self, s: _Server) -> None:
        """Leader completeness: a new leader holds every entry committed anywhere before; and it won a majority
        of the voters of its configuration (the one it counted with: it has proposed nothing yet)."""
        self.stats["elections"] += 1
        term = s.core.term
        voters = set(s.core.membership.voters)
        got = ({s.i} | {v for v, c in self.grants.get(term, ()) if c == s.i}) & voters
        if len(got) * 2 <= len(voters):
            self.fail(f"election safety: server {s.i} leads term {term} with votes of that term from only {sorted(got)} "
                      f"of voters {sorted(voters)}")
        log = s.core.log
        for index, (term, command) in self.committed.items():
            if index > log.snapshot_index and (index > log.last_index or (log.entry(index).term, log.entry(index).command) != (term, command)):
                self.fail(f"leader completeness: leader {s.i} of term {s.core.term} lacks committed entry {index} ({term}, {command!r})")

    # ---- clerks: the real clerk's protocol (apps/kvraft/client.py), on the simulated network -----------

    def _clerk_step(self, c: _Clerk, stopping: bool) -> None:
        rng = self.rng
        if c.op is None:
            if stopping or self.now < c.next_op_at:
                return
            c.seq += 1
            key = f"k{rng.randrange(self.opt.keys)}"
            if rng.random() < 0.6:
                c.op = {"op": "append", "key": key, "value": f"{c.client}.{c.seq} "}
            else:
                c.op = {"op": "get", "key": key}
            c.call = self._clock()
            self._attempt(c)
        elif self.now >= c.deadline:
            if c.learning is not None:
                self._clerk_learned(c)  # nobody answered the members ask: go on with the list as it was
            else:
                c.leader += 1
                self._attempt(c)

    def _attempt(self, c: _Clerk) -> None:
        assert c.op is not None
        self.corr += 1
        c.corr, c.deadline = self.corr, self.now + TRY_TICKS
        c.leader %= len(c.servers)
        op = c.op
        kv = Get(op["key"]) if op["op"] == "get" else Append(op["key"], op["value"], c.client, c.seq)
        self._send(Request(kv, f"clerk-{c.client}", self.corr), _number(c.servers[c.leader]), None, clerk_link=True)

    def _clerk_reply(self, client: int, reply: Any) -> None:
        c = self.clerks[client - 1]
        if isinstance(reply, _MembersAnswer):
            if c.learning is not None and reply.corr == c.corr:
                learned = [ep for _, ep in reply.info.endpoints]
                if learned and learned != c.servers:
                    c.servers = learned
                    self.stats["clerk_lists_learned"] += 1
                self._clerk_learned(c)
            return
        if c.op is None or c.learning is not None or reply.corr != c.corr:
            return  # a late or duplicated answer to an earlier attempt
        answered = c.servers[c.leader % len(c.servers)]
        if reply.members > c.members_seen:
            c.members_seen = reply.members  # the cluster changed since this clerk last looked
            self._clerk_learn(c, answered, (reply, answered, False))
            return
        self._clerk_go_on(c, reply, answered, False)

    def _clerk_learn(self, c: _Clerk, ask: str, then: tuple[Reply, str, bool]) -> None:
        """Ask ``ask``'s Raft peer for the members (the real clerk's ``_learn``); the call goes on when it answers."""
        self.corr += 1
        c.corr, c.deadline, c.learning = self.corr, self.now + TRY_TICKS, then
        self._send(_MembersAsk(c.client, self.corr), _number(ask), None, clerk_link=True)

    def _clerk_learned(self, c: _Clerk) -> None:
        assert c.learning is not None
        reply, answered, leader_asked = c.learning
        c.learning = None
        self._clerk_go_on(c, reply, answered, leader_asked)

    def _clerk_go_on(self, c: _Clerk, reply: Reply, answered: str, leader_asked: bool) -> None:
        servers = c.servers
        i = servers.index(answered) if answered in servers else 0
        assert c.op is not None
        if reply.ok:
            c.leader = i
            output = reply.value if c.op["op"] == "get" else (reply.value or "")
            self.history.append(Operation(c.client, c.op, c.call, output, self._clock()))
            self.stats["ops"] += 1
            c.op = None
            c.next_op_at = self.now + self.rng.randint(0, 3)
            return
        if reply.leader is not None and reply.leader not in servers and not leader_asked:
            self._clerk_learn(c, reply.leader, (reply, answered, True))
            return
        if reply.leader in servers and servers.index(reply.leader) != i:
            c.leader = servers.index(reply.leader)
        else:
            c.leader = i + 1
        self._attempt(c)

    def _clock(self) -> int:
        """History times: distinct and ordered within a tick, so call and return keep their real order."""
        self.corr += 1
        return self.now * 1_000_000 + self.corr

    # ---- the operator: membership changes as `zactor kv cluster add/remove/replace` makes them ----------

    def _find_leader(self) -> tuple[_Server, MembersInfo] | None:
        """The leader of the highest term and its view of the members (``apps.raft.admin.find_leader``)."""
        leaders = [s for s in self._live() if s.core.is_leader]
        if not leaders:
            return None
        s = max(leaders, key=lambda s: s.core.term)
        return s, s.shell.members_info()

    def _plan_changes(self, info: MembersInfo) -> None:
        """Pick the next plan: replace a server (the leader, a crashed one, a wiped one too), grow or shrink."""
        rng = self.rng
        voters = list(info.voters)
        r = rng.random()
        room = len(self.servers) < MAX_SERVERS
        if "reused_numbers" in self.on and r < 0.15 and len(voters) > 2:
            # A server "replaced in place": removed, then added back under its own number on a new disk. The
            # leader must refuse the number (the operator then takes a fresh one): the removed server's answers
            # still on their way would count as the new one's.
            victim = rng.choice(voters)
            if self._may_lose(voters, victim):
                self.plan = [_Step(REMOVE, victim), _Step(ADD_LEARNER, victim, label="new", reused=True), _Step(PROMOTE, label="new")]
        elif r < 0.5 and room:
            victim = rng.choice(voters)
            how = rng.random()
            if how < 0.3 and self._may_lose(voters, victim):
                self._stop(victim)  # a dead disk: it is replaced, never restarted
                self.stats["wiped"] += 1
            elif how < 0.5 and self._may_lose(voters, victim):
                self._crash(victim)  # down for now; the faults may restart it before it is removed
            self.plan = [_Step(ADD_LEARNER, label="new"), _Step(PROMOTE, label="new"), _Step(REMOVE, victim)]
        elif r < 0.75 and room and len(voters) < MAX_VOTERS:
            self.plan = [_Step(ADD_LEARNER, label="a")]
            if rng.random() < 0.5:
                self.plan.append(_Step(ADD_LEARNER, label="b"))  # two learners at once
                self.plan.append(_Step(PROMOTE, label="b"))
            self.plan.append(_Step(PROMOTE, label="a"))
        elif len(voters) > 2:
            self.plan = [_Step(REMOVE)]
        elif info.learners:
            self.plan = [_Step(PROMOTE, rng.choice(info.learners))]
        self.labels = {}

    def _may_lose(self, voters: list[int] | tuple[int, ...], victim: int) -> bool:
        """Whether the voters other than ``victim`` that are not stopped for good are still a majority."""
        left = [v for v in voters if v != victim and v not in self.gone]
        return len(left) * 2 > len(voters)

    def _operate(self, stopping: bool) -> None:
        """One look of the operator: ask the leader for the plan's next change, or see whether it took."""
        rng = self.rng
        if not self.plan and not stopping and rng.random() >= 0.02:
            return
        if rng.random() >= 0.3:  # the operator's tool looks every few ticks
            return
        found = self._find_leader()
        if found is None:
            return
        s, info = found
        self._see_leaving(info)
        if not self.plan:
            if not stopping:
                self._plan_changes(info)  # carried out from the next look on (the victim may be down now)
                return
            if not any(v in self.gone for v in info.voters + info.learners):
                return
            self.plan = [_Step(REMOVE)]  # after the faults: only a dead voter left behind is removed
        step = self.plan[0]
        hasty = "hasty_operator" in self.on
        if step.proposed and step.server is not None and _in_force(info, step.op, step.server):
            if not info.pending or hasty:  # hasty: the next change without waiting for the commit
                self.plan.pop(0)
                self._done(step)
            return
        if step.proposed and hasty and info.term > step.term and len(self.plan) > 1:
            # Lost with its leader: a hasty operator goes on to the next change, so the new leader is asked
            # for another change than the one the old leader may still hold (the 2015 bug's schedule).
            self.plan.pop(0)
            step = self.plan[0]
        if not self._choose(step, info):
            self.plan = []
            return
        assert step.server is not None
        endpoint = _endpoint(step.server) if step.op == ADD_LEARNER else None
        reply = s.shell.change(ChangeMembers(step.op, step.server, endpoint))
        if isinstance(reply, ChangeRefused):
            self.stats["conf_refused"] += 1
            if not reply.later:
                if step.reused:  # refused, as it must be: the operator takes the fresh number instead
                    step.server, step.reused = None, False
                else:
                    self.plan = []  # nothing left to do (removed already, say)
            return
        assert isinstance(reply, ChangeAccepted)
        if step.reused and reply.already:
            # The number is still a member's: its removal was lost with a leader. "Already made" means that
            # server is in the cluster, so the operator must not start a new, empty one on its number (a voter
            # with its disk wiped, outside Raft's fault model); it gives the plan up.
            self.plan = []
            return
        if step.op == ADD_LEARNER and not step.proposed:
            self._start_new(step.server, info)
        step.proposed, step.term = True, info.term
        if step.op == REMOVE and step.server == s.i:
            self.stats["leaders_removed"] += 1
        self._process(s.i)
        if "membership_cuts" in self.on and not stopping and step.op != ADD_LEARNER and rng.random() < 0.3:
            # The leader is cut off right after appending a change of voters (one follower may have it): a new
            # leader takes over while the change is uncommitted, and the operator asks that one for its change.
            promoted = step.server if step.op == PROMOTE and step.server in self.servers else None
            keep = promoted if promoted is not None else rng.choice([j for j in self.servers if j != s.i])
            for j in self.servers:
                if j not in (s.i, keep):
                    self.cut.add(frozenset((s.i, j)))
            self.heal_at = self.now + rng.randint(30, 120)
            if rng.random() < 0.5 and self._may_crash(s.i):
                self._crash(s.i)  # and it crashes: restarted, it is a follower that may campaign with that change
            else:
                self.split = (s.i, keep, s.core.term)

    def _split(self, new: _Server) -> None:
        """The 2015 schedule's second half: a voter that just elected ``new`` goes over to the old leader's side.

        The old leader (cut off, with its uncommitted change on one follower)
        then hears of the new term from that voter, steps down and campaigns;
        the voter has none of the new leader's entries, so it may vote for it:
        a majority of the old leader's configuration, if the new leader has
        since committed another change without an entry of its own term first.
        """
        assert self.split is not None
        old, keep, term = self.split
        if new.core.term <= term or new.i in (old, keep):
            return
        self.split = None
        voters = sorted(v for v, c in self.grants.get(new.core.term, ()) if c == new.i and v not in (old, keep))
        if not voters:
            return
        moved = self.rng.choice(voters)
        for j in self.servers:
            if j not in (old, keep, moved):
                self.cut.add(frozenset((moved, j)))
        self.cut.discard(frozenset((old, moved)))
        self.heal_at = self.now + self.rng.randint(30, 120)

    def _choose(self, step: _Step, info: MembersInfo) -> bool:
        """Name the server of ``step`` if the plan left it open; False if there is none to name."""
        rng = self.rng
        if step.op == ADD_LEARNER and step.server is not None:
            self.labels[step.label] = step.server
        elif step.op == ADD_LEARNER:
            step.server = info.fresh_id
            if "reused_numbers" in self.on and self.retired and rng.random() < 0.6:
                # An operator who names the number of a server that has left (most often the one that left last,
                # whose answers may still be on their way): the leader must refuse it.
                step.server, step.reused = self.retired[-1] if rng.random() < 0.7 else rng.choice(self.retired), True
            self.labels[step.label] = step.server
        elif step.op == PROMOTE and step.server is None:
            step.server = self.labels.get(step.label)
        elif step.op == REMOVE and (step.server is None or step.label == "any"):
            step.label = "any"
            # Chosen anew at each ask: after a leader change the operator may well ask for another server.
            dead = [v for v in info.voters + info.learners if v in self.gone]
            pool = [v for v in info.voters if self._may_lose(info.voters, v)] if len(info.voters) > 2 else []
            if not dead and not pool:
                return False
            step.server = rng.choice(dead or pool)
        return step.server is not None

    def _start_new(self, i: int, info: MembersInfo) -> None:
        """A new, empty server numbered ``i`` starts, with the address book ``plan_join`` gives it."""
        if i == info.fresh_id:
            book = plan_join(info, _endpoint(i)).endpoints
        else:  # a reused number (the leader accepted it: a bug the checks will see)
            book = tuple(dict(info.endpoints).get(j, "") if j != i else _endpoint(i) for j in range(max(i + 1, info.fresh_id)))
        if self.servers.get(i) is not None:
            self._stop(i)
        self.gone.discard(i)
        self.disks[i] = self.disks.get(i, 0) + 1
        self.votes_given.pop(i, None)  # a new server on a new disk has given no vote
        self.books[i] = book
        self.stats["servers_added"] += 1
        self._boot(i)

    def _done(self, step: _Step) -> None:
        if step.op == REMOVE and step.server is not None and step.server not in self.leaving:
            self.leaving.append(step.server)

    def _see_leaving(self, info: MembersInfo) -> None:
        """A server whose removal has committed is stopped (or, now and then, left running until the faults end).

        Not before: a hasty operator goes on once the removal is appended, and
        a new leader may yet lose it, leaving the server a member.
        """
        for i in list(self.leaving):
            member = i in info.voters or i in info.learners
            if member and not info.pending:
                self.leaving.remove(i)  # the removal was lost with a leader that never got it committed
                continue
            if member or info.pending or i in self.conf_committed[1].members:
                continue
            self.leaving.remove(i)
            self.retired.append(i)
            self.stats["servers_removed"] += 1
            if self.rng.random() < 0.7:
                self._stop(i)

    # ---- the run --------------------------------------------------------------------------------------

    def _deliver_due(self) -> None:
        while self.net and self.net[0].at <= self.now:
            f = heapq.heappop(self.net)
            if isinstance(f.dst, tuple):
                self._clerk_reply(f.dst[1], f.msg)
                continue
            s = self.servers.get(f.dst)
            if s is None:
                continue
            if f.src is not None and frozenset((f.src, f.dst)) in self.cut:
                continue
            if isinstance(f.msg, Request):
                s.kv._request(f.msg)
            elif isinstance(f.msg, _MembersAsk):
                self._send(_MembersAnswer(f.msg.corr, s.shell.members_info()), ("clerk", f.msg.client), None, clerk_link=True)
                continue
            else:
                s.core.step(f.msg)
            self._process(f.dst)

    def _voter_sets(self) -> list[tuple[int, ...]]:
        """The configurations a crash must leave a live majority of: the committed one and every leader's."""
        return [self.conf_committed[1].voters, *(s.core.membership.voters for s in self._live() if s.core.is_leader)]

    def _may_crash(self, victim: int) -> bool:
        """Whether a live majority of every configuration in play would be left without ``victim``."""
        left = {i for i, s in self.servers.items() if s is not None and i != victim}
        return all(sum(1 for v in voters if v in left) > len(voters) // 2 for voters in self._voter_sets())

    def _faults(self) -> None:
        rng, on = self.rng, self.on
        live = [i for i, s in self.servers.items() if s is not None]
        r = rng.random()
        if "crashes" in on and r < 0.006 and live:
            victim = rng.choice(live)
            if self._may_crash(victim):
                self._crash(victim)
        elif r < 0.02:
            dead = [i for i, s in self.servers.items() if s is None and i not in self.gone]
            if dead:
                self._boot(rng.choice(dead))
        elif "partitions" in on and r < 0.025:
            a, b = rng.sample(sorted(self.servers), 2)
            self.cut.add(frozenset((a, b)))
        elif "partitions" in on and r < 0.03:
            self.cut.clear()
        if "isolate_after_burst" in on and rng.random() < 0.01:
            leader = next((s for s in self._live() if s.core.is_leader), None)
            if leader is not None:
                # A burst of entries only this leader gets, then it is cut off: a long divergent log.
                # A key of their own, which no clerk reads: calls that never return would
                # make the linearizability check search exponentially many orders.
                for k in range(rng.randint(5, 12)):
                    leader.core.propose(Append("burst", f"{self.now}.{k} ", 10_000 + self.now, k + 1))
                self._isolate(leader.i)
                self.heal_at = self.now + rng.randint(30, 120)
                self._process(leader.i)
        if "membership" in on:
            if "membership_cuts" in on and rng.random() < 0.01:
                leader = next((s for s in self._live() if s.core.is_leader and s.core.membership.learners), None)
                if leader is not None:
                    # Its fellow voters are cut off while its learners still hear it: only voters may commit.
                    for v in leader.core.membership.voters:
                        if v != leader.i:
                            self.cut.add(frozenset((leader.i, v)))
                    self.heal_at = self.now + rng.randint(30, 120)
            self._operate(stopping=False)
        if self.now == self.heal_at:
            self.cut.clear()
            self.split = None

    def _isolate(self, i: int) -> None:
        for j in self.servers:
            if j != i:
                self.cut.add(frozenset((i, j)))

    def _tick(self, stopping: bool) -> None:
        self.now += 1
        for i in list(self.servers):
            s = self.servers[i]
            if s is not None:
                s.core.tick(may_lead=self._may_lead(i))
                self._process(i)
        self._deliver_due()
        for c in self.clerks:
            self._clerk_step(c, stopping)
        if stopping and "membership" in self.on:
            self._operate(stopping=True)  # the operator sees its plan through; it starts no new one
        self._check_commits()

    def _may_lead(self, i: int) -> bool:
        """With ``starved``: whether server ``i`` may lead at this tick (stretches of 10 to 200 ticks it may not)."""
        return "starved" not in self.on or self.stretch.may_lead(i)

    def run(self) -> dict[str, Any]:
        """The whole seed: faults and traffic, then heal and settle, then the checks. Raises SimFailure."""
        try:
            for _ in range(self.opt.ticks):
                self._faults()
                self._tick(stopping=False)
            self.cut.clear()
            self.split = None
            self.on -= {"lossy", "long_delays", "duplicates", "old_messages", "crash_after_vote", "crash_after_fsync", "starved"}
            self.stretch.clear()
            for i in self.retired:
                if self.servers.get(i) is not None and i not in self._members_now():
                    self._stop(i)  # a removed server left running is stopped now
            for i, s in list(self.servers.items()):
                if s is None and i not in self.gone:
                    self._boot(i)
            for _ in range(self.opt.settle_ticks):
                self._tick(stopping=True)
                if self._settled():
                    break
            else:
                self.fail(f"no convergence {self.opt.settle_ticks} ticks after the faults stopped: "
                          f"clerks busy {[c.client for c in self.clerks if c.op]}, plan {self.plan}, "
                          f"applied { {i: s and s.kv.applied for i, s in self.servers.items()} }")
            self._final_checks()
        finally:
            self.close()
        self.stats["voters"] = len(self.conf_committed[1].voters)
        self.stats["starved"] = self.stretch.count
        return {"seed": self.seed, "servers": self.n, "switches": self.switches, **self.stats}

    def _members_now(self) -> set[int]:
        found = self._find_leader()
        return set(found[1].voters + found[1].learners) if found else set(self.conf_committed[1].members)

    def _settled(self) -> bool:
        if self.plan or self.leaving or any(c.op is not None for c in self.clerks):
            return False
        leader = [s for s in self._live() if s.core.is_leader]
        if len(leader) != 1:
            return False
        core = leader[0].core
        if core.log.term_at(core.commit_index) != core.term or core.confs.last_index > core.commit_index:
            return False
        members = [self.servers.get(i) for i in core.membership.members]
        top = core.log.last_index
        if any(s is None or s.kv.applied != top for s in members):
            return False
        self.final_members = [s for s in members if s is not None]
        return True

    def _final_checks(self) -> None:
        servers = self.final_members
        digests = {s.kv.state.digest() for s in servers}
        if len(digests) != 1:
            self.fail(f"replicas differ after settling at applied index {servers[0].kv.applied}")
        state = servers[0].kv.state
        by_key: dict[str, list[Operation]] = {}
        for op in self.history:
            by_key.setdefault(op.input["key"], []).append(op)
        problems: list[str] = []
        for key, ops in sorted(by_key.items()):
            problems += check_appends(key, ops, state.get(key))
        if problems:
            self.fail("exactly-once: " + "; ".join(problems))
        t = self._clock()
        history = [*self.history, *(Operation(0, {"op": "get", "key": k}, t, state.get(k), t + 1) for k in by_key)]
        pending = [Operation(c.client, c.op, c.call, None, None) for c in self.clerks if c.op is not None]
        result = check(history + pending, KVModel(), timeout=30.0)
        if result.verdict is Verdict.ILLEGAL:
            self.fail(f"linearizability: the clerks' history of {len(history)} operations is not linearizable")
        if result.verdict is not Verdict.OK:
            self.fail(f"linearizability: no verdict within 30 s ({len(history)} operations)")

    def close(self) -> None:
        for i, s in self.servers.items():
            if s is not None:
                s.storage.close()
                self.servers[i] = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def _scratch() -> str | None:
    """A RAM-backed directory if there is one: the simulated disk's fsyncs then cost nothing."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


SCRATCH: str | None = None
"""Where each seed's scratch directory goes (default: /dev/shm if writable, else the system's temp directory)."""


def run_seed(seed: int, options: SimOptions | None = None) -> dict[str, Any]:
    if SCRATCH is None:
        return KVSim(seed, options).run()
    with tempfile.TemporaryDirectory(prefix="zactor-kvsim-", dir=SCRATCH) as tmp:
        return KVSim(seed, options, Path(tmp)).run()


def run_seeds(seeds: range | list[int], options: SimOptions | None = None, stop_at_first: bool = True,
              progress: Callable[[int, int], None] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Run ``seeds``; returns (each passing seed's stats, each failure's message)."""
    results, failures = [], []
    for k, seed in enumerate(seeds, 1):
        try:
            results.append(run_seed(seed, options))
        except SimFailure as exc:
            failures.append(str(exc))
            if stop_at_first:
                break
        except Exception as exc:  # an invariant the code itself raises (InvariantError, say) is a failure too
            failures.append(f"seed {seed}: {type(exc).__name__}: {exc}\n  replay: {REPLAY.format(seed=seed)}"
                            + (f" --broken {options.broken}" if options and options.broken else ""))
            if stop_at_first:
                break
        if progress is not None:
            progress(k, len(failures))
    return results, failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="zactor kvsim",
        description="Deterministic simulation of the replicated KV service (servers, Raft, clerks, disk and network "
        "in one process): each seed is a run with faults; a failure prints the command that replays it.",
    )
    p.add_argument("--seed", type=int, default=None, help="run this one seed and print what it did")
    p.add_argument("--seeds", type=int, default=100, help="run seeds FIRST..FIRST+N-1 (default 100)")
    p.add_argument("--first", type=int, default=1, help="first seed of --seeds (default 1)")
    p.add_argument("--ticks", type=int, default=SimOptions.ticks, help=f"simulated ticks of faults per seed (default {SimOptions.ticks})")
    p.add_argument("--keep-going", action="store_true", help="run every seed even after a failure")
    p.add_argument("--broken", default="", help="test-only: a broken variant of apps/soak/broken.py (the checks must catch it)")
    p.add_argument("--scratch", type=scratch_dir, default=None, help="directory for the simulated disks (default /dev/shm, else the temp directory)")
    args = p.parse_args(argv)
    global SCRATCH
    SCRATCH = args.scratch
    options = SimOptions(ticks=args.ticks, broken=args.broken)
    if args.seed is not None:
        try:
            stats = run_seed(args.seed, options)
        except SimFailure as exc:
            print(f"FAIL {exc}", file=sys.stderr)
            return 1
        print(f"seed {args.seed}: ok {stats}")
        return 0
    started = time.monotonic()

    def progress(done: int, failed: int) -> None:
        if done % 50 == 0:
            print(f"  {done}/{args.seeds} seeds, {failed} failed, {done / (time.monotonic() - started):.1f} seeds/s", file=sys.stderr)

    results, failures = run_seeds(range(args.first, args.first + args.seeds), options, not args.keep_going, progress)
    took = time.monotonic() - started
    ran = len(results) + len(failures)
    print(f"{ran} seeds in {took:.1f} s ({ran / took:.1f} seeds/s): {len(results)} passed, {len(failures)} failed")
    for f in failures[:10]:
        print(f"FAIL {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
