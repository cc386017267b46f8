"""Membership changes in the pure Raft core and the seeded simulator: learners, one-server changes, the 2015 bug.

The schedules here are driven message by message through a small network of
cores (``Net``) that checks, after every delivery, the two properties the
2015 single-server-change bug broke: at most one leader per term, and no
index ever committed with two different entries. Each of the bug's three
schedules runs twice: against the core as it is (the step that needs the bug
is refused, and the cluster stays safe), and against a subclass without the
own-term-commit rule, where the same schedule must break safety, so the test
shows the rule is what keeps it safe. The simulator's random runs with
membership changes, and the journal's configuration record, are in
``test_raft_membership_sim.py``.
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from apps.raft.core import Config, RaftCore, Restored, Role, Snapshot
from apps.raft.membership import (
    ADD_LEARNER,
    PROMOTE,
    REMOVE,
    ConfChange,
    ConfChangeRefused,
    ConfEntry,
    Membership,
    apply_change,
)
from apps.raft.messages import AppendEntries, Entry, InstallSnapshot, MemberCheck, Message, Removed, RequestVote, RequestVoteReply
from apps.raft.storage import RaftStorage

CFG = Config(election_ticks_min=10, election_ticks_max=20, heartbeat_ticks=3, catch_up_entries=4)


class WithoutOwnTermRule(RaftCore):
    """The core with the 2015 fix taken out: a new leader may change the configuration at once."""

    def _committed_own_term(self) -> bool:
        return True


class Unsafe(AssertionError):
    pass


class _Timer(random.Random):
    """Election timeouts fixed per server, all above the minimum: no split votes, and a server that sat out
    the minimum has not campaigned yet (see ``Net.wait``)."""

    def __init__(self, server: int) -> None:
        super().__init__(server)
        self.server = server

    def randint(self, a: int, b: int) -> int:
        return max(a + 1, b - self.server)


class Net:
    """Cores of one cluster and the messages between them, delivered only when and where a test says.

    It checks after every Ready that no term has two leaders and no index is
    committed with two different entries (raising ``Unsafe``).
    """

    def __init__(self, n: int, core: type[RaftCore] = RaftCore, storage_dir: Path | None = None) -> None:
        self.n, self.core_class, self.storage_dir = n, core, storage_dir
        self.cores: dict[int, RaftCore] = {}
        self.disks: dict[int, Restored] = {}
        self.storages: dict[int, RaftStorage] = {}
        self.queue: list[Message] = []
        self.delivered: list[Message] = []
        self.leaders: dict[int, int] = {}
        self.committed: dict[int, tuple[int, object]] = {}
        self.applied: dict[int, list[object]] = {}
        self.reads: dict[int, list[object]] = {}
        for i in range(n):
            self.start(i)

    def start(self, i: int) -> RaftCore:
        """Start server ``i``, or restart it from what it made durable (from its journal, with a storage_dir)."""
        restored = self.disks.get(i)
        if self.storage_dir is not None:
            if i in self.storages:
                self.storages[i].close()
            self.storages[i] = RaftStorage(self.storage_dir / f"peer-{i}", fsync=False)
            restored = self.storages[i].load()
        self.cores[i] = self.core_class(i, self.n, CFG, _Timer(i), restored)
        self.applied[i], self.reads[i] = [], []
        self.pump(i)
        return self.cores[i]

    def pump(self, i: int) -> None:
        c = self.cores[i]
        while c.has_ready():
            rd = c.ready()
            if rd.must_sync:
                snap = None
                if c.log.snapshot_index:
                    snap = Snapshot(c.log.snapshot_index, c.log.snapshot_term, c.snapshot_data, c.snapshot_membership)
                self.disks[i] = Restored(c.hard_state, snap, tuple(c.log.entries))
                if i in self.storages:
                    self.storages[i].save(rd, c)
            self.queue += rd.messages + rd.messages_after_persist
            self.applied[i] += [a.command if a.command_valid else ("snapshot", a.snapshot_index) for a in rd.apply]
            self.reads[i] += [r.request_id for r in rd.read_states]
            c.advance(rd)
        self.check()

    def check(self) -> None:
        for c in self.cores.values():
            if c.is_leader and self.leaders.setdefault(c.term, c.me) != c.me:
                raise Unsafe(f"two leaders in term {c.term}: {self.leaders[c.term]} and {c.me}")
            for index in range(c.log.snapshot_index + 1, min(c.commit_index, c.log.last_index) + 1):
                e = c.log.entry(index)
                if self.committed.setdefault(index, (e.term, e.command)) != (e.term, e.command):
                    raise Unsafe(f"entry {index} committed as {self.committed[index]}, then as {(e.term, e.command)} by {c.me}")

    def flow(self, among: Iterable[int], rounds: int = 10_000) -> None:
        """Deliver messages between ``among`` until there are none; a message to or from anyone else is lost."""
        group = set(among)
        for _ in range(rounds):
            if not self.queue:
                return
            msg = self.queue.pop(0)
            if msg.src in group and msg.dst in group and msg.dst in self.cores:
                self.delivered.append(msg)
                self.cores[msg.dst].step(msg)
                self.pump(msg.dst)
        raise AssertionError("messages still flowing after the bound")

    def wait(self, servers: Iterable[int]) -> None:
        """Time passes for these followers: they stop counting on the leader they heard (thesis §4.2.3) but have not campaigned."""
        for i in servers:
            c = self.cores[i]
            while not c.is_leader and c.election_elapsed < CFG.election_ticks_min:
                c.tick()
            assert c.role is not Role.CANDIDATE or c.election_elapsed < c.election_timeout
            self.pump(i)

    def campaign(self, i: int) -> None:
        """Let server ``i``'s election timer run out once (it becomes a candidate of the next term)."""
        c, term = self.cores[i], self.cores[i].term
        for _ in range(CFG.election_ticks_max + 1):
            if c.term > term:
                break
            c.tick()
        assert c.role is Role.CANDIDATE or c.is_leader
        self.pump(i)

    def elect(self, i: int, among: Iterable[int]) -> RaftCore:
        group = set(among)
        self.wait(s for s in group - {i} if s in self.cores)
        self.campaign(i)
        self.flow(group)
        assert self.cores[i].is_leader, f"{i} was not elected"
        return self.cores[i]

    def commit(self, leader: int, command: object, among: Iterable[int]) -> int:
        index, _, ok = self.cores[leader].propose(command)
        assert ok
        self.pump(leader)
        self.flow(among)
        assert self.cores[leader].commit_index >= index, f"{command!r} at {index} did not commit"
        return index

    def change(self, leader: int, op: str, server: int, among: Iterable[int]) -> int:
        """Propose a change and let it flow; a new server is started when it is added."""
        index = self.cores[leader].propose_conf_change(ConfChange(op, server))
        if op == ADD_LEARNER and server not in self.cores:
            self.start(server)
        self.pump(leader)
        self.flow(among)
        return index

    def heartbeat(self, leader: int, among: Iterable[int]) -> None:
        for _ in range(CFG.heartbeat_ticks):
            self.cores[leader].tick()
        self.pump(leader)
        self.flow(among)

    def settle(self, rounds: int = 500) -> RaftCore:
        """Everyone connected, time passing: a leader commits a last entry and every member of its configuration holds its log."""
        everyone = set(self.cores)
        target = None
        for _ in range(rounds):
            for c in list(self.cores.values()):
                c.tick()
                self.pump(c.me)
            self.flow(everyone)
            leaders = [c for c in self.cores.values() if c.is_leader]
            if not leaders:
                continue
            leader = max(leaders, key=lambda c: c.term)
            if target is None or (target[1] != leader.term and leader.commit_index < target[0]):  # a new leader proposes its own
                index, term, _ = leader.propose("end")
                target = (index, term)
                self.pump(leader.me)
            members = leader.membership.members
            if leader.commit_index >= target[0] and all(self.cores[s].log.entries == leader.log.entries for s in members):
                return leader
        raise AssertionError("the cluster did not settle")


