"""A deterministic simulation of a Raft cluster, for checking the core against random schedules.

Everything is driven by one seeded ``random.Random``: which peer ticks, which
message is delivered (any pending one: reordering), dropped or duplicated,
partitions, crashes (a crashed peer keeps only what its completed Readys told
it to persist; with ``crash_before_write``, also between sending a Ready's
appends and writing it) and restarts, proposals and service snapshots. After every
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

With ``membership``, the run also changes the configuration one server at
a time while the other faults go on: a new server added as a learner, a
learner promoted, a member (the leader too) removed, and a replacement (add
a new learner, promote it, remove an old voter), each proposed to the
leader and often refused (not caught up, a change in flight, no entry of
the leader's term committed yet); ``core_class`` runs a variant of the core
(a test's deliberately broken one). On top of the checks above: a leader's
votes are a majority of the voters of its configuration, a leader the
committed configuration removed has stepped down, and every committed
configuration is one server away from the one committed before it.

With ``starved``, a peer now and then cannot serve clients for a stretch of
its ticks (its host out of open files: ``RaftCore.tick(may_lead=False)``):
a leader steps down within its term and the peer campaigns only once the
stretch ends; checked on top: a peer in such a stretch never leads.

With ``storage_dir``, every peer also writes its Readys through the real
:class:`~apps.raft.storage.RaftStorage` (fsync off), and each restart checks
that what the journal replays equals what the peer made durable.

A violation raises ``SimulationFailure`` naming the seed and step;
``SimCluster(n, seed, ...).run(steps)`` replays exactly the same run.

From the command line, each seed also picks its own options (size, snapshots,
reads, membership changes, crashes between send and write, starving, a real
journal, and runs of its own with the 2015 split or the servers' batching
rule) from a generator of its own, so one command covers every mix the
tests run one by one; it stops at the first failing seed, as the KV
simulation does (the mutation campaign's ``raft-sim`` killer)::

    python -m apps.raft.sim --seeds 2000          seeds 1..2000, a summary
    python -m apps.raft.sim --seed 17             one seed, its options and what it did
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apps.raft.core import Config, HardState, RaftCore, Restored, Role, Snapshot
from apps.raft.membership import ADD_LEARNER, PROMOTE, REMOVE, ConfChange, ConfChangeRefused, ConfEntry, Membership
from apps.raft.messages import AppendEntries, Entry, Message
from apps.raft.storage import RaftStorage


class SimulationFailure(AssertionError):
    pass


_SPARES = 4
"""Servers a run with membership changes may add (numbered n, n+1, ...)."""


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

    def last(self) -> tuple[int, int]:
        """(term, index) of the last entry, as a vote compares logs (the snapshot's if no entry follows it)."""
        if self.entries:
            return self.entries[-1].term, self.entries[-1].index
        return (self.snapshot.term, self.snapshot.index) if self.snapshot else (0, 0)

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; None if it is not in the log (a snapshot holds only committed ones)."""
        if self.snapshot is not None and index <= self.snapshot.index:
            return None
        first = self.entries[0].index if self.entries else 0
        return self.entries[index - first].term if self.entries and first <= index <= self.entries[-1].index else None


class Stretches:
    """Stretches of ticks in which a server may not lead (its host out of open files), one draw per tick.

    Shared by this simulator and the KV simulation so that both starve servers the same way. Per call for
    a server outside a stretch, one ``rng.random()`` below ``chance`` starts a stretch of ``rng.randint(lo,
    hi)`` ticks, this one included; a ``chance`` of 0 draws nothing, so a run without starving keeps every
    seed's schedule.
    """

    def __init__(self, rng: random.Random, chance: float, lo: int, hi: int) -> None:
        self.rng, self.chance, self.lo, self.hi = rng, chance, lo, hi
        self.unfit: dict[int, int] = {}
        """Server -> ticks left in which it may not lead."""
        self.count = 0
        """Stretches begun."""

    def may_lead(self, i: int) -> bool:
        if not self.chance:
            return True
        left = self.unfit.get(i, 0)
        if left == 0 and self.rng.random() < self.chance:
            left = self.rng.randint(self.lo, self.hi)
            self.count += 1
        if left == 0:
            return True
        self.unfit[i] = left - 1
        return False

    def starved(self, i: int) -> bool:
        """Whether server ``i`` is inside a stretch now (a leader there breaks the rule)."""
        return bool(self.unfit.get(i, 0))

    def clear(self) -> None:
        """Every server may lead again (the faults have stopped); later calls still draw."""
        self.unfit.clear()


SIM_CONFIG = Config(election_ticks_min=10, election_ticks_max=20, heartbeat_ticks=3, catch_up_entries=3,
                    pipeline_partial_batches=True)
"""The simulations' timing, with every interleaving of pipelined batches allowed (see ``STEADY_CONFIG``)."""

STEADY_CONFIG = dataclasses.replace(SIM_CONFIG, max_batch=3, pipeline_partial_batches=False)
"""The batching rule servers run with (a partial batch waits for the answer in flight), at a batch size the
simulated load reaches, so both sides of the rule play: a seed's run with ``steady`` uses it."""


class SimCluster:
    change_rate = 0.06
    """With ``membership``: the share of steps that propose a configuration change."""

    def __init__(
        self,
        n: int,
        seed: int,
        config: Config | None = None,
        snapshots: bool = False,
        storage_dir: Path | None = None,
        reads: bool = False,
        membership: bool = False,
        core_class: type[RaftCore] = RaftCore,
        crash_before_write: float = 0.0,
        starved: float = 0.0,
        old_messages: float = 0.0,
        crash_after_propose: float = 0.0,
        split_changes: float = 0.0,
    ) -> None:
        """``crash_before_write``: the chance that a peer crashes between sending a Ready's messages and writing
        it (the real peer sends a leader's appends before its own write); ``starved``: the chance, per tick of a
        peer, that a stretch of ticks it may not lead begins; ``old_messages``: the chance that a new leader is
        handed again, right as it wins, the messages it was sent in earlier terms (late replies to its
        appends and votes of an earlier term as leader or candidate); ``crash_after_propose``: the chance that a
        leader crashes right after it wrote a command it was given, its appends still in its send queue, and
        restarts at once: an entry of its term left on its disk alone, as Figure 8 of the paper needs;
        ``split_changes`` (with ``membership``): the chance that a leader of an even number of voters which has
        just appended a promotion is cut off from everyone but the promoted server, and that the next leader on
        the other side then proposes a removal at once, cut off from the server it removes (see
        :meth:`_split_first_act`; while it plays, no other cut is made and no server crashes). 0 keeps every
        seed's old schedule."""
        self.n, self.seed, self.snapshots = n, seed, snapshots
        self.starved = starved
        self.crash_before_write = crash_before_write
        self.crashes_before_write = 0
        self.membership, self.core_class = membership, core_class
        slots = n + (_SPARES if membership else 0)  # servers that may join get numbers n, n+1, ...
        self.storage_dir = storage_dir
        self.storages: list[RaftStorage | None] = [None] * slots
        self.rng = random.Random(seed)
        self.config = config or SIM_CONFIG
        self.stretch = Stretches(self.rng, starved, 1, 3 * self.config.election_ticks_max)
        self.old_messages = old_messages
        self.sent_to: dict[int, list[Message]] = {}  # with old_messages: the latest messages sent to each server
        self.greeted: set[tuple[int, int]] = set()  # (leader, term) already considered for old_messages
        self.old_delivered = 0
        self.crash_after_propose = crash_after_propose
        self.restarts_after_propose = 0
        self.split_changes = split_changes
        self.split: tuple[int, int, int] | None = None  # (changer, promoted server, its term) while a split is on
        self.split_cut: set[frozenset[int]] = set()  # the split's cuts: the random heals leave them be
        self.split_ends = 0  # the step at which the split's cuts are healed
        self.splits = self.split_attempts = self.split_removals = 0
        self.disks = [_Disk(HardState(0, None), None, ()) for _ in range(slots)]
        self.applied_upto = [0] * slots
        self.boots = 0
        self.cores: list[RaftCore | None] = [self._boot(i) for i in range(n)] + [None] * (slots - n)
        self.created = n  # servers 0..created-1 exist (the rest were never added)
        self.plans: list[ConfChange] = []  # the rest of a replacement in progress
        if split_changes and membership:  # a learner to promote, first thing: the split's first act
            self.plans = [ConfChange(ADD_LEARNER, n), ConfChange(PROMOTE, n)]
        self.conf_proposed = self.conf_refused = 0
        self.confs: dict[int, Membership] = {}  # index -> configuration, as committed anywhere
        self.net: list[Message] = []
        self.cut: set[frozenset[int]] = set()
        self.leaders: dict[int, int] = {}
        self.committed: dict[int, tuple[int, object]] = {}  # index -> (term, command), as committed anywhere
        self.applied: dict[int, object] = {}  # index -> command, as applied anywhere
        self.step_no = 0
        self.next_command = 0
        self.reads = reads
        self.read_floor: dict[int, int] = {}  # read id -> highest index committed anywhere when it was asked
        self.read_term_floor: dict[int, int] = {}  # read id -> highest term a majority had reached when it was asked
        self.read_asked: dict[int, int] = {}  # read id -> the step it was asked at
        self.heard: dict[tuple[int, int], tuple[int, int]] = {}  # (server, leader) -> (term, step) of its last append it took
        self.reads_yielded = 0

    def _boot(self, i: int) -> RaftCore:
        self.boots += 1
        self.applied_upto[i] = 0  # a new incarnation applies from its snapshot (or 1) again
        if self.storage_dir is not None:
            old = self.storages[i]
            if old is not None:
                old.close()
            self.storages[i] = self._replay_journal(i)
        return self.core_class(i, self.n, self.config, random.Random(self.rng.random()), self.disks[i].restored())

    def _replay_journal(self, i: int) -> RaftStorage:
        """Peer ``i``'s storage, freshly loaded; fails the run unless it replays what ``i`` made durable."""
        assert self.storage_dir is not None
        storage = RaftStorage(self.storage_dir / f"peer-{i}", fsync=False)
        replayed = storage.load() or Restored(HardState(0, None), None, ())
        if replayed != self.disks[i].restored():
            self.fail(f"peer {i}'s journal replays {replayed}, but it made {self.disks[i].restored()} durable")
        return storage

    @property
    def stretches(self) -> int:
        """Stretches of not leading begun so far (with ``starved``)."""
        return self.stretch.count

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
            self._send(rd.messages)  # before the write, as the peer does (apps.raft.peer.drain_ready)
            if rd.must_sync and self.crash_before_write and self.rng.random() < self.crash_before_write:
                live = [j for j in range(self.created) if self.cores[j] is not None]
                if self._may_crash(live):
                    self.cores[i] = None  # its disk keeps the last Ready it finished writing
                    self.crashes_before_write += 1
                    return
            if rd.must_sync:
                self.disks[i] = _Disk.of(core)
                storage = self.storages[i]
                if storage is not None:
                    storage.save(rd, core)
            self._send(rd.messages_after_persist)
            for msg in rd.apply:
                self._applied(i, msg)
            for rs in rd.read_states:
                floor = self.read_floor.pop(rs.request_id)
                elected = self.read_term_floor.pop(rs.request_id)
                asked = self.read_asked.pop(rs.request_id)
                if not self.membership:
                    self._check_read_heard(i, core.term, rs.request_id, asked)
                if elected > core.term and not self.membership:
                    self.fail(f"peer {i}, leader of term {core.term}, yielded read {rs.request_id} asked when a majority "
                              f"had reached term {elected}: no majority could have confirmed it in its term since")
                if rs.index < floor:
                    self.fail(f"peer {i} yielded read {rs.request_id} at {rs.index}, but {floor} was committed before it was asked")
                if rs.index > core.commit_index:
                    self.fail(f"peer {i} yielded read {rs.request_id} at {rs.index}, beyond its commit index {core.commit_index}")
                self.reads_yielded += 1
            core.advance(rd)

    def _check_read_heard(self, leader: int, term: int, rid: int, asked: int) -> None:
        """A read yielded by the leader of ``term`` must have been confirmed by a majority that took an
        AppendEntries of that term from it after the read was asked (ReadIndex, Raft thesis §6.4).

        Every round's heartbeats leave after the reads they confirm were asked, and only a server that took
        one echoes its round; an answer that counts for a read without such a delivery behind it (an echo
        of an old incarnation's round, say) would let a leader deposed since yield a stale read.
        """
        took = sum(1 for v in range(self.n) if v == leader or (self.heard.get((v, leader), (0, -1))[0] == term
                                                                and self.heard[(v, leader)][1] >= asked))
        if took * 2 <= self.n:
            self.fail(f"leader {leader} of term {term} yielded read {rid} confirmed by only {took} of {self.n} servers "
                      f"that took its appends since the read was asked (step {asked})")

    def _majority_term(self) -> int:
        """The highest term a majority of the servers has reached (a crashed one's is on its disk).

        A read asked when a majority is past the leader's term can never be confirmed: confirming takes
        acknowledgements in the leader's term, sent after the read was asked, from a majority, and terms
        only grow (they are durable). Without ``membership`` only (the voters are the starting servers).
        """
        terms = sorted(((c.term if c is not None else self.disks[i].hard_state.term) for i, c in enumerate(self.cores[: self.n])),
                       reverse=True)
        return terms[self.n // 2]

    def _send(self, msgs: Sequence[Message]) -> None:
        self.net.extend(msgs)
        if self.old_messages:
            for msg in msgs:
                kept = self.sent_to.setdefault(msg.dst, [])
                kept.append(msg)
                if len(kept) > 40:
                    del kept[0]

    def _greet_new_leaders(self) -> None:
        """With ``old_messages``: a server that has just won may first be handed again what it was sent before.

        Late answers to an earlier term's appends or votes, and refusals sent to its earlier incarnation
        (of its new term, even), are what a leader must not count; delivered right as it wins, they meet it
        before any answer of its term.
        """
        for i in range(self.created):
            core = self.cores[i]
            if core is None or not core.is_leader or (i, core.term) in self.greeted:
                continue
            self.greeted.add((i, core.term))
            if self.rng.random() >= self.old_messages:
                continue
            for msg in list(self.sent_to.get(i, ())):
                if self.cores[i] is not core:
                    break
                core.step(msg)
                self.old_delivered += 1
                self._process(i)

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
        if core is None or frozenset((msg.src, msg.dst)) in self.cut or frozenset((msg.src, msg.dst)) in self.split_cut:
            return
        core.step(msg)
        if isinstance(msg, AppendEntries) and core.term == msg.term:  # taken as from its term's leader, not refused
            self.heard[(msg.dst, msg.src)] = (msg.term, self.step_no)
        self._process(msg.dst)

    def _snapshot(self, i: int) -> None:
        core = self.cores[i]
        if core is None or core.last_applied <= core.log.snapshot_index:
            return
        index = core.last_applied
        data = pickle.dumps([self.applied[j] for j in range(1, index + 1)])
        core.snapshot(index, data)
        self._process(i)

    def _leader(self) -> RaftCore | None:
        leaders = [c for c in self.cores if c is not None and c.is_leader]
        return max(leaders, key=lambda c: c.term, default=None)

    def committed_membership(self) -> Membership:
        """The latest configuration committed anywhere (the starting one before any)."""
        return self.confs[max(self.confs)] if self.confs else Membership.of(self.n)

    def _reconfigure(self) -> None:
        """Propose one configuration change to the leader; refusals are expected and counted."""
        leader, rng = self._leader(), self.rng
        if leader is None:
            return
        m = leader.membership
        change: ConfChange | None = None
        if self.plans:
            change = self.plans[0]
        else:
            r = rng.random()
            spare = self.created if self.created < len(self.cores) else None
            if r < 0.25 and spare is not None:
                change = ConfChange(ADD_LEARNER, spare)
            elif r < 0.45 and spare is not None and len(m.voters) > 1:
                old = rng.choice(m.voters)
                self.plans = [ConfChange(ADD_LEARNER, spare), ConfChange(PROMOTE, spare), ConfChange(REMOVE, old)]
                change = self.plans[0]
            elif r < 0.7 and m.learners:
                change = ConfChange(PROMOTE, rng.choice(m.learners))
            elif len(m.members) > 2:
                change = ConfChange(REMOVE, rng.choice(m.members))
        if change is None:
            return
        if (self.split_changes and change.op == PROMOTE and len(m.voters) % 2 == 0
                and not self._voters_know(m.voters, leader.me)):
            return  # a split's promotion waits until the next leader could change the configuration at once
        self.conf_proposed += 1
        try:
            leader.propose_conf_change(change)
        except ConfChangeRefused:
            self.conf_refused += 1
            if self.plans and rng.random() < 0.05:
                self.plans = []  # give the replacement up (its server may be gone, or removed already)
            return
        if self.plans:
            self.plans.pop(0)
        if change.op == ADD_LEARNER and change.server == self.created:
            self.cores[self.created] = self._boot(self.created)  # a new, empty server starts
            self.created += 1
        sent = len(self.net)
        self._process(leader.me)
        if (change.op == PROMOTE and self.split is None and len(m.voters) % 2 == 0 and self.split_changes
                and self._voters_know(m.voters, leader.me) and rng.random() < self.split_changes):
            self._split_first_act(leader, change.server, sent)

    # ---- the 2015 single-server split -----------------------------------------------------------------

    def _split_first_act(self, leader: RaftCore, promoted: int, sent: int) -> None:
        """Cut ``leader`` and ``promoted`` off from every other server, the promotion's appends to them lost.

        The first half of the schedule that breaks single-server changes without the rule that a leader
        commits an entry of its own term before it changes the configuration (Ongaro, raft-dev, 2015): with
        an even number of voters, the promotion's configuration and a removal's that the other side may
        commit next have majorities that need not meet. :meth:`_split_second_act` plays the other half.
        """
        me = leader.me
        self.net[sent:] = [msg for msg in self.net[sent:] if msg.dst == promoted]
        self.split_cut = {frozenset((x, j)) for x in (me, promoted) for j in range(self.created) if j not in (me, promoted)}
        self.cut.clear()  # the other side must be able to elect a leader (every one of its voters is needed)
        self.split = (me, promoted, leader.term)
        self.split_ends = self.step_no + 1500
        self.splits += 1

    def _voters_know(self, voters: Sequence[int], leader: int) -> bool:
        """Whether every live one of ``voters`` but ``leader`` knows its latest configuration committed: a
        leader elected among them may then change the configuration at once (one change at a time)."""
        cores = [self.cores[v] for v in voters if v != leader]
        return all(c.commit_index >= c.confs.last_index for c in cores if c is not None)

    def _split_second_act(self) -> None:
        """A leader elected on the other side of the split proposes a removal at once (before anything of its
        term has committed), and the removed server is cut off from its side and put back in touch with the
        first leader and the promoted server, whose promotion it never saw: the two configurations'
        majorities are now disjoint."""
        assert self.split is not None
        first, promoted, term = self.split
        if self.step_no >= self.split_ends:
            self.split, self.split_cut = None, set()
            return
        for core in self.cores:
            if core is None or not core.is_leader or core.me in (first, promoted) or core.term <= term:
                continue
            if self.leaders.get(core.term) != core.me:
                continue  # elected this step: the checks see it win with the configuration it counted votes in
            if promoted in core.membership.voters:
                return  # the promotion reached this side after all: no split
            others = [v for v in core.membership.voters if v not in (core.me, first, promoted)]
            self.split = (first, promoted, core.term)  # once per leader
            if not others:
                return
            removed = self.rng.choice(others)
            self.split_attempts += 1
            try:
                core.propose_conf_change(ConfChange(REMOVE, removed))
            except ConfChangeRefused:
                return  # the rule this schedule exists for
            self.split_removals += 1
            # The removed server hears from no one on this side (nor that it was removed) and is back in
            # touch with the first leader and the promoted server.
            self.split_cut |= {frozenset((removed, j)) for j in range(self.created) if j not in (removed, first, promoted)}
            self.split_cut.discard(frozenset((first, removed)))
            self.split_cut.discard(frozenset((promoted, removed)))
            sent = len(self.net)
            self._process(core.me)
            self.net[sent:] = [msg for msg in self.net[sent:] if msg.dst != removed]
            return

    def step(self) -> None:
        self.step_no += 1
        rng = self.rng
        if self.membership and rng.random() < self.change_rate:
            self._reconfigure()
            self.check()
            return
        r = rng.random()
        live = [i for i in range(self.created) if self.cores[i] is not None]
        if r < 0.35 and live:
            i = rng.choice(live)
            self.cores[i].tick(may_lead=self._may_lead(i))  # type: ignore[union-attr]
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
                    self.read_term_floor[rid] = self._majority_term()
                    self.read_asked[rid] = self.step_no
                    core.read_index(rid)  # type: ignore[union-attr]
                    self._process(i)
                    break
        elif r < 0.86:
            for i in live:
                core = self.cores[i]
                if core.is_leader:  # type: ignore[union-attr]
                    self.next_command += 1
                    core.propose(f"c{self.next_command}")  # type: ignore[union-attr]
                    sent = len(self.net)
                    self._process(i)
                    if self.crash_after_propose and rng.random() < self.crash_after_propose:
                        self._restart_after_propose(i, sent)
                    break
        elif r < 0.89:
            a, b = rng.sample(range(self.created), 2)
            if self.split is None:  # while a split plays, its cuts are the only ones
                self.cut.add(frozenset((a, b)))
        elif r < 0.93:
            self.cut.clear()
        elif r < 0.95 and self.split is None and self._may_crash(live):
            self.cores[rng.choice(live)] = None  # crash: only the disk survives
        elif r < 0.98:
            dead = [i for i in range(self.created) if self.cores[i] is None]
            if dead:
                i = rng.choice(dead)
                self.cores[i] = self._boot(i)
                self._process(i)
        elif self.snapshots and live:
            self._snapshot(rng.choice(live))
        if self.old_messages:
            self._greet_new_leaders()
        if self.split is not None:
            self._split_second_act()
        self.check()

    def _restart_after_propose(self, i: int, sent: int) -> None:
        """Leader ``i`` crashes right after writing a command, its appends (``net[sent:]``) still unsent, and its
        supervisor restarts it at once: the entry is on its disk and nowhere else, and it is a follower again.

        Two of these in a row, by leaders of two terms, leave different entries at one index on a minority
        each: Figure 8's start, which a crash that keeps the server down longer rarely reaches (another
        crash has to wait for it to come back).
        """
        del self.net[sent:]
        self.cores[i] = None
        self.cores[i] = self._boot(i)
        self.restarts_after_propose += 1
        self._process(i)

    def _may_lead(self, i: int) -> bool:
        """Whether peer ``i`` may lead at this tick (always, without ``starved``: no draw is made)."""
        return self.stretch.may_lead(i)

    def _may_crash(self, live: list[int]) -> bool:
        if not self.membership:
            return len(live) > self.n // 2 + 1
        voters = self.committed_membership().voters
        return sum(1 for v in voters if v in live) > len(voters) // 2 + 1

    # ---- invariants -------------------------------------------------------------------------------

    def check(self) -> None:
        live = [c for c in self.cores if c is not None]
        new_conf = False
        for core in live:
            if core.role is Role.LEADER:
                if self.stretch.starved(core.me):
                    self.fail(f"peer {core.me} leads term {core.term} while it may not (its host cannot serve clients)")
                elected_now = core.term not in self.leaders
                other = self.leaders.setdefault(core.term, core.me)
                if other != core.me:
                    self.fail(f"two leaders in term {core.term}: {other} and {core.me}")
                if self.membership:
                    self._check_leader(core, elected_now)
            for index in range(max(core.log.snapshot_index + 1, 1), core.commit_index + 1):
                if index > core.log.last_index:
                    break
                e = core.log.entry(index)
                seen = self.committed.setdefault(index, (e.term, e.command))
                if seen != (e.term, e.command):
                    self.fail(f"peer {core.me} committed {e} at {index}, but {seen} was committed there")
                if isinstance(e.command, ConfEntry) and index not in self.confs:
                    self.confs[index] = e.command.membership
                    new_conf = True
        if new_conf:
            self._check_conf_chain()
        if not self.membership:
            self._check_commits_stay()
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

    def _check_commits_stay(self) -> None:
        """No server that lacks a committed entry could win an election with what the servers have on disk.

        Leader completeness checked ahead of time, over every election that could happen next rather than
        only those the schedule runs: a voter grants only a candidate whose log is at least as up to date as
        its own, and Raft's proof shows every server of the majority that committed an entry (through one of
        its leader's own term) has a log more up to date than any server lacking it. A leader that counts
        replicas of an older term's entry (Figure 8), or a stale acknowledgement, commits what a majority
        would still vote to overwrite; this sees it the moment it commits, not only once the schedule also
        elects the server that overwrites it. Only with a fixed set of voters (without ``membership``).
        """
        if not self.committed:
            return
        top = max(self.committed)
        logs = [self.disks[i] for i in range(self.n)]
        for x, disk in enumerate(logs):
            term, last = disk.last()
            k = min(top, last)
            have = disk.term_at(k) if k else None
            if last >= top and (have is None or k not in self.committed or have == self.committed[k][0]):
                continue  # it holds the newest committed entry (or its snapshot does), so every one before it
            backers = sum(1 for other in logs if other.last() <= (term, last))
            if backers * 2 > self.n:
                self.fail(f"peer {x} (log up to index {last}, term {term}) lacks committed entry {top if last < top else k} "
                          f"yet {backers} of {self.n} servers would vote for it: that entry could be overwritten")

    def _check_leader(self, core: RaftCore, elected_now: bool) -> None:
        m = core.membership
        if core.me not in m.voters and core.confs.last_index <= core.commit_index:
            self.fail(f"leader {core.me} of term {core.term} leads on after its removal committed")
        counted = [v for v in m.voters if v in core.votes]
        if elected_now and len(counted) * 2 <= len(m.voters):  # it has proposed no change yet: m is what it counted with
            self.fail(f"leader {core.me} of term {core.term} won with votes {sorted(core.votes)}, not a majority of voters {m.voters}")

    def _check_conf_chain(self) -> None:
        """Each committed configuration differs from the one committed before it by one server at most."""
        before = Membership.of(self.n)
        for index in sorted(self.confs):
            after = self.confs[index]
            moved = (set(before.voters) ^ set(after.voters)) | (set(before.learners) ^ set(after.learners))
            if len(moved) > 1:
                self.fail(f"the configuration committed at {index} ({after}) moves {sorted(moved)} at once from {before}")
            before = after

    # ---- driving ------------------------------------------------------------------------------------

    def run(self, steps: int) -> SimCluster:
        """``steps`` steps, and then as many as a split still playing needs to end (``split_changes``)."""
        for _ in range(steps):
            self.step()
        while self.split is not None:
            self.step()
        return self

    def settle(self, max_steps: int = 20_000) -> int:
        """Heal everything, restart the dead, deliver reliably; a proposal must commit on every member."""
        self.cut.clear()
        self.split, self.split_cut = None, set()
        self.stretch.clear()  # every host may serve clients again
        self.plans = []
        self.crash_before_write = 0.0  # settling is fault-free
        for i in range(self.created):
            if self.cores[i] is None:
                self.cores[i] = self._boot(i)
                self._process(i)
        target = proposer = None
        for step in range(max_steps):
            self.step_no += 1
            if self.net:
                self._deliver(0)
            else:
                for i in range(self.created):
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
            members = self.committed_membership().members  # a removed server need not catch up
            if target is not None and all(self.applied_upto[i] >= target for i in members):
                if self.storage_dir is not None:
                    for i in range(self.created):
                        self._replay_journal(i).close()
                return step
        self.fail(f"no progress after the faults stopped ({max_steps} steps): applied {self.applied_upto}, target {target}")
        return max_steps

    def settle_and_return(self) -> SimCluster:
        """``settle()``, for chaining after ``run()``."""
        self.settle()
        return self


# ---- the command line ------------------------------------------------------------------------------

REPLAY = "python -m apps.raft.sim --seed {seed}"


def scratch_dir(value: str) -> str:
    """argparse type of both simulations' ``--scratch``: a directory that exists (else a usage error, not
    every seed failing on a missing path)."""
    if not os.path.isdir(value):
        raise argparse.ArgumentTypeError(f"{value}: not a directory")
    return value


def seed_options(seed: int) -> dict[str, Any]:
    """The options seed ``seed`` runs with, drawn from a generator of their own (not the run's)."""
    rng = random.Random(seed * 7919 + 3)
    membership = rng.random() < 0.5
    return {
        "n": rng.choice((3, 5)),
        "snapshots": rng.random() < 0.5,
        "reads": rng.random() < 0.5,
        "membership": membership,
        "crash_before_write": 0.05 if rng.random() < 0.5 else 0.0,
        "starved": 0.05 if rng.random() < 0.5 else 0.0,
        "old_messages": 0.5 if rng.random() < 0.5 else 0.0,
        "crash_after_propose": 0.5 if rng.random() < 0.5 else 0.0,
        "journal": rng.random() < 0.25,
        # Short runs see many starts; long ones the chains of elections a Figure 8 or a stale answer needs.
        "steps": rng.choice((300, 1500)),
        # Drawn last, so the options above stay what each seed had before these existed.
        "split": membership and rng.random() < 0.5,
        "steady": rng.random() < 0.25,
    }


SPLIT_SERVERS = 4
"""The size of a seed's second run with ``split``: the 2015 split needs an even number of voters, which the
changes from 3 or 5 rarely leave."""
SPLIT_STEPS = 300
"""The steps of a seed's second run with ``split``, before the split (if it plays) runs on to its end."""
STEADY_STEPS = 300
"""The steps of a seed's run with ``steady`` (the servers' own batching rule, :data:`STEADY_CONFIG`)."""


def run_seed(seed: int, scratch: str | None = None) -> SimCluster:
    """One seed's run and settling, with its own options; raises SimulationFailure (or the core's own error).

    A seed with ``split`` then runs a second time, with four servers and ``split_changes``: a run of its own,
    so that the first one stays what the seed ran before the split existed. Likewise a seed with ``steady``
    runs once more with the batching rule the servers use (:data:`STEADY_CONFIG`), its other options the same.
    """
    opts = seed_options(seed)
    steps, journal, split, steady = opts.pop("steps"), opts.pop("journal"), opts.pop("split"), opts.pop("steady")
    cluster = _run_one(seed, steps, journal, scratch, opts)
    if steady:
        try:
            _run_one(seed, STEADY_STEPS, journal, scratch, {**opts, "config": STEADY_CONFIG})
        except SimulationFailure as failure:
            raise SimulationFailure(f"{failure} (its run with the servers' batching)") from None
    if split:
        try:
            # Short: the split comes early (a learner is added and promoted first thing), and the run goes
            # on for as long as it plays.
            cluster = _run_one(seed, SPLIT_STEPS, journal, scratch, {**opts, "n": SPLIT_SERVERS, "split_changes": 1.0})
        except SimulationFailure as failure:
            raise SimulationFailure(f"{failure} (its run with the split)") from None
    return cluster


def _run_one(seed: int, steps: int, journal: bool, scratch: str | None, opts: dict[str, Any]) -> SimCluster:
    if not journal:
        return SimCluster(seed=seed, **opts).run(steps).settle_and_return()
    with tempfile.TemporaryDirectory(prefix="zactor-raftsim-", dir=scratch) as tmp:
        return SimCluster(seed=seed, storage_dir=Path(tmp), **opts).run(steps).settle_and_return()


def run_seeds(seeds: range, scratch: str | None = None, stop_at_first: bool = True) -> tuple[int, list[str]]:
    """Run ``seeds``; returns (how many passed, each failure's message with its replay command)."""
    passed, failures = 0, []
    for seed in seeds:
        try:
            run_seed(seed, scratch)
            passed += 1
        except Exception as exc:  # a check of the simulator, or an invariant the core itself raises
            what = str(exc) if isinstance(exc, SimulationFailure) else f"seed {seed}: {type(exc).__name__}: {exc}"
            failures.append(f"{what}\n  replay: {REPLAY.format(seed=seed)}")
            if stop_at_first:
                break
    return passed, failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m apps.raft.sim",
        description="Deterministic simulation of the Raft core alone (no KV service): each seed is a run with faults "
        "and options of its own; a failure prints the command that replays it.",
    )
    p.add_argument("--seed", type=int, default=None, help="run this one seed and print what it did")
    p.add_argument("--seeds", type=int, default=200, help="run seeds FIRST..FIRST+N-1 (default 200)")
    p.add_argument("--first", type=int, default=1, help="first seed of --seeds (default 1)")
    p.add_argument("--keep-going", action="store_true", help="run every seed even after a failure")
    p.add_argument("--scratch", type=scratch_dir, default=None, help="directory for the journals of seeds that write one (default: temp)")
    args = p.parse_args(argv)
    if args.seed is not None:
        passed, failures = run_seeds(range(args.seed, args.seed + 1), args.scratch)
        print(f"seed {args.seed}: {seed_options(args.seed)}", "ok" if passed else "")
        for f in failures:
            print(f"FAIL {f}")
        return 1 if failures else 0
    started = time.monotonic()
    passed, failures = run_seeds(range(args.first, args.first + args.seeds), args.scratch, not args.keep_going)
    took = time.monotonic() - started
    ran = passed + len(failures)
    print(f"{ran} seeds in {took:.1f} s ({ran / max(took, 1e-9):.1f} seeds/s): {passed} passed, {len(failures)} failed")
    for f in failures[:10]:
        print(f"FAIL {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
