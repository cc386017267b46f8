"""Lab 5 (5A, 5B and both challenges), every sharded-KV scenario of the spec, on real processes and sockets.

A controller of 3 servers and 3 groups of 3 (gids 100, 101, 102): twelve OS
processes, each a Raft peer with its service beside it; crashes are SIGKILL
and restarts read the data directory; the unreliable network is the
transport's fault rules. Keys "0".."9" hit every shard. The pauses inside a
scenario (between joins, leaves and restarts while clients append) are the
lab's schedule of the workload, not waits for an outcome: outcomes are
awaited as events (a Get that returns, a group that reached a
configuration).
"""

from __future__ import annotations

import random
import string
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from apps.kvraft.client import Clerk as GroupClerk
from apps.kvraft.messages import Append
from apps.kvraft.server import SERVER_NAME
from apps.kvsrv.client import KVUnavailable
from apps.shardctrler.testing import CtrlerCluster
from apps.shardkv import key2shard
from apps.shardkv.messages import DeleteAck, DeleteRequest, PullShards, ShardData
from apps.shardkv.testing import ShardCluster
from tests.helpers import wait_until

pytestmark = pytest.mark.slow  # a lab port: real processes for tens of seconds (see setup.cfg)

N = 10
OUTCOME = 60.0
"""Seconds an operation the scenario expects to complete may take (a busy shared machine), before the test fails."""


def randstring(n: int, rng: random.Random | None = None) -> str:
    return "".join((rng or random).choice(string.ascii_letters) for _ in range(n))


def check(ck: object, key: str, value: str) -> None:
    got = ck.get(key)  # type: ignore[attr-defined]
    assert got == value, f"Get({key!r}): expected {value!r}, received {got!r}"


def put_all(ck: object, n: int = N, size: int = 5, value: str | None = None) -> tuple[list[str], list[str]]:
    ka = [str(i) for i in range(n)]
    va = [value if value is not None else randstring(size) for _ in range(n)]
    for k, v in zip(ka, va, strict=True):
        ck.put(k, v)  # type: ignore[attr-defined]
    return ka, va


def check_and_append(ck: object, ka: list[str], va: list[str], rounds: int = 1, size: int = 5) -> None:
    for ii in range(len(ka) * rounds):
        i = ii % len(ka)
        check(ck, ka[i], va[i])
        x = randstring(size)
        ck.append(ka[i], x)  # type: ignore[attr-defined]
        va[i] += x


class Appenders:
    """One client per key appending until stopped (the lab's ff goroutines); the expected values kept per key."""

    def __init__(self, cluster: ShardCluster, ka: list[str], va: list[str], pause: float = 0.0, size: int = 5) -> None:
        self.ka, self.va = ka, va
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._run, args=(cluster.make_clerk(), i, pause, size), daemon=True) for i in range(len(ka))
        ]
        for t in self.threads:
            t.start()

    def _run(self, ck: object, i: int, pause: float, size: int) -> None:
        try:
            while not self.stop.is_set():
                x = randstring(size)
                ck.append(self.ka[i], x)  # type: ignore[attr-defined]
                self.va[i] += x
                if pause:
                    self.stop.wait(pause)
        except BaseException as exc:
            self.errors.append(exc)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=OUTCOME)
            assert not t.is_alive(), "a client did not finish its last append"
        assert not self.errors, self.errors[:3]


@pytest.fixture
def make_cluster() -> Iterator[Callable[..., ShardCluster]]:
    made: list[ShardCluster] = []

    def make(unreliable: bool = False, maxraftstate: int = -1) -> ShardCluster:
        cluster = ShardCluster(3, 3, maxraftstate=maxraftstate, unreliable=unreliable)
        made.append(cluster)
        return cluster.__enter__()

    yield make
    for cluster in made:
        cluster.cleanup()


def gets_in_threads(ck_of: Callable[[int], object], ka: list[str]) -> tuple[list[str | None], threading.Semaphore, list[threading.Thread]]:
    got: list[str | None] = [None] * len(ka)
    done = threading.Semaphore(0)

    def one(i: int) -> None:
        try:
            got[i] = ck_of(i).get(ka[i])  # type: ignore[attr-defined]
        except KVUnavailable:
            return
        done.release()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(ka))]
    for t in threads:
        t.start()
    return got, done, threads


# ---- 5A ----------------------------------------------------------------------------------------