def cluster(n: int = 3, core: type[RaftCore] = RaftCore, learners: Iterable[int] = (), storage_dir: Path | None = None) -> Net:
    """Server 0 leads a cluster of voters 0..n-1 (and ``learners`` added, caught up), with an entry of its term committed."""
    net = Net(n, core=core, storage_dir=storage_dir)
    everyone = set(range(n)) | set(learners)
    net.elect(0, everyone)
    net.commit(0, "no-op", everyone)
    for s in learners:
        net.change(0, ADD_LEARNER, s, everyone)
    net.heartbeat(0, everyone)
    return net


# ---- learners -------------------------------------------------------------------------------------------


def test_a_learner_never_campaigns_and_a_candidate_never_asks_or_counts_it() -> None:
    net = cluster(3, learners=[3, 4])
    learner = net.cores[3]
    assert net.cores[0].membership == Membership((0, 1, 2), (3, 4)) == learner.membership
    for _ in range(20 * CFG.election_ticks_max):
        learner.tick()
    net.pump(3)
    assert learner.role is Role.FOLLOWER and learner.term == net.cores[0].term
    # Hearing from no leader, it only asks the voters whether it is still a member (never for a vote), and a
    # member is told nothing.
    assert net.queue and all(isinstance(m, MemberCheck) and m.dst in (0, 1, 2) for m in net.queue)
    net.flow(range(5))
    assert not net.queue and not learner.removed and net.cores[0].is_leader

    cand = net.cores[1]
    net.campaign(1)
    assert {m.dst for m in net.queue if isinstance(m, RequestVote)} == {0, 2}  # the voters only
    net.queue.clear()
    for s in (3, 4):  # two learners grant: with the candidate three of five members, but one of three voters
        cand.step(RequestVoteReply(cand.term, s, 1, True))
    assert cand.role is Role.CANDIDATE
    cand.step(RequestVoteReply(cand.term, 2, 1, True))
    assert cand.is_leader


