"""Lab 5A, every controller scenario of the spec: the shard controller on real processes and sockets.

Three controller servers, each its own OS process (a Raft peer and the
controller's state machine); a restart is SIGKILL and a new process from the
data directory. The lab's TestBasic and TestMulti are one Go test each with
subtests; here each subtest is its own test and sets up the state it needs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from apps.shardctrler import NSHARDS, CtrlerClerk, ShardConfig
from apps.shardctrler.state import rebalance
from apps.shardctrler.testing import CtrlerCluster

pytestmark = pytest.mark.slow  # a lab port: real processes for tens of seconds (see setup.cfg)

NSERVERS = 3
NPARA = 10


@pytest.fixture
def cluster() -> Iterator[CtrlerCluster]:
    with CtrlerCluster(NSERVERS) as c:
        yield c


def check(groups: list[int], ck: CtrlerClerk) -> ShardConfig:
    """The lab's check: the latest configuration holds exactly ``groups``, every shard on one of them, balanced."""
    c = ck.query(-1)
    assert sorted(c.groups) == sorted(groups), f"wanted groups {sorted(groups)}, got {sorted(c.groups)}"
    if groups:
        for s, g in enumerate(c.shards):
            assert g in c.groups, f"shard {s} -> invalid group {g}"
        counts = [c.shards.count(g) for g in c.groups]
        assert max(counts) <= min(counts) + 1, f"unbalanced: {counts}"
    else:
        assert c.shards == (0,) * NSHARDS
    return c


def check_same_config(c1: ShardConfig, c2: ShardConfig) -> None:
    assert c1.num == c2.num, f"num wrong: {c1.num} != {c2.num}"
    assert c1.shards == c2.shards, f"shards wrong: {c1.shards} != {c2.shards}"
    assert c1.groups == c2.groups, f"groups wrong: {c1.groups} != {c2.groups}"


def assert_moved_only(before: ShardConfig, after: ShardConfig, allowed: Callable[[int, int], bool], what: str) -> int:
    """Every shard whose owner changed satisfies ``allowed(old, new)``; returns how many moved."""
    moved = 0
    for s in range(NSHARDS):
        old, new = before.shards[s], after.shards[s]
        if old != new:
            moved += 1
            assert allowed(old, new), f"non-minimal transfer after {what}: shard {s} {old} -> {new}"
    return moved


def basic_leave_join(ck: CtrlerClerk) -> list[ShardConfig]:
    cfa = [ck.query(-1)]
    check([], ck)
    ck.join({1: ["x", "y", "z"]})
    check([1], ck)
    cfa.append(ck.query(-1))
    ck.join({2: ["a", "b", "c"]})
    check([1, 2], ck)
    cfa.append(ck.query(-1))
    cfx = ck.query(-1)
    assert cfx.groups[1] == ("x", "y", "z"), f"wrong servers for gid 1: {cfx.groups[1]}"
    assert cfx.groups[2] == ("a", "b", "c"), f"wrong servers for gid 2: {cfx.groups[2]}"
    ck.leave([1])
    check([2], ck)
    cfa.append(ck.query(-1))
    ck.leave([2])
    cfa.append(ck.query(-1))
    check([], ck)
    return cfa


def concurrent_leave_join(cluster: CtrlerCluster, ck: CtrlerClerk) -> list[int]:
    """The lab's ten clerks at once, each: join gid+1000, join gid, leave gid+1000."""
    gids = [xi * 10 + 100 for xi in range(NPARA)]
    clerks = [cluster.make_clerk() for _ in range(NPARA)]
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            gid = gids[i]
            clerks[i].join({gid + 1000: [f"s{gid}a"]})
            clerks[i].join({gid: [f"s{gid}b"]})
            clerks[i].leave([gid + 1000])
        except BaseException as exc:
            errors.append(exc)

    run_all(one, NPARA)
    assert not errors, errors
    check(gids, ck)
    return gids


def run_all(target: Callable[[int], None], n: int) -> None:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a clerk did not finish within 60 s"


def servers_of(gid: int) -> list[str]:
    return [f"{gid}a", f"{gid}b", f"{gid}c"]


# ---- TestBasic ---------------------------------------------------------------------------------


def test_basic_leave_join(cluster: CtrlerCluster) -> None:
    cfa = basic_leave_join(cluster.make_clerk())
    assert [c.num for c in cfa] == [0, 1, 2, 3, 4]


def test_basic_historical_queries(cluster: CtrlerCluster) -> None:
    ck = cluster.make_clerk()
    cfa = basic_leave_join(ck)
    for s in range(NSERVERS):
        cluster.crash(s)
        for c in cfa:
            check_same_config(ck.query(c.num), c)
        cluster.restart(s)


