"""``zactor soak kvraft``'s ``membership`` nemesis: servers replaced while the clerks write, for real.

The runs are real (server processes, SIGKILL, fsync, data directories
deleted) and take a minute or so each, so they are ``slow``; the flag and
schedule checks are instant. A replacement puts its new server in the old
one's slot, so the faults after it must hit the new server and never the
removed one: the mixed run checks that from the run log, fault by fault.
"""

from __future__ import annotations

import json

import pytest

from apps.kvraft.testing import KVCluster
from apps.raft.admin import MembershipError
from apps.soak.cli import SYSTEMS, build_parser
from apps.soak.kvraft import KVRaftTarget
from apps.soak.run import FaultEvent
from apps.soak.schedule import NEMESES, Fault, make_schedule
from apps.soak.verdict import Findings
from tests.processes import soak_cli, soak_run

SERVERS = 5


def replaced(summary: dict) -> list[dict]:
    """The finished replacements of a run, in order; each names its slot, old and new server."""
    return [r for r in summary["replacements"] if r["done"]]


def assert_final_state_is_the_current_members(summary: dict) -> None:
    """The final checks looked at the servers in the cluster at the end, every one of them the same."""
    gone = {r["old"] for r in replaced(summary)}
    assert sorted(summary["slots"]) == summary["members"], summary  # no learner left behind, no slot empty
    assert not gone & set(summary["members"]), (gone, summary["members"])
    assert {r["new"] for r in replaced(summary)} - gone <= set(summary["members"])
    assert len(summary["replicas"]) == SERVERS and len({tuple(d) for d in summary["replicas"]}) == 1, summary["replicas"]
    safety = summary["state_machine_safety"]  # the new servers' applies are compared with the others' too
    assert safety["conflicting_indexes"] == 0
    assert len(safety["applies_recorded"]) == SERVERS + len(replaced(summary))
    assert all(safety["applies_recorded"][i] > 0 for i in summary["members"]), safety
    assert summary["final_reads"] > 0
    assert summary["windows"] and all(w["verdict"] == "OK" for w in summary["windows"])


def test_membership_is_kvraft_only_and_on_by_default():
    assert "membership" in SYSTEMS["kvraft"]
    assert all("membership" not in SYSTEMS[s] for s in SYSTEMS if s != "kvraft")
    assert set(NEMESES["membership"]) == {"replace-one", "replace-leader", "replace-dead"}
    faults = make_schedule(3, 300, SYSTEMS["kvraft"], SERVERS)
    assert {f.variant for f in faults if f.kind == "membership"} == set(NEMESES["membership"])
    assert all(0 <= t < SERVERS for f in faults for t in f.targets)  # slots, whoever holds them when the time comes
    [line] = [line for line in build_parser().format_help().splitlines() if line.startswith("  membership ")]
    assert "replaced" in line


def test_membership_is_refused_on_netns_hosts_by_name_and_all_leaves_it_out_there():
    r = soak_cli("kvraft", "--hosts", "netns", "--nemesis", "kill,membership", "--schedule-only")
    assert r.returncode == 2
    assert "--hosts netns does not take the nemesis membership" in r.stderr
    kinds = {}
    for hosts in ("local", "netns"):
        r = soak_cli("kvraft", "--hosts", hosts, "--minutes", "5", "--seed", "3", "--schedule-only")
        assert r.returncode == 0, r.stderr
        kinds[hosts] = {f["kind"] for f in json.loads(r.stdout)}
    assert kinds["local"] == set(SYSTEMS["kvraft"])
    assert kinds["netns"] == set(SYSTEMS["kvraft"]) - {"membership"}


@pytest.mark.slow
def test_servers_replaced_under_traffic_lose_nothing(tmp_path):
    code, summary, err = soak_run(tmp_path / "report", "kvraft", "--no-history", "--minutes", "0.5", "--seed", "5",
                                  "--nemesis", "membership", "--min-throughput", "10")
    assert code == 0, err[-3000:]
    assert summary["verdict"] == "pass" and not summary["violations"] and not summary["invalid"]
    events = summary["events"]
    assert events and all(e["kind"] == "membership" for e in events)
    for e in events:
        assert not e["error"], e
        assert " replaced by server " in e["note"], e
    done = replaced(summary)
    assert len(done) == len(events) >= 1
    assert {r["variant"] for r in done} >= {"replace-dead"}
    for r in done:
        assert r["new"] >= SERVERS and r["old"] != r["new"]
    assert "unfinished_replacement" not in summary
    assert_final_state_is_the_current_members(summary)


@pytest.mark.slow
def test_replacements_mixed_with_kills_and_partitions_hit_only_current_servers(tmp_path):
    # Seed 3: a replace-one of slot 0 first, then a kill of all and a bridge (slot 0's new server in both), more
    # kills and partitions, and a replace-dead.
    code, summary, err = soak_run(tmp_path / "report", "kvraft", "--no-history", "--minutes", "0.75", "--seed", "3",
                                  "--nemesis", "membership,kill,partition", "--min-throughput", "10")
    assert code == 0, err[-3000:]
    assert summary["verdict"] == "pass" and not summary["violations"] and not summary["invalid"]
    events = summary["events"]
    assert {e["kind"] for e in events} == {"membership", "kill", "partition"}
    gone: set[int] = set()
    hit_new = False
    for e in events:
        assert not e["error"], e
        if e["kind"] == "membership":
            assert e["hit"] and not gone & set(e["hit"]), (gone, e)
            gone |= set(e["hit"])
            continue
        assert e["hit"] and not gone & set(e["hit"]), (gone, e)  # never a removed server
        hit_new = hit_new or any(i >= SERVERS for i in e["hit"])
    assert hit_new, "no fault after a replacement hit the server that took the slot"
    assert gone == {r["old"] for r in replaced(summary)}
    assert_final_state_is_the_current_members(summary)


@pytest.mark.slow
def test_a_replacement_cut_short_by_a_partition_is_reported_and_finished_at_its_heal():
    """No majority anywhere: the replacement fails, says so in the run log, and leaves the slots as they were;
    once the network is whole the heal finishes it (the steps already done are not asked again)."""
    with KVCluster(3, maxraftstate=4000) as cluster:
        findings = Findings()
        target = KVRaftTarget(cluster, 1, findings)
        target.replace_within = 3.0
        cluster.wait_for_leader(10.0)
        cluster.make_clerk(record=False).put("k", "before")
        cluster.partition([[0], [1], [2]])
        fault = Fault(0.0, "membership", "replace-one", (1,), 3.0)
        event = FaultEvent(fault, 0.0)
        with pytest.raises(MembershipError):
            target.inflict(fault, event)
        assert "replacing server 1 (slot 1) failed after " in event.note and "its heal finishes it" in event.note
        assert target.pending is not None and target.slots == [0, 1, 2] and not target.replacements
        assert target.members() == [0, 1, 2]  # the old server stays a target until it is replaced
        cluster.heal()
        target.replace_within = 60.0
        target.heal(fault, event)
        [done] = target.replacements
        assert done.old == 1 and done.new == 3 and done.slot == 1
        assert "finished at the heal: server 1 replaced by server 3 in slot 1" in event.note, event.note
        assert target.slots == [0, 3, 2] and target.pending is None
        assert 1 in cluster.removed and not cluster.data_dir(1).exists()
        assert sorted(cluster.members_info().voters) == [0, 2, 3]
        assert cluster.make_clerk(record=False).get("k") == "before"
        assert not findings.violations and not findings.invalid
