"""Lab 1, MapReduce: the seven scenarios of the lab's test script, with real processes.

As the lab's script does, each test starts ``zactor mr coordinator`` and
``zactor mr worker`` as separate processes in one working directory, waits
for them, and compares the sorted output with the sequential reference. The
input is eight generated "books" (the lab uses eight Gutenberg books); the
tests need nothing outside the repository. Every process a test starts is
killed when it outlives its limit or when the test ends.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from apps.mapreduce.app import load_app
from apps.mapreduce.corpus import generate_corpus
from apps.mapreduce.sequential import read_output_lines, run_sequential
from tests.processes import Processes, listening

pytestmark = pytest.mark.slow  # a lab port: real processes for tens of seconds (see setup.cfg)


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Eight deterministic input files of different sizes (about 1.2 MB in all)."""
    directory = tmp_path_factory.mktemp("books")
    return sorted(generate_corpus(directory, total_bytes=1_200_000, n_files=8, seed=6824))


@pytest.fixture
def procs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Processes]:
    limit = 120.0 if "crash" in request.node.name else 45.0
    p = Processes(tmp_path, limit)
    yield p
    p.kill_all()


def coordinator(procs: Processes, tmp_path: Path, books: list[Path], *extra: str) -> tuple[subprocess.Popen, str]:
    endpoint = f"ipc://{tmp_path}/mr.sock"
    proc = procs.start("mr", "coordinator", "--endpoint", endpoint, *extra, *map(str, books))
    assert listening(proc) == endpoint
    return proc, endpoint


def worker(procs: Processes, endpoint: str, app: str) -> subprocess.Popen:
    return procs.start("mr", "worker", "--coordinator", endpoint, "--app", app)


def reference(app: str, books: list[Path], tmp_path: Path) -> list[str]:
    out = tmp_path / f"mr-correct-{app}.txt"
    run_sequential(load_app(app), [str(b) for b in books], out)
    return read_output_lines([out])


def outputs(tmp_path: Path) -> list[str]:
    return read_output_lines(sorted(tmp_path.glob("mr-out-*")))


def run_app(procs: Processes, tmp_path: Path, books: list[Path], app: str, nworkers: int) -> list[str]:
    coord, endpoint = coordinator(procs, tmp_path, books)
    workers = [worker(procs, endpoint, app) for _ in range(nworkers)]
    assert procs.wait(coord) == 0, coord.stderr.read().decode() if coord.stderr else ""
    for w in workers:
        procs.wait(w)
    return outputs(tmp_path)


def test_wc(procs: Processes, tmp_path: Path, books: list[Path]) -> None:
    got = run_app(procs, tmp_path, books, "wc", 3)
    assert got == reference("wc", books, tmp_path)


def test_indexer(procs: Processes, tmp_path: Path, books: list[Path]) -> None:
    got = run_app(procs, tmp_path, books, "indexer", 2)
    assert got == reference("indexer", books, tmp_path)


def test_map_parallelism(procs: Processes, tmp_path: Path, books: list[Path]) -> None:
    got = run_app(procs, tmp_path, books, "mtiming", 2)
    times = [line for line in got if line.startswith("times-")]
    assert len(times) == 2, f"expected maps on exactly 2 workers, got {times}"
    parallel = [line for line in got if line.startswith("parallel-")]
    assert any(" 2" in line for line in parallel), f"maps never ran in parallel: {parallel}"


def test_reduce_parallelism(procs: Processes, tmp_path: Path, books: list[Path]) -> None:
    got = run_app(procs, tmp_path, books, "rtiming", 2)
    assert sum(1 for line in got if re.fullmatch(r"[a-z] 2", line)) >= 2, f"reduces never ran in parallel: {got}"


def test_job_count(procs: Processes, tmp_path: Path, books: list[Path]) -> None:
    coord, endpoint = coordinator(procs, tmp_path, books)
    workers = [worker(procs, endpoint, "jobcount") for _ in range(2)]
    time.sleep(1.0)  # the lab starts the second pair a moment after the first
    workers += [worker(procs, endpoint, "jobcount") for _ in range(2)]
    assert procs.wait(coord) == 0
    for w in workers:
        procs.wait(w)
    assert outputs(tmp_path) == ["a 8"], "each of the 8 map tasks must run exactly once"


def test_early_exit(procs: Processes, tmp_path: Path, books: list[Path]) -> None:
    coord, endpoint = coordinator(procs, tmp_path, books)
    everyone = [coord] + [worker(procs, endpoint, "early_exit") for _ in range(3)]
    deadline = time.monotonic() + procs.limit
    while all(p.poll() is None for p in everyone):
        assert time.monotonic() < deadline, "nobody finished in time"
        time.sleep(0.02)
    at_first_exit = outputs(tmp_path)
    for p in everyone:
        procs.wait(p)
    assert outputs(tmp_path) == at_first_exit, "a process exited while the job still had work outstanding"
    assert at_first_exit == reference("early_exit", books, tmp_path)


def test_crash(procs: Processes, tmp_path: Path, books: list[Path]) -> None:
    coord, endpoint = coordinator(procs, tmp_path, books)
    stop = threading.Event()

    def keep_a_worker_running() -> None:
        while coord.poll() is None and not stop.is_set():
            w = worker(procs, endpoint, "crash")
            while w.poll() is None and not stop.is_set():
                time.sleep(0.05)
            if coord.poll() is None:
                time.sleep(1.0)  # the lab's pause before a replacement

    first = worker(procs, endpoint, "crash")
    loops = [threading.Thread(target=keep_a_worker_running) for _ in range(3)]
    for t in loops:
        t.start()
    try:
        assert procs.wait(coord) == 0
    finally:
        stop.set()
        for t in loops:
            t.join(timeout=30)
    procs.wait(first)
    assert outputs(tmp_path) == reference("nocrash", books, tmp_path)


# ---- beyond the lab: kill -9 during `zactor mr run` ----------------------------------


def _descendants(pid: int) -> dict[int, int]:
    """pid -> depth below ``pid`` for every live descendant (from /proc)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if fields[0] != "Z":
                    parent[int(entry)] = int(fields[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    depth: dict[int, int] = {}
    frontier = [(pid, 0)]
    while frontier:
        p, d = frontier.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in depth:
                depth[child] = d + 1
                frontier.append((child, d + 1))
    return depth


def test_sigkill_workers_during_mr_run(procs: Processes, tmp_path: Path, books: list[Path]) -> None:
    out = tmp_path / "out"
    run = procs.start("mr", "run", "--app", "wc", "--workers", "3", "--task-timeout", "2", "--out", str(out), "--quiet", *map(str, books))
    rng = random.Random(1)
    kills = 0
    deadline = time.monotonic() + 40
    while run.poll() is None and kills < 4 and time.monotonic() < deadline:
        workers = [p for p, d in _descendants(run.pid).items() if d == 2]  # run -> fork server -> workers
        if workers:
            time.sleep(rng.uniform(0.0, 0.3))
            victim = rng.choice(workers)
            try:
                os.kill(victim, signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    assert procs.wait(run) == 0, run.stderr.read().decode() if run.stderr else ""
    assert kills >= 1, "the job ended before any worker could be killed"
    assert read_output_lines(sorted(out.glob("mr-out-*"))) == reference("wc", books, tmp_path)
