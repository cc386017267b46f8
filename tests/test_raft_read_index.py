"""ReadIndex in the pure Raft core (thesis §6.4): a read is yielded only after a majority confirmed the leader."""

from __future__ import annotations

import random

import pytest

from apps.raft.core import Config, RaftCore, Ready
from apps.raft.messages import AppendEntries, AppendEntriesReply, InstallSnapshot, ReadState
from apps.raft.sim import SimCluster
from tests.helpers import core, drain, elect, sent


def reads(readies: list[Ready]) -> list[ReadState]:
    return [r for rd in readies for r in rd.read_states]


def leader_with_own_commit(n: int = 3) -> RaftCore:
    """A leader that has committed an entry of its term (what the KV service's no-op gives it)."""
    c = core(n=n)
    elect(c)
    index, term, _ = c.propose("no-op")
    drain(c)
    for peer in range(1, n):
        c.step(AppendEntriesReply(term, peer, 0, True, index, 0, 0))
    drain(c)
    assert c.commit_index == index
    return c


def round_of(readies: list[Ready], peer: int) -> int:
    rounds = {m.read_round for m in sent(readies, AppendEntries) if m.dst == peer}
    assert len(rounds) == 1, rounds
    return rounds.pop()


def test_a_read_is_yielded_at_the_commit_index_once_a_majority_answers_its_round() -> None:
    c = leader_with_own_commit()
    assert c.read_index("r1")
    out = drain(c)
    assert not reads(out)  # not before anyone confirmed
    r = round_of(out, 1)
    assert r > 0 and round_of(out, 2) == r
    c.step(AppendEntriesReply(c.term, 1, 0, True, c.commit_index, 0, 0, r))
    assert reads(drain(c)) == [ReadState("r1", c.commit_index)]


def test_an_answer_to_an_earlier_round_does_not_confirm_a_read() -> None:
    c = leader_with_own_commit()
    c.read_index("r1")
    r = round_of(drain(c), 1)
    c.step(AppendEntriesReply(c.term, 1, 0, True, c.commit_index, 0, 0, r - 1))
    c.step(AppendEntriesReply(c.term, 2, 0, False, 0, 0, 1, r - 1))
    assert not reads(drain(c))


def test_a_rejecting_answer_of_the_same_term_still_confirms_leadership() -> None:
    c = leader_with_own_commit()
    c.read_index("r1")
    r = round_of(drain(c), 2)
    c.step(AppendEntriesReply(c.term, 2, 0, False, 0, 0, 1, r))  # log mismatch, but it takes us as leader
    assert [s.request_id for s in reads(drain(c))] == ["r1"]


def test_a_new_leader_waits_for_an_entry_of_its_own_term_before_reading() -> None:
    c = core()
    elect(c)
    assert c.read_index("early")
    out = drain(c)
    c.step(AppendEntriesReply(c.term, 1, 0, True, 0, 0, 0, c._read_round))
    assert not reads(out + drain(c))
    index, term, _ = c.propose("no-op")
    drain(c)
    c.step(AppendEntriesReply(term, 1, 0, True, index, 0, 0))
    out = drain(c)  # commits the no-op; the read now has an index and starts its round
    assert c.commit_index == index and not reads(out)
    c.step(AppendEntriesReply(term, 2, 0, True, index, 0, 0, round_of(out, 2)))
    assert reads(drain(c)) == [ReadState("early", index)]


def test_reads_that_arrive_together_share_one_round_and_a_later_round_confirms_earlier_ones() -> None:
    c = leader_with_own_commit()
    for i in range(5):
        c.read_index(i)
    out = drain(c)
    assert len([m for m in sent(out, AppendEntries) if m.dst == 1]) == 1
    r = round_of(out, 1)
    c.read_index("late")
    r2 = round_of(drain(c), 2)  # its own round at once: a lost round must not hold it up
    assert r2 > r
    c.step(AppendEntriesReply(c.term, 1, 0, True, c.commit_index, 0, 0, r))
    assert [s.request_id for s in reads(drain(c))] == [0, 1, 2, 3, 4]
    c.read_index("later")
    r3 = round_of(drain(c), 1)
    c.step(AppendEntriesReply(c.term, 2, 0, True, c.commit_index, 0, 0, r3))  # answers the newest round only
    assert [s.request_id for s in reads(drain(c))] == ["late", "later"]


def test_a_deposed_leader_cut_off_in_a_minority_never_yields_a_read() -> None:
    c = leader_with_own_commit(n=5)
    c.read_index("stale?")
    out = drain(c)
    r = round_of(out, 1)
    c.step(AppendEntriesReply(c.term, 1, 0, True, c.commit_index, 0, 0, r))  # one peer: 2 of 5, no majority
    for _ in range(500):  # it keeps heartbeating into the void
        c.tick()
        out += drain(c)
    assert not reads(out) and c.is_leader
    c.step(AppendEntries(c.term + 1, 3, 0, c.commit_index, c.term, (), c.commit_index))  # the majority's new leader
    out = drain(c)
    for peer in (2, 4):  # late answers to the old round arrive after it stepped down
        c.step(AppendEntriesReply(c.term - 1, peer, 0, True, 0, 0, 0, r))
    assert not reads(out + drain(c)) and not c.is_leader


