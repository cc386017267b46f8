"""A deterministic simulation of a Raft cluster, for checking the core against random schedules.

Everything is driven by one seeded ``random.Random``: which peer ticks, which
message is delivered (any pending one: reordering), dropped or duplicated,
partitions, crashes (a crashed peer keeps only what its completed Readys told
it to persist) and restarts, proposals and service snapshots. After every
step the safety properties of the Raft paper are checked:

- election safety: at most one leader per term, ever;
- log matching: two logs with an entry of the same index and term agree on
  every entry up to it;
- leader completeness: a leader's log holds every entry committed before it;
- state machine safety: no two peers apply different commands at an index,
  and each applies in order without gaps;
- with ``reads``, ReadIndex safety: a read a leader yields has an index at
  least as high as every entry committed anywhere before the read was asked
  (so a deposed leader can never serve it from a stale state).

With ``storage_dir``, every peer also writes its Readys through the real
:class:`~apps.raft.storage.RaftStorage` (fsync off), and each restart checks
that what the journal replays equals what the peer made durable.

A violation raises ``SimulationFailure`` naming the seed and step;
``SimCluster(n, seed, ...).run(steps)`` replays exactly the same run.
"""

from __future__ import annotations

import pickle
import random
from dataclasses import dataclass
from pathlib import Path

from apps.raft.core import Config, HardState, RaftCore, Restored, Role, Snapshot
from apps.raft.messages import Entry, Message
from apps.raft.storage import RaftStorage


class SimulationFailure(AssertionError):
    pass


@dataclass
class _Disk:
    """What a peer has made durable: its whole persistent state as of its last Ready.

    What the peer shell has made durable when a Ready is done (one journal
    append, fsync'd once, per Ready that changes durable state; a snapshot
    rewrites the journal atomically; see ``apps/raft/storage.py``), so a
    crash keeps exactly the state of the last completed Ready.
    """

    hard_state: HardState
    snapshot: Snapshot | None
    entries: tuple[Entry, ...]

    @classmethod
    def of(cls, core: RaftCore) -> _Disk:
        snap = None
        if core.log.snapshot_index:
            snap = Snapshot(core.log.snapshot_index, core.log.snapshot_term, core.snapshot_data, core.snapshot_membership)
        return cls(core.hard_state, snap, tuple(core.log.entries))

    def restored(self) -> Restored:
        return Restored(self.hard_state, self.snapshot, self.entries)


