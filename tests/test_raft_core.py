"""The Raft core alone: sentences of the paper's Figure 2, one test each, no I/O anywhere."""

from __future__ import annotations

import random

import pytest

from apps.raft.core import Config, HardState, RaftCore, Restored, Role, Snapshot
from apps.raft.membership import Membership
from apps.raft.messages import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    InstallSnapshot,
    InstallSnapshotReply,
    RequestVote,
    RequestVoteReply,
)
from tests.helpers import CFG, core, drain, elect, sent


def test_config_rejects_unsafe_timing() -> None:
    with pytest.raises(ValueError, match="twice heartbeat_ticks"):
        Config(election_ticks_min=10, election_ticks_max=20, heartbeat_ticks=5)
    with pytest.raises(ValueError, match="at least election_ticks_min"):
        Config(election_ticks_min=30, election_ticks_max=20)


def test_follower_that_hears_nothing_becomes_candidate_and_asks_after_persisting() -> None:
    c = core()
    for _ in range(CFG.election_ticks_max - 1):
        c.tick()
    assert c.role is Role.FOLLOWER and not c.has_ready()  # a whole timeout first, counted from the start
    c.tick()
    assert c.role is Role.CANDIDATE and c.term == 1 and c.voted_for == 0
    (rd,) = drain(c)
    assert rd.hard_state == HardState(1, 0) and rd.must_sync
    assert not sent([rd], RequestVote, after=False)
    assert {m.dst for m in sent([rd], RequestVote, after=True)} == {1, 2}


def test_vote_is_granted_once_per_term_and_only_after_persisting() -> None:
    c = core(me=1)
    c.step(RequestVote(1, 0, 1, 0, 0))
    c.step(RequestVote(1, 2, 1, 0, 0))
    (rd,) = drain(c)
    replies = sent([rd], RequestVoteReply, after=True)
    assert [(m.dst, m.granted) for m in replies] == [(0, True), (2, False)]
    assert not rd.messages and rd.hard_state == HardState(1, 0)



def test_a_candidate_that_meets_its_terms_leader_keeps_its_own_vote() -> None:
    """Stepping down within a term is not a new term: the vote cast in it stands (else two leaders in one term)."""
    c = core(me=1)
    for _ in range(CFG.election_ticks_max):
        c.tick()
    assert c.role is Role.CANDIDATE and (c.term, c.voted_for) == (1, 1)
    c.step(AppendEntries(1, 0, 1, 0, 0, (), 0))  # 0 won term 1
    assert c.role is Role.FOLLOWER and c.leader_hint == 0
    c.step(RequestVote(1, 2, 1, 0, 0))
    assert [m.granted for m in sent(drain(c), RequestVoteReply)] == [False] and c.voted_for == 1


def test_only_a_leader_accepts_a_command() -> None:
    follower = core(me=1)
    assert follower.propose("x") == (-1, 0, False) and follower.last_index == 0
    leader = core()
    elect(leader)
    assert leader.propose("x") == (1, 1, True)

def test_vote_is_refused_to_a_candidate_with_an_older_log() -> None:
    c = core(me=1, restored=Restored(HardState(2, None), None, (Entry(1, 1, "a"), Entry(2, 2, "b"))))
    c.step(RequestVote(3, 0, 1, last_log_index=5, last_log_term=1))  # longer, but an older last term
    (rd,) = drain(c)
    assert [m.granted for m in sent([rd], RequestVoteReply)] == [False]
    assert c.term == 3 and c.voted_for is None


def test_majority_of_votes_makes_a_leader_that_heartbeats() -> None:
    c = core()
    elect(c)
    for _ in range(CFG.heartbeat_ticks):
        c.tick()
    beats = sent(drain(c), AppendEntries)
    assert {m.dst for m in beats} == {1, 2} and all(not m.entries for m in beats)


def test_higher_term_anywhere_turns_a_leader_into_a_follower() -> None:
    c = core()
    elect(c)
    c.step(AppendEntriesReply(c.term + 3, 1, 0, False, 0, 0, 0))
    assert c.role is Role.FOLLOWER and c.term == 4 and c.voted_for is None


def test_append_with_a_gap_names_the_follower_log_length() -> None:
    c = core(me=1)
    c.step(AppendEntries(1, 0, 1, prev_log_index=5, prev_log_term=1, entries=(), leader_commit=0))
    (reply,) = sent(drain(c), AppendEntriesReply)
    assert not reply.success and reply.conflict_term == 0 and reply.conflict_index == 1