def test_only_a_leader_accepts_a_read() -> None:
    c = core()
    assert not c.read_index("x")
    assert not reads(drain(c))


def test_a_single_peer_confirms_its_own_reads() -> None:
    c = RaftCore(0, 1, Config(election_ticks_min=10, election_ticks_max=10, heartbeat_ticks=2), random.Random(0))
    for _ in range(10):
        c.tick()
    drain(c)
    assert c.is_leader
    index, _, _ = c.propose("no-op")
    drain(c)
    c.read_index("solo")
    assert reads(drain(c)) == [ReadState("solo", index)]


def test_a_follower_echoes_the_read_round_in_every_answer() -> None:
    c = core(me=1)
    c.step(AppendEntries(1, 0, 1, 0, 0, (), 0, 7))
    c.step(AppendEntries(1, 0, 1, 5, 1, (), 0, 8))  # a gap: rejected, still echoed
    replies = sent(drain(c), AppendEntriesReply)
    assert [(m.success, m.read_round) for m in replies] == [(True, 7), (False, 8)]


def test_a_refusal_of_an_old_term_message_echoes_no_read_round() -> None:
    """Found by the KV simulation (seed 184): a leader restarted and re-elected counts its rounds from 0
    again, and a follower's refusal of an AppendEntries its previous incarnation sent in an older term
    came back with the follower's current term and that message's high round, confirming a round the
    new leader had not yet sent: an isolated leader yielded a stale read."""
    c = core(me=1)
    c.step(AppendEntries(2, 0, 1, 0, 0, (), 0, 1))  # the follower is in term 2
    c.step(AppendEntries(1, 0, 1, 0, 0, (), 0, 50))  # late, from peer 0's incarnation of term 1
    replies = sent(drain(c), AppendEntriesReply)
    assert sorted((m.term, m.success, m.read_round) for m in replies) == [(2, False, 0), (2, True, 1)]


def test_a_leader_does_not_confirm_a_read_from_answers_to_an_old_incarnations_rounds() -> None:
    c = leader_with_own_commit()
    c.read_index("r1")
    r = round_of(drain(c), 1)
    follower = core(me=1)
    follower.step(AppendEntries(c.term, 0, 1, 0, 0, (), 0, 0))  # follows the leader, answered before the round
    follower.step(AppendEntries(c.term - 1, 0, 1, 0, 0, (), 0, r + 40))  # late: an older incarnation's round
    replies = sent(drain(follower), AppendEntriesReply)
    assert len(replies) == 2
    for m in replies:
        c.step(m)
    assert not reads(drain(c))


@pytest.mark.parametrize("n", [3, 5])
@pytest.mark.slow
def test_random_schedules_never_yield_a_stale_read(n: int) -> None:
    yielded = 0
    for seed in range(150):
        cluster = SimCluster(n, seed, snapshots=bool(seed % 2), reads=True).run(300)  # raises on a stale read
        cluster.settle()
        yielded += cluster.reads_yielded
    assert yielded > 100  # the schedules did confirm reads, not only drop them


def test_with_four_voters_a_read_waits_for_three_of_them() -> None:
    """A majority of an even configuration is more than half: two of four is a tie, not a quorum."""
    c = leader_with_own_commit(n=4)
    c.read_index("r1")
    r = round_of(drain(c), 1)
    c.step(AppendEntriesReply(c.term, 1, 0, True, c.commit_index, 0, 0, r))
    assert not reads(drain(c))  # the leader and one follower
    c.step(AppendEntriesReply(c.term, 2, 0, True, c.commit_index, 0, 0, r))
    assert reads(drain(c)) == [ReadState("r1", c.commit_index)]


def test_a_read_round_never_sends_a_snapshot_again() -> None:
    """A follower that needs the snapshot gets it once; the heartbeats of a read round skip it rather than
    resend megabytes per read (its answer to the snapshot confirms later rounds anyway)."""
    c = leader_with_own_commit()
    for command in ("a", "b", "c"):
        c.propose(command)
    drain(c)
    c.step(AppendEntriesReply(c.term, 1, 0, True, c.last_index, 0, 0))
    drain(c)
    assert c.commit_index == c.last_index == 4
    c.snapshot(3, b"state at 3")
    c.step(AppendEntriesReply(c.term, 2, 0, False, 0, 0, 3))  # 2 holds two entries: it needs index 3 on
    assert [m.dst for m in sent(drain(c), InstallSnapshot)] == [2]
    c.read_index("r1")
    out = drain(c)
    assert not sent(out, InstallSnapshot)
    assert [m.dst for m in sent(out, AppendEntries)] == [1]