def test_a_learner_never_counts_toward_commit_or_a_read() -> None:
    net = cluster(3, learners=[3, 4])
    leader = net.cores[0]
    index, _, _ = leader.propose("x")
    assert leader.read_index("r")
    net.pump(0)
    net.flow([0, 3, 4])  # both learners hold x and answer the read's round: three of five members, one of three voters
    assert leader.commit_index < index and not net.reads[0]
    assert net.cores[3].log.last_index == index
    net.heartbeat(0, [0, 1])
    assert leader.commit_index >= index and net.reads[0] == ["r"]


def test_a_learner_is_promoted_only_once_it_has_caught_up() -> None:
    net = cluster(3, learners=[3])
    for k in range(3 * CFG.catch_up_entries):
        net.commit(0, f"c{k}", [0, 1, 2])  # the learner is cut off and falls behind
    with pytest.raises(ConfChangeRefused, match="has not caught up"):
        net.cores[0].propose_conf_change(ConfChange(PROMOTE, 3))
    net.heartbeat(0, [0, 1, 2, 3])
    net.change(0, PROMOTE, 3, [0, 1, 2, 3])
    net.heartbeat(0, [0, 1, 2, 3])
    assert all(c.membership == Membership((0, 1, 2, 3)) for c in net.cores.values())


def test_changes_that_do_not_fit_the_configuration_are_refused() -> None:
    net = cluster(3, learners=[3])
    leader = net.cores[0]
    cases = [(ADD_LEARNER, 1, "already a voter"), (ADD_LEARNER, 3, "already a learner"), (PROMOTE, 1, "not a learner"),
             (PROMOTE, 9, "not a learner"), (REMOVE, 9, "not a member")]
    for op, server, reason in cases:
        with pytest.raises(ConfChangeRefused, match=reason):
            leader.propose_conf_change(ConfChange(op, server))
    with pytest.raises(ConfChangeRefused, match="not the leader"):
        net.cores[1].propose_conf_change(ConfChange(REMOVE, 2))
    with pytest.raises(ConfChangeRefused, match="propose_conf_change"):  # not around the rules through propose
        leader.propose(ConfEntry(ConfChange(REMOVE, 1), Membership((0, 2), (3,))))
    with pytest.raises(ValueError, match="unknown configuration change"):
        ConfChange("add-voter", 5)
    solo = cluster(1)
    with pytest.raises(ConfChangeRefused, match="last voter"):
        solo.cores[0].propose_conf_change(ConfChange(REMOVE, 0))
    assert leader.last_index == solo.cores[0].last_index + 1 == 2  # nothing refused went into a log


# ---- the two rules ---------------------------------------------------------------------------------------


