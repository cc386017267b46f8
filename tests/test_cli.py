"""The ``zactor`` command as a user runs it: a real subprocess of the installed entry point."""

from __future__ import annotations

import json
import signal

import pytest

from apps.cli import plugins
from tests.processes import running, zactor


def test_help_lists_the_commands() -> None:
    out = zactor("--help")
    assert out.returncode == 0
    assert "bench" in out.stdout and "zactor bench" in out.stdout


def test_bench_is_plugged_in_through_the_entry_point_group() -> None:
    """apps.cli finds `zactor bench` in the zactor.commands entry points (setup.cfg), never by importing benchmarks."""
    assert plugins() == {"bench": "benchmarks.cli"}, "entry points missing: reinstall with pip install -e '.[dev,bench]'"
    out = zactor("--help")
    assert "run benchmarks (all, or one by name)" in out.stdout and "zactor bench transport --json" in out.stdout


def test_unknown_command_is_a_usage_error() -> None:
    out = zactor("frobnicate")
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


def test_unknown_benchmark_is_a_usage_error() -> None:
    out = zactor("bench", "nope")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_bad_benchmark_flag_is_a_usage_error() -> None:
    out = zactor("bench", "transport", "--batches", "0")
    assert out.returncode == 2 and "--batches" in out.stderr


@pytest.mark.slow
def test_bench_transport_json_has_the_promised_fields() -> None:
    out = zactor("bench", "transport", "--json", "--trials", "1", "--batches", "2", "--messages", "100")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for mode in ("raw_curve", "actor_curve", "raw_plain", "actor_plain"):
        assert result[f"{mode}_rtt_us"] > 0 and result[f"{mode}_msgs_per_s"] > 0
        assert result[f"{mode}_wakeups_per_rtt"] > 0 and result[f"{mode}_alloc_peak_bytes"] > 0
    assert result["rtt_cost_of_curve_actor"]["median"] > 0


@pytest.mark.slow
def test_bench_supervisor_json_reports_restart_latency() -> None:
    out = zactor("bench", "supervisor", "--json", "--restarts", "3")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["restarts"] == 3 and result["restart_p50_ms"] > 0
    assert "WARNING" not in out.stderr, f"the bench's own kills were warned of as crashes:\n{out.stderr}"


@pytest.mark.slow
def test_bench_mr_json_reports_the_pair_paths_floor() -> None:
    # the Pool running the lab wc's own Map alone: what no pair-path system can beat, next to the pair path's ratio
    out = zactor("bench", "mr", "--json", "--mb", "2", "--repeats", "1")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in ("pool_s", "zactor_s", "zactor_wc_s", "pool_map_s", "zactor_vs_pool", "zactor_wc_vs_pool", "wc_map_floor_vs_pool"):
        assert result[key] > 0, key
    assert set(result["all_times_s"]) == {"pool", "zactor", "zactor_wc", "pool_map"}
    assert "pool_map_s" not in json.loads(zactor("bench", "mr", "--json", "--mb", "1", "--repeats", "1", "--no-pairs").stdout)


@pytest.mark.slow
def test_bench_kv_json_has_all_three_sides_at_each_client_count() -> None:
    # frames (a bare socket sending the clerk's own frames) is what splits the kv/echo gap into its two halves
    out = zactor("bench", "kv", "--json", "--clients", "1,2", "--seconds", "0.3", "--trials", "2")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert [r["clients"] for r in result["runs"]] == [1, 2] and result["trials"] == 2
    for run in result["runs"]:
        for key in ("kv_ops_per_s", "frames_ops_per_s", "echo_ops_per_s", "ratio", "frames_ratio", "kv_p50_us", "frames_p50_us"):
            assert run[key] > 0, key
        assert len(run["trial_ratios"]) == len(run["frames_trial_ratios"]) == 2


@pytest.mark.slow
def test_bench_raft_json_has_both_systems_at_each_size() -> None:
    out = zactor("bench", "raft", "--json", "--seconds", "0.5", "--window", "200", "--sizes", "10,1000", "--trials", "2")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["zactor_fsync"] is True and result["pysyncobj_fsync"] is False
    assert len(result["pysyncobj_warning_samples"]) == min(result["pysyncobj_warnings"], 5)
    assert [r["size_bytes"] for r in result["runs"]] == [10, 1000] and result["trials"] == 2
    assert isinstance(result["zactor_phases_rerun"], int) and isinstance(result["pysyncobj_phases_rerun"], int)
    for run in result["runs"]:
        assert len(run["trial_ratios"]) == 2
        for key in ("zactor_ops_per_s", "pysyncobj_ops_per_s", "zactor_p50_ms", "pysyncobj_p50_ms"):
            assert run[key] > 0, key


def test_bench_raft_rejects_a_command_too_small_for_its_sequence_number() -> None:
    out = zactor("bench", "raft", "--sizes", "4")
    assert out.returncode == 2 and "at least 8 bytes" in out.stderr


def test_raft_cluster_prints_its_leader_and_stops() -> None:
    """Waits for the leader line (not a fixed --for, which a loaded machine can outrun), then stops it as Ctrl-C would."""
    with running("raft", "cluster", "--peers", "3", "--for", "120") as lines:
        lines.wait_for("3 peers running", 60)
        leader = lines.wait_for(" leader ", 60)
        assert "term " in leader
        lines.proc.send_signal(signal.SIGTERM)
        assert lines.proc.wait(timeout=30) == 0
        assert lines.wait_for("stopped", 10).strip() == "stopped"


def test_system_commands_have_their_own_help() -> None:
    for command in ("mr", "kv", "raft", "check"):
        out = zactor(command, "--help")
        assert out.returncode == 0 and f"zactor {command}" in out.stdout, command
