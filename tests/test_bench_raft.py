"""The raft benchmark's bookkeeping, which must hold on a loaded machine (the CLI test runs it for real)."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pytest

from actors import AskTimeout
from benchmarks.raft import Abandon, DriverPeers, Finished, Leadership, Load, PhaseFailed, Progress, QueuePeers, Run


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
    """Three zactor bench drivers as the benchmark sees them: scripted answers, and a record of what they were told.

    ``state[i]`` is peer i's (term, leads), or None for a peer that does not answer; ``applied[i]``
    what its driver says it has seen applied; ``on_tell`` may change both, or report to the inbox.
    """

    def __init__(self, inbox: queue.Queue, on_tell: Any) -> None:
        self.inbox, self.on_tell = inbox, on_tell
        self.state: dict[int, tuple[int, bool] | None] = {0: (1, True), 1: (1, False), 2: (1, False)}
        self.applied = {0: 0, 1: 0, 2: 0}
        self.told: list[tuple[int, Any]] = []
        self.asked: list[tuple[float, int, Any]] = []
        self.drivers = [self.Driver(self, i) for i in range(3)]

    class Driver:
        def __init__(self, cluster: FakeCluster, i: int) -> None:
            self.cluster, self.i = cluster, i

        def ask(self, message: Any, timeout: float) -> Any:
            self.cluster.asked.append((time.monotonic(), self.i, message))
            if isinstance(message, Progress):
                return self.cluster.applied[self.i]
            assert isinstance(message, Leadership)
            state = self.cluster.state[self.i]
            if state is None:
                raise AskTimeout(f"peer {self.i} did not answer")
            return state

        def tell(self, message: Any) -> None:
            self.cluster.told.append((self.i, message))
            self.cluster.on_tell(self.cluster, self.i, message)


def test_a_zactor_phase_stranded_by_a_leader_change_is_abandoned_and_run_again() -> None:
    inbox: queue.Queue = queue.Queue()

    def on_tell(cluster: FakeCluster, i: int, message: Any) -> None:
        if len(cluster.told) == 1:  # peer 0's run stalls: peer 1 wins a later term; peer 0, cut off, never hears of it
            cluster.state = {0: (1, True), 1: (2, True), 2: (2, False)}
        elif isinstance(message, Run):
            inbox.put(Finished({"ops_per_s": -1.0}, 99))  # a stale report of another run: not this phase's
            inbox.put(Finished({"ops_per_s": 7.0}, message.run_id))

    cluster = FakeCluster(inbox, on_tell)
    peers = DriverPeers(cluster.drivers, inbox, "ipc://sink", check_every=0.01)
    assert peers.run_phase(10, 4, 0.01) == {"ops_per_s": 7.0}
    assert peers.rerun == 1
    (first_at, first), abandon, (second_at, second) = cluster.told
    assert first_at == 0 and abandon == (0, Abandon(first.run_id))
    assert second_at == 1 and second.run_id != first.run_id  # the leader of the latest term, not the cut-off one


def test_a_leader_that_stepped_down_strands_its_run_even_when_a_peer_does_not_answer() -> None:
    inbox: queue.Queue = queue.Queue()

    def on_tell(cluster: FakeCluster, i: int, message: Any) -> None:
        if len(cluster.told) == 1:  # peer 0 steps down; peer 1 does not answer; peer 2 has not heard yet
            cluster.state = {0: (2, False), 1: None, 2: (1, False)}
        elif isinstance(message, Abandon):
            cluster.state = {0: (3, False), 1: None, 2: (3, True)}
        else:
            inbox.put(Finished({"ops_per_s": 7.0}, message.run_id))

    cluster = FakeCluster(inbox, on_tell)
    peers = DriverPeers(cluster.drivers, inbox, "ipc://sink", check_every=0.01, drain_limit=2.0)
    assert peers.run_phase(10, 4, 0.01) == {"ops_per_s": 7.0}
    assert peers.rerun == 1 and [i for i, _ in cluster.told] == [0, 0, 2]


def test_a_slow_drain_under_its_leader_is_waited_for_and_never_interrupted() -> None:
    inbox: queue.Queue = queue.Queue()
    told_at = 0.0

    def on_tell(cluster: FakeCluster, i: int, message: Any) -> None:
        nonlocal told_at
        told_at = time.monotonic()
        threading.Timer(0.4, inbox.put, (Finished({"ops_per_s": 3.0}, message.run_id),)).start()

    cluster = FakeCluster(inbox, on_tell)
    original = FakeCluster.Driver.ask

    class Draining(FakeCluster.Driver):
        def ask(self, message: Any, timeout: float) -> Any:
            if isinstance(message, Progress):
                self.cluster.applied[self.i] += 1  # commands keep being applied
            return original(self, message, timeout)

    cluster.drivers = [Draining(cluster, i) for i in range(3)]
    peers = DriverPeers(cluster.drivers, inbox, "ipc://sink", check_every=0.02)
    assert peers.run_phase(10, 4, 0.1) == {"ops_per_s": 3.0}
    assert peers.rerun == 0 and len(cluster.told) == 1
    after_run = [(at, message) for at, _, message in cluster.asked if at >= told_at]
    assert len(after_run) > 3, "the run was looked at while it drained past its seconds"
    assert all(at >= told_at + 0.1 for at, _ in after_run), "nothing is asked during the measured seconds"
    assert all(isinstance(message, Progress) for _, message in after_run), "a draining leader is not asked who leads"


def test_a_run_that_neither_drains_nor_loses_its_leader_fails_at_its_limit() -> None:
    inbox: queue.Queue = queue.Queue()
    cluster = FakeCluster(inbox, lambda cluster, i, message: None)
    peers = DriverPeers(cluster.drivers, inbox, "ipc://sink", check_every=0.01, drain_limit=0.1)
    with pytest.raises(RuntimeError, match="did not finish within"):
        peers.run_phase(10, 4, 0.01)
    assert peers.rerun == 0 and len(cluster.told) == 1


def test_a_phase_stranded_every_time_gives_up_after_its_attempts() -> None:
    inbox: queue.Queue = queue.Queue()

    def on_tell(cluster: FakeCluster, i: int, message: Any) -> None:
        if isinstance(message, Run):  # whoever runs it loses its term at once to the next peer
            term = cluster.state[i][0]  # type: ignore[index]
            cluster.state = {j: (term + 1, j == (i + 1) % 3) for j in range(3)}

    cluster = FakeCluster(inbox, on_tell)
    peers = DriverPeers(cluster.drivers, inbox, "ipc://sink", check_every=0.01)
    with pytest.raises(RuntimeError, match="cut short by a leader change 3 times"):
        peers.run_phase(10, 4, 0.01)
    assert peers.rerun == 3 and [type(m).__name__ for _, m in cluster.told] == ["Run", "Abandon"] * 3
