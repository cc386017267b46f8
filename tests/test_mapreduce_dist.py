"""MapReduce on "separate machines" on one host: no directory shared, map output fetched from its mapper.

The coordinator listens on 127.0.0.1; each worker serves its map output
from its own loopback address (127.0.0.2, 127.0.0.3, ...) and keeps it in
its own private directory. The test talks to the coordinator as any client
would (an ActorSystem of its own), to see where map output lives, to kill
the worker holding most of it with SIGKILL between the map and the reduce
phase (the coordinator holds reduces until the test releases them), and to
read the job's counters.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import ActorSystem, AskTimeout
from apps.mapreduce.app import load_app
from apps.mapreduce.corpus import generate_corpus
from apps.mapreduce.protocol import JobStatus, Release, Status
from apps.mapreduce.sequential import read_output_lines, run_sequential
from tests.helpers import free_port
from tests.processes import ROOT, Processes, listening

pytestmark = pytest.mark.slow  # a lab port: real processes for tens of seconds (see setup.cfg)

LIMIT = 90.0


class Cluster:
    """A coordinator and workers as separate ``zactor mr`` processes; kills what is left at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.processes = Processes(tmp, LIMIT)
        self.endpoint = ""  # the coordinator's, once it said where it listens
        self.workers: dict[str, subprocess.Popen] = {}  # host -> process
        self.system = ActorSystem("tcp://127.0.0.1:0", ask_timeout=5.0)

    def start(self, *args: str, cwd: Path) -> subprocess.Popen:
        return self.processes.start("mr", *args, cwd=cwd)

    def coordinator(self, files: list[Path], *extra: str) -> subprocess.Popen:
        """Start it on a port of its choosing (no race for a free port) and read where it listens."""
        proc = self.start("coordinator", "--endpoint", "tcp://127.0.0.1:0", "--out", str(self.tmp / "out"), *extra,
                          *map(str, files), cwd=self.tmp / "coordinator")
        self.endpoint = listening(proc)
        assert self.status(timeout=10) is not None, "the coordinator does not answer"
        return proc

    def worker(self, n: int, app: str = "wc") -> subprocess.Popen:
        host = f"127.0.0.{n + 2}"
        home = self.tmp / f"machine-{n}"
        proc = self.start("worker", "--coordinator", self.endpoint, "--app", app, "--workdir", str(home / "mr"),
                          "--endpoint", f"tcp://{host}:0", cwd=home)
        self.workers[host] = proc
        return proc

    def status(self, timeout: float = 5.0) -> JobStatus | None:
        try:
            return self.system.ref(self.endpoint, "coordinator").ask(Status(), timeout=timeout)
        except AskTimeout:
            return None

    def wait_for(self, predicate, what: str) -> JobStatus:
        deadline = time.monotonic() + LIMIT
        while True:
            status = self.status()
            if status is not None and predicate(status):
                return status
            assert time.monotonic() < deadline, f"timed out waiting for {what} (last status {status})"
            time.sleep(0.05)

    def finish(self, proc: subprocess.Popen) -> str:
        """Wait for ``proc`` to exit 0; returns its stderr."""
        code = self.processes.wait(proc)
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert code == 0, err
        return err

    def close(self) -> None:
        self.processes.kill_all()
        self.system.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return sorted(generate_corpus(tmp_path_factory.mktemp("books"), total_bytes=1_500_000, n_files=6, seed=14))


def reference(books: list[Path], tmp: Path) -> list[str]:
    return read_output_lines([run_sequential(load_app("wc"), [str(b) for b in books], tmp / "mr-correct.txt")])


def counter(report: str, label: str) -> int:
    m = re.search(rf"{re.escape(label)}=(\d+)", report)
    assert m, f"no {label} in the job report:\n{report}"
    return int(m.group(1))


def test_workers_on_separate_addresses_and_directories_equal_the_sequential_reference(cluster: Cluster, books: list[Path], tmp_path: Path) -> None:
    coord = cluster.coordinator(books, "--split-mb", "0.1", "--min-workers", "3")
    for n in range(3):
        cluster.worker(n)
    report = cluster.finish(coord)
    for proc in cluster.workers.values():
        cluster.finish(proc)
    out = tmp_path / "out"
    assert read_output_lines(sorted(out.glob("mr-out-*"))) == reference(books, tmp_path)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"mr-out-{r}" for r in range(10)), \
        "map output appeared in the coordinator's directory"
    holders = [n for n in range(3) if list((tmp_path / f"machine-{n}" / "mr").glob("mr-*-*"))]
    assert len(holders) >= 2, "the maps did not spread over the workers"
    assert counter(report, "Reduce shuffle bytes") > 0
    assert counter(report, "Re-executed map tasks (output lost)") == 0


def test_a_mapper_killed_before_the_reduces_fetched_has_its_maps_run_again(cluster: Cluster, books: list[Path], tmp_path: Path) -> None:
    coord = cluster.coordinator(books, "--split-mb", "0.1", "--min-workers", "3", "--hold-reduces", "--fetch-timeout", "2")
    for n in range(3):
        cluster.worker(n)
    held = cluster.wait_for(lambda s: s.held, "every map done, reduces held")
    by_host: dict[str, list[int]] = {}
    for map_id, location in enumerate(held.map_locations):
        assert location is not None, "a map's output is in no worker"
        by_host.setdefault(re.match(r"tcp://([\d.]+):", location).group(1), []).append(map_id)
    victim_host = max(by_host, key=lambda h: len(by_host[h]))
    victim = cluster.workers[victim_host]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    cluster.system.ref(cluster.endpoint, "coordinator").ask(Release(), timeout=5)
    report = cluster.finish(coord)
    assert read_output_lines(sorted((tmp_path / "out").glob("mr-out-*"))) == reference(books, tmp_path)
    assert counter(report, "Re-executed map tasks (output lost)") == len(by_host[victim_host])
    assert counter(report, "Failed shuffle fetches") >= 1


