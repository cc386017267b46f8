"""Membership changes of a running replicated KV service: real server processes, real clerks, real fsync.

The core's rules have their own tests (``test_raft_membership*.py``); these
show the service keeps its promises while servers come and go: no
acknowledged write lost or applied twice, a linearizable history, clerks
that follow the cluster to servers they were never told about.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from apps.kvraft.testing import KVCluster, RecordingClerk
from apps.raft.admin import MembershipError, change_membership, plan_join
from apps.raft.membership import ADD_LEARNER, REMOVE
from tests.helpers import assert_appends_once_in_order, element
from tests.processes import running, zactor

MAXRAFTSTATE = 4000
"""Small enough that a new server's catch-up goes through InstallSnapshot, not the log alone."""


@contextmanager
def appending(cluster: KVCluster, clients: int) -> Iterator[list[int]]:
    """``clients`` clerks bound to the whole cluster, each appending to its own key until the block ends;
    yields the live count of each one's acknowledged appends."""
    stop = threading.Event()
    done = [0] * clients
    failures: list[BaseException] = []
    clerks = [cluster.make_clerk() for _ in range(clients)]

    def run(c: int, ck: RecordingClerk) -> None:
        try:
            while not stop.is_set() and done[c] < 10_000:
                ck.append(f"k{c}", element(c, done[c]))
                done[c] += 1
        except BaseException as exc:  # reported by the test, not lost in a thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(c, ck), daemon=True) for c, ck in enumerate(clerks)]
    for t in threads:
        t.start()
    try:
        yield done
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not failures, failures
    assert not any(t.is_alive() for t in threads), "a clerk did not finish its last append within 60 s"
    check = cluster.make_clerk(record=False)
    for c in range(clients):
        assert done[c] > 0, f"clerk {c} never got an append through"
        assert_appends_once_in_order(check.get(f"k{c}"), c, done[c])


def wait_for_progress(done: list[int], more: int, timeout: float = 30.0) -> None:
    """Until every clerk has had ``more`` further appends acknowledged: traffic flows between the changes."""
    target = [d + more for d in done]
    event = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if all(d >= t for d, t in zip(done, target, strict=True)):
            return
        event.wait(0.05)
    raise AssertionError(f"clerks stalled: {done}, wanted {target}")


@pytest.mark.slow
def test_replacing_each_server_in_turn_under_appends_loses_and_duplicates_nothing() -> None:
    """Every server of the cluster a clerk was started with is replaced: it follows to the new ones."""
    with KVCluster(3, maxraftstate=MAXRAFTSTATE) as cluster:
        with appending(cluster, 3) as done:
            wait_for_progress(done, 5)
            for old in range(3):
                new = cluster.replace(old)
                assert new == 3 + old
                info = cluster.members_info()
                assert info.voters == tuple(sorted({0, 1, 2, 3, 4, 5} & set(range(old + 1, 4 + old)))) and not info.learners
                wait_for_progress(done, 5)
        assert cluster.members_info().voters == (3, 4, 5)
        assert max(cluster.snapshot_size(i) for i in (3, 4, 5)) > 0
        cluster.check_linearizable()


@pytest.mark.slow
def test_growing_to_five_and_shrinking_back_to_three_under_appends() -> None:
    with KVCluster(3, maxraftstate=MAXRAFTSTATE) as cluster:
        with appending(cluster, 2) as done:
            for _ in range(2):
                new = cluster.add_server()
                assert new in cluster.members_info().learners
                wait_for_progress(done, 3)
                cluster.promote(new)
            assert cluster.members_info().voters == (0, 1, 2, 3, 4)
            wait_for_progress(done, 5)
            cluster.crash(0)  # five voters ride out one down: three of the other four commit
            wait_for_progress(done, 5)
            cluster.remove_server(0)
            cluster.remove_server(3)
            assert cluster.members_info().voters == (1, 2, 4)
            wait_for_progress(done, 5)
        cluster.check_linearizable()


@pytest.mark.slow
def test_removing_the_leader_hands_over_to_a_remaining_server() -> None:
    with KVCluster(3) as cluster:
        with appending(cluster, 2) as done:
            wait_for_progress(done, 3)
            leader = cluster.wait_for_leader()
            cluster.remove_server(leader)
            info = cluster.members_info()
            assert leader not in info.voters and info.leader != leader and len(info.voters) == 2
            wait_for_progress(done, 5)
        cluster.check_linearizable()


def test_changes_that_cannot_succeed_are_refused_at_once_with_the_reason() -> None:
    with KVCluster(3) as cluster:
        system, endpoints = cluster._system, cluster.member_endpoints()
        with pytest.raises(MembershipError, match="server 7 is not a member"):
            change_membership(system, endpoints, REMOVE, 7, timeout=5)
        with pytest.raises(MembershipError, match="already a voter"):
            change_membership(system, endpoints, ADD_LEARNER, 1, "ipc:///nowhere", timeout=5)
        with pytest.raises(MembershipError, match="endpoint it listens on"):
            change_membership(system, endpoints, ADD_LEARNER, 3, timeout=5)
        with pytest.raises(MembershipError, match="already a member's endpoint"):
            plan_join(cluster.members_info(), endpoints[0])
        with pytest.raises(ValueError, match="unknown membership change"):
            change_membership(system, endpoints, "add-voter", 3)
        assert cluster.members_info().voters == (0, 1, 2)
        ck = cluster.make_clerk()
        ck.put("a", "1")
        assert ck.get("a") == "1"  # nothing refused disturbed the service