def test_one_change_at_a_time() -> None:
    net = cluster(3)
    leader = net.cores[0]
    index = leader.propose_conf_change(ConfChange(ADD_LEARNER, 3))
    with pytest.raises(ConfChangeRefused, match=f"change at index {index} is not committed yet"):
        leader.propose_conf_change(ConfChange(ADD_LEARNER, 4))
    net.start(3)
    net.pump(0)
    net.flow(range(4))
    assert leader.propose_conf_change(ConfChange(ADD_LEARNER, 4)) == index + 1  # the first committed: the next may go


def test_a_new_leader_changes_nothing_until_an_entry_of_its_term_commits() -> None:
    net = cluster(3)
    leader = net.elect(1, range(3))
    with pytest.raises(ConfChangeRefused, match="not yet committed an entry of its own term"):
        leader.propose_conf_change(ConfChange(ADD_LEARNER, 3))
    assert leader.last_index == net.cores[0].last_index  # refused, not queued
    net.commit(1, "no-op", range(3))
    net.change(1, ADD_LEARNER, 3, range(4))
    assert net.cores[3].membership.learners == (3,)


# ---- growing, shrinking, removing the leader -------------------------------------------------------------


def test_grow_three_to_five_and_shrink_back_with_commands_flowing() -> None:
    net = cluster(3)
    k = 0

    def some(among: Iterable[int]) -> None:
        nonlocal k
        for _ in range(3):
            k += 1
            net.commit(0, f"c{k}", among)

    for s in (3, 4):
        everyone = set(net.cores) | {s}
        some(everyone)
        net.change(0, ADD_LEARNER, s, everyone)
        some(everyone)
        net.change(0, PROMOTE, s, everyone)
    some(range(5))
    assert all(c.membership == Membership((0, 1, 2, 3, 4)) for c in net.cores.values())
    some([0, 3, 4])  # three of five voters commit now; 1 and 2 are cut off
    net.heartbeat(0, range(5))
    for s in (4, 3):
        net.change(0, REMOVE, s, range(5))
        some(range(5))
    assert net.cores[0].membership == Membership((0, 1, 2))
    assert set(net.cores[0].progress) == {1, 2}  # nothing more goes to the removed servers
    for s in (3, 4):  # they heard of their removal: they never campaign again
        assert s not in net.cores[s].membership.members
        for _ in range(10 * CFG.election_ticks_max):
            net.cores[s].tick()
        net.pump(s)
    assert not net.queue
    some([0, 1, 2])
    net.heartbeat(0, [0, 1, 2])
    commands = [a for a in net.applied[1] if isinstance(a, str) and a.startswith("c")]
    assert commands == [f"c{j}" for j in range(1, k + 1)]  # every command, once, in order


def test_a_leader_that_removes_itself_leads_until_the_removal_commits_then_steps_down() -> None:
    net = cluster(3)
    leader = net.cores[0]
    index = leader.propose_conf_change(ConfChange(REMOVE, 0))
    net.pump(0)
    net.flow([0, 1])  # 1 holds it and so does the leader's disk: two of three, but the leader no longer counts
    assert leader.is_leader and leader.commit_index < index
    net.heartbeat(0, [0, 1, 2])
    assert leader.commit_index >= index and leader.role is Role.FOLLOWER and not leader.progress and leader.removed
    for _ in range(10 * CFG.election_ticks_max):
        leader.tick()
    net.pump(0)
    assert not net.queue  # it sends nothing and never campaigns
    new = net.elect(1, [1, 2])
    assert new.membership == Membership((1, 2))
    net.commit(1, "after", [1, 2])


def test_a_server_removed_while_cut_off_cannot_depose_the_leader() -> None:
    net = cluster(4)
    net.change(0, REMOVE, 3, [0, 1, 2])  # 3 never hears of it
    assert net.cores[0].commit_index >= net.cores[0].confs.last_index
    term = net.cores[0].term
    net.campaign(3)  # 3 still thinks it is one of four voters, and asks
    assert {m.dst for m in net.queue if isinstance(m, RequestVote)} == {0, 1, 2}
    net.flow(range(4))
    assert net.cores[0].is_leader and all(net.cores[s].term == term for s in (0, 1, 2))
    net.commit(0, "still", [0, 1, 2])
    net.campaign(2)  # a voter's request is taken as it always was (the rule is for non-voters only)
    net.flow([0, 2])
    assert not net.cores[0].is_leader and net.cores[0].term == term + 1



