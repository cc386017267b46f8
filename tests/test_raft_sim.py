"""The Raft core under thousands of random schedules from seeds (apps.raft.sim).

A failure names its seed and step; ``SimCluster(n, seed, snapshots=...).run(STEPS)``
replays it exactly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from apps.raft.core import RaftCore, Ready
from apps.raft.sim import SimCluster, SimulationFailure

STEPS = 300
SEEDS = range(300)


@pytest.mark.parametrize("snapshots", [False, True], ids=["log", "snapshots"])
@pytest.mark.parametrize("n", [3, 5])
@pytest.mark.slow
def test_random_schedules_keep_raft_safe_and_live(n: int, snapshots: bool) -> None:
    committed = 0
    for seed in SEEDS:
        cluster = SimCluster(n, seed, snapshots=snapshots).run(STEPS)  # raises SimulationFailure with the seed
        cluster.settle()
        committed += len(cluster.committed)
    assert committed > len(SEEDS)  # the schedules did commit work, not only churn


def test_a_seed_replays_the_same_run() -> None:
    a = SimCluster(5, 1234, snapshots=True).run(STEPS)
    b = SimCluster(5, 1234, snapshots=True).run(STEPS)
    assert a.committed == b.committed and a.leaders == b.leaders and a.applied_upto == b.applied_upto


@pytest.mark.parametrize("snapshots", [False, True], ids=["log", "snapshots"])
@pytest.mark.slow
def test_the_journal_replays_exactly_what_each_peer_made_durable(tmp_path: Path, snapshots: bool) -> None:
    restarts = 0
    for seed in range(100):
        cluster = SimCluster(3, seed, snapshots=snapshots, storage_dir=tmp_path / f"seed-{seed}").run(STEPS)
        cluster.settle()  # every restart compares the journal's replay with the durable state
        restarts += cluster.restarts
    assert restarts > 50  # the schedules did crash and restart peers


@pytest.mark.parametrize("n", [3, 5])
@pytest.mark.slow
def test_crashes_between_sending_appends_and_writing_them_keep_raft_safe(n: int) -> None:
    """A leader sends its appends before its own write (thesis 10.2.1): a crash in between leaves followers
    with entries the leader lost; the safety checks must still hold after every step."""
    committed = torn = 0
    for seed in range(150):
        cluster = SimCluster(n, seed, snapshots=seed % 2 == 1, crash_before_write=0.05).run(STEPS)
        cluster.settle()
        committed += len(cluster.committed)
        torn += cluster.crashes_before_write
    assert torn > 100, f"only {torn} crashes fell between a send and its write"
    assert committed > 150


class _AcksBeforeWrite(RaftCore):
    """Broken on purpose: a follower's acknowledgements and votes go out with the appends, before its write."""

    def ready(self) -> Ready:
        rd = super().ready()
        return dataclasses.replace(rd, messages=rd.messages + rd.messages_after_persist, messages_after_persist=())


def _first_failing_seed(**options: object) -> int | None:
    for seed in range(300):
        try:
            SimCluster(3, seed, core_class=_AcksBeforeWrite, **options).run(STEPS).settle()  # type: ignore[arg-type]
        except SimulationFailure:
            return seed
    return None


@pytest.mark.slow
def test_acknowledging_before_the_write_is_caught_only_with_crashes_between_send_and_write() -> None:
    """The crash window the peer's send-before-write opens is the one this bug needs: the old schedules
    (crashes only between whole Readys) never see it; with crashes in that window a seed finds it."""
    assert _first_failing_seed() is None
    assert _first_failing_seed(crash_before_write=0.05) is not None


@pytest.mark.parametrize("n", [3, 5])
def test_servers_that_may_not_lead_for_a_while_keep_raft_safe_and_live(n: int) -> None:
    """Leaders stepping down within their term (a host out of open files), mixed with every other fault:
    safe after every step, never leading while they may not, and the cluster still commits once it ends."""
    stretches = committed = 0
    for seed in range(60):
        cluster = SimCluster(n, seed, snapshots=seed % 2 == 1, starved=0.02).run(STEPS)
        cluster.settle()
        stretches += cluster.stretches
        committed += len(cluster.committed)
    assert stretches > 60 and committed > 60


class _ForgetsVoteOnStepDown(RaftCore):
    """Broken on purpose: a leader that steps down for want of open files also forgets whom it voted for."""

    def tick(self, may_lead: bool = True) -> None:
        was_leader = self.is_leader
        super().tick(may_lead)
        if was_leader and not may_lead:
            self.voted_for = None


def test_a_step_down_that_forgets_its_vote_is_caught() -> None:
    """Stepping down is not a new term: the vote it cast (for itself) stands, or a rival of the same term
    could win it too and two leaders would share a term."""
    for seed in range(300):
        try:
            SimCluster(3, seed, core_class=_ForgetsVoteOnStepDown, starved=0.05).run(STEPS).settle()
        except SimulationFailure as failure:
            assert "two leaders in term" in str(failure)
            return
    pytest.fail("no seed caught a step-down that forgets its vote")


