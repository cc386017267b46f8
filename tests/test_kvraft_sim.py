"""The deterministic KV simulation: clean code passes many seeds, each planted bug is caught, a seed replays.

The simulation is the campaign's main killer (``benchmarks/mutate.py``), so
its verdict is held to the same rule as the soak's: it passes the real code
seed after seed, and it fails each broken variant of ``apps/soak/broken.py``
within a bounded number of seeds, naming the command that replays the seed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from apps.kvraft.sim import SWITCHES, KVSim, SimFailure, SimOptions, run_seed, run_seeds
from apps.raft import membership

CI_SEEDS = 60


def test_clean_code_passes_every_seed():
    results, failures = run_seeds(range(1, CI_SEEDS + 1), stop_at_first=False)
    assert failures == []
    assert len(results) == CI_SEEDS
    # The seeds did what the simulation promises: traffic, elections, crashes, every switch somewhere.
    assert sum(r["ops"] for r in results) > 50 * CI_SEEDS
    assert sum(r["crashes"] for r in results) > CI_SEEDS
    assert sum(r["elections"] for r in results) > 2 * CI_SEEDS
    assert {s for r in results for s in r["switches"]} == set(SWITCHES)
    assert {r["servers"] for r in results} == {3, 5}
    # Membership changed in the seeds that switched it on, and only there: servers replaced (the leader and
    # wiped ones among them), the cluster grown and shrunk, and the clerks took the new member lists.
    changing = [r for r in results if "membership" in r["switches"]]
    assert len(changing) >= CI_SEEDS // 4
    assert all(r["conf_changes"] == r["servers_added"] == 0 for r in results if "membership" not in r["switches"])
    assert sum(r["conf_changes"] for r in changing) > 3 * len(changing)
    assert sum(r["servers_added"] for r in changing) > len(changing)
    assert sum(r["servers_removed"] for r in changing) > len(changing) // 2
    assert sum(r["leaders_removed"] for r in changing) > 0
    assert sum(r["wiped"] for r in changing) > 0
    assert sum(r["clerk_lists_learned"] for r in changing) > len(changing)
    assert {r["voters"] for r in changing} - {3, 5}


def test_a_seed_replays_exactly():
    assert run_seed(7) == run_seed(7)
    assert run_seed(7) != run_seed(8)
    changing = SimOptions(switches=("membership", "hasty_operator", "crashes", "partitions"))
    first = run_seed(5, changing)
    assert first["conf_changes"] > 0
    assert run_seed(5, changing) == first


def test_membership_changes_with_every_other_fault_at_once():
    """Every switch on: servers come and go while messages are lost, delayed, duplicated and replayed, servers
    crash after votes and fsyncs, leaders are cut off, snapshots race; every seed still passes every check."""
    runs = [run_seed(seed, SimOptions(switches=SWITCHES)) for seed in range(1, 5)]
    assert all(r["conf_changes"] > 0 and r["ops"] > 20 for r in runs), runs
    assert sum(r["servers_added"] for r in runs) > 0 and sum(r["servers_removed"] for r in runs) > 0


@pytest.mark.parametrize("broken, finding", [
    ("ack-before-fsync", ""),
    ("stale-reads", "linearizability"),
    ("no-dedup-in-snapshot", ""),
])
def test_each_broken_variant_is_caught_within_forty_seeds(broken, finding):
    results, failures = run_seeds(range(1, 41), SimOptions(broken=broken))
    assert failures, f"{broken} survived 40 seeds"
    assert finding in failures[0]
    assert f"replay: python -m apps.kvraft.sim --seed {len(results) + 1} --broken {broken}" in failures[0]


def test_a_failing_seed_replays_from_the_command_it_prints():
    _, failures = run_seeds(range(1, 41), SimOptions(broken="stale-reads"))
    command = failures[0].rpartition("replay: ")[2].split()
    r = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).parent.parent)
    assert r.returncode == 1
    assert failures[0].splitlines()[0] in r.stderr


def test_forced_switches_and_unknown_ones():
    sim = KVSim(3, SimOptions(switches=("crashes",)))
    try:
        assert sim.switches == ["crashes"]
    finally:
        sim.close()
    with pytest.raises(ValueError, match="unknown switch"):
        KVSim(3, SimOptions(switches=("meteor",)))


def test_failure_is_an_assertion_error_naming_seed_and_tick():
    assert issubclass(SimFailure, AssertionError)
    with pytest.raises(SimFailure, match=r"seed 2, tick \d+: .*\n  replay: python -m apps.kvraft.sim --seed 2 --broken ack-before-fsync"):
        run_seed(2, SimOptions(broken="ack-before-fsync"))


def test_a_server_number_given_twice_is_caught(monkeypatch):
    """A planted membership bug the simulation missed before it changed membership (the campaign's
    ``server-number-reused``): the leader takes a removed server's number for a new server, and the removed
    one's late answers count as the new one's."""
    real = membership.apply_change

    def reusing(current: membership.Membership, change: membership.ConfChange) -> membership.Membership:
        if change.op != membership.ADD_LEARNER or change.server in current.members:
            return real(current, change)
        contexts = dict(current.contexts)
        if change.context is not None:
            contexts[change.server] = change.context
        return membership.Membership(current.voters, tuple(sorted((*current.learners, change.server))),
                                     tuple(sorted(contexts.items())), current.fresh_id)

    monkeypatch.setattr(membership, "apply_change", reusing)  # the same seeds pass the real one (the test above)
    results, failures = run_seeds(range(1, 41))
    assert failures, "a reused server number survived 40 seeds"
    assert f"replay: python -m apps.kvraft.sim --seed {len(results) + 1}" in failures[0]
