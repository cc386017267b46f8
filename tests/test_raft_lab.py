"""Lab 3A and 3B: leader election and log replication, every test of the spec with its numbers.

Each peer is an OS process; the network between them is the transport's
fault injection; the harness (apps.raft.testing.Cluster) checks every apply.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from apps.raft.testing import Cluster

pytestmark = pytest.mark.slow  # a lab port: real processes for tens of seconds (see setup.cfg)

ELECTION_TIMEOUT = 1.0


def rand_cmd(rng: random.Random) -> int:
    return rng.randrange(1 << 31)


# ---- 3A: leader election -------------------------------------------------------------------


def test_initial_election_3a() -> None:
    with Cluster(3) as cfg:
        cfg.check_one_leader()
        time.sleep(0.05)
        term1 = cfg.check_terms()
        assert term1 >= 1, f"term is {term1}, but should be at least 1"
        time.sleep(2 * ELECTION_TIMEOUT)
        term2 = cfg.check_terms()
        if term1 != term2:
            print("warning: term changed even though there were no failures")
        cfg.check_one_leader()


def test_re_election_3a() -> None:
    with Cluster(3) as cfg:
        leader1 = cfg.check_one_leader()
        cfg.disconnect(leader1)
        cfg.check_one_leader()
        cfg.connect(leader1)
        leader2 = cfg.check_one_leader()
        cfg.disconnect(leader2)
        cfg.disconnect((leader2 + 1) % 3)
        time.sleep(2 * ELECTION_TIMEOUT)
        cfg.check_no_leader()
        cfg.connect((leader2 + 1) % 3)
        cfg.check_one_leader()
        cfg.connect(leader2)
        cfg.check_one_leader()


def test_many_elections_3a() -> None:
    rng = random.Random(7)
    with Cluster(7) as cfg:
        cfg.check_one_leader()
        for _ in range(9):
            i1, i2, i3 = (rng.randrange(7) for _ in range(3))
            for i in (i1, i2, i3):
                cfg.disconnect(i)
            cfg.check_one_leader()  # either the current leader lives on, or the rest elect one
            for i in (i1, i2, i3):
                cfg.connect(i)
        cfg.check_one_leader()


# ---- 3B: log replication ---------------------------------------------------------------------


def test_basic_agree_3b() -> None:
    with Cluster(3) as cfg:
        for index in range(1, 4):
            count, _ = cfg.n_committed(index)
            assert count == 0, "some have committed before start()"
            assert cfg.one(index * 100, 3) == index, f"got index {index} instead"


def test_rpc_bytes_3b() -> None:
    rng = random.Random(1)
    with Cluster(3) as cfg:
        cfg.one(99, 3)
        bytes0 = cfg.bytes_total()
        sent = 0
        for index in range(2, 12):
            cmd = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5000))
            assert cfg.one(cmd, 3) == index
            sent += len(cmd)
        got = cfg.bytes_total() - bytes0
        expected = 3 * sent
        assert got <= expected + 50_000, f"too many RPC bytes; got {got}, expected {expected}"


def test_follower_failure_3b() -> None:
    with Cluster(3) as cfg:
        cfg.one(101, 3)
        leader1 = cfg.check_one_leader()
        cfg.disconnect((leader1 + 1) % 3)
        cfg.one(102, 2)
        time.sleep(ELECTION_TIMEOUT)
        cfg.one(103, 2)
        leader2 = cfg.check_one_leader()
        cfg.disconnect((leader2 + 1) % 3)
        cfg.disconnect((leader2 + 2) % 3)
        index, _, ok = cfg.peer(leader2).start(104)
        assert ok, "leader rejected start()"
        assert index == 4, f"expected index 4, got {index}"
        time.sleep(2 * ELECTION_TIMEOUT)
        count, _ = cfg.n_committed(index)
        assert count == 0, f"{count} committed but no majority"


def test_leader_failure_3b() -> None:
    with Cluster(3) as cfg:
        cfg.one(101, 3)
        leader1 = cfg.check_one_leader()
        cfg.disconnect(leader1)
        cfg.one(102, 2)
        time.sleep(ELECTION_TIMEOUT)
        cfg.one(103, 2)
        leader2 = cfg.check_one_leader()
        cfg.disconnect(leader2)
        for i in range(3):
            cfg.peer(i).start(104)
        time.sleep(2 * ELECTION_TIMEOUT)
        count, _ = cfg.n_committed(4)
        assert count == 0, f"{count} committed but no majority"


def test_fail_agree_3b() -> None:
    with Cluster(3) as cfg:
        cfg.one(101, 3)
        leader = cfg.check_one_leader()
        cfg.disconnect((leader + 1) % 3)
        cfg.one(102, 2)
        cfg.one(103, 2)
        time.sleep(ELECTION_TIMEOUT)
        cfg.one(104, 2)
        cfg.one(105, 2)
        cfg.connect((leader + 1) % 3)
        cfg.one(106, 3, retry=True)
        time.sleep(ELECTION_TIMEOUT)
        cfg.one(107, 3, retry=True)


def test_fail_no_agree_3b() -> None:
    with Cluster(5) as cfg:
        cfg.one(10, 5)
        leader = cfg.check_one_leader()
        for k in (1, 2, 3):
            cfg.disconnect((leader + k) % 5)
        index, _, ok = cfg.peer(leader).start(20)
        assert ok, "leader rejected start()"
        assert index == 2, f"expected index 2, got {index}"
        time.sleep(2 * ELECTION_TIMEOUT)
        count, _ = cfg.n_committed(index)
        assert count == 0, f"{count} committed but no majority"
        for k in (1, 2, 3):
            cfg.connect((leader + k) % 5)
        leader2 = cfg.check_one_leader()
        index2, _, ok2 = cfg.peer(leader2).start(30)
        assert ok2, "leader2 rejected start()"
        assert index2 in (2, 3), f"unexpected index {index2}"
        cfg.one(1000, 5, retry=True)


def test_concurrent_starts_3b() -> None:
    with Cluster(3) as cfg:
        for attempt in range(5):
            if attempt > 0:
                time.sleep(3)  # give the solution some time to settle
            leader = cfg.check_one_leader()
            _, term, ok = cfg.peer(leader).start(1)
            if not ok:
                continue  # leader moved on really quickly
            results: list[int | None] = [None] * 5

            def starter(i: int) -> None:
                index, term1, ok1 = cfg.peer(leader).start(100 + i)
                if ok1 and term1 == term:
                    results[i] = index

            threads = [threading.Thread(target=starter, args=(i,)) for i in range(5)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=10)
            if any(cfg.peer(j).get_state()[0] != term for j in range(3)):
                continue  # term changed: cannot expect low RPC counts
            if any(r is None for r in results):
                continue
            commands = []
            failed = False
            for index in results:
                cmd = cfg.wait(index, 3, term)
                if cmd == -1:
                    failed = True  # peers have moved on to later terms
                    break
                commands.append(cmd)
            if failed:
                continue
            assert sorted(commands) == [100, 101, 102, 103, 104], f"cmds: {commands}"
            return
        pytest.fail("term changed too often")


def test_rejoin_3b() -> None:
    with Cluster(3) as cfg:
        cfg.one(101, 3, retry=True)
        leader1 = cfg.check_one_leader()
        cfg.disconnect(leader1)
        for cmd in (102, 103, 104):
            cfg.peer(leader1).start(cmd)  # uncommittable: the old leader is alone
        cfg.one(103, 2, retry=True)
        leader2 = cfg.check_one_leader()
        cfg.disconnect(leader2)
        cfg.connect(leader1)
        cfg.one(104, 2, retry=True)
        cfg.connect(leader2)
        cfg.one(105, 3, retry=True)


def test_backup_3b() -> None:
    rng = random.Random(2)
    with Cluster(5) as cfg:
        cfg.one(rand_cmd(rng), 5, retry=True)
        leader1 = cfg.check_one_leader()
        # Put the leader and one follower in a partition.
        for k in (2, 3, 4):
            cfg.disconnect((leader1 + k) % 5)
        for _ in range(50):
            cfg.peer(leader1).start(rand_cmd(rng))  # lots of commands that will not commit
        time.sleep(ELECTION_TIMEOUT / 2)
        cfg.disconnect(leader1)
        cfg.disconnect((leader1 + 1) % 5)
        for k in (2, 3, 4):  # allow the other partition to recover
            cfg.connect((leader1 + k) % 5)
        for _ in range(50):
            cfg.one(rand_cmd(rng), 3, retry=True)
        leader2 = cfg.check_one_leader()
        other = (leader1 + 2) % 5
        if leader2 == other:
            other = (leader2 + 1) % 5
        cfg.disconnect(other)
        for _ in range(50):
            cfg.peer(leader2).start(rand_cmd(rng))  # more commands that will not commit
        time.sleep(ELECTION_TIMEOUT / 2)
        for i in range(5):  # bring the original leader back to life
            cfg.disconnect(i)
        cfg.connect(leader1)
        cfg.connect((leader1 + 1) % 5)
        cfg.connect(other)
        for _ in range(50):
            cfg.one(rand_cmd(rng), 3, retry=True)
        for i in range(5):
            cfg.connect(i)
        cfg.one(rand_cmd(rng), 5, retry=True)


def test_count_3b() -> None:
    rng = random.Random(3)
    with Cluster(3) as cfg:
        cfg.check_one_leader()
        total1 = cfg.rpc_total()
        assert 1 <= total1 <= 30, f"too many or few RPCs ({total1}) to elect initial leader"
        success = False
        for attempt in range(5):
            if attempt > 0:
                time.sleep(3)
            leader = cfg.check_one_leader()
            total1 = cfg.rpc_total()
            iters = 10
            start_index, term, ok = cfg.peer(leader).start(1)
            if not ok:
                continue
            cmds = []
            moved_on = False
            for i in range(1, iters + 2):
                x = rand_cmd(rng)
                cmds.append(x)
                index1, term1, ok = cfg.peer(leader).start(x)
                if term1 != term or not ok:
                    moved_on = True
                    break
                assert start_index + i == index1, "start() failed"
            if moved_on:
                continue
            for i in range(1, iters + 1):
                cmd = cfg.wait(start_index + i, 3, term)
                if cmd == -1:
                    moved_on = True
                    break
                assert cmd == cmds[i - 1], f"wrong value {cmd} committed for index {start_index + i}; expected {cmds}"
            if moved_on:
                continue
            if any(cfg.peer(j).get_state()[0] != term for j in range(3)):
                continue
            total2 = cfg.rpc_total()
            assert total2 - total1 <= (iters + 1 + 3) * 3, f"too many RPCs ({total2 - total1}) for {iters} entries"
            success = True
            break
        assert success, "term changed too often"
        time.sleep(ELECTION_TIMEOUT)
        total3 = cfg.rpc_total()
        time.sleep(ELECTION_TIMEOUT)
        total3b = cfg.rpc_total()
        assert total3b - total3 <= 3 * 20, f"too many RPCs ({total3b - total3}) for 1 second of idleness"
