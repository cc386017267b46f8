"""Membership changes in the seeded simulator, and the journal's record of a snapshot's configuration.

The core's own schedules (learners, the two rules, the 2015 bug) are in
``test_raft_membership.py``; here the simulator proposes changes at random
among its other faults, and planted bugs show its new checks can fail.
"""

from __future__ import annotations

import pickle
import random
import struct
from pathlib import Path

import pytest

from actors import CorruptStateError, Journal
from apps.raft.core import Config, RaftCore
from apps.raft.membership import Membership
from apps.raft.messages import RequestVote
from apps.raft.sim import SimCluster, SimulationFailure
from apps.raft.storage import JOURNAL_NAME, RaftStorage

CFG = Config(election_ticks_min=10, election_ticks_max=20, heartbeat_ticks=3)


def test_a_journal_from_before_membership_loads_as_the_starting_peers(tmp_path: Path) -> None:
    journal = Journal(tmp_path / JOURNAL_NAME, fsync=False)
    journal.rewrite([b"S" + struct.pack(">QQ", 5, 2) + b"old snapshot", b"H" + pickle.dumps((2, 1)),
                     b"E" + pickle.dumps(((2, 6, "y"),))])
    journal.close()
    storage = RaftStorage(tmp_path, fsync=False)
    restored = storage.load()
    storage.close()
    assert restored is not None and restored.snapshot is not None and restored.snapshot.membership is None
    core = RaftCore(1, 3, CFG, random.Random(1), restored)
    assert core.membership == Membership((0, 1, 2)) and core.log.last_index == 6


def test_a_configuration_record_out_of_place_is_refused_as_damage(tmp_path: Path) -> None:
    journal = Journal(tmp_path / JOURNAL_NAME, fsync=False)
    journal.rewrite([b"H" + pickle.dumps((2, 1)), b"C" + pickle.dumps(((0, 1, 2), (), ()))])
    journal.close()
    storage = RaftStorage(tmp_path, fsync=False)
    with pytest.raises(CorruptStateError, match="right after a snapshot"):
        storage.load()
    storage.close()


# ---- the simulator ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 5])
def test_random_schedules_with_membership_changes_stay_safe(n: int) -> None:
    confs = added = removed = 0
    for seed in range(150):
        c = SimCluster(n, seed, snapshots=bool(seed % 2), reads=seed % 3 == 0, membership=True).run(500)
        c.settle()  # raises SimulationFailure naming the seed
        confs += len(c.confs)
        added += c.created - n
        removed += len(set(range(c.created)) - set(c.committed_membership().members))
    assert confs > 100 and added > 50 and removed > 25  # the runs did change the configuration, a lot


def test_the_simulator_replays_a_seed_with_membership_changes() -> None:
    a = SimCluster(5, 77, snapshots=True, membership=True).run(1500)
    b = SimCluster(5, 77, snapshots=True, membership=True).run(1500)
    assert a.committed == b.committed and a.confs == b.confs and a.leaders == b.leaders
    assert a.confs and a.created > 5  # the run did change the configuration


def test_the_simulator_fails_a_change_that_moves_two_servers_at_once() -> None:
    c = SimCluster(3, 1, membership=True)
    c.confs[5] = Membership((0, 1, 2, 3, 4))
    with pytest.raises(SimulationFailure, match=r"moves \[3, 4\] at once"):
        c._check_conf_chain()


def test_the_journal_replays_the_configuration_through_membership_changes(tmp_path: Path) -> None:
    restarts = snapshots = 0
    for seed in range(100):
        c = SimCluster(3, seed, snapshots=True, membership=True, storage_dir=tmp_path / f"seed-{seed}").run(500)
        c.settle()  # every restart compares the journal's replay (snapshot configuration included) with the durable state
        restarts += c.restarts
        snapshots += sum(1 for core in c.cores if core is not None and core.log.snapshot_index)
    assert restarts > 100 and snapshots > 100


class StaysLeader(RaftCore):
    """Planted bug: a leader whose removal commits stops sending to the removed, but leads on."""

    def _conf_committed(self) -> None:
        self.progress = {p: prog for p, prog in self.progress.items() if p in self.membership.members}


class CountsLearners(RaftCore):
    """Planted bug: a candidate asks the learners too and counts every grant."""

    def _won(self) -> bool:
        return len(self.votes) * 2 > len(self.membership.voters)

    def _campaign(self) -> None:
        super()._campaign()
        for s in self.membership.learners:
            self._pending.after.append(RequestVote(self.term, self.me, s, self.log.last_index, self.log.last_term))


@pytest.mark.parametrize(("bug", "caught_as"), [(StaysLeader, "leads on after its removal committed"),
                                                 (CountsLearners, "not a majority of voters")])
def test_the_simulator_catches_a_planted_membership_bug(bug: type[RaftCore], caught_as: str) -> None:
    caught = 0
    for seed in range(100):
        try:
            SimCluster(3, seed, membership=True, core_class=bug).run(500).settle()
        except SimulationFailure as failure:
            assert caught_as in str(failure)
            caught += 1
    assert caught >= 3  # measured: 17 and 9 of these 100 seeds


# ---- the 2015 split, as a schedule the simulator plays (split_changes) ------------------------------------

def _split_run(seed: int, core_class: type[RaftCore], steps: int) -> SimCluster:
    """Seed ``seed``'s run with the split (as ``run_seed`` makes it), for ``steps`` steps and the settling."""
    from apps.raft.sim import SPLIT_SERVERS, seed_options

    opts = seed_options(seed)
    opts.pop("steps")
    opts.pop("journal")
    opts.pop("steady")  # a run of its own, not an option of this one
    assert opts.pop("split") and opts["membership"]
    opts.update(n=SPLIT_SERVERS, split_changes=1.0)
    return SimCluster(seed=seed, core_class=core_class, **opts).run(steps).settle_and_return()


class ChangesBeforeItsTerm(RaftCore):
    """Planted bug: a leader may change the configuration before anything of its own term has committed."""

    def _committed_own_term(self) -> bool:
        return True


def test_a_split_is_played_and_the_next_leader_is_refused_its_early_change() -> None:
    c = _split_run(15, RaftCore, 1500)  # a seed whose split plays in 1500 steps (measured)
    assert c.splits >= 1  # a promotion at four voters cut its leader and the promoted server off
    assert c.split_attempts >= 1  # a leader on the other side asked for a removal at once
    assert c.split_removals == 0  # and the own-term rule refused it


def test_a_split_catches_a_leader_that_changes_the_configuration_before_its_term_commits() -> None:
    from apps.raft.sim import SPLIT_STEPS

    with pytest.raises(SimulationFailure, match="lacks committed entry"):
        _split_run(587, ChangesBeforeItsTerm, SPLIT_STEPS)  # the seed that fails the mutant first (measured)