def test_static_shards_5a(make_cluster: Callable[..., ShardCluster]) -> None:
    cluster = make_cluster()
    ck = cluster.make_clerk()
    cluster.join(0)
    cluster.join(1)
    ka, va = put_all(ck, size=20)
    for k, v in zip(ka, va, strict=True):
        check(ck, k, v)
    # The data really is sharded: with group 101 down, only group 100's Gets complete.
    cluster.shutdown_group(1)
    cluster.check_logs()
    owned = cluster.mck.query(-1).shards_of(cluster.gid(0))
    assert len(owned) == 5
    got, done, threads = gets_in_threads(lambda i: cluster.make_clerk(), ka)
    for _ in range(5):
        assert done.acquire(timeout=OUTCOME), "a Get of the live group's shards did not complete"
    assert not done.acquire(timeout=2.0), "a Get of the dead group's shards completed"
    for i, k in enumerate(ka):
        if key2shard(k) in owned:
            assert got[i] == va[i], f"Get({k!r}) = {got[i]!r}, expected {va[i]!r}"
        else:
            assert got[i] is None
    cluster.start_group(1)
    for t in threads:
        t.join(timeout=OUTCOME)
        assert not t.is_alive(), "a Get did not complete after its group restarted"
    assert got == va
    for k, v in zip(ka, va, strict=True):
        check(ck, k, v)


def test_rejection_5a(make_cluster: Callable[..., ShardCluster]) -> None:
    cluster = make_cluster()
    ck = cluster.make_clerk()
    cluster.join(0)
    cluster.join(1)
    ka, va = put_all(ck, size=20)
    for k, v in zip(ka, va, strict=True):
        check(ck, k, v)
    owned = cluster.mck.query(-1).shards_of(cluster.gid(0))
    # A second controller that claims group 100 owns every shard.
    with CtrlerCluster(3) as second:
        second.make_clerk().join({cluster.gid(0): cluster.servers(0)})
        clerks = [cluster.make_clerk(record=False, ctrlers=second.endpoints, give_up_after=8.0) for _ in ka]
        got, done, threads = gets_in_threads(lambda i: clerks[i], ka)
        for _ in range(5):
            assert done.acquire(timeout=OUTCOME), "a Get of group 100's own shards did not complete"
        for t in threads:  # the others are refused (WrongGroup) until their clerks give up
            t.join(timeout=OUTCOME)
    for i, k in enumerate(ka):
        if key2shard(k) in owned:
            assert got[i] == va[i], f"Get({k!r}) = {got[i]!r}, expected {va[i]!r}"
        else:
            assert got[i] is None, f"group 100 answered Get({k!r}) of a shard it does not own: {got[i]!r}"


# ---- 5B ----------------------------------------------------------------------------------------


def test_join_leave_5b(make_cluster: Callable[..., ShardCluster]) -> None:
    cluster = make_cluster()
    ck = cluster.make_clerk()
    cluster.join(0)
    ka, va = put_all(ck)
    for k, v in zip(ka, va, strict=True):
        check(ck, k, v)
    cluster.join(1)
    check_and_append(ck, ka, va)
    cluster.leave(0)
    check_and_append(ck, ka, va)
    # The lab sleeps a second "to allow time for shards to transfer": wait for that event instead (a
    # clerk with an older configuration may have been served by 100 just before it gave the shards away).
    cluster.wait_caught_up(1)
    cluster.check_logs()
    cluster.shutdown_group(0)
    for k, v in zip(ka, va, strict=True):
        check(ck, k, v)


def test_snapshot_5b(make_cluster: Callable[..., ShardCluster]) -> None:
    cluster = make_cluster(maxraftstate=1000)
    ck = cluster.make_clerk()
    cluster.join(0)
    ka, va = put_all(ck, n=30, size=20)
    for k, v in zip(ka, va, strict=True):
        check(ck, k, v)
    cluster.join(1)
    cluster.join(2)
    cluster.leave(0)
    check_and_append(ck, ka, va, size=20)
    cluster.leave(1)
    cluster.join(0)
    check_and_append(ck, ka, va, size=20)
    for g in range(3):
        cluster.wait_caught_up(g)
    cluster.check_logs()
    for g in range(3):
        cluster.shutdown_group(g)
    for g in range(3):
        cluster.start_group(g)
    for k, v in zip(ka, va, strict=True):
        check(ck, k, v)


