"""The soak tool's own pieces: the schedule, the append analysis, the lazy disk, the command line's errors."""

from __future__ import annotations

import dataclasses
import itertools
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from actors import Journal
from apps.linearizability import Operation
from apps.soak.run import SoakConfig, keep_going, stopped_early
from apps.soak.schedule import NEMESES, make_schedule, parse_nemeses
from apps.soak.verdict import FinalReadFailed, Findings, check_appends, check_final_reads
from tests.processes import soak_cli


def test_same_seed_gives_the_same_schedule():
    a = make_schedule(42, 600, tuple(NEMESES), 5)
    b = make_schedule(42, 600, tuple(reversed(NEMESES)), 5)  # the order nemeses are named in does not matter
    assert a == b
    assert len(a) > 50


def test_different_seeds_give_different_schedules():
    assert make_schedule(1, 600, tuple(NEMESES), 5) != make_schedule(2, 600, tuple(NEMESES), 5)


def test_schedule_faults_never_overlap_and_each_ends_before_the_run():
    faults = make_schedule(7, 300, tuple(NEMESES), 5)
    assert {f.kind for f in faults} == set(NEMESES)
    for a, b in itertools.pairwise(faults):
        assert a.offset + a.duration < b.offset
    assert faults[-1].offset + faults[-1].duration <= 300
    for f in faults:
        assert f.variant in NEMESES[f.kind]
        assert all(0 <= t < 5 for t in f.targets)


def test_schedule_uses_only_the_named_nemeses():
    assert {f.kind for f in make_schedule(3, 300, ("pause",), 5)} == {"pause"}
    assert make_schedule(3, 300, (), 5) == []


def test_fail_fast_stops_the_timed_part_at_a_violation_only_when_asked():
    config = SoakConfig("raft", 60.0, 1, ("kill",), 1, Path("out"), 10.0)
    clean, found = Findings(), Findings(violations=["window 1: not linearizable"])
    assert keep_going(config, 10.0, found) and not keep_going(config, 60.0, clean)
    assert stopped_early(config, 10.0) == {}
    config = dataclasses.replace(config, fail_fast=True)
    assert keep_going(config, 10.0, clean) and not keep_going(config, 10.0, found)
    assert not keep_going(config, 10.0, clean, found=1)  # a violation the target keeps until its final check
    assert stopped_early(config, 10.0)["stopped_early"].startswith("--fail-fast: stopped at 10 s of 60 s")
    assert stopped_early(config, 60.2) == {}


def test_parse_nemeses():
    allowed = tuple(NEMESES)
    assert parse_nemeses("kill, pause", allowed) == ("kill", "pause")
    assert parse_nemeses("all", allowed) == allowed
    assert parse_nemeses("none", allowed) == ()
    with pytest.raises(ValueError, match="unknown nemesis fire"):
        parse_nemeses("kill,fire", allowed)
    with pytest.raises(ValueError, match="no nemesis named"):
        parse_nemeses(" , ", allowed)


def _append(client: int, value: str, call: int, ret: int | None, out: str = "") -> Operation:
    return Operation(client, {"op": "append", "key": "k", "value": value + " "}, call, out if ret is not None else None, ret)


def test_check_appends_accepts_a_clean_list():
    ops = [_append(1, "a", 0, 10), _append(2, "b", 20, 30), _append(3, "c", 25, None)]
    assert check_appends("k", ops, "a b ") == []
    assert check_appends("k", ops, "a b c ") == []  # an unacknowledged append may land


def test_check_appends_names_a_lost_append():
    ops = [_append(1, "a", 0, 10), _append(2, "b", 20, 30)]
    problems = check_appends("k", ops, "a ")
    assert len(problems) == 1 and "1 acknowledged append(s) lost" in problems[0] and "'b'" in problems[0]


def test_check_appends_names_a_duplicated_append():
    ops = [_append(1, "a", 0, 10), _append(2, "b", 20, 30)]
    problems = check_appends("k", ops, "a b a ")
    assert len(problems) == 1 and "duplicated" in problems[0] and "'a'" in problems[0]


class _Window:
    """Stands in for a workload window: one list-append key with appends, one without."""

    def __init__(self, ops: list[Operation]) -> None:
        self.ops = ops

    def keys(self, workload: str) -> list[str]:
        assert workload == "list-append"
        return ["k", "untouched"]

    def history(self) -> list[Operation]:
        return self.ops


def test_check_final_reads_reads_each_key_with_appends_and_checks_it():
    windows = [_Window([_append(1, "a", 0, 10), _append(2, "b", 20, 30)])]
    asked: list[str] = []

    def read(key: str) -> str:
        asked.append(key)
        return "a "

    findings = Findings()
    assert check_final_reads(windows, read, findings) == 1
    assert asked == ["k"]  # a key nobody appended to is not read
    assert len(findings.violations) == 1 and "lost" in findings.violations[0]
    assert findings.invalid == []


def test_a_final_read_without_answer_makes_the_run_invalid_and_stops_the_reads():
    windows = [_Window([_append(1, "a", 0, 10)]), _Window([_append(1, "b", 40, 50)])]
    asked: list[str] = []

    def read(key: str) -> str:
        asked.append(key)
        raise FinalReadFailed("no answer for 60 s")

    findings = Findings()
    assert check_final_reads(windows, read, findings) is None
    assert asked == ["k"]
    assert findings.invalid == ["final read of k failed: no answer for 60 s"] and findings.violations == []


def test_check_appends_names_a_reordered_append():
    ops = [_append(1, "a", 0, 10), _append(2, "b", 20, 30)]  # a was acknowledged before b was called
    problems = check_appends("k", ops, "b a ")
    assert len(problems) == 1 and "reordered" in problems[0] and "'b'" in problems[0]


