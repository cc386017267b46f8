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
- clerks run the lab's protocol (same client id and seq on every retry, a
  new server after a refusal or a timeout) and every call is recorded.

Faults come from the seed, and BUGGIFY-style switches (each on or off per
seed) make rare paths common: messages held back past several terms, old
messages duplicated and delivered late, some held for hundreds of ticks
(past terms and restarts of their sender), and the messages a server was
sent in earlier terms delivered to it again right as it becomes leader, a crash right after a granted vote
or right after an fsync (before the Ready's messages leave), a leader
isolated right after it appended a burst of entries (longer than one
AppendEntries batch), a tiny ``maxraftstate`` so snapshots race with
InstallSnapshot.

Checked per seed, each failure naming the seed and the command that replays
it: election safety (one leader per term, and each leader holds a majority
of votes granted in its own term); the newest leader's match index for each
follower is backed by that follower's log; vote durability (a restarted server is
past the term of every vote it sent, or votes the same); every committed entry stays committed with the same
term and command on every core that has it (no committed entry lost); a new
leader holds every committed entry (leader completeness); no two servers
apply different commands at one index, and each applies in order; after the
faults stop, every server converges to the same state; the clerks' history
is linearizable (``apps.linearizability``); and every acknowledged append is
in the final value exactly once (exactly-once, ``check_appends``).