def test_conflicting_append_names_the_term_and_its_first_index() -> None:
    log = (Entry(1, 1, "a"), Entry(2, 2, "b"), Entry(2, 3, "c"), Entry(2, 4, "d"))
    c = core(me=1, restored=Restored(HardState(2, None), None, log))
    c.step(AppendEntries(3, 0, 1, prev_log_index=4, prev_log_term=3, entries=(), leader_commit=0))
    (reply,) = sent(drain(c), AppendEntriesReply)
    assert (reply.success, reply.conflict_term, reply.conflict_index) == (False, 2, 2)


def test_leader_skips_a_whole_conflicting_term_per_round_trip() -> None:
    log = tuple(Entry(1, i, i) for i in range(1, 4)) + tuple(Entry(3, i, i) for i in range(4, 10))
    c = core(restored=Restored(HardState(3, None), None, log))
    elect(c)
    c.step(AppendEntriesReply(c.term, 1, 0, False, 0, conflict_term=2, conflict_index=4))
    (retry,) = sent(drain(c), AppendEntries)
    assert retry.prev_log_index == 3  # term 2 is unknown to the leader: straight to its first index


def test_follower_truncates_a_conflicting_suffix_and_appends() -> None:
    c = core(me=1, restored=Restored(HardState(1, None), None, (Entry(1, 1, "a"), Entry(1, 2, "stale"))))
    c.step(AppendEntries(2, 0, 1, 1, 1, (Entry(2, 2, "new"), Entry(2, 3, "more")), leader_commit=3))
    readies = drain(c)
    assert [e.command for e in c.log.entries] == ["a", "new", "more"]
    assert [m.command for rd in readies for m in rd.apply] == ["a", "new", "more"]
    (ack,) = sent(readies, AppendEntriesReply, after=True)
    assert ack.success and ack.match_index == 3


def test_an_old_terms_append_is_refused_appending_nothing_and_counted() -> None:
    """What a healed link delivers late: the old term's entries are refused, and the peer's counters say so."""
    c = core(me=1, restored=Restored(HardState(3, None), None, (Entry(1, 1, "a"), Entry(3, 2, "b"))))
    c.step(AppendEntries(2, 0, 1, 1, 1, (Entry(2, 2, "X"),), leader_commit=2))  # the old leader's X, queued
    c.step(AppendEntries(2, 0, 1, 2, 2, (), leader_commit=2))  # and its heartbeat
    c.step(RequestVoteReply(1, 2, 1, True))
    (first, second) = sent(drain(c), AppendEntriesReply)
    assert not first.success and not second.success and first.term == 3
    assert [e.command for e in c.log.entries] == ["a", "b"] and c.commit_index == 0 and c.term == 3
    assert (c.old_term_messages, c.old_term_entries_refused) == (3, 1)


def test_leader_counts_its_own_entry_only_once_it_is_durable() -> None:
    c = core()
    elect(c)
    index, term, ok = c.propose("x")
    assert ok and index == 1
    c.step(AppendEntriesReply(term, 1, 0, True, 1, 0, 0))  # a follower has it; the leader's copy is not durable yet
    assert c.commit_index == 0
    drain(c)
    assert c.commit_index == 1


def test_figure_8_old_term_entry_is_not_committed_by_counting_replicas() -> None:
    # Peer 0 holds an entry of term 2 that it never committed; it leads again in term 4.
    c = core(n=5, restored=Restored(HardState(3, None), None, (Entry(1, 1, "a"), Entry(2, 2, "from term 2"))))
    elect(c)
    assert c.term == 4
    for peer in (1, 2):
        c.step(AppendEntriesReply(4, peer, 0, True, 2, 0, 0))  # a majority now holds index 2...
    drain(c)
    assert c.commit_index == 0  # ...but an entry of term 2 may still be overwritten (Figure 8)
    index, _, _ = c.propose("from term 4")
    drain(c)
    for peer in (1, 2):
        c.step(AppendEntriesReply(4, peer, 0, True, index, 0, 0))
    drain(c)
    assert c.commit_index == 3  # committing the term-4 entry commits everything before it