def maps_by_host(status: JobStatus) -> dict[str, list[int]]:
    by_host: dict[str, list[int]] = {}
    for map_id, location in enumerate(status.map_locations):
        assert location is not None, "a map's output is in no worker"
        by_host.setdefault(re.match(r"tcp://([\d.]+):", location).group(1), []).append(map_id)
    return by_host


def kill_holders(cluster: Cluster, held: JobStatus, n: int) -> list[int]:
    """SIGKILL the ``n`` workers holding the most map output; the maps they held."""
    by_host = maps_by_host(held)
    assert len(by_host) >= n, f"the maps are on {len(by_host)} workers, need {n} to kill"
    victims = sorted(by_host, key=lambda h: len(by_host[h]), reverse=True)[:n]
    for host in victims:
        cluster.workers[host].send_signal(signal.SIGKILL)
    for host in victims:
        cluster.workers[host].wait(timeout=10)
    return sorted(m for host in victims for m in by_host[host])


def kill_two_holders_between_the_phases(cluster: Cluster, books: list[Path], *flags: str) -> tuple[subprocess.Popen, list[int]]:
    """Three workers map with reduces held, then the two holding the most output are killed: (coordinator, their maps)."""
    coord = cluster.coordinator(books, "--split-mb", "0.1", "--min-workers", "3", "--hold-reduces", *flags)
    for n in range(3):
        cluster.worker(n)
    held = cluster.wait_for(lambda s: s.held, "every map done, reduces held")
    return coord, kill_holders(cluster, held, 2)


def test_two_mappers_killed_are_both_named_by_one_reduce_attempt(cluster: Cluster, books: list[Path], tmp_path: Path) -> None:
    # The coordinator's own liveness check is off: only a reducer can find the dead, and the first
    # reduce attempt must name both (before issue #14's follow-up it named one per attempt: 2 failures).
    coord, lost = kill_two_holders_between_the_phases(cluster, books, "--fetch-timeout", "2", "--probe-every", "0")
    cluster.system.ref(cluster.endpoint, "coordinator").ask(Release(), timeout=5)
    report = cluster.finish(coord)
    assert read_output_lines(sorted((tmp_path / "out").glob("mr-out-*"))) == reference(books, tmp_path)
    assert counter(report, "Failed shuffle fetches") == 1
    assert counter(report, "Dead workers found by reducers") == 2
    assert counter(report, "Re-executed map tasks (output lost)") == len(lost)


def test_the_coordinator_finds_dead_mappers_with_no_reducer_waiting(cluster: Cluster, books: list[Path], tmp_path: Path) -> None:
    # Reduces stay held until the coordinator has noticed, by its pings alone, that both holders are gone.
    coord, lost = kill_two_holders_between_the_phases(
        cluster, books, "--fetch-timeout", "1", "--probe-every", "0.5", "--probe-timeout", "1"
    )
    noticed = cluster.wait_for(lambda s: s.counters.get("workers_lost_probe", 0) == 2, "the pings to find both dead workers")
    assert noticed.reexecuted == len(lost)
    assert noticed.counters["fetch_failures"] == 0
    cluster.wait_for(lambda s: s.held, "the lost maps re-done")
    cluster.system.ref(cluster.endpoint, "coordinator").ask(Release(), timeout=5)
    report = cluster.finish(coord)
    assert read_output_lines(sorted((tmp_path / "out").glob("mr-out-*"))) == reference(books, tmp_path)
    assert counter(report, "Re-executed map tasks (output lost)") == len(lost)
    assert counter(report, "Failed shuffle fetches") == 0


def test_inputs_shipped_by_the_coordinator(cluster: Cluster, books: list[Path], tmp_path: Path) -> None:
    coord = cluster.coordinator(books, "--ship-input", "--split-mb", "0.2", "--min-workers", "2")
    for n in range(2):
        cluster.worker(n)
    cluster.wait_for(lambda s: s.maps_done == s.maps_total, "the maps")
    shipped = cluster.system.control(cluster.endpoint).counters()["sent_bytes"].get("bytes", 0)
    cluster.finish(coord)
    assert read_output_lines(sorted((tmp_path / "out").glob("mr-out-*"))) == reference(books, tmp_path)
    assert shipped >= sum(b.stat().st_size for b in books), "the workers did not read the input from the coordinator"


def test_a_worker_with_no_coordinator_says_so_within_seconds(tmp_path: Path) -> None:
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "apps.cli", "mr", "worker", "--coordinator", f"tcp://127.0.0.1:{free_port()}", "--app", "wc",
         "--workdir", str(tmp_path / "w"), "--endpoint", "tcp://127.0.0.2:0"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 1
    assert "no coordinator answered" in out.stderr and "127.0.0.1" in out.stderr
    assert time.monotonic() - started < 15