class SimCluster:
    def __init__(
        self,
        n: int,
        seed: int,
        config: Config | None = None,
        snapshots: bool = False,
        storage_dir: Path | None = None,
        reads: bool = False,
    ) -> None:
        self.n, self.seed, self.snapshots = n, seed, snapshots
        self.storage_dir = storage_dir
        self.storages: list[RaftStorage | None] = [None] * n
        self.rng = random.Random(seed)
        self.config = config or Config(election_ticks_min=10, election_ticks_max=20, heartbeat_ticks=3)
        self.disks = [_Disk(HardState(0, None), None, ()) for _ in range(n)]
        self.applied_upto = [0] * n
        self.boots = 0
        self.cores: list[RaftCore | None] = [self._boot(i) for i in range(n)]
        self.net: list[Message] = []
        self.cut: set[frozenset[int]] = set()
        self.leaders: dict[int, int] = {}
        self.committed: dict[int, tuple[int, object]] = {}  # index -> (term, command), as committed anywhere
        self.applied: dict[int, object] = {}  # index -> command, as applied anywhere
        self.step_no = 0
        self.next_command = 0
        self.reads = reads
        self.read_floor: dict[int, int] = {}  # read id -> highest index committed anywhere when it was asked
        self.reads_yielded = 0

    def _boot(self, i: int) -> RaftCore:
        self.boots += 1
        self.applied_upto[i] = 0  # a new incarnation applies from its snapshot (or 1) again
        if self.storage_dir is not None:
            old = self.storages[i]
            if old is not None:
                old.close()
            self.storages[i] = self._replay_journal(i)
        return RaftCore(i, self.n, self.config, random.Random(self.rng.random()), self.disks[i].restored())

    def _replay_journal(self, i: int) -> RaftStorage:
        """Peer ``i``'s storage, freshly loaded; fails the run unless it replays what ``i`` made durable."""
        assert self.storage_dir is not None
        storage = RaftStorage(self.storage_dir / f"peer-{i}", fsync=False)
        replayed = storage.load() or Restored(HardState(0, None), None, ())
        if replayed != self.disks[i].restored():
            self.fail(f"peer {i}'s journal replays {replayed}, but it made {self.disks[i].restored()} durable")
        return storage

    @property
    def restarts(self) -> int:
        return self.boots - self.n

    def fail(self, what: str) -> None:
        raise SimulationFailure(f"seed {self.seed}, step {self.step_no}: {what}")

    # ---- actions -------------------------------------------------------------------------

    def _process(self, i: int) -> None:
        core = self.cores[i]
        while core is not None and core.has_ready():
            rd = core.ready()
            if rd.must_sync:
                self.disks[i] = _Disk.of(core)
                storage = self.storages[i]
                if storage is not None:
                    storage.save(rd, core)
            self.net.extend(rd.messages)
            self.net.extend(rd.messages_after_persist)
            for msg in rd.apply:
                self._applied(i, msg)
            for rs in rd.read_states:
                floor = self.read_floor.pop(rs.request_id)
                if rs.index < floor:
                    self.fail(f"peer {i} yielded read {rs.request_id} at {rs.index}, but {floor} was committed before it was asked")
                if rs.index > core.commit_index:
                    self.fail(f"peer {i} yielded read {rs.request_id} at {rs.index}, beyond its commit index {core.commit_index}")
                self.reads_yielded += 1
            core.advance(rd)

    def _applied(self, i: int, msg) -> None:
        if msg.snapshot_valid:
            commands = pickle.loads(msg.snapshot)
            for index, command in enumerate(commands, 1):
                if self.applied.get(index, command) != command:
                    self.fail(f"peer {i} installed a snapshot that disagrees at index {index}")
            if msg.snapshot_index != len(commands):
                self.fail(f"peer {i}: snapshot index {msg.snapshot_index} but it holds {len(commands)} commands")
            self.applied_upto[i] = max(self.applied_upto[i], msg.snapshot_index)
            return
        index = msg.command_index
        if index != self.applied_upto[i] + 1:
            self.fail(f"peer {i} applied index {index} after {self.applied_upto[i]} (out of order)")
        if index in self.applied and self.applied[index] != msg.command:
            self.fail(f"peer {i} applied {msg.command!r} at {index}, another peer applied {self.applied[index]!r}")
        self.applied[index] = msg.command
        self.applied_upto[i] = index

    def _deliver(self, k: int) -> None:
        msg = self.net.pop(k)
        core = self.cores[msg.dst]
        if core is None or frozenset((msg.src, msg.dst)) in self.cut:
            return
        core.step(msg)
        self._process(msg.dst)

    def _snapshot(self, i: int) -> None:
        core = self.cores[i]
        if core is None or core.last_applied <= core.log.snapshot_index:
            return
        index = core.last_applied
        data = pickle.dumps([self.applied[j] for j in range(1, index + 1)])
        core.snapshot(index, data)
        self._process(i)

    def step(self) -> None:
        self.step_no += 1
        rng = self.rng
        r = rng.random()
        live = [i for i in range(self.n) if self.cores[i] is not None]
        if r < 0.35 and live:
            i = rng.choice(live)
            self.cores[i].tick()  # type: ignore[union-attr]
            self._process(i)
        elif r < 0.70 and self.net:
            self._deliver(rng.randrange(len(self.net)))
        elif r < 0.74 and self.net:
            self.net.pop(rng.randrange(len(self.net)))
        elif r < 0.77 and self.net:
            self.net.append(self.net[rng.randrange(len(self.net))])
        elif r < 0.86 and self.reads and rng.random() < 0.5:
            for i in live:
                core = self.cores[i]
                if core.is_leader:  # type: ignore[union-attr]
                    rid = len(self.read_floor) + self.reads_yielded + self.step_no * 1000
                    self.read_floor[rid] = max(self.committed, default=0)
                    core.read_index(rid)  # type: ignore[union-attr]
                    self._process(i)
                    break
        elif r < 0.86:
            for i in live:
                core = self.cores[i]
                if core.is_leader:  # type: ignore[union-attr]
                    self.next_command += 1
                    core.propose(f"c{self.next_command}")  # type: ignore[union-attr]
                    self._process(i)
                    break
        elif r < 0.89:
            a, b = rng.sample(range(self.n), 2)
            self.cut.add(frozenset((a, b)))
        elif r < 0.93:
            self.cut.clear()
        elif r < 0.95 and len(live) > self.n // 2 + 1:
            self.cores[rng.choice(live)] = None  # crash: only the disk survives
        elif r < 0.98:
            dead = [i for i in range(self.n) if self.cores[i] is None]
            if dead:
                i = rng.choice(dead)
                self.cores[i] = self._boot(i)
                self._process(i)
        elif self.snapshots and live:
            self._snapshot(rng.choice(live))
        self.check()

    # ---- invariants -------------------------------------------------------------------------------

    def check(self) -> None:
        live = [c for c in self.cores if c is not None]
        for core in live:
            if core.role is Role.LEADER:
                other = self.leaders.setdefault(core.term, core.me)
                if other != core.me:
                    self.fail(f"two leaders in term {core.term}: {other} and {core.me}")
            for index in range(max(core.log.snapshot_index + 1, 1), core.commit_index + 1):
                if index > core.log.last_index:
                    break
                e = core.log.entry(index)
                seen = self.committed.setdefault(index, (e.term, e.command))
                if seen != (e.term, e.command):
                    self.fail(f"peer {core.me} committed {e} at {index}, but {seen} was committed there")
        for a in live:
            for b in live:
                if a.me >= b.me:
                    continue
                top = min(a.log.last_index, b.log.last_index)
                low = max(a.log.snapshot_index, b.log.snapshot_index) + 1
                for index in range(top, low - 1, -1):
                    if a.log.term_at(index) == b.log.term_at(index):
                        for j in range(low, index + 1):
                            if a.log.entry(j) != b.log.entry(j):
                                self.fail(f"logs of {a.me} and {b.me} match at {index} but differ at {j}")
                        break
        for core in live:
            if core.role is not Role.LEADER:
                continue
            for index, (term, command) in self.committed.items():
                if term < core.term and index > core.log.snapshot_index:
                    if index > core.log.last_index or core.log.entry(index) != Entry(term, index, command):
                        self.fail(f"leader {core.me} of term {core.term} lacks committed entry {index}")

    # ---- driving ------------------------------------------------------------------------------------

    def run(self, steps: int) -> SimCluster:
        for _ in range(steps):
            self.step()
        return self

    def settle(self, max_steps: int = 20_000) -> int:
        """Heal everything, restart the dead, deliver reliably; a proposal must commit everywhere."""
        self.cut.clear()
        for i in range(self.n):
            if self.cores[i] is None:
                self.cores[i] = self._boot(i)
                self._process(i)
        target = proposer = None
        for step in range(max_steps):
            self.step_no += 1
            if self.net:
                self._deliver(0)
            else:
                for i in range(self.n):
                    self.cores[i].tick()  # type: ignore[union-attr]
                    self._process(i)
            self.check()
            leaders = [c for c in self.cores if c is not None and c.is_leader]
            if proposer is not None and not (proposer[0].is_leader and proposer[0].term == proposer[1]):
                target = proposer = None  # deposed before it committed: propose again
            if target is None and leaders:
                index, term, ok = leaders[0].propose("final")
                if ok:
                    target, proposer = index, (leaders[0], term)
                    self._process(leaders[0].me)
            if target is not None and all(u >= target for u in self.applied_upto):
                if self.storage_dir is not None:
                    for i in range(self.n):
                        self._replay_journal(i).close()
                return step
        self.fail(f"no progress after the faults stopped ({max_steps} steps): applied {self.applied_upto}, target {target}")
        return max_steps