def test_a_non_voters_higher_term_is_ignored_only_while_a_leader_is_heard_from() -> None:
    """Thesis §4.2.3's window, no wider: a follower that has heard no leader, or none for the minimum election
    timeout, takes a non-voter's higher term as any other (a voter it has not learned of yet may be asking)."""
    slow = Config(election_ticks_min=10, election_ticks_max=40, heartbeat_ticks=2)
    fresh = RaftCore(1, 3, slow, random.Random(1))
    assert fresh.leader_hint is None
    fresh.step(RequestVote(2, 5, 1, 0, 0))
    assert fresh.term == 2  # no leader known: nothing to protect

    f = RaftCore(1, 3, slow, random.Random(1))
    f.step(AppendEntries(1, 0, 1, 0, 0, (), 0))
    assert f.leader_hint == 0 and f.election_timeout > slow.election_ticks_min  # it will not campaign in this test
    for _ in range(slow.election_ticks_min - 1):
        f.tick()
    f.step(RequestVote(2, 5, 1, 0, 0))
    assert f.term == 1 and f.role is Role.FOLLOWER  # the leader was heard from within the window
    f.tick()  # now the minimum election timeout has passed since
    f.step(RequestVote(2, 5, 1, 0, 0))
    assert f.term == 2


def test_a_server_removed_while_cut_off_is_told_by_the_first_peer_it_reaches_and_stops() -> None:
    net = cluster(4)
    net.change(0, REMOVE, 3, [0, 1, 2])
    assert not net.cores[3].removed
    net.campaign(3)
    net.flow(range(4))
    told = [m for m in net.delivered if isinstance(m, Removed)]
    assert told and all(m.dst == 3 and m.membership.voters == (0, 1, 2) for m in told)
    assert net.cores[3].removed and net.cores[3].role is Role.FOLLOWER
    for _ in range(10 * CFG.election_ticks_max):  # out for good: it never campaigns nor asks again
        net.cores[3].tick()
    net.pump(3)
    assert not net.queue


def test_a_removed_server_learns_it_when_the_removal_commits_or_asks_when_the_word_is_lost() -> None:
    net = cluster(3)
    net.change(0, REMOVE, 2, [0, 1, 2])  # connected: the leader tells it once the removal commits
    assert net.cores[2].removed and any(isinstance(m, Removed) and m.dst == 2 for m in net.delivered)

    net = cluster(4)
    leader, gone = net.cores[0], net.cores[3]
    index = leader.propose_conf_change(ConfChange(REMOVE, 3))
    net.pump(0)
    net.flow([0, 3])  # 3 holds its removal, but it is not committed: 3 is not a voter of {0, 1, 2}
    assert gone.membership.voters == (0, 1, 2) and leader.commit_index < index and not gone.removed
    net.heartbeat(0, [0, 1, 2])  # it commits, and the leader's word to 3 is lost
    assert leader.commit_index >= index and not gone.removed
    for _ in range(CFG.election_ticks_max):
        gone.tick()
    net.pump(3)
    # It cannot know whether its removal committed (it may hold the only copy of it: see the test below), so it
    # campaigns among the voters of its latest configuration; those that committed the removal answer Removed.
    assert {m.dst for m in net.queue if isinstance(m, RequestVote) and m.src == 3} == {0, 1, 2}
    net.flow(range(4))
    assert gone.removed and leader.is_leader

    # A learner, which was never a voter, asks instead (it has no vote to win with).
    net = cluster(3, learners=[3])
    leader, learner = net.cores[0], net.cores[3]
    net.change(0, REMOVE, 3, [0, 1, 2])  # the word to the learner is lost
    assert not learner.removed
    for _ in range(CFG.election_ticks_max):
        learner.tick()
    net.pump(3)
    assert {m.dst for m in net.queue if isinstance(m, MemberCheck)} == {0, 1, 2}
    net.flow(range(4))
    assert learner.removed


def test_a_cut_off_or_lagging_server_is_never_told_it_is_removed() -> None:
    net = cluster(3, learners=[3])
    for k in range(3):
        net.commit(0, f"c{k}", [0, 1])  # 2 and the learner 3 fall behind, cut off
    for _ in range(3):
        net.campaign(2)  # no one hears it
    for _ in range(3 * CFG.election_ticks_max):
        net.cores[3].tick()
    net.pump(3)
    net.queue = [m for m in net.queue if m.src in (2, 3)]  # now they are heard (the leader's heartbeats were lost)
    net.flow(range(4))
    assert not any(isinstance(m, Removed) for m in net.delivered)
    leader = net.settle()
    assert not net.cores[2].removed and not net.cores[3].removed
    assert leader.membership == Membership((0, 1, 2), (3,))
    # A Removed whose configuration still holds the receiver is not believed.
    net.cores[2].step(Removed(leader.term, leader.me, 2, Membership((0, 1, 2), (3,), next_id=4)))
    assert not net.cores[2].removed