def test_check_appends_concurrent_appends_may_land_in_either_order():
    ops = [_append(1, "a", 0, 30), _append(2, "b", 10, 40)]
    assert check_appends("k", ops, "b a ") == []


def test_check_appends_names_a_phantom_value():
    ops = [_append(1, "a", 0, 10)]
    problems = check_appends("k", ops, "a zz ")
    assert len(problems) == 1 and "nobody appended" in problems[0]


def test_lazy_disk_keeps_unsynced_appends_out_of_the_file(tmp_path):
    j = Journal(tmp_path / "j", fsync=False, lazy=True)
    j.append([b"one"])
    assert Journal(tmp_path / "j").load() == []  # what a reader (a restart) sees: the append is not there
    j.sync()
    assert Journal(tmp_path / "j").load() == [b"one"]
    synced = Journal(tmp_path / "k", fsync=True, lazy=True)
    synced.append([b"two"])  # fsync on: written and synced at once, as without the lazy disk
    assert Journal(tmp_path / "k").load() == [b"two"]


def test_lazy_disk_a_kill_loses_exactly_the_unsynced_appends(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        from actors import Journal
        j = Journal({str(tmp_path / "j")!r}, fsync=False, lazy=True)
        j.append([b"a"]); j.sync()
        j.append([b"b"])
        print("ready", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait(10)
    assert Journal(tmp_path / "j").load() == [b"a"]


def test_cli_schedule_only_replays_by_seed():
    a = soak_cli("kvraft", "--minutes", "2", "--seed", "9", "--schedule-only")
    b = soak_cli("kvraft", "--minutes", "2", "--seed", "9", "--schedule-only")
    c = soak_cli("kvraft", "--minutes", "2", "--seed", "10", "--schedule-only")
    assert a.returncode == b.returncode == c.returncode == 0, a.stderr
    assert json.loads(a.stdout) == json.loads(b.stdout) != json.loads(c.stdout)
    assert json.loads(a.stdout)[0]["offset"] == 3.0


@pytest.mark.parametrize(
    "args, message",
    [
        (["kvraft", "--nemesis", "kill,fire"], "unknown nemesis fire"),
        (["mr", "--nemesis", "partition"], "unknown nemesis partition; this system takes kill"),
        (["kvraft", "--minutes", "-1"], "must be positive"),
        (["kvraft", "--minutes", "soon"], "not a number"),
        (["kvraft", "--clients", "0"], "must be positive"),
        (["kvraft", "--maxraftstate", "0"], "--maxraftstate must be -1"),
        (["zookeeper"], "invalid choice: 'zookeeper'"),
    ],
)
def test_cli_bad_flags_are_refused_clearly(args, message):
    r = soak_cli(*args)
    assert r.returncode == 2
    assert message in r.stderr


def test_cli_unknown_broken_variant_is_refused():
    r = soak_cli("kvraft", "--broken", "everything")
    assert r.returncode == 2
    assert "argument --broken: invalid choice: 'everything'" in r.stderr


def test_cli_names_every_broken_variant_there_is():
    from apps.soak.broken import VARIANTS
    from apps.soak.cli import BREAKS

    assert set(BREAKS) == set(VARIANTS)


def test_broken_variants_live_outside_the_production_modules():
    """No production module reads a switch from the environment to break itself (issue 24)."""
    root = Path(__file__).parent.parent
    for path in [*root.glob("apps/**/*.py"), *root.glob("actors/*.py")]:
        text = path.read_text()
        assert "ZACTOR_SOAK_BREAK" not in text and "ZACTOR_LAZY_DISK" not in text, path


def test_cli_asks_for_plotly_by_name_when_it_is_missing():
    code = "import sys; sys.modules['plotly'] = None; from apps.cli import main; sys.exit(main(['soak', 'kvraft', '--minutes', '0.1']))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=Path(__file__).parent.parent)
    assert r.returncode == 2
    assert "needs plotly: pip install 'zactor[soak]'" in r.stderr


def test_per_second_keeps_four_numbers_per_closed_second():
    from apps.soak.workload import PerSecond, Sample

    stats = PerSecond()
    for i in range(100):
        stats.add(Sample(0.5, (i + 1) / 1000.0, True, "get"))
    stats.add(Sample(0.7, 1.0, False, "put"))
    stats.add(Sample(20.2, 0.002, True, "get"))  # closes second 0
    stats.add(Sample(0.9, 0.5, True, "get"))  # a late call in a closed second still counts
    series = stats.series(21)
    assert series["ok"][0] == 101 and series["failed"][0] == 1 and series["ok"][20] == 1
    assert series["p50"][0] == 51.0 and series["p99"][0] == 100.0
    assert series["ok"][5] == 0 and series["p50"][5] is None
    assert stats.answered == 102 and stats.failed == 1


def test_a_compacted_window_keeps_only_its_appends():
    from apps.soak.workload import Window

    w = Window(3, 0.0)
    with w.recorder.op(1, {"op": "append", "key": "w3:l0", "value": "c1.1 "}) as rec:
        rec.output = ""
    with w.recorder.op(2, {"op": "get", "key": "w3:r0", "value": ""}) as rec:
        rec.output = "x"
    before = [op for op in w.history() if op.input["op"] == "append"]
    w.compact()
    assert w.recorder is None
    after = w.history()
    assert [(op.input["key"], op.input["value"], op.call, op.ret) for op in after] == [
        (op.input["key"], op.input["value"], op.call, op.ret) for op in before
    ]
    assert check_appends("w3:l0", after, "c1.1 ") == []
