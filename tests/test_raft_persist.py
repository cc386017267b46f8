"""Lab 3C, persistence: crashes are SIGKILL of the peer's process, restarts read its data directory."""

from __future__ import annotations

import random
import threading
import time

import pytest

from actors import CorruptStateError
from apps.raft.storage import JOURNAL_NAME, RaftStorage
from apps.raft.testing import Cluster, HarnessFailure

pytestmark = pytest.mark.slow  # a lab port: real processes for tens of seconds (see setup.cfg)

ELECTION_TIMEOUT = 1.0


def test_persist1_3c() -> None:
    with Cluster(3) as cfg:
        cfg.one(11, 3)
        for i in range(3):
            cfg.start(i)  # crash and re-start all
        for i in range(3):
            cfg.disconnect(i)
            cfg.connect(i)
        cfg.one(12, 3)
        leader1 = cfg.check_one_leader()
        cfg.disconnect(leader1)
        cfg.start(leader1)
        cfg.connect(leader1)
        cfg.one(13, 3)
        leader2 = cfg.check_one_leader()
        cfg.disconnect(leader2)
        cfg.one(14, 2)
        cfg.start(leader2)
        cfg.connect(leader2)
        cfg.wait(4, 3, -1)  # wait for leader2 to join before killing i3
        i3 = (cfg.check_one_leader() + 1) % 3
        cfg.disconnect(i3)
        cfg.one(15, 2)
        cfg.start(i3)
        cfg.connect(i3)
        cfg.one(16, 3)


def test_persist2_3c() -> None:
    with Cluster(5) as cfg:
        index = 1
        for _ in range(5):
            cfg.one(10 + index, 5, retry=True)
            index += 1
            leader1 = cfg.check_one_leader()
            cfg.disconnect((leader1 + 1) % 5)
            cfg.disconnect((leader1 + 2) % 5)
            cfg.one(10 + index, 3, retry=True)
            index += 1
            for k in (0, 3, 4):
                cfg.disconnect((leader1 + k) % 5)
            cfg.start((leader1 + 1) % 5)
            cfg.start((leader1 + 2) % 5)
            cfg.connect((leader1 + 1) % 5)
            cfg.connect((leader1 + 2) % 5)
            time.sleep(ELECTION_TIMEOUT)
            cfg.start((leader1 + 3) % 5)
            cfg.connect((leader1 + 3) % 5)
            cfg.one(10 + index, 3, retry=True)
            index += 1
            cfg.connect((leader1 + 4) % 5)
            cfg.connect((leader1 + 0) % 5)
        cfg.one(1000, 5, retry=True)


def test_persist3_3c() -> None:
    with Cluster(3) as cfg:
        cfg.one(101, 3)
        leader = cfg.check_one_leader()
        cfg.disconnect((leader + 2) % 3)
        cfg.one(102, 2)
        cfg.crash((leader + 0) % 3)
        cfg.crash((leader + 1) % 3)
        cfg.connect((leader + 2) % 3)
        cfg.start((leader + 0) % 3)
        cfg.connect((leader + 0) % 3)
        cfg.one(103, 2, retry=True)
        cfg.start((leader + 1) % 3)
        cfg.connect((leader + 1) % 3)
        cfg.one(104, 3, retry=True)


def _pause(rng: random.Random) -> None:
    if rng.randrange(1000) < 100:
        time.sleep(rng.randrange(500) / 1000)
    else:
        time.sleep(rng.randrange(13) / 1000)


def test_figure8_3c() -> None:
    rng = random.Random(8)
    with Cluster(5) as cfg:
        cfg.one(rng.randrange(1 << 31), 1, retry=True)
        nup = 5
        for _ in range(1000):
            leader = -1
            for i in range(5):
                if cfg.running[i]:
                    _, _, ok = cfg.peer(i).start(rng.randrange(1 << 31))
                    if ok:
                        leader = i
            _pause(rng)
            if leader != -1:
                cfg.crash(leader)
                nup -= 1
            if nup < 3:
                s = rng.randrange(5)
                if not cfg.running[s]:
                    cfg.start(s)
                    cfg.connect(s)
                    nup += 1
        for i in range(5):
            if not cfg.running[i]:
                cfg.start(i)
                cfg.connect(i)
        cfg.one(rng.randrange(1 << 31), 5, retry=True)


def test_unreliable_agree_3c() -> None:
    with Cluster(5, reliable=False) as cfg:
        threads = []
        for it in range(1, 50):
            for j in range(4):
                t = threading.Thread(target=cfg.one, args=(100 * it + j, 1, True))
                t.start()
                threads.append(t)
            cfg.one(it, 1, retry=True)
        cfg.set_unreliable(False)
        for t in threads:
            t.join(timeout=60)
            assert not t.is_alive()
        cfg.one(100, 5, retry=True)


def test_figure8_unreliable_3c() -> None:
    rng = random.Random(9)
    with Cluster(5, reliable=False) as cfg:
        cfg.one(rng.randrange(10000), 1, retry=True)
        nup = 5
        for it in range(1000):
            if it == 200:
                cfg.set_long_reordering(True)
            leader = -1
            for i in range(5):
                _, _, ok = cfg.peer(i).start(rng.randrange(10000))
                if ok and cfg.connected[i]:
                    leader = i
            _pause(rng)
            if leader != -1 and rng.randrange(1000) < 500:
                cfg.disconnect(leader)
                nup -= 1
            if nup < 3:
                s = rng.randrange(5)
                if not cfg.connected[s]:
                    cfg.connect(s)
                    nup += 1
        for i in range(5):
            if not cfg.connected[i]:
                cfg.connect(i)
        cfg.one(rng.randrange(10000), 5, retry=True)


