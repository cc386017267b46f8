"""``zactor soak`` run for real: a clean run passes, each broken variant is caught, MapReduce passes.

Each test runs the command in its own process group (real server processes,
SIGKILL, SIGSTOP, fsync), reads its exit code and ``summary.json``, and kills
the whole group if it outlives its time, so no server survives a failure.
Speed is not asserted here (the machine is shared): clean runs pass
``--min-throughput 10`` so they only need real traffic; that the bar is
enforced is its own test, with a bar no run can reach.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.processes import soak_run

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.slow


def test_clean_kvraft_run_with_every_nemesis_passes(tmp_path):
    code, summary, err = soak_run(tmp_path / "report", "kvraft", "--minutes", "0.75", "--seed", "11", "--nemesis", "all", "--min-throughput", "10",
                              "--fail-fast")
    assert code == 0, err[-3000:]
    assert summary["verdict"] == "pass"
    assert summary["seconds"] >= 45 and "stopped_early" not in summary  # nothing found: --fail-fast runs its time
    assert set(summary["nemeses"]) == {"kill", "pause", "partition", "net", "disk", "burst", "vote", "stale", "membership"}
    safety = summary["state_machine_safety"]  # every server's applies compared, index by index, all run long
    assert safety["conflicting_indexes"] == 0 and safety["indexes_checked"] > 0 and min(safety["applies_recorded"]) > 0
    assert summary["windows"] and all(w["verdict"] == "OK" for w in summary["windows"])
    assert summary["final_reads"] > 0
    digests = {tuple(d) for d in summary["replicas"]}
    assert len(digests) == 1  # every replica at the same applied index with the same state
    page = (tmp_path / "report" / "report.html").read_text()
    assert "plotly" in page and "PASS" in page and "--seed 11" in page


def test_broken_ack_before_fsync_is_caught_by_disk(tmp_path):
    code, summary, err = soak_run(tmp_path / "report", "kvraft", "--minutes", "1", "--seed", "3", "--nemesis", "disk", broken="ack-before-fsync")
    assert code == 1, err[-3000:]
    assert any("acknowledged append(s) lost" in v for v in summary["violations"]), summary["violations"]
    assert summary["broken_variant"] == "ack-before-fsync"


def test_broken_stale_reads_are_caught_by_partition(tmp_path):
    code, summary, err = soak_run(tmp_path / "report", "kvraft", "--minutes", "1", "--seed", "2", "--nemesis", "partition,pause", broken="stale-reads")
    assert code == 1, err[-3000:]
    assert any("not linearizable" in v for v in summary["violations"]), summary["violations"]
    assert list((tmp_path / "report").glob("violation-window-*.html"))  # the checker's time line of the failing keys


def test_fail_fast_stops_at_the_first_violation_and_still_reports_it(tmp_path):
    code, summary, err = soak_run(tmp_path / "report", "kvraft", "--minutes", "3", "--seed", "2", "--nemesis", "partition,pause", "--window", "5",
                              "--fail-fast", broken="stale-reads")
    assert code == 1, err[-3000:]
    assert any("not linearizable" in v for v in summary["violations"]), summary["violations"]
    assert summary["seconds"] < 180
    assert summary["stopped_early"].startswith("--fail-fast: stopped at ")
    assert "--fail-fast" in summary["replay"]
    assert "stopped_early" in (tmp_path / "report" / "report.html").read_text()


def test_broken_dedup_left_out_of_snapshots_is_caught_by_kill(tmp_path):
    code, summary, err = soak_run(tmp_path / "report", "kvraft", "--minutes", "1", "--seed", "4", "--nemesis", "kill,net", broken="no-dedup-in-snapshot")
    assert code == 1, err[-3000:]
    assert any("duplicated" in v or "replicas differ" in v for v in summary["violations"]), summary["violations"]


def test_mr_soak_with_workers_killed_passes(tmp_path):
    code, summary, err = soak_run(tmp_path / "report", "mr", "--minutes", "0.5", "--seed", "5")
    assert code == 0, err[-3000:]
    assert summary["jobs"] and all(j["ok"] for j in summary["jobs"])
    assert summary["worker_kills"] > 0


def test_raft_soak_with_every_nemesis_passes(tmp_path):
    code, summary, err = soak_run(tmp_path / "report", "raft", "--minutes", "0.5", "--seed", "7", "--nemesis", "all", "--min-throughput", "10")
    assert code == 0, err[-3000:]
    assert summary["checked_commands"] > 0 and summary["final_index"] > summary["checked_commands"] - 1
    assert summary["events"]
    assert summary["snapshots_installed"] > 0  # restarts start from a snapshot, not from the whole log
    assert summary["corrupt_journals"]["refused"] > 0, "no damaged journal was refused: the next line checks nothing"
    assert "ERROR apps.raft.peer" not in err  # the refusals it caused are reported, not logged as errors


def test_a_run_below_the_minimum_throughput_is_invalid_not_passed(tmp_path):
    code, summary, err = soak_run(tmp_path / "report", "kvraft", "--minutes", "0.1", "--seed", "1", "--nemesis", "none", "--min-throughput", "1000000")
    assert code == 2, err[-3000:]
    assert summary["verdict"] == "invalid" and not summary["violations"]
    assert any("below the minimum 1e+06" in v for v in summary["invalid"]), summary["invalid"]
