"""A server removed from the cluster stops by itself, for good; one cut off or behind never does; every
membership change is safe to ask again.

Real server processes under a real supervisor (the harness's, and the one
``zactor kv cluster`` runs), real sockets. The core's side (who is told,
when) has its own tests in ``test_raft_membership.py``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from apps.kvraft.testing import KVCluster
from apps.raft.admin import MembershipError, change_membership
from apps.raft.membership import ADD_LEARNER, PROMOTE, REMOVE
from apps.raft.peer import REMOVED_EXIT
from apps.raft.roster import MembersInfo
from tests.processes import running, zactor


def _others(cluster: KVCluster, leader: int) -> list[int]:
    return [i for i in range(cluster.n) if i != leader and i not in cluster.removed]


def test_a_removed_server_stops_itself_with_the_removed_status() -> None:
    with KVCluster(3) as cluster:
        leader = cluster.wait_for_leader()
        out = _others(cluster, leader)[0]
        info = change_membership(cluster._system, cluster.member_endpoints(), REMOVE, out, timeout=30)
        assert out not in info.voters
        assert cluster.wait_for_exit(out, 30) == REMOVED_EXIT  # nobody killed it
        ck = cluster.make_clerk([i for i in range(3) if i != out])
        ck.put("a", "1")
        assert ck.get("a") == "1"
        # Started again from its disk (an operator's mistake): it holds its removal, not that it committed, and
        # nobody sends it anything; it asks the voters, is told, and stops again.
        cluster.restart(out)
        if out not in cluster.removed:  # (the harness saw it stop before it answered: that is the same outcome)
            assert cluster.wait_for_exit(out, 30) == REMOVED_EXIT
        assert cluster.exit_code(out) == REMOVED_EXIT


def test_a_server_removed_while_cut_off_stops_once_it_reaches_a_peer() -> None:
    """The leader never reaches it, so it never gets the change: it learns from the peers its campaigns reach."""
    with KVCluster(3) as cluster:
        leader = cluster.wait_for_leader()
        out = _others(cluster, leader)[0]
        rest = [i for i in range(3) if i != out]
        cluster.partition([rest, [out]])
        change_membership(cluster._system, [cluster.endpoints[i] for i in rest], REMOVE, out, timeout=30)
        term = cluster.peer(out).get_state()[0]
        _until(lambda: cluster.peer(out).get_state()[0] >= term + 2, "the cut-off server to campaign twice more")
        assert cluster.wait_for_exit(out, 0) is None  # cut off, it cannot know: it runs on
        cluster.heal()
        assert cluster.wait_for_exit(out, 30) == REMOVED_EXIT


def test_a_cut_off_follower_never_stops_itself() -> None:
    with KVCluster(3) as cluster:
        leader = cluster.wait_for_leader()
        cut = _others(cluster, leader)[0]
        rest = [i for i in range(3) if i != cut]
        ck = cluster.make_clerk(rest)
        ck.put("before", "1")
        term = cluster.peer(cut).get_state()[0]
        cluster.partition([rest, [cut]])
        for k in range(5):
            ck.put(f"k{k}", str(k))  # it falls behind, too
        _until(lambda: cluster.peer(cut).get_state()[0] >= term + 3, "the cut-off follower to campaign three times")
        assert cluster.wait_for_exit(cut, 0) is None
        cluster.heal()
        ck.put("after", "1")
        top = cluster.peer(cluster.wait_for_leader()).status().commit_index
        _until(lambda: cluster.peer(cut).status().applied_index >= top, "the healed follower to catch up")
        assert cluster.wait_for_exit(cut, 0) is None and cluster.exit_code(cut) is None
        assert cluster.members_info().voters == (0, 1, 2)


def test_retried_and_concurrent_changes_succeed_with_the_configuration_as_it_is() -> None:
    with KVCluster(3) as cluster:
        system = cluster._system
        new = cluster.add_server()
        endpoint = cluster.endpoints[new]

        def change(op: str, server: int, at: str | None = None) -> MembersInfo:
            return change_membership(system, cluster.member_endpoints(), op, server, at, timeout=30)

        assert new in change(ADD_LEARNER, new, endpoint).learners  # a retried add of a learner
        with pytest.raises(MembershipError, match="already a learner"):  # the same number elsewhere is not a retry
            change(ADD_LEARNER, new, "ipc:///elsewhere.sock")
        cluster.promote(new)
        assert new in change(PROMOTE, new).voters  # a retried promote
        assert new in change(ADD_LEARNER, new, endpoint).voters  # an add retried after the promote
        # Two operators remove the same server at once: one change commits, both succeed.
        results: list[object] = []
        threads = [threading.Thread(target=lambda: results.append(_or_error(change, REMOVE, 0))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(results) == 2 and all(isinstance(r, MembersInfo) and 0 not in r.voters for r in results), results
        info = change(REMOVE, 0)  # and once more, long after
        assert info.voters == (1, 2, new) and not info.pending
        with pytest.raises(MembershipError, match="server 7 is not a member"):  # never a member: still refused
            change(REMOVE, 7)
        assert cluster.wait_for_exit(0, 30) == REMOVED_EXIT
        cluster.removed.add(0)
        ck = cluster.make_clerk([1, 2, new])
        ck.put("a", "1")
        assert ck.get("a") == "1"


def test_cli_remove_stops_the_removed_server_and_a_retried_remove_succeeds(tmp_path: Path) -> None:
    endpoints = ",".join(f"ipc://{tmp_path}/s{i}.sock" for i in range(3))
    with running("kv", "cluster", "--servers", "3", "--endpoints", endpoints, "--data-dir", str(tmp_path / "data"),
                 "--for", "120") as cluster:
        pid2 = int(cluster.wait_for("server 2:", 30).split()[-1])
        cluster.wait_for("leader: server", 30)
        out = zactor("kv", "cluster", "remove", "2", "--servers", endpoints)
        assert out.returncode == 0 and "server 2 removed; voters now [0, 1]" in out.stdout, out
        cluster.wait_for("server 2 removed from the cluster; its process stopped", 30)
        assert cluster.wait_for("servers up", 10).endswith("/2")  # no longer counted
        with pytest.raises(ProcessLookupError):
            os.kill(pid2, 0)
        out = zactor("kv", "cluster", "remove", "2", "--servers", endpoints)  # asked again: already done
        assert out.returncode == 0 and "voters now [0, 1]" in out.stdout, out
        out = zactor("kv", "cluster", "members", "--servers", endpoints)
        assert out.returncode == 0 and "server 2 " not in out.stdout and "2 voters" in out.stdout, out
        assert zactor("kv", "put", "--servers", endpoints, "a", "1").returncode == 0
        cluster.proc.terminate()
        cluster.wait_for("stopped", 30)
    assert not any("server 2 restarted" in line or "server 2 keeps failing" in line for line in cluster.seen), cluster.seen


def _or_error(fn: object, *args: object) -> object:
    try:
        return fn(*args)  # type: ignore[operator]
    except MembershipError as exc:
        return exc


def _until(predicate: object, what: str, timeout: float = 30.0) -> None:
    """Until ``predicate()`` holds, re-asked every 50 ms (a peer's state is only seen by asking it)."""
    wake = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if predicate():  # type: ignore[operator]
            return
        wake.wait(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_cli_add_reports_its_server_removed_and_stops(tmp_path: Path) -> None:
    """The server `add` runs is removed by another command: `add` says so and ends, nothing restarted."""
    endpoints = ",".join(f"ipc://{tmp_path}/s{i}.sock" for i in range(3))
    new = f"ipc://{tmp_path}/s3.sock"
    with running("kv", "cluster", "--servers", "3", "--endpoints", endpoints, "--data-dir", str(tmp_path / "data"),
                 "--for", "120") as cluster:
        cluster.wait_for("leader: server", 30)
        with running("kv", "cluster", "add", "--servers", endpoints, "--endpoint", new, "--data-dir", str(tmp_path / "new"),
                     "--for", "120") as add:
            add.wait_for("server 3 is a voter", 60)
            add.wait_for("servers:", 30)
            out = zactor("kv", "cluster", "remove", new, "--servers", endpoints)  # by endpoint this time
            assert out.returncode == 0 and "server 3 removed; voters now [0, 1, 2]" in out.stdout, out
            add.wait_for("server 3 removed from the cluster; its process stopped", 30)
            add.wait_for("stopped", 30)
            assert add.proc.wait(timeout=30) == 0
        assert not any("restarted" in line or "keeps failing" in line for line in add.seen), add.seen
        out = zactor("kv", "cluster", "remove", "3", "--servers", endpoints)  # asked again, by number
        assert out.returncode == 0 and "voters now [0, 1, 2]" in out.stdout, out
        out = zactor("kv", "cluster", "remove", new, "--servers", endpoints)  # by endpoint: no longer a member's
        assert out.returncode == 1 and "a server removed already is named by its number" in out.stderr, out