def test_basic_move(cluster: CtrlerCluster) -> None:
    ck = cluster.make_clerk()
    gid3, gid4 = 503, 504
    ck.join({gid3: ["3a", "3b", "3c"]})
    ck.join({gid4: ["4a", "4b", "4c"]})
    for i in range(NSHARDS):
        cf = ck.query(-1)
        target = gid3 if i < NSHARDS // 2 else gid4
        ck.move(i, target)
        cf1 = ck.query(-1)
        assert cf1.num > cf.num, "Move should increase Config.Num"
        assert cf1.shards[i] == target, f"shard {i} not moved to {target}"
    cf2 = ck.query(-1)
    for i in range(NSHARDS):
        want = gid3 if i < NSHARDS // 2 else gid4
        assert cf2.shards[i] == want, f"shard {i} wrong group {cf2.shards[i]}, wanted {want}"
    ck.leave([gid3])
    ck.leave([gid4])
    check([], ck)


def test_basic_concurrent_leave_join(cluster: CtrlerCluster) -> None:
    ck = cluster.make_clerk()
    concurrent_leave_join(cluster, ck)
    # Every Join and Leave made one configuration: 3 per clerk.
    assert ck.query(-1).num == 3 * NPARA


def test_basic_minimal_transfer(cluster: CtrlerCluster) -> None:
    ck = cluster.make_clerk()
    old = concurrent_leave_join(cluster, ck)
    c1 = ck.query(-1)
    new = [NPARA + 1 + i for i in range(5)]
    for gid in new:
        ck.join({gid: servers_of(gid)})
    c2 = check(old + new, ck)
    # Ten groups hold the ten shards already: five more groups take none of them.
    assert assert_moved_only(c1, c2, lambda o, n: n in new, "Join()s") == 0
    # With fewer groups than shards, a Join moves shards only to the new group.
    ck.leave(old)
    before = check(new, ck)
    ck.join({900: servers_of(900)})
    after = check([*new, 900], ck)
    moved = assert_moved_only(before, after, lambda o, n: n == 900, "Join()")
    assert moved == after.shards.count(900) <= NSHARDS // 6 + 1


def test_basic_minimal_transfer_after_leave(cluster: CtrlerCluster) -> None:
    ck = cluster.make_clerk()
    old = concurrent_leave_join(cluster, ck)
    new = [NPARA + 1 + i for i in range(5)]
    for gid in new:
        ck.join({gid: servers_of(gid)})
    c2 = ck.query(-1)
    for gid in new:
        ck.leave([gid])
    c3 = check(old, ck)
    assert_moved_only(c2, c3, lambda o, n: o in new, "Leave()s")
    # Fewer groups than shards: only the leaving group's shards move.
    ck.leave(old[3:])
    before = check(old[:3], ck)
    ck.leave([old[0]])
    after = check(old[1:3], ck)
    moved = assert_moved_only(before, after, lambda o, n: o == old[0], "Leave()")
    assert moved == before.shards.count(old[0])


def test_minimal_again(cluster: CtrlerCluster) -> None:
    ck = cluster.make_clerk()
    ck.join({1: servers_of(1), 2: servers_of(2)})
    groups = [1, 2]
    for step, gid in enumerate([3, 4, 5, 6]):
        before = check(groups, ck)
        if step % 2 == 0:
            ck.join({gid: servers_of(gid)})
            groups.append(gid)
            after = check(groups, ck)
            moved = assert_moved_only(before, after, lambda o, n, g=gid: n == g, f"Join({gid})")
        else:
            gone = groups.pop(0)
            ck.leave([gone])
            after = check(groups, ck)
            moved = assert_moved_only(before, after, lambda o, n, g=gone: o == g, f"Leave({gone})")
        assert moved <= NSHARDS // 3 + 1, f"{moved} shards moved after one Join/Leave"


# ---- TestMulti ---------------------------------------------------------------------------------


def multi_leave_join(ck: CtrlerClerk) -> None:
    check([], ck)
    ck.join({1: ["x", "y", "z"], 2: ["a", "b", "c"]})
    check([1, 2], ck)
    ck.join({3: ["j", "k", "l"]})
    cfx = check([1, 2, 3], ck)
    assert cfx.groups == {1: ("x", "y", "z"), 2: ("a", "b", "c"), 3: ("j", "k", "l")}
    ck.leave([1, 3])
    cfx = check([2], ck)
    assert cfx.groups[2] == ("a", "b", "c")
    ck.leave([2])
    check([], ck)


def multi_concurrent(cluster: CtrlerCluster, ck: CtrlerClerk) -> list[int]:
    gids = [xi + 1000 for xi in range(NPARA)]
    clerks = [cluster.make_clerk() for _ in range(NPARA)]
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            gid = gids[i]
            clerks[i].join({gid: servers_of(gid), gid + 1000: [f"{gid + 1000}a"], gid + 2000: [f"{gid + 2000}a"]})
            clerks[i].leave([gid + 1000, gid + 2000])
        except BaseException as exc:
            errors.append(exc)

    run_all(one, NPARA)
    assert not errors, errors
    check(gids, ck)
    return gids


