"""``zactor soak --hosts netns``: the soak on real hosts, its faults as packet filters (issue 26).

A short kvraft run with the partition nemesis passes on namespace hosts (as do
etcd's, and MapReduce's with its workers killed and cut off), its
summary says so and counts the packet-filter changes the partitions made, and
the run removes every namespace, link, nft table and process it made: after
a normal end and after Ctrl-C. Where hosts cannot be made (not root, no
``ip`` or ``nft``) the real runs skip with the reason; the refusal itself is
tested everywhere: ``--hosts netns`` without what it needs fails at once and
names what is missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from apps.hosts import available, sweep_stale
from tests.processes import Soak, leftovers, soak_cli, soak_run


@pytest.fixture(scope="module")
def netns_ready() -> None:
    why = available()
    if why:
        pytest.skip(f"soak on real hosts: {why}")
    sweep_stale()


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@pytest.mark.slow
def test_a_kvraft_soak_on_namespace_hosts_with_partitions_passes_and_removes_its_hosts(netns_ready: None, tmp_path: Path) -> None:
    """Without snapshots (``--maxraftstate -1``): with them, a server cut off while the others compacted their
    logs was still behind 30 s after the heal in 3 of about 6 such runs (0 of 6 since the hosts' flap fix,
    which does not obviously touch partitions: cause not established, reported on issue 26). This test is
    about the soak on hosts, and must not inherit that."""
    code, summary, err = soak_run(tmp_path / "report", "kvraft", "--hosts", "netns", "--minutes", "0.4", "--nemesis", "partition", "--seed", "3",
                                  "--clients", "4", "--no-history", "--min-throughput", "10", "--maxraftstate", "-1")
    assert code == 0, err[-3000:]
    assert summary["verdict"] == "pass" and summary["hosts"] == "netns"
    assert "--hosts netns" in summary["replay"]
    partitions = [e for e in summary["events"] if e["kind"] == "partition"]
    assert partitions and not any(e["error"] for e in partitions), summary["events"]
    # every partition and its heal went through the hosts' packet filters, none through transport rules
    assert summary["packet_faults"] == {"partition": len(partitions), "heal": len(partitions)}
    assert summary["final_reads"] > 0 and len({tuple(r) for r in summary["replicas"]}) == 1
    assert "hosts" in (tmp_path / "report" / "report.html").read_text() and "netns" in (tmp_path / "report" / "report.html").read_text()
    prefix = summary["host_set"]
    assert prefix and leftovers(prefix) == []
    assert not [n for n in namespaces() if n.startswith(prefix)]


@pytest.mark.slow
def test_ctrl_c_of_a_soak_on_namespace_hosts_removes_its_hosts(netns_ready: None, tmp_path: Path) -> None:
    run = Soak(tmp_path, "kvraft", "--hosts", "netns", "--minutes", "2", "--nemesis", "partition,net", "--seed", "8",
               "--clients", "4", "--no-history", "--min-throughput", "10")
    try:
        run.wait_for_status(8)
        os.killpg(run.pgid, signal.SIGINT)
        try:
            code = run.proc.wait(30.0)
        except subprocess.TimeoutExpired:
            pytest.fail("still running 30 s after Ctrl-C: " + "".join(run.stderr)[-3000:])
        assert code == 130, "".join(run.stderr)[-3000:]
        deadline = time.monotonic() + 5.0
        while run.group() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert run.group() == [], "processes of the soak's group outlived it"
    finally:
        run.close()
    summary = json.loads((run.out / "summary.json").read_text())
    assert summary["verdict"] == "interrupted" and summary["hosts"] == "netns"
    assert summary["host_set"] and leftovers(summary["host_set"]) == []
    assert "Traceback" not in "".join(run.stderr)


@pytest.mark.slow
def test_the_default_soak_says_its_faults_are_transport_rules(tmp_path: Path) -> None:
    code, summary, err = soak_run(tmp_path / "report", "kvraft", "--minutes", "0.1", "--nemesis", "none", "--clients", "2", "--no-history", "--min-throughput", "1")
    assert code == 0, err[-3000:]
    assert summary["hosts"] == "transport rules" and "host_set" not in summary and "--hosts" not in summary["replay"]


def test_without_ip_and_nft_hosts_netns_fails_at_once_and_names_what_is_missing(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    started = time.monotonic()
    code, _, err = soak_run(tmp_path / "report", "kvraft", "--hosts", "netns", "--minutes", "1", env={"PATH": str(empty)}, timeout=60)
    assert code == 2, err
    missing = "needs root" if os.geteuid() != 0 else "needs the `ip` command"
    assert f"zactor soak: --hosts netns: {missing}" in err, err
    assert "Traceback" not in err and not (tmp_path / "report").exists()
    assert time.monotonic() - started < 30


def test_hosts_netns_for_a_system_it_is_not_built_for_is_refused_by_name(tmp_path: Path) -> None:
    code, _, err = soak_run(tmp_path / "report", "shardkv", "--hosts", "netns", "--minutes", "1", timeout=60)
    assert code == 2 and "--hosts netns is not built for shardkv yet" in err, err
    assert not (tmp_path / "report").exists()


def test_mr_takes_partition_and_net_on_namespace_hosts_only() -> None:
    """Locally mr's workers share one network stack, with no transport-rule partition built: the refusal says where
    those nemeses are taken; on hosts `all` is kill, partition and net, and the schedule uses them."""
    local = soak_cli("mr", "--nemesis", "partition")
    assert local.returncode == 2 and "with --hosts netns also partition, net" in local.stderr, local.stderr
    hosts = soak_cli("mr", "--hosts", "netns", "--minutes", "2", "--seed", "76", "--schedule-only")
    assert hosts.returncode == 0, hosts.stderr
    assert {f["kind"] for f in json.loads(hosts.stdout)} == {"kill", "partition", "net"}


@pytest.mark.slow
def test_an_mr_soak_on_namespace_hosts_with_kills_and_partitions_passes_and_removes_its_hosts(netns_ready: None, tmp_path: Path) -> None:
    """Seed 76: six partitions (four cut off the worker then holding the most map output) and two kills in 45 s.

    Every job's output must still equal the sequential reference, and the partitions must have cost the
    coordinator something: maps run again or tasks handed to another worker, in jobs no other fault touched."""
    code, summary, err = soak_run(tmp_path / "report", "mr", "--hosts", "netns", "--minutes", "0.75", "--nemesis", "kill,partition",
                                  "--seed", "76", timeout=180)
    assert code == 0, err[-3000:]
    assert summary["verdict"] == "pass" and summary["hosts"] == "netns" and "--hosts netns" in summary["replay"]
    assert summary["jobs"] and all(j["ok"] for j in summary["jobs"]), summary["jobs"]
    assert not any(e["error"] for e in summary["events"]), summary["events"]
    partitions = [e for e in summary["events"] if e["kind"] == "partition"]
    assert partitions and summary["packet_faults"] == {"partition": len(partitions), "heal": len(partitions)}
    assert summary["worker_kills"] > 0
    bit = summary["after_partition"]
    assert bit["jobs"] > 0 and bit["maps_run_again"] + bit["tasks_reassigned"] > 0, (bit, summary["jobs"], partitions)
    prefix = summary["host_set"]
    assert prefix and leftovers(prefix) == []
    assert not [n for n in namespaces() if n.startswith(prefix)]


@pytest.mark.slow
def test_an_etcd_soak_on_namespace_hosts_with_partitions_passes_and_removes_its_hosts(netns_ready: None, tmp_path: Path) -> None:
    code, summary, err = soak_run(tmp_path / "report", "etcd", "--hosts", "netns", "--minutes", "0.3", "--nemesis", "partition", "--seed", "5",
                                  "--clients", "4", "--no-history", "--min-throughput", "10")
    assert code == 0, err[-3000:]
    assert summary["verdict"] == "pass" and summary["hosts"] == "netns"
    partitions = [e for e in summary["events"] if e["kind"] == "partition"]
    assert partitions and summary["packet_faults"] == {"partition": len(partitions), "heal": len(partitions)}
    assert len({r[1] for r in summary["replicas"]}) == 1
    assert summary["host_set"] and leftovers(summary["host_set"]) == []
