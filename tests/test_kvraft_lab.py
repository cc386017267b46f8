"""Lab 4 (4A and 4B), every scenario of the spec: the replicated KV service on real processes and sockets.

Each server is its own OS process (a Raft peer and the KV state machine),
crashes are SIGKILL, partitions and the unreliable network are the
transport's fault rules. Every clerk operation is recorded and the whole
history must be linearizable, with a verdict (no "unknown"). Beyond the lab:
a leader SIGKILLed in the middle of a stream of appends, a deposed leader in
a minority whose Gets never return (ReadIndex safety), and the log-based read.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from apps.kvraft.testing import KVCluster
from tests.helpers import ELECTION_TIMEOUT, MAXRAFTSTATE, assert_appends_once_in_order, element, generic

pytestmark = pytest.mark.slow  # a lab port: real processes for tens of seconds (see setup.cfg)


def speed(maxraftstate: int) -> None:
    with KVCluster(3, maxraftstate=maxraftstate) as cluster:
        ck = cluster.make_clerk(record=False)
        ck.get("x")  # a leader exists
        n = 1000
        started = time.monotonic()
        for i in range(n):
            ck.append("x", f"x 0 {i} y")
        average = (time.monotonic() - started) / n
        value = ck.get("x")
        assert_appends_once_in_order(value, 0, n)
        print(f"\n{n} sequential appends, 3 servers, fsync on: average {average * 1000:.2f} ms")
        assert average <= 0.1 / 3, f"average append {average * 1000:.1f} ms > the lab's 33 ms"


# ---- 4A ----------------------------------------------------------------------------------------------


def test_basic_4a(tmp_path: Path) -> None:
    generic(tmp_path, 1, 5)


def test_speed_4a() -> None:
    speed(-1)


def test_concurrent_4a(tmp_path: Path) -> None:
    generic(tmp_path, 5, 5)


def test_unreliable_4a(tmp_path: Path) -> None:
    generic(tmp_path, 5, 5, unreliable=True)


def test_unreliable_one_key_4a() -> None:
    with KVCluster(3, unreliable=True) as cluster:
        cluster.make_clerk().put("k", "")

        def client(cid: int) -> None:
            ck = cluster.make_clerk()
            for n in range(10):
                ck.append("k", element(cid, n))

        threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
            assert not t.is_alive(), "a client did not finish its appends"
        value = cluster.make_clerk().get("k")
        for cid in range(5):
            assert_appends_once_in_order(value, cid, 10)
        assert len(value) == sum(len(element(c, n)) for c in range(5) for n in range(10))
        cluster.check_linearizable()


def test_one_partition_4a() -> None:
    with KVCluster(5) as cluster:
        ck = cluster.make_clerk()
        ck.put("1", "13")
        leader = cluster.wait_for_leader()
        minority = [leader, (leader + 1) % 5]
        majority = [i for i in range(5) if i not in minority]
        cluster.partition([majority, minority])
        ckp1 = cluster.make_clerk(majority)
        ckp2a = cluster.make_clerk(minority)
        ckp2b = cluster.make_clerk(minority)
        ckp1.put("1", "14")
        assert ckp1.get("1") == "14"
        done_put, done_get = threading.Event(), threading.Event()
        got: list[str] = []

        def put15() -> None:
            ckp2a.put("1", "15")
            done_put.set()

        def get_minority() -> None:
            got.append(ckp2b.get("1"))
            done_get.set()

        threads = [threading.Thread(target=put15, daemon=True), threading.Thread(target=get_minority, daemon=True)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # the lab's window in which neither may complete
        assert not done_put.is_set(), "a Put completed in the minority"
        assert not done_get.is_set(), "a Get completed in the minority"
        assert ckp1.get("1") == "14"
        ckp1.put("1", "16")
        assert ckp1.get("1") == "16"
        assert not done_put.is_set() and not done_get.is_set(), "an operation completed in the minority"
        cluster.heal()
        cluster.connect_clerk(ckp2a)
        cluster.connect_clerk(ckp2b)
        time.sleep(ELECTION_TIMEOUT)  # the lab's pause before the deadline starts
        assert done_put.wait(3.0), "the minority's Put did not complete within 3 s of the heal"
        assert done_get.wait(3.0), "the minority's Get did not complete within 3 s of the heal"
        assert cluster.make_clerk().get("1") == "15"
        for t in threads:
            t.join(timeout=5)
        cluster.check_linearizable()


def test_many_partitions_one_client_4a(tmp_path: Path) -> None:
    generic(tmp_path, 1, 5, partitions=True)


def test_many_partitions_many_clients_4a(tmp_path: Path) -> None:
    generic(tmp_path, 5, 5, partitions=True)


def test_persist_one_client_4a(tmp_path: Path) -> None:
    generic(tmp_path, 1, 5, crash=True)


def test_persist_concurrent_4a(tmp_path: Path) -> None:
    generic(tmp_path, 5, 5, crash=True)


def test_persist_concurrent_unreliable_4a(tmp_path: Path) -> None:
    generic(tmp_path, 5, 5, unreliable=True, crash=True)


def test_persist_partition_4a(tmp_path: Path) -> None:
    generic(tmp_path, 5, 5, crash=True, partitions=True)


def test_persist_partition_unreliable_4a(tmp_path: Path) -> None:
    generic(tmp_path, 5, 5, unreliable=True, crash=True, partitions=True)


def test_persist_partition_unreliable_linearizable_4a(tmp_path: Path) -> None:
    generic(tmp_path, 15, 7, unreliable=True, crash=True, partitions=True, randomkeys=True)


# ---- 4B ----------------------------------------------------------------------------------------------


def test_snapshot_rpc_4b() -> None:
    with KVCluster(3, maxraftstate=MAXRAFTSTATE) as cluster:
        ck = cluster.make_clerk()
        ck.put("a", "A")
        assert ck.get("a") == "A"
        cluster.partition([[0, 1], [2]])
        ck1 = cluster.make_clerk([0, 1])
        for i in range(50):
            ck1.put(str(i), str(i))
        time.sleep(ELECTION_TIMEOUT)  # the lab's pause
        ck1.put("b", "B")
        size = cluster.max_log_size()
        assert size <= 8 * MAXRAFTSTATE, f"persisted raft state {size}: the majority did not trim its log"
        cluster.partition([[0, 2], [1]])
        ck2 = cluster.make_clerk([0, 2])
        ck2.put("c", "C")
        ck2.put("d", "D")
        assert ck2.get("a") == "A"
        assert ck2.get("b") == "B"
        assert ck2.get("1") == "1"
        assert ck2.get("49") == "49"
        cluster.heal()
        ck3 = cluster.make_clerk()
        ck3.put("e", "E")
        assert ck3.get("c") == "C"
        assert ck3.get("e") == "E"
        assert ck3.get("1") == "1"
        cluster.check_linearizable()


def test_snapshot_size_4b() -> None:
    with KVCluster(3, maxraftstate=MAXRAFTSTATE) as cluster:
        ck = cluster.make_clerk()
        for _ in range(200):
            ck.put("x", "0")
            assert ck.get("x") == "0"
            ck.put("x", "1")
            assert ck.get("x") == "1"
        size = cluster.max_log_size()
        assert size <= 8 * MAXRAFTSTATE, f"persisted raft state {size} > {8 * MAXRAFTSTATE}"
        snap = cluster.max_snapshot_size()
        assert 0 < snap <= 500, f"snapshot of {snap} bytes (want at most 500)"


def test_speed_4b() -> None:
    speed(MAXRAFTSTATE)


def test_snapshot_recover_4b(tmp_path: Path) -> None:
    generic(tmp_path, 1, 5, crash=True, maxraftstate=MAXRAFTSTATE)


def test_snapshot_recover_many_clients_4b(tmp_path: Path) -> None:
    generic(tmp_path, 20, 5, crash=True, maxraftstate=MAXRAFTSTATE)


def test_snapshot_unreliable_4b(tmp_path: Path) -> None:
    generic(tmp_path, 5, 5, unreliable=True, maxraftstate=MAXRAFTSTATE)


def test_snapshot_unreliable_recover_4b(tmp_path: Path) -> None:
    generic(tmp_path, 5, 5, unreliable=True, crash=True, maxraftstate=MAXRAFTSTATE)


def test_snapshot_unreliable_recover_concurrent_partition_4b(tmp_path: Path) -> None:
    generic(tmp_path, 5, 5, unreliable=True, crash=True, partitions=True, maxraftstate=MAXRAFTSTATE)


def test_snapshot_unreliable_recover_concurrent_partition_linearizable_4b(tmp_path: Path) -> None:
    generic(tmp_path, 15, 7, unreliable=True, crash=True, partitions=True, maxraftstate=MAXRAFTSTATE, randomkeys=True)
