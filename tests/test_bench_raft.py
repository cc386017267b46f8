"""The raft benchmark's bookkeeping, which must hold on a loaded machine (the CLI test runs it for real)."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pytest

from benchmarks.raft import Abandon, DriverPeers, Finished, Leadership, Load, PhaseFailed, QueuePeers, Run


def test_a_command_applied_after_the_deadline_is_timed_but_not_counted() -> None:
    load = Load(size=8, window=1, seconds=0.01)
    [command] = load.start()
    time.sleep(0.02)  # the one command is applied only after the run's time is up (a slow commit)
    assert load.done(command) == []  # nothing new is issued
    assert load.finished
    result = load.result()
    assert result["ops_per_s"] == 0.0  # the throughput counts what was applied in time
    assert result["p50_ms"] >= 20.0  # and the latency is still measured


def test_a_late_answer_is_never_taken_for_the_next_request() -> None:
    requests: list[queue.Queue] = [queue.Queue()]
    replies: list[queue.Queue] = [queue.Queue()]
    peers = QueuePeers(requests, replies)
    answered = threading.Event()

    def slow_peer() -> None:
        rid, _ = requests[0].get(timeout=5)
        answered.wait(5)  # answers only after the asker has given up
        replies[0].put((rid, True))
        rid, _ = requests[0].get(timeout=5)
        replies[0].put((rid, ["peer 0: a warning"]))

    peer = threading.Thread(target=slow_peer)
    peer.start()
    try:
        with pytest.raises(queue.Empty):
            peers.ask(0, "leader?", 0.05)
        answered.set()
        assert peers.ask(0, "logged?", 5.0) == ["peer 0: a warning"]
    finally:
        answered.set()
        peer.join(10)


def test_a_phase_lost_to_a_leader_change_is_run_again_and_counted() -> None:
    requests: list[queue.Queue] = [queue.Queue() for _ in range(3)]
    replies: list[queue.Queue] = [queue.Queue() for _ in range(3)]
    peers = QueuePeers(requests, replies)
    runs = []

    def peer(i: int) -> None:
        while (item := requests[i].get(timeout=10)) is not None:
            rid, request = item
            if request == "leader?":
                replies[i].put((rid, i == 1))
            else:
                runs.append(request)
                failed = len(runs) == 1  # the first run loses its commands to a leader change
                replies[i].put((rid, PhaseFailed("PySyncObj run failed: DISCARDED") if failed else {"ops_per_s": 5.0}))

    threads = [threading.Thread(target=peer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        assert peers.run_phase(10, 4, 0.1) == {"ops_per_s": 5.0}
        assert runs == [(10, 4, 0.1), (10, 4, 0.1)] and peers.rerun == 1
    finally:
        for q in requests:
            q.put(None)
        for t in threads:
            t.join(10)


class FakeCluster:
    """Three zactor bench drivers as the benchmark sees them: (term, leads) answers and the tells they got."""

    def __init__(self, inbox: queue.Queue, on_run: Any) -> None:
        self.inbox, self.on_run = inbox, on_run
        self.state = {0: (1, True), 1: (1, False), 2: (1, False)}
        self.told: list[tuple[int, Any]] = []
        self.asks = 0
        self.drivers = [self.Driver(self, i) for i in range(3)]

    class Driver:
        def __init__(self, cluster: FakeCluster, i: int) -> None:
            self.cluster, self.i = cluster, i

        def ask(self, message: Any, timeout: float) -> tuple[int, bool]:
            assert isinstance(message, Leadership)
            self.cluster.asks += 1
            return self.cluster.state[self.i]

        def tell(self, message: Any) -> None:
            self.cluster.told.append((self.i, message))
            if isinstance(message, Run):
                self.cluster.on_run(self.cluster, self.i, message)


def test_a_zactor_phase_stranded_by_a_leader_change_is_abandoned_and_run_again() -> None:
    inbox: queue.Queue = queue.Queue()

    def on_run(cluster: FakeCluster, i: int, run: Run) -> None:
        if len(cluster.told) == 1:  # peer 0's run: meanwhile peer 1 wins a later term; peer 0 never hears of it
            cluster.state = {0: (1, True), 1: (2, True), 2: (2, False)}
        else:
            inbox.put(Finished({"ops_per_s": -1.0}, 99))  # a stale report of another run: not this phase's
            inbox.put(Finished({"ops_per_s": 7.0}, run.run_id))

    cluster = FakeCluster(inbox, on_run)
    peers = DriverPeers(cluster.drivers, inbox, "ipc://sink", check_every=0.01)
    assert peers.run_phase(10, 4, 0.01) == {"ops_per_s": 7.0}
    assert peers.rerun == 1
    (first_at, first), abandon, (second_at, second) = cluster.told
    assert first_at == 0 and abandon == (0, Abandon(first.run_id))
    assert second_at == 1 and second.run_id != first.run_id


def test_a_zactor_phase_that_drains_slowly_under_its_leader_is_waited_for() -> None:
    inbox: queue.Queue = queue.Queue()

    def on_run(cluster: FakeCluster, i: int, run: Run) -> None:
        threading.Timer(0.2, inbox.put, (Finished({"ops_per_s": 3.0}, run.run_id),)).start()

    cluster = FakeCluster(inbox, on_run)
    peers = DriverPeers(cluster.drivers, inbox, "ipc://sink", check_every=0.02)
    assert peers.run_phase(10, 4, 0.01) == {"ops_per_s": 3.0}
    assert peers.rerun == 0 and len(cluster.told) == 1
    found_leader = 3  # one ask of each peer
    assert cluster.asks > found_leader + 3, "the leader was checked while the run drained past its time"