def test_proposals_between_readies_share_one_write_and_one_append() -> None:
    c = core()
    elect(c)
    c.step(AppendEntriesReply(c.term, 1, 0, True, 0, 0, 0))
    drain(c)
    for i in range(5):
        c.propose(i)
    rd = c.ready()
    assert [e.command for e in rd.entries] == [0, 1, 2, 3, 4]
    to_1 = [m for m in rd.messages if isinstance(m, AppendEntries) and m.dst == 1]
    assert sum(len(m.entries) for m in to_1) == 5 and len(to_1) <= CFG.max_inflight


def _leader_with(cfg: Config) -> RaftCore:
    """A leader of three under ``cfg`` whose follower 1 has answered: its next AppendEntries carries entries."""
    c = core(config=cfg)
    elect(c)
    c.step(AppendEntriesReply(c.term, 1, 0, True, 0, 0, 0))
    drain(c)
    return c


def _batches_to_1(c: RaftCore) -> list[list[str]]:
    return [[e.command for e in m.entries] for m in sent(drain(c), AppendEntries) if m.dst == 1 and m.entries]


@pytest.mark.parametrize("pipelined", [False, True])
def test_a_partial_batch_waits_for_the_answer_in_flight_unless_partial_batches_are_pipelined(pipelined: bool) -> None:
    cfg = Config(election_ticks_min=10, election_ticks_max=10, heartbeat_ticks=2, max_batch=4, pipeline_partial_batches=pipelined)
    c = _leader_with(cfg)
    c.propose("a")
    assert _batches_to_1(c) == [["a"]]
    c.propose("b")
    c.propose("c")
    if pipelined:
        assert _batches_to_1(c) == [["b", "c"]]
        return
    assert _batches_to_1(c) == []  # "a" is unanswered: the new entries wait
    c.propose("d")
    c.step(AppendEntriesReply(c.term, 1, 0, True, 1, 0, 0))
    assert _batches_to_1(c) == [["b", "c", "d"]]  # and go together once it is answered


def test_a_follower_behind_by_a_full_batch_still_gets_batches_pipelined() -> None:
    cfg = Config(election_ticks_min=10, election_ticks_max=10, heartbeat_ticks=2, max_batch=4)
    c = _leader_with(cfg)
    c.propose("a")
    assert _batches_to_1(c) == [["a"]]
    for command in "bcdefghi":
        c.propose(command)
    assert _batches_to_1(c) == [["b", "c", "d", "e"]]  # a full batch goes while "a" is unanswered (catch-up speed)
    c.step(AppendEntriesReply(c.term, 1, 0, True, 1, 0, 0))
    assert _batches_to_1(c) == [["f", "g", "h", "i"]]


def test_service_snapshot_compacts_and_a_lagging_follower_gets_it() -> None:
    c = core()
    elect(c)
    for i in range(1, 6):
        c.propose(i)
    drain(c)
    c.step(AppendEntriesReply(c.term, 1, 0, True, 5, 0, 0))
    drain(c)
    assert c.last_applied == 5
    c.snapshot(4, b"state@4")
    (rd,) = drain(c)
    assert rd.snapshot == Snapshot(4, c.term, b"state@4", Membership.of(3))  # the configuration travels with it
    assert c.log.snapshot_index == 4 and [e.index for e in c.log.entries] == [5]
    c.step(AppendEntriesReply(c.term, 2, 0, False, 0, 0, 1))  # peer 2 has nothing
    (install,) = sent(drain(c), InstallSnapshot)
    assert (install.dst, install.last_included_index, install.data) == (2, 4, b"state@4")


def test_follower_installs_a_newer_snapshot_in_order_with_entries() -> None:
    c = core(me=2, restored=Restored(HardState(1, None), None, (Entry(1, 1, "a"),)))
    c.step(AppendEntries(1, 0, 2, 1, 1, (), leader_commit=1))
    c.step(InstallSnapshot(1, 0, 2, 3, 1, b"snap@3"))
    readies = drain(c)
    applies = [m for rd in readies for m in rd.apply]
    assert [(m.command_valid, m.command_index, m.command_term, m.snapshot_valid, m.snapshot_index, m.snapshot_term) for m in applies] == [
        (True, 1, 1, False, 0, 0),
        (False, 0, 0, True, 3, 1),
    ]
    (stored,) = [rd.snapshot for rd in readies if rd.snapshot is not None]
    assert (stored.index, stored.term, stored.data) == (3, 1, b"snap@3")
    (ack,) = sent(readies, InstallSnapshotReply, after=True)
    assert ack.last_included_index == 3 and c.commit_index == 3
    c.step(InstallSnapshot(1, 0, 2, 2, 1, b"older"))  # an older snapshot changes nothing
    assert not [m for rd in drain(c) for m in rd.apply]



