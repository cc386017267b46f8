"""The Raft core under thousands of random schedules from seeds (apps.raft.sim).

A failure names its seed and step; ``SimCluster(n, seed, snapshots=...).run(STEPS)``
replays it exactly.
"""

from __future__ import annotations

import pytest

from apps.raft.sim import SimCluster

STEPS = 300
SEEDS = range(300)


@pytest.mark.parametrize("snapshots", [False, True], ids=["log", "snapshots"])
@pytest.mark.parametrize("n", [3, 5])
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