def churn(unreliable: bool, seed: int) -> None:
    rng = random.Random(seed)
    with Cluster(5, reliable=not unreliable) as cfg:
        stop = threading.Event()
        found: list[list[int]] = [[], [], []]

        def client(me: int) -> None:
            crng = random.Random(seed * 10 + me)
            while not stop.is_set():
                x = crng.randrange(1 << 31)
                index, ok = -1, False
                for i in range(5):
                    if cfg.running[i]:
                        index1, _, ok1 = cfg.peer(i).start(x)
                        if ok1:
                            ok, index = True, index1
                if ok:
                    for pause in (0.01, 0.02, 0.05, 0.1, 0.2):
                        count, cmd = cfg.n_committed(index)
                        if count > 0:
                            if cmd == x:
                                found[me].append(x)
                            break
                        time.sleep(pause)
                else:
                    time.sleep((79 + me * 17) / 1000)

        clients = [threading.Thread(target=client, args=(me,)) for me in range(3)]
        for t in clients:
            t.start()
        try:
            for _ in range(20):
                if rng.random() < 0.2:
                    cfg.disconnect(rng.randrange(5))
                if rng.random() < 0.5:
                    i = rng.randrange(5)
                    if not cfg.running[i]:
                        cfg.start(i)
                    cfg.connect(i)
                if rng.random() < 0.2:
                    i = rng.randrange(5)
                    if cfg.running[i]:
                        cfg.crash(i)
                time.sleep(ELECTION_TIMEOUT * 7 / 10)
            time.sleep(ELECTION_TIMEOUT)
            cfg.set_unreliable(False)
            for i in range(5):
                if not cfg.running[i]:
                    cfg.start(i)
                cfg.connect(i)
        finally:
            stop.set()
            for t in clients:
                t.join(timeout=30)
        time.sleep(ELECTION_TIMEOUT)
        last_index = cfg.one(rng.randrange(1 << 31), 5, retry=True)
        really = [cfg.wait(index, 5, -1) for index in range(1, last_index + 1)]
        for values in found:
            for v in values:
                assert v in really, f"didn't find a value {v} a client saw committed"


def test_reliable_churn_3c() -> None:
    churn(unreliable=False, seed=31)


def test_unreliable_churn_3c() -> None:
    churn(unreliable=True, seed=32)


def test_sigkill_during_append_bursts_keeps_every_committed_entry() -> None:
    """Kill -9 a peer (often the leader) in the middle of a burst of appends, many times;
    whatever any peer applied (so was committed) must still be there after everyone restarts."""
    rng = random.Random(77)
    acknowledged: dict[int, int] = {}
    with Cluster(3) as cfg:
        for _ in range(8):
            leader = cfg.check_one_leader()
            stop = threading.Event()
            burst_rng = random.Random(rng.random())

            def burst() -> None:
                while not stop.is_set():
                    _, _, ok = cfg.peer(leader).start(burst_rng.randrange(1 << 31))
                    if not ok:
                        return

            appender = threading.Thread(target=burst)
            appender.start()
            time.sleep(rng.uniform(0.05, 0.3))
            victim = leader if rng.random() < 0.6 else rng.choice([i for i in range(3) if i != leader])
            cfg.crash(victim)
            time.sleep(0.1)
            stop.set()
            appender.join(timeout=10)
            with cfg._lock:
                for log in cfg.logs:
                    acknowledged.update(log)
            cfg.start(victim)
            cfg.connect(victim)
        for i in range(3):
            cfg.crash(i)
        for i in range(3):
            cfg.start(i)
            cfg.connect(i)
        cfg.one(rng.randrange(1 << 31), 3, retry=True)
        assert len(acknowledged) > 20, "the bursts committed too little to mean anything"
        for index, command in sorted(acknowledged.items()):
            assert cfg.wait(index, 3, -1) == command, f"committed entry {index} changed or vanished"


def test_a_torn_journal_tail_is_cut_and_the_peer_keeps_what_it_acknowledged() -> None:
    with Cluster(3) as cfg:
        for k in range(1, 6):
            cfg.one(100 + k, 3, retry=True)
        term = cfg.peer(0).status().term
        cfg.crash(0)
        with open(cfg.data_dir(0) / JOURNAL_NAME, "ab") as f:
            f.write((5000).to_bytes(4, "big") + b"\0\0\0\0" + b"half an append")  # claims 5000 bytes, holds 14
        cfg.start(0)  # still cut off from the others: what it knows now came from its own disk
        status = cfg.peer(0).status()
        assert status.last_index == 5 and status.term >= term
        cfg.connect(0)
        index = cfg.one(106, 3, retry=True)
        for k in range(1, index + 1):
            assert cfg.wait(k, 3, -1) == 100 + k


def test_a_journal_damaged_before_its_tail_stops_the_peer_and_keeps_the_file() -> None:
    with Cluster(3) as cfg:
        for k in range(1, 4):
            cfg.one(200 + k, 3, retry=True)
        cfg.crash(1)
        journal = cfg.data_dir(1) / JOURNAL_NAME
        damaged = bytearray(journal.read_bytes())
        damaged[4 + 8 + 2] ^= 0xFF  # inside the first record, with good records after it
        journal.write_bytes(bytes(damaged))
        with pytest.raises(HarnessFailure, match="peer 1 did not start"):
            cfg.start(1)
        assert cfg.exit_code(1) not in (None, 0, -9)  # it exited on its own, with an error
        assert journal.read_bytes() == bytes(damaged)  # nothing was cut or rewritten
        with pytest.raises(CorruptStateError, match=f"{JOURNAL_NAME} is damaged at byte 4"):
            RaftStorage(cfg.data_dir(1)).load()
        cfg.one(204, 2, retry=True)  # the others go on without it
