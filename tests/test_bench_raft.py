"""The raft benchmark's bookkeeping, which must hold on a loaded machine (the CLI test runs it for real)."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from benchmarks.raft import Load, PhaseFailed, QueuePeers


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