# ---- the 2015 bug: three schedules, with and without the rule ----------------------------------------------


def _old_leader_returns(net: Net) -> Net:
    """The deposed leader 0 restarts and campaigns with 3 and 4 twice (term 2, in which 3 already voted for 1,
    then term 3); if it wins, it commits an entry of its own over what the others committed."""
    net.queue.clear()
    net.start(0)
    for _ in range(2):
        net.wait([3, 4])
        net.campaign(0)
        net.flow([0, 3, 4])
    if net.cores[0].is_leader:
        net.commit(0, "x", [0, 3, 4])
    return net


def _change_or_rule(net: Net, leader: int, op: str, server: int, among: list[int], noop_to: list[int]) -> None:
    """The new leader's change: at once if the core allows it; else what the rule makes it do first (commit a
    no-op of its term, on ``noop_to``, a majority of the old voters), then the same change. A server of
    ``among`` left out of ``noop_to`` lost the no-op's append; the leader's next heartbeat sends it again
    (a partial batch waits for the lost one's answer until then, see ``Config.pipeline_partial_batches``)."""
    try:
        net.change(leader, op, server, among)
    except ConfChangeRefused as refused:
        assert "own term" in str(refused)
        net.commit(leader, "no-op", noop_to)
        net.heartbeat(leader, among)
        net.change(leader, op, server, among)
    assert net.cores[leader].commit_index >= net.cores[leader].confs.last_index  # the change committed


def two_adds(core: type[RaftCore]) -> Net:
    """Voters 0-3, learners 4 and 5. Leader 0 promotes 4, heard only by 4, and crashes; 1 leads term 2 and
    promotes 5 (committed by 1, 2, 5 of voters 0,1,2,3,5); 0 restarts, wins term 3 with 3 and 4 (three of its
    voters 0-4) and overwrites the committed change."""
    net = cluster(4, core=core, learners=[4, 5])
    net.change(0, PROMOTE, 4, [0, 4])  # uncommitted: 0 and 4 of five voters
    net.elect(1, [1, 2, 3])
    net.heartbeat(1, [1, 2, 5])  # 1 learns 5 is caught up
    _change_or_rule(net, 1, PROMOTE, 5, [1, 2, 5], noop_to=[1, 2, 3])
    return _old_leader_returns(net)


def two_removes(core: type[RaftCore]) -> Net:
    """Voters 0-3. Leader 0 removes 3, heard by nobody, and crashes; 1 leads term 2 and removes 2, committed with
    3 (voters 0,1,3); 1 restarts; then 0 (voters 0,1,2) wins term 3 with 2's vote while 3 wins term 3 with 1's."""
    net = cluster(4, core=core)
    net.cores[0].propose_conf_change(ConfChange(REMOVE, 3))
    net.pump(0)
    net.queue.clear()  # lost: only 0 holds it
    net.elect(1, [1, 2, 3])
    _change_or_rule(net, 1, REMOVE, 2, [1, 3], noop_to=[1, 2, 3])
    net.queue.clear()
    net.start(0)
    net.start(1)  # a follower again, that has heard from no leader
    for _ in range(2):  # term 2 (2 voted for 1 already), then term 3
        net.wait([2])
        net.campaign(0)
        net.flow([0, 2])
    net.campaign(3)
    net.flow([1, 3])
    return net


def add_and_remove(core: type[RaftCore]) -> Net:
    """Voters 0-3, learner 4. Leader 0 promotes 4, heard only by 4, and crashes; 1 leads term 2 and removes 3,
    committed with 2 (voters 0,1,2); 0 restarts, wins term 3 with 3 and 4 and overwrites the committed removal."""
    net = cluster(4, core=core, learners=[4])
    net.change(0, PROMOTE, 4, [0, 4])
    net.elect(1, [1, 2, 3])
    _change_or_rule(net, 1, REMOVE, 3, [1, 2], noop_to=[1, 2, 3])
    return _old_leader_returns(net)


