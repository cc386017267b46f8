"""The Raft core under thousands of random schedules from seeds (apps.raft.sim).

A failure names its seed and step; ``SimCluster(n, seed, snapshots=...).run(STEPS)``
replays it exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from apps.raft.sim import SimCluster

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