def test_miss_change_5b(make_cluster: Callable[..., ShardCluster]) -> None:
    cluster = make_cluster(maxraftstate=1000)
    ck = cluster.make_clerk()
    cluster.join(0)
    ka, va = put_all(ck)
    for k, v in zip(ka, va, strict=True):
        check(ck, k, v)
    cluster.join(1)
    for g in range(3):
        cluster.shutdown_server(g, 0)
    missed_from = cluster.mck.query(-1).num
    cluster.join(2)
    cluster.leave(1)
    cluster.leave(0)
    check_and_append(ck, ka, va)
    cluster.join(1)
    check_and_append(ck, ka, va)
    for g in range(3):
        cluster.start_server(g, 0)
    check_and_append(ck, ka, va)
    # Each restarted server catches up through the configurations it missed (four of them).
    for g in range(3):
        assert cluster.wait_caught_up(g) >= missed_from + 4
    for g in range(3):
        cluster.shutdown_server(g, 1)
    cluster.join(0)
    cluster.leave(2)
    check_and_append(ck, ka, va)
    for g in range(3):
        cluster.start_server(g, 1)
    for k, v in zip(ka, va, strict=True):
        check(ck, k, v)


def test_concurrent1_5b(make_cluster: Callable[..., ShardCluster]) -> None:
    cluster = make_cluster(maxraftstate=100)
    ck = cluster.make_clerk()
    cluster.join(0)
    ka, va = put_all(ck)
    clients = Appenders(cluster, ka, va, pause=0.01)
    time.sleep(0.15)
    cluster.join(1)
    time.sleep(0.5)
    cluster.join(2)
    time.sleep(0.5)
    cluster.leave(0)
    cluster.shutdown_group(0)
    time.sleep(0.1)
    cluster.shutdown_group(1)
    time.sleep(0.1)
    cluster.shutdown_group(2)
    cluster.leave(2)
    time.sleep(0.1)
    for g in range(3):
        cluster.start_group(g)
    time.sleep(0.1)
    cluster.join(0)
    cluster.leave(1)
    time.sleep(0.5)
    cluster.join(1)
    time.sleep(1.0)
    clients.finish()
    for k, v in zip(ka, va, strict=True):
        check(ck, k, v)


def test_concurrent2_5b(make_cluster: Callable[..., ShardCluster]) -> None:
    cluster = make_cluster()
    ck = cluster.make_clerk()
    cluster.join(1)
    cluster.join(0)
    cluster.join(2)
    ka, va = put_all(ck, size=1)
    clients = Appenders(cluster, ka, va, pause=0.05, size=1)
    cluster.leave(0)
    cluster.leave(2)
    time.sleep(3.0)
    cluster.join(0)
    cluster.join(2)
    cluster.leave(1)
    time.sleep(3.0)
    cluster.join(1)
    cluster.leave(0)
    cluster.leave(2)
    time.sleep(3.0)
    cluster.shutdown_group(1)
    cluster.shutdown_group(2)
    time.sleep(1.0)
    cluster.start_group(1)
    cluster.start_group(2)
    time.sleep(2.0)
    clients.finish()
    for k, v in zip(ka, va, strict=True):
        check(ck, k, v)


def test_concurrent3_5b(make_cluster: Callable[..., ShardCluster]) -> None:
    cluster = make_cluster(maxraftstate=300)
    ck = cluster.make_clerk()
    cluster.join(0)
    ka, va = put_all(ck, size=1)
    clients = Appenders(cluster, ka, va, size=1)
    rng = random.Random()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 12.0:
        cluster.join(2)
        cluster.join(1)
        time.sleep(rng.randrange(900) / 1000)
        for g in range(3):
            cluster.shutdown_group(g)
        for g in range(3):
            cluster.start_group(g)
        time.sleep(rng.randrange(900) / 1000)
        cluster.leave(1)
        cluster.leave(2)
        time.sleep(rng.randrange(900) / 1000)
    time.sleep(2.0)
    clients.finish()
    for k, v in zip(ka, va, strict=True):
        check(ck, k, v)


def test_unreliable1_5b(make_cluster: Callable[..., ShardCluster]) -> None:
    cluster = make_cluster(unreliable=True, maxraftstate=100)
    ck = cluster.make_clerk()
    cluster.join(0)
    ka, va = put_all(ck)
    cluster.join(1)
    cluster.join(2)
    cluster.leave(0)
    check_and_append(ck, ka, va, rounds=2)
    cluster.join(0)
    cluster.leave(1)
    for ii in range(N * 2):
        i = ii % N
        check(ck, ka[i], va[i])