# ---- the command line: replacing a dead server ---------------------------------------------------------


@pytest.mark.slow
def test_cli_replaces_a_dead_server_and_the_same_data_dir_brings_the_new_one_back(tmp_path: Path) -> None:
    """README's three commands: `members` shows the dead server, `replace` brings in a new one, clerks carry on."""
    endpoints = ",".join(f"ipc://{tmp_path}/s{i}.sock" for i in range(3))
    new = f"ipc://{tmp_path}/s3.sock"
    with running("kv", "cluster", "--servers", "3", "--endpoints", endpoints, "--data-dir", str(tmp_path / "data"),
                 "--maxraftstate", "2000", "--for", "120") as cluster:
        pid1 = int(cluster.wait_for("server 1:", 30).split()[-1])
        cluster.wait_for("leader: server", 30)
        for i in range(10):  # 2 kB and more: past --maxraftstate, so the new server starts from a snapshot
            assert zactor("kv", "append", "--servers", endpoints, "log", f"[{i}{'.' * 250}]").returncode == 0
        os.kill(pid1, signal.SIGSTOP)  # dead to the others, never restarted: as a machine that went away
        try:
            out = zactor("kv", "cluster", "members", "--servers", endpoints)
            assert out.returncode == 0, out.stderr
            assert re.search(r"server 1 .*voter\s+down", out.stdout), out.stdout
            with running("kv", "cluster", "replace", "1", "--servers", endpoints, "--endpoint", new,
                         "--data-dir", str(tmp_path / "new"), "--for", "120") as replace:
                assert replace.wait_for("server 3:", 30)
                replace.wait_for("server 3 is a voter", 60)
                replace.wait_for("server 1 removed", 60)
                assert replace.wait_for("servers:", 30).split()[-1] == ",".join(
                    e for i, e in enumerate([*endpoints.split(","), new]) if i != 1
                )
                out = zactor("kv", "cluster", "members", "--servers", endpoints)
                assert "server 1 " not in out.stdout and re.search(r"server 3 .*voter\s+up", out.stdout), out.stdout
                out = zactor("kv", "append", "--servers", endpoints, "log", "[10]")
                assert out.returncode == 0, out.stderr
            # The new server's command stopped (its process with it); the same data dir starts the same server.
            with running("kv", "cluster", "add", "--servers", endpoints, "--data-dir", str(tmp_path / "new"), "--for", "60") as again:
                again.wait_for("server 3 starts again", 30)
                again.wait_for("servers:", 60)
                assert not any("added as a learner" in line for line in again.seen)
                out = zactor("kv", "get", "--servers", new, "log")  # the new server alone names the rest
                assert out.returncode == 0 and out.stdout.strip() == "".join(f"[{i}{'.' * 250}]" for i in range(10)) + "[10]", out
            saved = tmp_path / "new" / "member.json"
            assert json.loads(saved.read_text())["me"] == 3
            assert stat.S_IMODE(saved.stat().st_mode) == 0o600  # data at rest is the owner's only, whatever the umask
        finally:
            os.kill(pid1, signal.SIGCONT)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["members"], 2, "the following arguments are required: --servers"),
        (["remove", "--servers", "localhost:1", "1"], 2, "is not an endpoint"),
        (["members", "--servers", "ipc:///tmp/zactor-nobody.sock", "--timeout", "0.5"], 1, "no leader among"),
        (["add", "--servers", "ipc:///tmp/zactor-nobody.sock", "--timeout", "-1"], 2, "--timeout must be positive"),
    ],
)
def test_cli_membership_mistakes_get_clear_errors(args: list[str], code: int, message: str) -> None:
    out = zactor("kv", "cluster", *args)
    assert out.returncode == code and message in out.stderr, out.stderr


# ---- the benchmark -------------------------------------------------------------------------------------


def test_bench_membership_measures_the_dip_from_completion_times() -> None:
    from benchmarks.membership import _shape

    before = [10.0 + i / 100 for i in range(200)]  # 100 ops/s for the 2 s before the change
    during = [12.0 + i / 50 for i in range(25)] + [12.75 + i / 100 for i in range(25)]  # 50 ops/s, then 0, then 100
    shape = _shape(before + during, began=12.0, ended=13.0, warmup=2.0)
    assert shape == {"before_ops_s": 100.0, "during_share": 0.5, "worst_window_share": 0.0, "change_s": 1.0}


@pytest.mark.slow
def test_bench_membership_replaces_a_follower_in_zactor_and_in_etcd() -> None:
    out = zactor("bench", "membership", "--json", "--trials", "1", "--clients", "2", timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for system in ("zactor", "etcd"):
        [run] = result["runs"][system]
        assert run["before_ops_s"] > 0 and run["change_s"] > 0 and run["during_share"] > 0 and run["worst_window_share"] >= 0, run
    assert zactor("bench", "membership", "--trials", "0").returncode == 2