def test_multi_leave_join(cluster: CtrlerCluster) -> None:
    multi_leave_join(cluster.make_clerk())


def test_multi_concurrent_leave_join(cluster: CtrlerCluster) -> None:
    ck = cluster.make_clerk()
    multi_concurrent(cluster, ck)
    assert ck.query(-1).num == 2 * NPARA


def test_multi_minimal_transfer(cluster: CtrlerCluster) -> None:
    ck = cluster.make_clerk()
    ck.join({1: servers_of(1), 2: servers_of(2)})
    c1 = check([1, 2], ck)
    new = [NPARA + 1 + i for i in range(3)]
    ck.join({gid: servers_of(gid) for gid in new})
    c2 = check([1, 2, *new], ck)
    assert_moved_only(c1, c2, lambda o, n: n in new, "a multi-Join")
    gids = [1, 2, *new]
    ck.leave(gids)
    check([], ck)
    tens = multi_concurrent(cluster, ck)
    c3 = ck.query(-1)
    more = [NPARA + 1 + i for i in range(5)]
    ck.join({gid: servers_of(gid) for gid in more})
    c4 = check(tens + more, ck)
    assert_moved_only(c3, c4, lambda o, n: n in more, "multi-Join")


def test_multi_minimal_transfer_after_leave(cluster: CtrlerCluster) -> None:
    ck = cluster.make_clerk()
    ck.join({gid: servers_of(gid) for gid in (1, 2, 3, 4, 5)})
    c1 = check([1, 2, 3, 4, 5], ck)
    ck.leave([2, 4])
    c2 = check([1, 3, 5], ck)
    moved = assert_moved_only(c1, c2, lambda o, n: o in (2, 4), "a multi-Leave")
    assert moved == c1.shards.count(2) + c1.shards.count(4)


def test_multi_agree_config(cluster: CtrlerCluster) -> None:
    ck = cluster.make_clerk()
    multi_leave_join(ck)
    ck.join({gid: servers_of(gid) for gid in (7, 8, 9)})
    leader = cluster.wait_for_leader()
    c = ck.query(-1)
    cluster.crash(leader)
    cluster.wait_for_leader()
    assert cluster.leader() != leader
    check_same_config(c, ck.query(-1))
    survivors = cluster.make_clerk([j for j in range(NSERVERS) if j != leader])
    check_same_config(c, survivors.query(-1))


# ---- the rebalancing function itself (deterministic, even, minimal) ---------------------------


def test_rebalance_is_even_minimal_and_independent_of_order() -> None:
    shards = (0,) * NSHARDS
    groups: list[int] = []
    for gid in [5, 3, 9, 1, 7, 2, 8, 4, 6, 10, 11, 12]:
        groups.append(gid)
        nxt = rebalance(shards, list(reversed(groups)))
        assert nxt == rebalance(shards, sorted(groups)), "depends on the order of the groups"
        for s in range(NSHARDS):
            assert shards[s] == nxt[s] or shards[s] == 0 or nxt[s] == gid, "moved between old groups"
        held = [nxt.count(g) for g in groups]
        assert max(held) - min(held) <= 1 and sum(held) == NSHARDS
        shards = nxt


def test_a_groups_poll_is_answered_from_memory_by_any_server_that_has_the_configuration() -> None:
    """``NextConfig(num)``: configuration ``num`` once applied never changes, so a follower answers it as the
    leader would, without Raft; a server that has not applied it (the usual case: nothing new) says nothing."""
    from apps.kvraft.messages import Reply
    from apps.kvraft.server import ServerConfig
    from apps.shardctrler.messages import Join, NextConfig
    from apps.shardctrler.server import CtrlerServer

    told: list[tuple[str, Reply]] = []
    server = CtrlerServer(ServerConfig(0, ("x",), ""), raft=object(), answer=lambda to, reply: told.append((to, reply)))
    assert not server.leading
    server.on_receive(NextConfig(1, "tcp://g#kvraft"))
    assert told == []  # configuration 1 does not exist yet
    server.state.apply(Join({100: ("tcp://g",)}, 7, 1))
    server.on_receive(NextConfig(1, "tcp://g#kvraft"))
    server.on_receive(NextConfig(2, "tcp://g#kvraft"))
    server.on_receive(NextConfig("1", "tcp://g#kvraft"))  # type: ignore[arg-type]  # malformed: ignored
    assert [(to, r.ok, r.value) for to, r in told] == [("tcp://g#kvraft", True, server.state.configs[1])]
    assert told[0][1].value.shards == (100,) * NSHARDS