def test_an_installsnapshot_is_a_leader_heard_from_as_an_appendentries_is() -> None:
    """A candidate of the sender's term steps down; any follower takes the sender as leader and restarts its
    election timer (a follower that has only ever had snapshots from the leader must not campaign against it)."""
    slow = Config(election_ticks_min=10, election_ticks_max=20, heartbeat_ticks=2)
    cand = RaftCore(1, 3, slow, random.Random(1))
    for _ in range(slow.election_ticks_max):
        cand.tick()
    assert cand.role is Role.CANDIDATE and cand.term == 1
    cand.step(InstallSnapshot(1, 0, 1, 3, 1, b"snap@3"))
    assert cand.role is Role.FOLLOWER and cand.leader_hint == 0 and cand.term == 1

    f = RaftCore(2, 3, slow, random.Random(2))
    for _ in range(slow.election_ticks_min - 1):
        f.tick()
    f.step(InstallSnapshot(1, 0, 2, 3, 1, b"snap@3"))
    assert f.leader_hint == 0
    for _ in range(f.election_timeout - 1):
        f.tick()
    assert f.role is Role.FOLLOWER  # a whole timeout from the snapshot, not from before it
    f.tick()
    assert f.role is Role.CANDIDATE


def test_an_old_terms_installsnapshot_is_refused_claiming_nothing() -> None:
    c = core(me=2, restored=Restored(HardState(3, None), None, ()))
    c.step(InstallSnapshot(2, 0, 2, 5, 2, b"old"))
    (refusal,) = sent(drain(c), InstallSnapshotReply)
    assert (refusal.term, refusal.dst, refusal.last_included_index) == (3, 0, 0) and c.commit_index == 0


def test_a_leader_counts_only_its_own_terms_snapshot_answers() -> None:
    c = core()
    elect(c)
    c.step(InstallSnapshotReply(c.term - 1, 2, 0, 7))  # an answer to an older leader's snapshot
    assert c.progress[2].match_index == 0 and c.commit_index == 0

def test_restart_from_a_snapshot_delivers_it_first() -> None:
    c = core(me=1, restored=Restored(HardState(5, 0), Snapshot(7, 4, b"s"), (Entry(5, 8, "x"),)))
    (rd,) = drain(c)
    (first,) = rd.apply
    assert first.snapshot_valid and first.snapshot_index == 7
    assert c.commit_index == 7 and c.log.last_index == 8 and c.term == 5 and c.voted_for == 0


def test_misaddressed_messages_are_ignored() -> None:
    c = core(me=1)
    c.step(RequestVote(9, 0, 2, 0, 0))  # for peer 2
    c.step(RequestVote(9, -1, 1, 0, 0))  # from nobody (any number >= 0 may be a server added later)
    assert c.term == 0 and not c.has_ready()


def test_a_server_that_may_not_lead_steps_down_and_never_campaigns_until_it_may() -> None:
    """A host out of open files accepts no clients: its leader gives the leadership up (same term, so its vote
    stands), it still follows a leader it hears, and it campaigns only once it may lead again."""
    c = core()
    elect(c)
    term = c.term
    c.tick(may_lead=False)
    assert c.role is Role.FOLLOWER and (c.term, c.voted_for, c.leader_hint) == (term, 0, None)
    assert c.propose("x") == (-1, term, False)
    for _ in range(3 * CFG.election_ticks_max):
        c.tick(may_lead=False)
    assert c.role is Role.FOLLOWER and c.term == term  # no campaign however long it waits
    c.step(AppendEntries(term + 1, 1, 0, 0, 0, (), 0))  # server 1 won the next term: followed as usual
    assert c.role is Role.FOLLOWER and (c.term, c.leader_hint) == (term + 1, 1)
    drain(c)
    for _ in range(CFG.election_ticks_max):
        c.tick()
    assert c.role is Role.CANDIDATE and c.term == term + 2  # allowed again, it campaigns when 1 goes quiet
