"""Lab 3D, snapshots: the harness snapshots every tenth entry; logs must stay small; restarts use snapshots."""

from __future__ import annotations

import random

import pytest

from apps.raft.testing import SNAPSHOT_INTERVAL, Cluster

pytestmark = pytest.mark.slow  # a lab port: real processes for tens of seconds (see setup.cfg)

MAXLOGSIZE = 2000


def snapcommon(disconnect: bool, reliable: bool, crash: bool, seed: int) -> None:
    rng = random.Random(seed)
    servers = 3
    with Cluster(servers, reliable=reliable, snapshot=True) as cfg:
        cfg.one(rng.randrange(1 << 31), servers, retry=True)
        leader1 = cfg.check_one_leader()
        for i in range(30):
            victim, sender = (leader1 + 1) % servers, leader1
            if i % 3 == 1:
                sender, victim = (leader1 + 1) % servers, leader1
            if disconnect:
                cfg.disconnect(victim)
                cfg.one(rng.randrange(1 << 31), servers - 1, retry=True)
            if crash:
                cfg.crash(victim)
                cfg.one(rng.randrange(1 << 31), servers - 1, retry=True)
            # perhaps send enough to get a snapshot
            for _ in range(SNAPSHOT_INTERVAL // 2 + rng.randrange(SNAPSHOT_INTERVAL)):
                cfg.peer(sender).start(rng.randrange(1 << 31))
            # let the applier catch up with the starts
            cfg.one(rng.randrange(1 << 31), servers if not (disconnect or crash) else servers - 1, retry=True)
            size = cfg.max_log_size()
            assert size < MAXLOGSIZE, f"log size too large: {size}"
            if disconnect:
                # reconnect a follower, who may be behind and need to receive a snapshot
                cfg.connect(victim)
                cfg.one(rng.randrange(1 << 31), servers, retry=True)
                leader1 = cfg.check_one_leader()
            if crash:
                cfg.start(victim)
                cfg.connect(victim)
                cfg.one(rng.randrange(1 << 31), servers, retry=True)
                leader1 = cfg.check_one_leader()
        cfg.check_no_errors()


def test_snapshot_basic_3d() -> None:
    snapcommon(disconnect=False, reliable=True, crash=False, seed=41)


def test_snapshot_install_3d() -> None:
    snapcommon(disconnect=True, reliable=True, crash=False, seed=42)


def test_snapshot_install_unreliable_3d() -> None:
    snapcommon(disconnect=True, reliable=False, crash=False, seed=43)


def test_snapshot_install_crash_3d() -> None:
    snapcommon(disconnect=False, reliable=True, crash=True, seed=44)


def test_snapshot_install_uncrash_3d() -> None:
    snapcommon(disconnect=False, reliable=False, crash=True, seed=45)


def test_snapshot_all_crash_3d() -> None:
    rng = random.Random(46)
    servers = 3
    with Cluster(servers, snapshot=True) as cfg:
        cfg.one(rng.randrange(1 << 31), servers, retry=True)
        for _ in range(5):
            for _ in range(SNAPSHOT_INTERVAL // 2 + rng.randrange(SNAPSHOT_INTERVAL)):
                cfg.one(rng.randrange(1 << 31), servers, retry=True)
            index1 = cfg.one(rng.randrange(1 << 31), servers, retry=True)
            for i in range(servers):
                cfg.crash(i)
            for i in range(servers):
                cfg.start(i)
                cfg.connect(i)
            index2 = cfg.one(rng.randrange(1 << 31), servers, retry=True)
            assert index2 >= index1 + 1, f"index decreased from {index1} to {index2}"


def test_snapshot_init_3d() -> None:
    rng = random.Random(47)
    servers = 3
    with Cluster(servers, snapshot=True) as cfg:
        cfg.one(rng.randrange(1 << 31), servers, retry=True)
        for _ in range(SNAPSHOT_INTERVAL + 1):  # enough ops to make a snapshot
            cfg.one(rng.randrange(1 << 31), servers, retry=True)
        for _ in range(2):
            for i in range(servers):
                cfg.crash(i)
            for i in range(servers):
                cfg.start(i)
                cfg.connect(i)
            cfg.one(rng.randrange(1 << 31), servers, retry=True)
        cfg.check_no_errors()


@pytest.mark.parametrize("servers", [3])
def test_restarted_peer_starts_from_its_snapshot(servers: int) -> None:
    with Cluster(servers, snapshot=True) as cfg:
        for k in range(25):
            cfg.one(k, servers, retry=True)
        cfg.crash(0)
        cfg.start(0)
        cfg.connect(0)
        status = cfg.peer(0).status()
        assert status.commit_index >= 19 and status.snapshot_size > 0  # not from index 0
        cfg.one(1000, servers, retry=True)
