"""The linearizability checker on histories whose answer is known."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apps.linearizability import KVModel, Operation, Recorder, Verdict, check, load, render_html, save
from apps.linearizability.cli import main as check_main
from apps.linearizability.history import HistoryError


def op(client: int, kind: str, key: str, value: str | None, output: object, call: int, ret: int | None) -> Operation:
    data = {"op": kind, "key": key} | ({"value": value} if value is not None else {})
    return Operation(client, data, call, output, ret)


def verdict(*ops: Operation) -> Verdict:
    return check(list(ops), KVModel(), timeout=5).verdict


# ---- small histories --------------------------------------------------------------


def test_sequential_history_is_linearizable() -> None:
    assert verdict(
        op(0, "put", "k", "a", None, 0, 10),
        op(0, "get", "k", None, "a", 20, 30),
        op(1, "append", "k", "b", "a", 40, 50),
        op(1, "get", "k", None, "ab", 60, 70),
    ) == Verdict.OK


def test_missing_key_reads_as_empty() -> None:
    assert verdict(op(0, "get", "nope", None, "", 0, 1)) == Verdict.OK
    assert verdict(op(0, "get", "nope", None, "x", 0, 1)) == Verdict.ILLEGAL


def test_stale_read_after_a_completed_put_is_illegal() -> None:
    assert verdict(
        op(0, "put", "k", "a", None, 0, 10),
        op(0, "put", "k", "b", None, 20, 30),
        op(1, "get", "k", None, "a", 40, 50),
    ) == Verdict.ILLEGAL


def test_concurrent_get_may_see_either_value() -> None:
    for seen in ("a", "b"):
        assert verdict(
            op(0, "put", "k", "a", None, 0, 10),
            op(0, "put", "k", "b", None, 20, 60),
            op(1, "get", "k", None, seen, 30, 50),
        ) == Verdict.OK


def test_values_cannot_flicker_back() -> None:
    assert verdict(
        op(0, "put", "k", "a", None, 0, 10),
        op(0, "put", "k", "b", None, 20, 100),
        op(1, "get", "k", None, "b", 30, 40),
        op(2, "get", "k", None, "a", 50, 60),
    ) == Verdict.ILLEGAL


def test_append_must_return_the_old_value() -> None:
    assert verdict(op(0, "append", "k", "x", "", 0, 1), op(0, "append", "k", "y", "x", 2, 3)) == Verdict.OK
    assert verdict(op(0, "append", "k", "x", "", 0, 1), op(0, "append", "k", "y", "", 2, 3)) == Verdict.ILLEGAL


def test_lost_append_is_illegal() -> None:
    assert verdict(
        op(0, "append", "k", "x", "", 0, 10),
        op(1, "get", "k", None, "", 20, 30),
    ) == Verdict.ILLEGAL


def test_duplicated_append_is_illegal() -> None:
    assert verdict(
        op(0, "append", "k", "x", "", 0, 10),
        op(1, "get", "k", None, "xx", 20, 30),
    ) == Verdict.ILLEGAL


def test_concurrent_appends_in_either_order() -> None:
    for final, first_old, second_old in (("xy", "", "x"), ("yx", "y", "")):
        assert verdict(
            op(0, "append", "k", "x", first_old, 0, 50),
            op(1, "append", "k", "y", second_old, 10, 40),
            op(2, "get", "k", None, final, 60, 70),
        ) == Verdict.OK


def test_touching_intervals_count_as_concurrent() -> None:
    # b's put is called at the instant the get returns: either order is allowed.
    assert verdict(
        op(0, "put", "k", "a", None, 0, 5),
        op(1, "get", "k", None, "b", 10, 20),
        op(2, "put", "k", "b", None, 20, 30),
    ) == Verdict.OK


def test_unreturned_operation_may_take_effect_late() -> None:
    assert verdict(
        op(0, "put", "k", "late", None, 0, None),
        op(1, "get", "k", None, "", 10, 20),
        op(1, "get", "k", None, "late", 30, 40),
    ) == Verdict.OK


def test_unreturned_operation_may_never_take_effect() -> None:
    assert verdict(
        op(0, "append", "k", "lost", None, 0, None),
        op(1, "get", "k", None, "", 10, 20),
        op(1, "put", "k", "v", None, 30, 40),
        op(1, "get", "k", None, "v", 50, 60),
    ) == Verdict.OK


def test_unreturned_operation_cannot_take_effect_before_its_call() -> None:
    assert verdict(
        op(1, "get", "k", None, "early", 0, 10),
        op(0, "put", "k", "early", None, 20, None),
    ) == Verdict.ILLEGAL


def test_partitions_by_key_and_names_the_bad_one() -> None:
    history = [
        op(0, "put", "good", "1", None, 0, 10),
        op(0, "get", "good", None, "1", 20, 30),
        op(1, "put", "bad", "1", None, 0, 10),
        op(1, "get", "bad", None, "2", 20, 30),
    ]
    result = check(history, KVModel(), timeout=5)
    assert result.verdict == Verdict.ILLEGAL
    assert [p.name for p in result.illegal] == ["key 'bad'"]
    (bad,) = result.illegal
    assert [bad.ops[i].input["op"] for i in bad.longest] == ["put"]
    assert [bad.ops[i].input["op"] for i in bad.stuck] == ["get"]


# ---- large and hard histories -----------------------------------------------------------


def random_linearizable_history(seed: int, clients: int = 10, per_client: int = 300, keys: int = 5) -> list[Operation]:
    """Operations with random overlapping intervals, each taking effect at a point inside its interval."""
    rng = random.Random(seed)
    state: dict[str, str] = {}
    ops = []
    point = 0
    busy_until = [0] * clients
    for _ in range(clients * per_client):
        point += rng.randint(1, 100)
        client = rng.randrange(clients)
        call = max(busy_until[client] + 1, point - rng.randint(0, 400))
        if call > point:
            call = point
        ret = point + rng.randint(0, 400)
        busy_until[client] = ret
        key = str(rng.randrange(keys))
        r = rng.random()
        if r < 0.4:
            ops.append(op(client, "get", key, None, state.get(key, ""), call, ret))
        elif r < 0.6:
            value = str(rng.randrange(1000))
            state[key] = value
            ops.append(op(client, "put", key, value, None, call, ret))
        else:
            value = f"{client}.{rng.randrange(100)};"
            old = state.get(key, "")
            state[key] = old + value
            ops.append(op(client, "append", key, value, old, call, ret))
    return ops


def test_large_random_history_is_decided_in_time() -> None:
    history = random_linearizable_history(seed=7)
    started = time.monotonic()
    result = check(history, KVModel(), timeout=30)
    elapsed = time.monotonic() - started
    assert result.verdict == Verdict.OK
    assert elapsed < 10, f"took {elapsed:.1f} s for {len(history)} operations"


def test_one_corrupted_output_in_a_large_history_is_found() -> None:
    history = random_linearizable_history(seed=8)
    i = next(i for i in range(len(history) // 2, len(history)) if history[i].input["op"] == "get" and history[i].output)
    bad = history[i]
    history[i] = Operation(bad.client, bad.input, bad.call, bad.output + "!", bad.ret)
    result = check(history, KVModel(), timeout=30)
    assert result.verdict == Verdict.ILLEGAL
    assert any(part.ops[j] == history[i] for part in result.illegal for j in part.stuck)


def test_exhausted_budget_is_unknown_never_ok() -> None:
    # 18 overlapping appends and a final read that no order explains: exponential to refute.
    history = [op(c, "append", "k", f"<{c}>", None, 0, None) for c in range(18)]
    history.append(op(99, "get", "k", None, "impossible", 10, 20))
    result = check(history, KVModel(), timeout=0.05)
    assert result.verdict == Verdict.UNKNOWN


# ---- recording, files, the page, the command ---------------------------------------------


def test_recorder_records_calls_returns_and_failures() -> None:
    recorder = Recorder()
    with recorder.op(1, {"op": "get", "key": "k"}) as rec:
        rec.output = "v"
    with pytest.raises(TimeoutError), recorder.op(2, {"op": "put", "key": "k", "value": "x"}):
        raise TimeoutError
    ok, failed = recorder.history()
    assert ok.output == "v" and ok.ret is not None and ok.ret >= ok.call
    assert failed.client == 2 and failed.ret is None


def test_history_file_round_trip(tmp_path: Path) -> None:
    history = random_linearizable_history(seed=3, clients=3, per_client=20)
    save(history, tmp_path / "h.jsonl")
    assert load(tmp_path / "h.jsonl") == history


@pytest.mark.parametrize(
    "line",
    ['{"client": 0}', "not json", '{"client": 0, "call": "x", "return": 1, "input": {}, "output": null}', '{"client": 0, "call": 5, "return": 1, "input": {}, "output": null}'],
)
def test_malformed_history_lines_name_the_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text('{"client": 0, "call": 1, "return": 2, "input": {"op": "get", "key": "k"}, "output": ""}\n' + line + "\n")
    with pytest.raises(HistoryError, match="line 2"):
        load(path)


def test_html_shows_the_failing_operation(tmp_path: Path) -> None:
    history = [op(0, "put", "k", "a", None, 0, 10), op(1, "get", "k", None, "zzz", 20, 30)]
    result = check(history, KVModel(), timeout=5)
    page = render_html(history, KVModel(), result, tmp_path / "h.html").read_text()
    assert "not linearizable" in page
    assert "get(&#x27;k&#x27;) -&gt; &#x27;zzz&#x27;" in page and "stuck" in page
    assert "<script src" not in page and "http" not in page.split("</style>")[1]


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    save(random_linearizable_history(seed=1, clients=3, per_client=30), good)
    save([op(0, "put", "k", "a", None, 0, 10), op(1, "get", "k", None, "b", 20, 30)], bad)
    assert check_main([str(good)]) == 0
    assert check_main([str(bad), "--html", str(tmp_path / "bad.html")]) == 1
    assert "cannot place: get('k') -> 'b'" in capsys.readouterr().out
    assert (tmp_path / "bad.html").exists()
    assert check_main([str(tmp_path / "missing.jsonl")]) == 2
    (tmp_path / "junk.jsonl").write_text("junk\n")
    assert check_main([str(tmp_path / "junk.jsonl")]) == 2
    hard = tmp_path / "hard.jsonl"
    save([op(c, "append", "k", f"<{c}>", None, 0, None) for c in range(18)] + [op(99, "get", "k", None, "no", 10, 20)], hard)
    assert check_main([str(hard), "--timeout", "0.05"]) == 3


def test_cli_as_a_module_in_a_subprocess(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps({"client": 0, "call": 0, "return": 1, "input": {"op": "get", "key": "k"}, "output": ""}) + "\n")
    out = subprocess.run([sys.executable, "-m", "apps.linearizability", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "linearizable" in out.stdout
    out = subprocess.run([sys.executable, "-m", "apps.cli", "check", str(path), "--model", "nope"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "invalid choice" in out.stderr
