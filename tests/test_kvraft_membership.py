"""Membership changes of a running replicated KV service: real server processes, real clerks, real fsync.

The core's rules have their own tests (``test_raft_membership*.py``); these
show the service keeps its promises while servers come and go: no
acknowledged write lost or applied twice, a linearizable history, clerks
that follow the cluster to servers they were never told about.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from apps.kvraft.testing import KVCluster, RecordingClerk
from apps.raft.admin import MembershipError, change_membership, plan_join
from apps.raft.membership import ADD_LEARNER, REMOVE
from tests.helpers import assert_appends_once_in_order, element

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