def test_a_committed_entry_that_a_majority_would_still_overwrite_is_caught() -> None:
    """Figure 8's state: peer 0 holds index 2 of term 3, the committed index 2 is of term 2 on the other two;
    peer 0 could win their votes and overwrite it, so the check fails at once, before any such election."""
    from apps.raft.core import HardState
    from apps.raft.messages import Entry
    from apps.raft.sim import _Disk

    cluster = SimCluster(3, 1)
    cluster.committed = {1: (1, "a"), 2: (2, "b")}
    cluster.disks[0] = _Disk(HardState(3, 0), None, (Entry(1, 1, "a"), Entry(3, 2, "x")))
    cluster.disks[1] = cluster.disks[2] = _Disk(HardState(4, 1), None, (Entry(1, 1, "a"), Entry(2, 2, "b")))
    with pytest.raises(SimulationFailure, match="lacks committed entry 2 yet 3 of 3 servers would vote for it"):
        cluster._check_commits_stay()
    cluster.disks[0] = _Disk(HardState(3, 0), None, (Entry(1, 1, "a"),))  # behind, and less up to date: safe
    cluster._check_commits_stay()


def test_the_command_line_runs_seeds_with_options_of_their_own() -> None:
    from apps.raft.sim import main, seed_options

    assert seed_options(7) == seed_options(7)
    assert len({tuple(sorted(seed_options(s).items())) for s in range(1, 40)}) > 20  # the seeds do mix options
    assert main(["--seeds", "3"]) == 0


def test_a_read_confirmed_without_a_majority_hearing_the_leader_since_it_was_asked_is_caught() -> None:
    cluster = SimCluster(3, 1)
    cluster.heard[(1, 0)] = (1, 4)  # took leader 0's append of term 1 before the read was asked at step 5
    with pytest.raises(SimulationFailure, match="confirmed by only 1 of 3 servers"):
        cluster._check_read_heard(0, 1, 7, asked=5)
    cluster.heard[(1, 0)] = (1, 6)  # and after it
    cluster._check_read_heard(0, 1, 7, asked=5)


@pytest.mark.parametrize("module", ["apps.raft.sim", "apps.kvraft.sim"])
def test_a_scratch_directory_that_does_not_exist_is_a_usage_error_not_a_failed_seed(module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    missing = tmp_path / "no-such-dir"
    with pytest.raises(SystemExit) as exc:
        importlib.import_module(module).main(["--seeds", "1", "--scratch", str(missing)])
    assert exc.value.code == 2
    assert f"argument --scratch: {missing}: not a directory" in capsys.readouterr().err


def test_seeds_with_steady_also_run_the_servers_batching_rule_and_both_of_its_sides_play(monkeypatch: pytest.MonkeyPatch) -> None:
    """The servers hold a partial batch while one is unanswered (``pipeline_partial_batches`` off); the
    simulation's main runs pipeline every batch, so a quarter of the seeds run once more under the servers' rule."""
    from apps.raft import sim

    assert not sim.STEADY_CONFIG.pipeline_partial_batches and sim.SIM_CONFIG.pipeline_partial_batches
    steady = [s for s in range(1, 200) if sim.seed_options(s)["steady"]]
    assert 25 < len(steady) < 75
    held = pipelined = 0
    send = RaftCore._send_append

    def counting(self: RaftCore, peer: int, heartbeat: bool = False) -> None:
        """Counts, under the servers' rule, each chance of a second batch: held back or sent."""
        nonlocal held, pipelined
        prog = self.progress.get(peer)
        chance = (self.config is sim.STEADY_CONFIG and not heartbeat and prog is not None and prog.inflight > 0
                  and prog.next_index > self.log.snapshot_index
                  and prog.inflight < self.config.max_inflight and prog.next_index <= self.log.last_index)
        before = len(self._pending.messages)
        send(self, peer, heartbeat)
        if chance:
            if len(self._pending.messages) == before:
                held += 1
            else:
                pipelined += 1

    configs = []
    run_one = sim._run_one

    def recording(seed: int, steps: int, journal: bool, scratch: str | None, opts: dict) -> sim.SimCluster:
        configs.append(opts.get("config"))
        return run_one(seed, steps, journal, scratch, opts)

    monkeypatch.setattr(RaftCore, "_send_append", counting)
    monkeypatch.setattr(sim, "_run_one", recording)
    for seed in steady[:20]:
        sim.run_seed(seed)
    assert configs.count(sim.STEADY_CONFIG) == 20
    assert held > 0 and pipelined > 0  # partial batches held back, full ones pipelined
