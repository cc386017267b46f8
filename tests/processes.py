"""``zactor`` commands as child processes of a test, each killed at the end if still running.

The CLI tests start coordinators, workers and clusters the way a user would (``python -m
apps.cli mr ...``), wait for them with a limit, and must leave nothing behind, also
when an assertion fails half-way: one helper does that for all of them.
"""

from __future__ import annotations

import os
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class Processes:
    """Starts ``zactor`` processes (stdout discarded, stderr kept); :meth:`kill_all` kills what is left."""

    def __init__(self, cwd: Path, limit: float) -> None:
        self.cwd = cwd
        self.limit = limit
        """Seconds :meth:`wait` waits for a process before the test fails."""
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str, cwd: Path | None = None) -> subprocess.Popen:
        """``zactor ARGS`` in ``cwd`` (default the one given at construction; made if missing)."""
        where = cwd or self.cwd
        where.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "apps.cli", *args],
            cwd=where,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.procs.append(proc)
        return proc

    def wait(self, proc: subprocess.Popen) -> int:
        """The process's exit code; fails the test if it runs longer than the limit."""
        try:
            return proc.wait(timeout=self.limit)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{proc.args[3:5]} outlived its {self.limit} s limit")

    def kill_all(self) -> None:
        """SIGKILL every process still running, reap it, and close its stderr pipe."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            if proc.stderr:
                proc.stderr.close()


def listening(proc: subprocess.Popen, limit: float = 30.0) -> str:
    """The endpoint a coordinator says it listens on, read from its stderr as it prints it (it has bound by then)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + limit
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "the coordinator never said where it listens"
        if select.select([proc.stderr], [], [], remaining)[0]:
            # Unbuffered, a byte at a time: a buffered readline could take the next line out of
            # the pipe too, where select cannot see it (a warning printed just before the line).
            line = proc.stderr.raw.readline().decode()  # type: ignore[attr-defined]
            assert line, "the coordinator exited before it listened"
            found = re.search(r"listening on (\S+://\S+)", line)
            if found:
                return found.group(1)


def zactor(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``zactor ARGS`` run to its end (bounded by ``timeout``), output captured: the one way tests run a command."""
    return subprocess.run([sys.executable, "-m", "apps.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


class Lines:
    """A running command's stdout, line by line, with deadlines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._q: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._q.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line with {text!r} within {timeout} s; saw {self.seen}")
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line


@contextmanager
def running(*args: str) -> Iterator[Lines]:
    """``zactor ARGS`` running for the block, its output read line by line; SIGTERM at the end, then SIGKILL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
    )
    try:
        yield Lines(proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
