"""What a user sees of ``zactor soak`` when they stop it, or when the system stops answering for a while.

Ctrl-C (or SIGTERM) ends a run within seconds with its report, marked
interrupted, exit 130, and nothing of its process group left behind; an
outage in the middle of a run makes it invalid even when the run's average
is fine; the run's history is a file ``zactor check`` reads to the same
verdict. The real-run tests start real server processes in a session of
their own and kill that whole session if anything outlives its time.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from apps.linearizability import Operation
from apps.soak.run import SoakConfig, Status, status_line
from apps.soak.verdict import HISTORY_FILE, Findings, WindowChecker, slow_windows, window_throughputs
from tests.processes import Soak, zactor

ROOT = Path(__file__).parent.parent


# ---- pieces ------------------------------------------------------------------------------------


def test_every_full_window_is_judged_not_only_the_average():
    per_second = [100] * 20 + [0] * 10 + [100] * 30 + [7] * 4  # 64 s: an outage at 20-30 s, a short tail
    rates = window_throughputs(per_second, 64.0, 10)
    assert rates == [100.0, 100.0, 0.0, 100.0, 100.0, 100.0]  # the 4 s tail is not a window of its own
    assert sum(per_second) / 64 > 50  # the average alone would pass a bar of 50
    [finding] = slow_windows(rates, 10, 50.0)
    assert "in 1 of 6 windows of 10 s (20-30 s: 0/s)" in finding
    assert slow_windows(rates, 10, 0.0) == []


def test_the_status_clock_stops_at_the_end_of_the_timed_part():
    config = SoakConfig("kvraft", 60.0, 1, ("kill",), 1, Path("out"), 10.0)
    status = Status(config, stream=io.StringIO())
    status.end_timed_part(60.3)
    status.phase = "final reads"
    line = status_line(config, status, 101.0, 6000, "calls", 0, Findings())  # 41 s of final reads later
    assert " final reads 01:00/01:00 " in line and "calls 6000 (100/s)" in line


class _Window:
    def __init__(self, number: int, ops: list[Operation]) -> None:
        self.number = number
        self.ops = ops
        self.in_flight = 0

    def history(self) -> list[Operation]:
        return self.ops

    def compact(self) -> None:
        self.ops = [op for op in self.ops if op.input["op"] == "append"]


class _Workload:
    def __init__(self, windows: list[_Window]) -> None:
        self.windows = windows

    def finished_windows(self, grace: float) -> list[_Window]:
        return self.windows


def _op(client: int, op: str, key: str, value: str, call: int, ret: int, out: str | None) -> Operation:
    return Operation(client, {"op": op, "key": key, "value": value}, call, out, ret)


def _zactor_check(path: Path) -> subprocess.CompletedProcess[str]:
    return zactor("check", str(path), timeout=60)


def test_the_history_file_checks_to_the_verdict_the_run_found(tmp_path):
    clean = _Window(0, [_op(0, "put", "w0:r0", "a", 0, 10, None), _op(1, "get", "w0:r0", "", 20, 30, "a")])
    stale = _Window(1, [_op(0, "put", "w1:r0", "b", 40, 50, None), _op(1, "get", "w1:r0", "", 60, 70, "")])  # a stale read
    findings = Findings()
    checker = WindowChecker(_Workload([clean, stale]), findings, budget=10.0, grace=1.0, history=tmp_path / HISTORY_FILE)
    checker.check_ready()
    assert [w.verdict for w in findings.windows] == ["OK", "ILLEGAL"]
    lines = (tmp_path / HISTORY_FILE).read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[3])["input"] == {"op": "get", "key": "w1:r0", "value": ""}
    result = _zactor_check(tmp_path / HISTORY_FILE)
    assert result.returncode == 1 and "w1:r0" in result.stdout, result.stdout + result.stderr


# ---- real runs ---------------------------------------------------------------------------------


@pytest.fixture
def run_soak(tmp_path):
    runs: list[Soak] = []

    def start(*args: str) -> Soak:
        runs.append(Soak(tmp_path, *args))
        return runs[-1]

    yield start
    for r in runs:
        r.close()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_soak_stops_within_seconds_with_its_report(run_soak, how):
    soak = run_soak("kvraft", "--minutes", "2", "--seed", "5", "--min-throughput", "10", *(["--no-history"] if how == "sigterm" else []))
    soak.wait_for_status(20)
    if how == "ctrl-c":
        os.killpg(soak.pgid, signal.SIGINT)  # what the terminal does: the whole foreground group gets it
    else:
        os.kill(soak.proc.pid, signal.SIGTERM)  # `kill PID`: only the soak process itself
    sent = time.monotonic()
    try:
        code = soak.proc.wait(10.0)
    except subprocess.TimeoutExpired:
        pytest.fail("still running 10 s after the signal: " + "".join(soak.stderr)[-3000:])
    assert code == 130, "".join(soak.stderr)[-3000:]
    assert time.monotonic() - sent < 10.0
    deadline = time.monotonic() + 5.0  # the fork server leaves once it sees its parent gone
    while soak.group() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert soak.group() == [], "processes of the soak's group outlived it"
    summary = json.loads((soak.out / "summary.json").read_text())
    assert summary["verdict"] == "interrupted" and summary["interrupted"] is True and summary["exit_code"] == 130
    assert 15 <= summary["seconds"] < 120 and summary["stopped_early"].startswith("interrupted")
    assert summary["windows"] and all(w["verdict"] == "OK" for w in summary["windows"])
    assert "INTERRUPTED" in (soak.out / "report.html").read_text()
    assert (soak.out / HISTORY_FILE).exists() == (how == "ctrl-c")  # the sigterm run asked for --no-history
    err = "".join(soak.stderr)
    assert "INTERRUPTED" in err and "Traceback" not in err
    statuses = re.findall(r" (\d\d:\d\d)/02:00", err)
    assert statuses and max(statuses) <= "02:00"


@pytest.mark.slow
@pytest.mark.parametrize("system", ["raft", "mr"])
def test_ctrl_c_stops_the_other_soaks_too(run_soak, system):
    soak = run_soak(system, "--minutes", "2", "--seed", "5", *(["--min-throughput", "5"] if system == "raft" else []))
    soak.wait_for_status(10)
    os.killpg(soak.pgid, signal.SIGINT)
    try:
        code = soak.proc.wait(10.0)
    except subprocess.TimeoutExpired:
        pytest.fail("still running 10 s after Ctrl-C: " + "".join(soak.stderr)[-3000:])
    assert code == 130, "".join(soak.stderr)[-3000:]
    deadline = time.monotonic() + 5.0
    while soak.group() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert soak.group() == []
    summary = json.loads((soak.out / "summary.json").read_text())
    assert summary["verdict"] == "interrupted" and 10 <= summary["seconds"] < 120 and not summary["violations"]
    assert (soak.out / "report.html").exists() and "Traceback" not in "".join(soak.stderr)


@pytest.mark.slow
def test_a_soak_with_an_outage_in_the_middle_is_invalid_and_its_history_checks_clean(run_soak):
    # An outage the way the issue saw it: every server process stopped while the soak itself runs on.
    soak = run_soak("kvraft", "--minutes", "0.6", "--seed", "8", "--nemesis", "none", "--min-throughput", "10",
                    "--throughput-window", "5")
    soak.wait_for_status(10)
    stopped = [pid for pid in soak.group() if pid != soak.proc.pid]
    assert stopped  # the servers, their supervisor's fork server
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(12.0)  # the outage itself: its length is the point, not a wait for an event
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    code = soak.proc.wait(120.0)
    summary = json.loads((soak.out / "summary.json").read_text())
    assert code == 2, "".join(soak.stderr)[-3000:]
    assert summary["verdict"] == "invalid" and not summary["violations"]
    assert summary["throughput"] >= 10  # the run's average alone would have passed
    assert any(re.search(r"throughput below the minimum 10/s in \d+ of \d+ windows of 5 s", v) for v in summary["invalid"]), summary
    assert min(summary["window_throughputs"]) < 10
    # The recorded history: every checked call, and `zactor check` agrees with the run's windows.
    assert all(w["verdict"] == "OK" for w in summary["windows"])
    history = soak.out / HISTORY_FILE
    assert sum(1 for _ in history.open()) == sum(w["ops"] for w in summary["windows"])
    result = _zactor_check(history)
    assert result.returncode == 0, result.stdout + result.stderr