SCHEDULES: dict[str, Callable[[type[RaftCore]], Net]] = {
    "two-adds": two_adds, "two-removes": two_removes, "add-and-remove": add_and_remove,
}


@pytest.mark.parametrize(("name", "breaks"), [("two-adds", "committed as .* then as"), ("two-removes", "two leaders in term 3"),
                                              ("add-and-remove", "committed as .* then as")])
def test_the_2015_schedule_breaks_safety_without_the_own_term_rule(name: str, breaks: str) -> None:
    with pytest.raises(Unsafe, match=breaks):
        SCHEDULES[name](WithoutOwnTermRule)


@pytest.mark.parametrize("name", SCHEDULES)
def test_the_2015_schedule_is_refused_and_stays_safe_with_the_rule(name: str) -> None:
    net = SCHEDULES[name](RaftCore)  # Net checks both properties after every Ready
    assert not net.cores[0].is_leader  # the deposed leader could not come back over the committed change
    committed = dict(net.committed)
    leader = net.settle()  # all healed: one leader, every member with its log
    for index, (term, command) in committed.items():
        assert leader.log.entry(index) == Entry(term, index, command)


# ---- snapshots and restarts ------------------------------------------------------------------------------


def test_the_configuration_survives_a_snapshot_and_a_restart(tmp_path: Path) -> None:
    net = cluster(3, storage_dir=tmp_path)
    net.change(0, ADD_LEARNER, 3, range(4))
    net.commit(0, "x", range(4))
    net.change(0, PROMOTE, 3, range(4))
    net.commit(0, "y", range(4))
    net.heartbeat(0, range(4))
    for i in range(4):
        c = net.cores[i]
        c.snapshot(c.last_applied, pickle.dumps(net.applied[i]))
        net.pump(i)
    net.change(0, ADD_LEARNER, 4, range(5))  # after the snapshot: this one is in the log
    want = Membership((0, 1, 2, 3), (4,))
    for i in range(5):
        assert net.start(i).membership == want  # from the journal: snapshot, then the log
    assert net.cores[1].snapshot_membership == Membership((0, 1, 2, 3))
    assert net.cores[1].log.snapshot_index > 0


def test_a_new_server_learns_the_configuration_from_installsnapshot() -> None:
    net = cluster(3)
    net.change(0, ADD_LEARNER, 3, [0, 1, 2])  # 3 starts, but hears nothing yet
    net.commit(0, "x", [0, 1, 2])
    leader = net.cores[0]
    leader.snapshot(leader.last_applied, b"state with the change in it")
    net.pump(0)
    new = net.cores[3]
    assert new.membership == Membership((0, 1, 2))  # what every server of the cluster started with: not in it
    net.heartbeat(0, range(4))
    (install,) = [m for m in net.delivered if isinstance(m, InstallSnapshot) and m.dst == 3]
    assert install.membership == Membership((0, 1, 2), (3,))
    assert new.log.snapshot_index == leader.log.snapshot_index
    assert new.membership == Membership((0, 1, 2), (3,)) == new.snapshot_membership


def test_a_truncated_change_brings_back_the_configuration_before_it() -> None:
    net = cluster(5)
    net.cores[0].propose_conf_change(ConfChange(REMOVE, 4))
    net.pump(0)
    net.flow([0, 4])  # only 4 hears it: it is out, by its own log
    assert net.cores[4].membership == Membership((0, 1, 2, 3))
    net.start(0)  # 0 crashes and restarts; 1 leads term 2 without the removal
    net.elect(1, [1, 2, 3])
    net.commit(1, "no-op", [1, 2, 3, 4])  # 1's entry overwrites the uncommitted removal on 4
    assert net.cores[4].membership == Membership((0, 1, 2, 3, 4))



def test_a_snapshot_below_a_change_keeps_the_change_after_it() -> None:
    """A follower's entries after an installed snapshot stay when they match, and so does a change among them."""
    f = RaftCore(4, 5, CFG, random.Random(4))
    removal = ConfEntry(ConfChange(REMOVE, 3), Membership((0, 1, 2, 4)))
    f.step(AppendEntries(1, 0, 4, 0, 0, (Entry(1, 1, "a"), Entry(1, 2, removal)), 0))
    assert f.membership == Membership((0, 1, 2, 4))
    f.step(InstallSnapshot(1, 0, 4, 1, 1, b"snap@1", Membership.of(5)))
    assert f.log.last_index == 2 and f.membership == Membership((0, 1, 2, 4))