Not covered: real time (the sweeps that answer requests after ``MAX_WAIT``),
the actor runtime and the transport (mailbox order, message encoding,
process restarts by the supervisor), torn writes and bit flips (the journal's
own tests and the soak's ``disk`` nemesis do those), and membership changes.

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
from apps.raft.core import Config, RaftCore, Ready, Role
from apps.raft.messages import ApplyMsg, RequestVoteReply
from apps.raft.peer import Applied, ReadIndex, RoleChanged, Start, TakeSnapshot, drain_ready
from apps.raft.storage import RaftStorage
from apps.soak.broken import server_fields
from apps.soak.verdict import check_appends

REPLAY = "python -m apps.kvraft.sim --seed {seed}"
SWITCHES = ("long_delays", "duplicates", "crash_after_vote", "crash_after_fsync", "isolate_after_burst", "tiny_snapshots",
            "lossy", "crashes", "partitions", "old_messages")
"""The BUGGIFY switches; each seed turns each on or off."""


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
    seq: int = 0
    op: dict[str, Any] | None = None
    call: int = 0
    server: int = 0
    corr: int = 0
    deadline: int = 0
    next_op_at: int = 0


@dataclass(order=True)
class _InFlight:
    at: int
    order: float
    msg: Any = field(compare=False)
    dst: Any = field(compare=False)
    """A server index, or ("clerk", client)."""
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
        self.sim.tells[self.i].append(msg)


class _Server:
    def __init__(self, sim: KVSim, i: int) -> None:
        self.i = i
        storage: RaftStorage = sim.storage_class(sim.dir / f"server-{i}", fsync=True, lazy_disk=True)
        restored = storage.load()
        self.storage: Any = _CrashAfterSave(sim, storage)
        self.core = RaftCore(i, sim.n, sim.config, random.Random(sim.rng.random()), restored)
        self.kv: KVRaftServer = sim.server_class(sim.server_config(i), raft=_RaftPort(sim, i), answer=sim.reply_from(i))
        self.role: tuple[int, bool, int | None] | None = None
        self.applied_upto = 0
        self.committed_checked = self.core.commit_index


class KVSim:
    def __init__(self, seed: int, options: SimOptions | None = None, directory: Path | None = None) -> None:
        self.seed = seed
        self.opt = opt = options or SimOptions()
        self.rng = random.Random(seed)
        rng = self.rng
        self.n = opt.servers or rng.choice((3, 5))
        if opt.switches is None:
            self.on = {s for s in SWITCHES if rng.random() < 0.5}
        else:
            unknown = set(opt.switches) - set(SWITCHES)
            if unknown:
                raise ValueError(f"unknown switch(es) {sorted(unknown)}; known: {', '.join(SWITCHES)}")
            self.on = set(opt.switches)
        self.switches = sorted(self.on)
        self.config = Config(election_ticks_min=10, election_ticks_max=20, heartbeat_ticks=3, max_batch=4, max_inflight=2)
        self.maxraftstate = rng.choice((600, 1200)) if "tiny_snapshots" in self.on else rng.choice((-1, 6000))
        fields = server_fields(opt.broken)
        self.storage_class: Callable[..., RaftStorage] = fields.get("storage", RaftStorage)
        self.server_class: Callable[..., KVRaftServer] = fields.get("server_class") or KVRaftServer
        self._own_dir = directory is None
        self.dir = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="zactor-kvsim-", dir=_scratch()))
        self.now = 0
        self.net: list[_InFlight] = []
        self.cut: set[frozenset[int]] = set()
        self.tells: list[list[Any]] = [[] for _ in range(self.n)]
        self.votes_given: list[tuple[int, int] | None] = [None] * self.n
        self.max_term = 0
        self.held: list[list[Any]] = [[] for _ in range(self.n)]
        """The latest Raft messages sent to each server, for the old_messages switch to deliver again."""
        self.grants: dict[int, set[tuple[int, int]]] = {}
        """term -> (voter, candidate) of every vote granted in it."""
        self.servers: list[_Server | None] = [None] * self.n
        self.incarnation = [0] * self.n
        self.leaders: dict[int, int] = {}
        self.committed: dict[int, tuple[int, Any]] = {}
        self.applied: dict[int, Any] = {}
        self.clerks = [_Clerk(c + 1, server=rng.randrange(self.n)) for c in range(opt.clerks)]
        self.history: list[Operation] = []
        self.corr = 0
        self.heal_at = -1
        self.stats = {"crashes": 0, "messages": 0, "elections": 0, "snapshots_applied": 0, "ops": 0}
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

    def server_config(self, i: int) -> ServerConfig:
        return ServerConfig(i, tuple(f"sim://{j}" for j in range(self.n)), str(self.dir / f"server-{i}"),
                            maxraftstate=self.maxraftstate, raft=self.config)

    def reply_from(self, i: int) -> Callable[[str, Reply], None]:
        def answer(reply_to: str, reply: Reply) -> None:
            self._send(reply, ("clerk", int(reply_to.rpartition("-")[2])), None, clerk_link=True)

        return answer

    def _boot(self, i: int) -> None:
        self.incarnation[i] += 1
        s = self.servers[i] = _Server(self, i)
        given = self.votes_given[i]
        if given is not None:
            # A vote that left is durable: the restarted peer is past that term, or still votes the same.
            hs = s.core.hard_state
            if hs.term < given[0] or (hs.term == given[0] and hs.voted_for != given[1]):
                self.fail(f"vote durability: server {i} granted its vote in term {given[0]} to {given[1]}, "
                          f"but restarted with term {hs.term}, vote {hs.voted_for}")
        self._process(i)

    def _crash(self, i: int) -> None:
        s = self.servers[i]
        if s is None:
            return
        self.stats["crashes"] += 1
        s.storage.close()  # unsynced appends die with the process
        self.servers[i] = None
        self.tells[i] = []

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
            held = self.held[dst]
            held.append(msg)
            if len(held) > 40:
                del held[:20]
        if "old_messages" in on and src is not None and rng.random() < 0.02:
            # Held back and delivered much later, typically terms and incarnations after it was sent.
            heapq.heappush(self.net, _InFlight(self.now + rng.randint(100, 500), rng.random(), msg, dst, src))

    # ---- one server's Ready cycle --------------------------------------------------------------

    def _process(self, i: int) -> None:
        while True:
            s = self.servers[i]
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
                    if "old_messages" in self.on and self.rng.random() < 0.5:
                        # What was said to it in earlier terms comes back just as it takes over.
                        for msg in self.held[i]:
                            if msg.term < core.term:
                                heapq.heappush(self.net, _InFlight(self.now + self.rng.randint(1, 10), self.rng.random(), msg, i, msg.src))
                s.kv._role_changed(RoleChanged(i, self.incarnation[i], *role, None if role[2] is None else f"sim://{role[2]}"))
            if not self.tells[i]:
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
        top = max((s.core.term for s in self.servers if s is not None), default=0)
        self.max_term = max(self.max_term, top)
        for s in self.servers:
            if s is None:
                continue
            core = s.core
            if core.role is Role.LEADER and core.term == self.max_term:
                self._check_matches(s)
            if core.role is Role.LEADER:
                other = self.leaders.setdefault(core.term, core.me)
                if other != core.me:
                    self.fail(f"election safety: two leaders in term {core.term}: {other} and {core.me}")
            start = max(s.committed_checked, core.log.snapshot_index) + 1
            for index in range(start, min(core.commit_index, core.log.last_index) + 1):
                e = core.log.entry(index)
                seen = self.committed.setdefault(index, (e.term, e.command))
                if seen != (e.term, e.command):
                    self.fail(f"server {s.i} committed {(e.term, e.command)!r} at {index}, but {seen!r} was committed there")
            s.committed_checked = max(s.committed_checked, core.commit_index)

    def _check_matches(self, s: _Server) -> None:
        """The newest leader's match index for a follower is never beyond what that follower's log holds.

        Nobody can have cut the follower's log since it answered, because no
        term above this leader's has been seen; so a match index the follower
        does not back (a reply of another term taken for this one's, say) is a bug.
        """
        log = s.core.log
        for peer, prog in s.core.progress.items():
            other = self.servers[peer]
            m = prog.match_index
            if other is None or m <= max(other.core.log.snapshot_index, log.snapshot_index):
                continue
            if other.core.log.term_at(m) != log.term_at(m):
                self.fail(f"leader {s.i} of term {s.core.term} takes server {peer} to match it through {m}, "
                          f"but {peer} has term {other.core.log.term_at(m)} there, the leader {log.term_at(m)}")

    def _on_new_leader(self, s: _Server) -> None:
        """Leader completeness: a new leader holds every entry committed anywhere before."""
        self.stats["elections"] += 1
        term = s.core.term
        voters = {s.i} | {v for v, c in self.grants.get(term, ()) if c == s.i}
        if len(voters) * 2 <= self.n:
            self.fail(f"election safety: server {s.i} leads term {term} with votes of that term from only {sorted(voters)}")
        log = s.core.log
        for index, (term, command) in self.committed.items():
            if index > log.snapshot_index and (index > log.last_index or (log.entry(index).term, log.entry(index).command) != (term, command)):
                self.fail(f"leader completeness: leader {s.i} of term {s.core.term} lacks committed entry {index} ({term}, {command!r})")

    # ---- clerks -------------------------------------------------------------------------------------

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
            self._attempt(c, c.server)
        elif self.now >= c.deadline:
            self._attempt(c, rng.randrange(self.n))

    def _attempt(self, c: _Clerk, server: int) -> None:
        assert c.op is not None
        self.corr += 1
        c.corr, c.server, c.deadline = self.corr, server, self.now + 25
        op = c.op
        kv = Get(op["key"]) if op["op"] == "get" else Append(op["key"], op["value"], c.client, c.seq)
        self._send(Request(kv, f"clerk-{c.client}", self.corr), server, None, clerk_link=True)

    def _clerk_reply(self, client: int, reply: Reply) -> None:
        c = self.clerks[client - 1]
        if c.op is None or reply.corr != c.corr:
            return  # a late or duplicated answer to an earlier attempt
        if not reply.ok:
            hint = self.rng.randrange(self.n) if reply.leader is None else int(reply.leader.rpartition("/")[2])
            self._attempt(c, hint)
            return
        output = reply.value if c.op["op"] == "get" else (reply.value or "")
        self.history.append(Operation(c.client, c.op, c.call, output, self._clock()))
        self.stats["ops"] += 1
        c.op = None
        c.next_op_at = self.now + self.rng.randint(0, 3)

    def _clock(self) -> int:
        """History times: distinct and ordered within a tick, so call and return keep their real order."""
        self.corr += 1
        return self.now * 1_000_000 + self.corr

    # ---- the run --------------------------------------------------------------------------------------

    def _deliver_due(self) -> None:
        while self.net and self.net[0].at <= self.now:
            f = heapq.heappop(self.net)
            if isinstance(f.dst, tuple):
                self._clerk_reply(f.dst[1], f.msg)
                continue
            s = self.servers[f.dst]
            if s is None:
                continue
            if f.src is not None and frozenset((f.src, f.dst)) in self.cut:
                continue
            if isinstance(f.msg, Request):
                s.kv._request(f.msg)
            else:
                s.core.step(f.msg)
            self._process(f.dst)

    def _faults(self) -> None:
        rng, on, n = self.rng, self.on, self.n
        live = [i for i in range(n) if self.servers[i] is not None]
        r = rng.random()
        if "crashes" in on and r < 0.006 and len(live) > n // 2 + 1:
            self._crash(rng.choice(live))
        elif r < 0.02:
            dead = [i for i in range(n) if self.servers[i] is None]
            if dead:
                self._boot(rng.choice(dead))
        elif "partitions" in on and r < 0.025:
            a, b = rng.sample(range(n), 2)
            self.cut.add(frozenset((a, b)))
        elif "partitions" in on and r < 0.03:
            self.cut.clear()
        if "isolate_after_burst" in on and rng.random() < 0.01:
            leader = next((s for s in self.servers if s is not None and s.core.is_leader), None)
            if leader is not None:
                # A burst of entries only this leader gets, then it is cut off: a long divergent log.
                # A key of their own, which no clerk reads: calls that never return would
                # make the linearizability check search exponentially many orders.
                for k in range(rng.randint(5, 12)):
                    leader.core.propose(Append("burst", f"{self.now}.{k} ", 10_000 + self.now, k + 1))
                self._isolate(leader.i)
                self.heal_at = self.now + rng.randint(30, 120)
                self._process(leader.i)
        if self.now == self.heal_at:
            self.cut.clear()

    def _isolate(self, i: int) -> None:
        for j in range(self.n):
            if j != i:
                self.cut.add(frozenset((i, j)))

    def _tick(self, stopping: bool) -> None:
        self.now += 1
        for i in range(self.n):
            s = self.servers[i]
            if s is not None:
                s.core.tick()
                self._process(i)
        self._deliver_due()
        for c in self.clerks:
            self._clerk_step(c, stopping)
        self._check_commits()

    def run(self) -> dict[str, Any]:
        """The whole seed: faults and traffic, then heal and settle, then the checks. Raises SimFailure."""
        try:
            for _ in range(self.opt.ticks):
                self._faults()
                self._tick(stopping=False)
            self.cut.clear()
            self.on -= {"lossy", "long_delays", "duplicates", "old_messages", "crash_after_vote", "crash_after_fsync"}
            for i in range(self.n):
                if self.servers[i] is None:
                    self._boot(i)
            for _ in range(self.opt.settle_ticks):
                self._tick(stopping=True)
                if self._settled():
                    break
            else:
                self.fail(f"no convergence {self.opt.settle_ticks} ticks after the faults stopped: "
                          f"clerks busy {[c.client for c in self.clerks if c.op]}, applied {[s and s.kv.applied for s in self.servers]}")
            self._final_checks()
        finally:
            self.close()
        return {"seed": self.seed, "servers": self.n, "switches": self.switches, **self.stats}

    def _settled(self) -> bool:
        if any(c.op is not None for c in self.clerks):
            return False
        servers = [s for s in self.servers if s is not None]
        leader = [s for s in servers if s.core.is_leader]
        if len(leader) != 1 or leader[0].core.log.term_at(leader[0].core.commit_index) != leader[0].core.term:
            return False
        top = leader[0].core.log.last_index
        return all(s.kv.applied == top for s in servers)

    def _final_checks(self) -> None:
        servers = [s for s in self.servers if s is not None]
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
        for i, s in enumerate(self.servers):
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
    p.add_argument("--scratch", default=None, help="directory for the simulated disks (default /dev/shm, else the temp directory)")
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