def unreliable_schedule(cluster: ShardCluster) -> None:
    time.sleep(0.15)
    cluster.join(1)
    time.sleep(0.5)
    cluster.join(2)
    time.sleep(0.5)
    cluster.leave(0)
    time.sleep(0.5)
    cluster.leave(1)
    time.sleep(0.5)
    cluster.join(1)
    cluster.join(0)
    time.sleep(2.0)


def test_unreliable2_5b(make_cluster: Callable[..., ShardCluster]) -> None:
    cluster = make_cluster(unreliable=True, maxraftstate=100)
    ck = cluster.make_clerk()
    cluster.join(0)
    ka, va = put_all(ck)
    clients = Appenders(cluster, ka, va)
    unreliable_schedule(cluster)
    clients.stop.set()
    cluster.set_unreliable(False)
    clients.finish()
    for k, v in zip(ka, va, strict=True):
        check(ck, k, v)


def test_unreliable3_5b(make_cluster: Callable[..., ShardCluster]) -> None:
    cluster = make_cluster(unreliable=True, maxraftstate=100)
    ck = cluster.make_clerk()
    cluster.join(0)
    ka, _ = put_all(ck)
    stop = threading.Event()
    errors: list[BaseException] = []

    def client(cid: int) -> None:
        rng = random.Random(cid)
        ck1 = cluster.make_clerk()
        try:
            while not stop.is_set():
                key = ka[rng.randrange(N)]
                nv = randstring(5, rng)
                roll = rng.randrange(1000)
                if roll < 500:
                    ck1.append(key, nv)
                elif roll < 600:
                    ck1.put(key, nv)
                else:
                    ck1.get(key)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(N)]
    for t in threads:
        t.start()
    unreliable_schedule(cluster)
    stop.set()
    cluster.set_unreliable(False)
    for t in threads:
        t.join(timeout=OUTCOME)
        assert not t.is_alive(), "a client did not finish its last operation"
    assert not errors, errors[:3]
    result = cluster.check_linearizable(timeout=120.0)
    assert result.verdict.name == "OK"


# ---- challenges --------------------------------------------------------------------------------


def test_challenge1_delete(make_cluster: Callable[..., ShardCluster]) -> None:
    cluster = make_cluster(maxraftstate=1)  # a snapshot after every entry
    ck = cluster.make_clerk(record=False)
    cluster.join(0)
    n = 30  # 30,000 bytes of values
    ka = [str(i) for i in range(n)]
    va = [randstring(1000) for _ in range(n)]
    for k, v in zip(ka, va, strict=True):
        ck.put(k, v)
    for i in range(3):
        check(ck, ka[i], va[i])

    def settle_and_check() -> None:
        """Every group caught up with the latest configuration, then the first keys read back."""
        for g in range(3):
            cluster.wait_caught_up(g)
        for i in range(3):
            check(ck, ka[i], va[i])

    for _ in range(2):
        cluster.join(1)
        cluster.leave(0)
        cluster.join(2)
        settle_and_check()
        cluster.leave(1)
        cluster.join(0)
        cluster.leave(2)
        settle_and_check()
    cluster.join(1)
    cluster.join(2)
    settle_and_check()
    # Every group is in the last configuration; the shards given away are deleted once their new owner
    # has confirmed, which the groups do within a few polling rounds: wait for that event, bounded.
    expected = 3 * (((n - 3) * 1000) + 2 * 3 * 1000 + 6000)
    deadline = time.monotonic() + OUTCOME
    total = cluster.persisted_bytes()
    while total > expected and time.monotonic() < deadline:
        time.sleep(0.2)
        total = cluster.persisted_bytes()
    assert total <= expected, f"snapshot + persisted Raft state are too big: {total} > {expected}"
    for k, v in zip(ka, va, strict=True):
        check(ck, k, v)