def test_a_change_is_an_ordinary_entry_that_keeps_the_context_of_each_member() -> None:
    net = cluster(3)
    index = net.cores[0].propose_conf_change(ConfChange(ADD_LEARNER, 3, "tcp://127.0.0.1:7003"))
    net.start(3)
    net.pump(0)
    net.flow(range(4))
    entry = net.cores[1].log.entry(index)
    assert isinstance(entry.command, ConfEntry) and entry.command.change.context == "tcp://127.0.0.1:7003"
    assert pickle.loads(pickle.dumps(entry.command)) == entry.command
    assert net.applied[0][-1] == entry.command  # the service is handed it like any command, once committed
    net.change(0, PROMOTE, 3, range(4))
    assert net.cores[2].membership.contexts == ((3, "tcp://127.0.0.1:7003"),)  # kept through the promotion
    net.change(0, REMOVE, 3, range(4))
    assert net.cores[2].membership == Membership((0, 1, 2))  # and dropped with the server


def test_a_server_number_is_never_given_twice_not_even_across_a_snapshot_and_restart(tmp_path: Path) -> None:
    """A removed server's process may still run: its number reused, its old votes would count as the new server's."""
    net = cluster(3, storage_dir=tmp_path)
    net.change(0, ADD_LEARNER, 3, range(4))
    net.change(0, REMOVE, 3, range(4))
    assert net.cores[0].membership.fresh_id == 4
    with pytest.raises(ConfChangeRefused, match=r"never reused \(the next free one is 4\)"):
        net.cores[0].propose_conf_change(ConfChange(ADD_LEARNER, 3))
    net.commit(0, "x", range(3))
    for i in range(3):
        c = net.cores[i]
        c.snapshot(c.last_applied, pickle.dumps(net.applied[i]))
        net.pump(i)
    restarted = net.start(1)  # its journal now holds the configuration only in the snapshot's record
    assert restarted.snapshot_membership == Membership((0, 1, 2)) and restarted.membership.fresh_id == 4
    with pytest.raises(ConfChangeRefused, match="never reused"):
        apply_change(restarted.membership, ConfChange(ADD_LEARNER, 2 + 1))
    assert Membership.of(3).fresh_id == 3 and Membership((0, 5)).fresh_id == 6


def test_a_leader_deposed_right_after_appending_its_own_removal_can_still_finish_it() -> None:
    """Liveness. Four voters, one down; leader 0 appends its own removal, which reaches no one, and loses its
    leadership (here to a candidate of a higher term that cannot win). 0's log is now the most up to date,
    so no one else can win without its vote: it must campaign although its latest, uncommitted
    configuration leaves it out. A majority of that configuration elects it, it commits the removal and
    steps down, and the others go on without it."""
    net = cluster(4)
    del net.cores[1]  # down: nothing reaches it or comes from it
    index = net.cores[0].propose_conf_change(ConfChange(REMOVE, 0))
    net.pump(0)
    net.queue.clear()  # the removal reached no one
    net.campaign(2)
    net.flow([0, 2, 3])
    assert not net.cores[0].is_leader and not net.cores[2].is_leader  # 0 refused: its log is longer
    up = [0, 2, 3]
    for _ in range(20 * CFG.election_ticks_max):  # bounded: a few elections' worth of time
        for i in up:
            net.cores[i].tick()
            net.pump(i)
        net.flow(up)
        for c in (net.cores[i] for i in up):
            if c.is_leader and c.log.last_term < c.term:  # the service proposes: entries of its term commit the rest
                c.propose("op")
                net.pump(c.me)
        if net.cores[0].removed and any(net.cores[i].is_leader and net.cores[i].commit_index >= index for i in (2, 3)):
            break
    else:
        pytest.fail(f"no progress: roles {[(i, net.cores[i].role.value, net.cores[i].term) for i in up]}")
    leader = next(net.cores[i] for i in (2, 3) if net.cores[i].is_leader)
    assert leader.commit_index >= index and leader.committed_membership.voters == (1, 2, 3)
