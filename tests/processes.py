"""``zactor`` commands as child processes of a test, each killed at the end if still running.

The CLI tests start coordinators, workers and clusters the way a user would (``python -m
apps.cli mr ...``), wait for them with a limit, and must leave nothing behind, also
when an assertion fails half-way: one helper does that for all of them.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from apps.hosts.netns import state_dir
from tests.helpers import readable

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
        if readable(proc.stderr, remaining):
            # Unbuffered, a byte at a time: a buffered readline could take the next line out of
            # the pipe too, where poll cannot see it (a warning printed just before the line).
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

    def pending(self) -> list[str]:
        """The lines printed by now and not yet read, without waiting for more."""
        got = []
        while True:
            try:
                got.append(self._q.get_nowait())
            except queue.Empty:
                self.seen.extend(got)
                return got


@contextmanager
def running(*args: str, preexec_fn: Callable[[], Any] | None = None) -> Iterator[Lines]:
    """``zactor ARGS`` running for the block, its output read line by line; SIGTERM at the end, then SIGKILL.
    ``preexec_fn`` runs in the child before ``zactor`` starts (a resource limit, say)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        preexec_fn=preexec_fn,
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


# ---- zactor soak -------------------------------------------------------------------------------


def soak_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``zactor soak ARGS`` for what it prints and its exit code (help, usage errors, ``--schedule-only``)."""
    return subprocess.run([sys.executable, "-m", "apps.cli", "soak", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=ROOT)


def soak_run(out: Path, *args: str, broken: str = "", tree: Path = ROOT, env: dict[str, str] | None = None,
             timeout: float = 240.0) -> tuple[int, dict, str]:
    """A whole ``zactor soak ARGS --out OUT`` run in a session of its own, killed whole if it outlives
    ``timeout``: its exit code, its summary.json ({} when it wrote none) and its stderr.

    ``tree``: the source tree to run (a mutant's copy, for the mutation tests); ``broken``: ``--broken NAME``;
    ``env``: variables set for the run, over the test's own environment.
    """
    extra = ["--broken", broken] if broken else []
    env = {**os.environ, **(env or {}), **({"PYTHONPATH": str(tree)} if tree != ROOT else {})}
    proc = subprocess.Popen([sys.executable, "-m", "apps.cli", "soak", *args, *extra, "--out", str(out)], cwd=tree,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    summary = out / "summary.json"
    return proc.returncode, json.loads(summary.read_text()) if summary.exists() else {}, err


class Soak:
    """``zactor soak`` in a session of its own; its stderr lines as they come; the whole session killed at the end."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.out = tmp_path / "report"
        env = {k: v for k, v in os.environ.items() if k not in ("ZACTOR_SOAK_BREAK", "ZACTOR_LAZY_DISK")}
        self.proc = subprocess.Popen([sys.executable, "-m", "apps.cli", "soak", *args, "--out", str(self.out)], cwd=ROOT, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.pgid = self.proc.pid
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line)

    def wait_for_status(self, seconds: int, timeout: float = 120.0) -> None:
        """Until the status line shows at least ``seconds`` of traffic."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:
                assert self.proc.poll() is None, "".join(self.stderr)[-3000:]
                continue
            m = re.search(r" running (\d\d):(\d\d)/", line)
            if m and int(m[1]) * 60 + int(m[2]) >= seconds:
                return
        pytest.fail(f"no status line at {seconds} s within {timeout} s: {''.join(self.stderr)[-3000:]}")

    def group(self) -> list[int]:
        """Processes of the run's group still alive (zombies not counted: they have exited)."""
        alive = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            if int(fields[2]) == self.pgid and fields[0] != "Z":
                alive.append(int(entry))
        return alive

    def close(self) -> None:
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def leftovers(prefix: str) -> list[str]:
    """Every object named with ``prefix`` still on the machine: namespaces, links, nft tables, state file."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    found += [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith(prefix)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    found += [f"link {line}" for line in links.splitlines() if prefix in line]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    found += [f"nft {line}" for line in tables.splitlines() if prefix in line]
    if (state_dir() / f"{prefix}.json").exists():
        found.append("state file")
    return found