def test_challenge2_unaffected(make_cluster: Callable[..., ShardCluster]) -> None:
    cluster = make_cluster(unreliable=True, maxraftstate=100)
    ck = cluster.make_clerk()
    cluster.join(0)
    ka, va = put_all(ck, value="100")
    cluster.join(1)
    c = cluster.mck.query(-1)
    owned = {s for s in range(10) if c.shards[s] == cluster.gid(1)}
    for i in range(N):
        if key2shard(ka[i]) in owned:
            va[i] = "101"
            ck.put(ka[i], va[i])
    # The lab waits a second for the migration to complete: wait for the event (101 holds every shard it owns).
    cluster.wait_caught_up(1)
    cluster.shutdown_group(0)
    cluster.leave(0)  # 101 cannot get 100's other shards: 100 is dead
    for i in range(N):
        if key2shard(ka[i]) in owned:
            check(ck, ka[i], va[i])
            ck.put(ka[i], va[i] + "-1")
            check(ck, ka[i], va[i] + "-1")


def test_challenge2_partial(make_cluster: Callable[..., ShardCluster]) -> None:
    cluster = make_cluster(unreliable=True, maxraftstate=100)
    ck = cluster.make_clerk()
    cluster.joinm([0, 1, 2])
    ka, va = put_all(ck, value="100")
    c = cluster.mck.query(-1)
    owned = {s for s in range(10) if c.shards[s] == cluster.gid(2)}
    cluster.shutdown_group(0)
    # 101 can get 102's shards, never 100's: it must serve the ones that arrived.
    cluster.leavem([0, 2])
    for i in range(N):
        if key2shard(ka[i]) in owned:
            check(ck, ka[i], va[i])
            ck.put(ka[i], va[i] + "-2")
            check(ck, ka[i], va[i] + "-2")


# ---- beyond the lab ----------------------------------------------------------------------------


def test_a_write_retried_at_the_new_owner_after_its_shard_moved_is_applied_once(make_cluster: Callable[..., ShardCluster]) -> None:
    """The duplicate table moves with its shard: the same request (client, seq) sent again to the new owner
    (as a clerk whose reply was lost would) is answered from the table, not applied a second time."""
    cluster = make_cluster()
    cluster.join(0)
    ck = cluster.make_clerk(record=False)
    ck.put("a", "x")
    op = Append("a", "y", 12345, 1)
    assert GroupClerk(cluster.servers(0), system=cluster._system)._call(op) == "x"
    cluster.join(1)
    shard = key2shard("a")
    if cluster.mck.query(-1).shards[shard] != cluster.gid(1):
        cluster.mck.move(shard, cluster.gid(1))
    cluster.wait_caught_up(1)
    assert GroupClerk(cluster.servers(1), system=cluster._system)._call(op) == "x"
    assert ck.get("a") == "xy"


def test_malformed_group_messages_are_ignored_and_the_servers_go_on(make_cluster: Callable[..., ShardCluster]) -> None:
    cluster = make_cluster()
    cluster.join(0)
    ck = cluster.make_clerk(record=False)
    ck.put("a", "1")
    group = cluster.groups[0]
    pids = [group.pid(i) for i in range(3)]
    num = cluster.mck.query(-1).num
    for ep in group.endpoints:
        ref = cluster._system.ref(ep, SERVER_NAME)
        ref.tell(ShardData(num, {3: ("not a dict", None)}))  # type: ignore[dict-item]
        ref.tell(ShardData(num, {"x": ({}, {})}))  # type: ignore[dict-item]
        ref.tell(PullShards("one", (1,), "nowhere"))  # type: ignore[arg-type]
        ref.tell(DeleteRequest(num, ("bad",), "ipc://nowhere#x"))  # type: ignore[arg-type]
        ref.tell(DeleteAck(num, 7))  # type: ignore[arg-type]
    ck.put("a", "2")
    assert ck.get("a") == "2"
    assert [group.pid(i) for i in range(3)] == pids, "a server process was restarted"
    # Every server goes on to apply the configuration (a follower may be a few entries behind the leader).
    assert wait_until(lambda: all(group.shard_status(i)[0] == num for i in range(3)), 30), [group.shard_status(i) for i in range(3)]


def test_the_harness_tells_the_controller_too_that_damage_is_done_on_purpose() -> None:
    """A soak's disk nemesis damages controller journals as well: their refusals must be reported as expected
    (one INFO line), as the groups' are, while a broken variant's fields stay the groups' alone."""
    cluster = ShardCluster(1, 3, server_fields={"damage_expected": True, "apply_log": "/nonexistent"})
    try:
        assert cluster.ctrler.server_fields == {"damage_expected": True}
        assert cluster.server_fields == {"damage_expected": True, "apply_log": "/nonexistent"}
    finally:
        cluster.cleanup()
