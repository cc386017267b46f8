"""The linearizability checker, on histories whose answer is known.

Small hand-made histories pin down the rules (real-time order, closed
intervals, append answering the old value, operations that never returned);
random small histories are compared with a brute-force search over every
order; large histories come from simulated concurrent clients against a
sequential store, so they are linearizable by construction until one output
is corrupted.
"""

from __future__ import annotations

import heapq
import html
import itertools
import json
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import pytest

from apps.linearizability import (
    MODELS,
    NO_REPLY,
    HistoryError,
    KVInput,
    KVModel,
    Model,
    ModelError,
    Operation,
    Recorder,
    Verdict,
    check,
    load,
    render_html,
    save,
)
from apps.linearizability.cli import main as check_main

# ---- helpers ----------------------------------------------------------------------------


def kv(client: int, kind: str, key: str, value: str | None, output: Any, call: int, ret: int | None) -> Operation:
    data: dict[str, Any] = {"op": kind, "key": key}
    if value is not None:
        data["value"] = value
    return Operation(client, data, call, output, ret)


def get(client: int, key: str, output: Any, call: int, ret: int | None) -> Operation:
    return kv(client, "get", key, None, output, call, ret)


def put(client: int, key: str, value: str, call: int, ret: int | None) -> Operation:
    return kv(client, "put", key, value, None, call, ret)


def append(client: int, key: str, value: str, output: Any, call: int, ret: int | None) -> Operation:
    return kv(client, "append", key, value, output, call, ret)


def verdict(*ops: Operation) -> Verdict:
    return check(list(ops), KVModel(), timeout=10).verdict


def simulate(seed: int, clients: int = 10, per_client: int = 300, keys: int = 5, lost: float = 0.0) -> list[Operation]:
    """Concurrent clients against one sequential store, in simulated time.

    Each client issues one operation at a time. The store applies it at a
    random moment after its call and the reply arrives a random while later,
    so the history is linearizable by construction. With probability
    ``lost`` a client gives up on an operation (recorded with ret=None); the
    store then applies it at some later moment, or never.
    """
    rng = random.Random(seed)
    store: dict[str, str] = {}
    ops: list[Operation] = []
    events: list[tuple[int, int, str, int, Any]] = []
    seq = itertools.count()

    def schedule(at: int, kind: str, client: int, payload: Any = None) -> None:
        heapq.heappush(events, (at, next(seq), kind, client, payload))

    left = [per_client] * clients
    for c in range(clients):
        schedule(rng.randint(0, 500), "call", c)
    while events:
        now, _, kind, c, payload = heapq.heappop(events)
        if kind == "call":
            key, r = f"k{rng.randrange(keys)}", rng.random()
            if r < 0.45:
                inp = {"op": "get", "key": key}
            elif r < 0.6:
                inp = {"op": "put", "key": key, "value": f"p{c}.{rng.randrange(100)};"}
            else:
                inp = {"op": "append", "key": key, "value": f"{c}.{rng.randrange(100)};"}
            if rng.random() < lost:
                ops.append(Operation(c, inp, now, None, None))
                if rng.random() < 0.5:
                    schedule(now + rng.randint(0, 5000), "apply", c, (now, inp, False))
                after = now + 1500  # the client's own timeout
            else:
                schedule(now + rng.randint(0, 400), "apply", c, (now, inp, True))
                continue
        elif kind == "apply":
            call, inp, answered = payload
            old = store.get(inp["key"], "")
            if inp["op"] != "get":
                store[inp["key"]] = inp["value"] if inp["op"] == "put" else old + inp["value"]
            if answered:
                schedule(now + rng.randint(0, 400), "return", c, (call, inp, None if inp["op"] == "put" else old))
            continue
        else:
            call, inp, out = payload
            ops.append(Operation(c, inp, call, out, now))
            after = now + rng.randint(0, 100)
        left[c] -= 1
        if left[c]:
            schedule(after, "call", c)
    return ops


def brute_force(ops: Sequence[Operation], model: Model) -> bool:
    """Linearizable by trying every order of every subset of the unreturned operations."""
    unreturned = [i for i, op in enumerate(ops) if op.ret is None]
    for k in range(len(unreturned) + 1):
        for dropped in itertools.combinations(unreturned, k):
            kept = [i for i in range(len(ops)) if i not in dropped]
            for order in itertools.permutations(kept):
                if _respects_real_time(ops, order) and _legal(ops, order, model):
                    return True
    return False


def _respects_real_time(ops: Sequence[Operation], order: Sequence[int]) -> bool:
    for a, b in itertools.combinations(order, 2):  # a is placed before b
        ret_b = ops[b].ret
        if ret_b is not None and ret_b < ops[a].call:
            return False
    return True


def _legal(ops: Sequence[Operation], order: Sequence[int], model: Model) -> bool:
    state = model.init()
    for i in order:
        op = ops[i]
        ok, state = model.step(state, op.input, NO_REPLY if op.ret is None else op.output)
        if not ok:
            return False
    return True


def random_small_history(rng: random.Random, n: int) -> list[Operation]:
    """A few operations on one key with random intervals; outputs right or slightly wrong."""
    ops = []
    value = ""
    for client in range(n):
        call = rng.randint(0, 12)
        ret = None if rng.random() < 0.15 else call + rng.randint(0, 8)
        kind = rng.choice(("get", "put", "append"))
        v = rng.choice("ab")
        # Outputs follow a random sequential run most of the time, so a fair
        # share of the histories is linearizable.
        out: Any = None if kind == "put" else value if rng.random() < 0.7 else rng.choice(("", "a", "b", "ab", "ba", "aa"))
        if kind == "put":
            value = v
        elif kind == "append":
            value += v
        ops.append(kv(client, kind, "k", None if kind == "get" else v, out, call, ret))
    return ops


class NoShortcutKV(KVModel):
    """The KV model without the read-only hint, to check the hint changes no verdict."""

    def is_read_only(self, input: Any) -> bool:
        return False


class SetModel(Model):
    """A grow-only set with unhashable (list) states: it needs state_key."""

    name = "set"

    def init(self) -> list[str]:
        return []

    def step(self, state: list[str], input: Any, output: Any) -> tuple[bool, list[str]]:
        if input["op"] == "add":
            return True, sorted({*state, input["value"]})
        return output is NO_REPLY or output == state, state

    def state_key(self, state: list[str]) -> Hashable:
        return tuple(state)


# ---- the rules, on small histories ----------------------------------------------------------


def test_sequential_history_is_linearizable() -> None:
    history = [put(0, "k", "a", 0, 10), get(0, "k", "a", 20, 30), append(1, "k", "b", "a", 40, 50), get(1, "k", "ab", 60, 70)]
    assert verdict(*history) == Verdict.OK


def test_sequential_history_with_a_wrong_read_is_illegal() -> None:
    assert verdict(put(0, "k", "a", 0, 10), get(1, "k", "b", 20, 30)) == Verdict.ILLEGAL


def test_missing_key_reads_as_empty() -> None:
    assert verdict(get(0, "nope", "", 0, 1)) == Verdict.OK
    assert verdict(get(0, "nope", "x", 0, 1)) == Verdict.ILLEGAL


def test_stale_read_after_a_completed_put_is_illegal() -> None:
    assert verdict(put(0, "k", "a", 0, 10), put(0, "k", "b", 20, 30), get(1, "k", "a", 40, 50)) == Verdict.ILLEGAL


def test_read_overlapping_a_put_may_see_either_value() -> None:
    for seen in ("a", "b"):
        assert verdict(put(0, "k", "a", 0, 10), put(0, "k", "b", 20, 60), get(1, "k", seen, 30, 50)) == Verdict.OK


def test_put_get_race_cannot_flicker_back() -> None:
    # Two reads, one after the other, both during the put of b: new then old is impossible.
    history = [put(0, "k", "a", 0, 10), put(0, "k", "b", 20, 100), get(1, "k", "b", 30, 40), get(2, "k", "a", 50, 60)]
    assert verdict(*history) == Verdict.ILLEGAL
    # Old then new is fine.
    history[2:] = [get(1, "k", "a", 30, 40), get(2, "k", "b", 50, 60)]
    assert verdict(*history) == Verdict.OK


def test_append_answers_the_value_before_it() -> None:
    assert verdict(append(0, "k", "x", "", 0, 1), append(0, "k", "y", "x", 2, 3), get(0, "k", "xy", 4, 5)) == Verdict.OK
    assert verdict(append(0, "k", "x", "", 0, 1), append(0, "k", "y", "", 2, 3)) == Verdict.ILLEGAL
    # Answering the new value instead of the old one is wrong too.
    assert verdict(append(0, "k", "x", "x", 0, 1)) == Verdict.ILLEGAL


def test_lost_append_is_illegal() -> None:
    assert verdict(append(0, "k", "x", "", 0, 10), get(1, "k", "", 20, 30)) == Verdict.ILLEGAL


def test_duplicated_append_is_illegal() -> None:
    assert verdict(append(0, "k", "x", "", 0, 10), get(1, "k", "xx", 20, 30)) == Verdict.ILLEGAL


def test_overlapping_appends_in_either_order() -> None:
    for final, first_old, second_old in (("xy", "", "x"), ("yx", "y", "")):
        history = [append(0, "k", "x", first_old, 0, 50), append(1, "k", "y", second_old, 10, 40), get(2, "k", final, 60, 70)]
        assert verdict(*history) == Verdict.OK
    # Both cannot have seen the empty value.
    assert verdict(append(0, "k", "x", "", 0, 50), append(1, "k", "y", "", 10, 40)) == Verdict.ILLEGAL


def test_touching_intervals_count_as_concurrent() -> None:
    # The put is called at the very instant the read returns: either order is allowed.
    assert verdict(put(0, "k", "a", 0, 5), get(1, "k", "b", 10, 20), put(2, "k", "b", 20, 30)) == Verdict.OK
    # One nanosecond later it is not.
    assert verdict(put(0, "k", "a", 0, 5), get(1, "k", "b", 10, 20), put(2, "k", "b", 21, 30)) == Verdict.ILLEGAL


def test_unreturned_operation_may_take_effect_late() -> None:
    # Called first, never returned, seen only after two other operations have come and gone.
    assert (
        verdict(put(0, "k", "late", 0, None), get(1, "k", "", 10, 20), append(1, "k", "x", "", 30, 40), get(1, "k", "late", 50, 60))
        == Verdict.OK
    )


def test_unreturned_operation_may_never_take_effect() -> None:
    assert (
        verdict(append(0, "k", "lost", None, 0, None), get(1, "k", "", 10, 20), put(1, "k", "v", 30, 40), get(1, "k", "v", 50, 60))
        == Verdict.OK
    )


def test_unreturned_operation_output_is_not_checked() -> None:
    assert verdict(append(0, "k", "x", "nonsense", 0, None), get(1, "k", "x", 10, 20)) == Verdict.OK


def test_unreturned_operation_cannot_take_effect_before_its_call() -> None:
    assert verdict(get(1, "k", "early", 0, 10), put(0, "k", "early", 20, None)) == Verdict.ILLEGAL


def test_unreturned_operation_takes_effect_at_most_once() -> None:
    assert verdict(append(0, "k", "x", None, 0, None), get(1, "k", "xx", 10, 20)) == Verdict.ILLEGAL


def test_typed_inputs_work_like_dicts() -> None:
    history = [Operation(0, KVInput("put", "k", "a"), 0, None, 10), Operation(1, KVInput("append", "k", "b"), 20, "a", 30)]
    assert check(history, KVModel(), timeout=5).verdict == Verdict.OK
    with pytest.raises(ValueError, match="op must be one of"):
        KVInput("delete", "k")


def test_an_operation_cannot_return_before_its_call() -> None:
    with pytest.raises(ValueError, match="before its call"):
        get(0, "k", "", 10, 9)


def test_malformed_input_is_a_model_error_naming_the_operation() -> None:
    with pytest.raises(ModelError, match=r"client 3.*unknown op 'delete'"):
        check([get(0, "k", "", 0, 1), kv(3, "delete", "k", None, None, 5, 6)], KVModel())
    with pytest.raises(ModelError, match="put needs a value"):
        check([Operation(1, {"op": "put", "key": "k"}, 0, None, 1)], KVModel())
    with pytest.raises(ModelError, match="append needs a string value"):
        check([Operation(1, {"op": "append", "key": "k", "value": 7}, 0, None, 1)], KVModel())


def test_unhashable_states_are_remembered_by_state_key() -> None:
    adds = [Operation(c, {"op": "add", "value": v}, 0, None, 10) for c, v in enumerate("ba")]
    good = check([*adds, Operation(9, {"op": "read"}, 20, ["a", "b"], 30)], SetModel(), timeout=5)
    bad = check([*adds, Operation(9, {"op": "read"}, 20, ["a"], 30)], SetModel(), timeout=5)
    assert (good.verdict, bad.verdict) == (Verdict.OK, Verdict.ILLEGAL)


# ---- partitions and the report of a failure ---------------------------------------------------


def test_an_illegal_key_among_legal_ones_is_named_with_its_prefix_and_culprit() -> None:
    history = [
        put(0, "good", "1", 0, 10),
        get(0, "good", "1", 20, 30),
        put(1, "bad", "1", 0, 10),
        append(1, "bad", "2", "1", 15, 18),
        get(2, "bad", "1", 20, 30),
        put(0, "other", "x", 0, 40),
        get(3, "bad", "1", 40, 50),  # also wrong, but real time puts it after the first culprit
    ]
    result = check(history, KVModel(), timeout=5)
    assert result.verdict == Verdict.ILLEGAL
    assert {p.name: p.verdict for p in result.partitions} == {
        "key 'bad'": Verdict.ILLEGAL,
        "key 'good'": Verdict.OK,
        "key 'other'": Verdict.OK,
    }
    (bad,) = result.illegal
    assert bad.prefix_ops == [history[2], history[3]]
    assert bad.stuck_ops == [history[4]]
    assert bad.state == "12"
    assert [state for _, state in bad.replay(KVModel())] == ["1", "12"]


def test_ok_partition_carries_a_complete_linearization() -> None:
    history = [put(0, "k", "a", 0, 50), get(1, "k", "", 10, 20), append(2, "k", "b", "a", 60, 70)]
    (part,) = check(history, KVModel(), timeout=5).partitions
    assert part.verdict == Verdict.OK
    assert part.prefix_ops == [history[1], history[0], history[2]]
    assert part.state == "ab"


@pytest.mark.parametrize("model", [KVModel(), NoShortcutKV()], ids=["kv", "kv-without-read-hint"])
def test_search_agrees_with_brute_force_on_random_small_histories(model: Model) -> None:
    rng = random.Random(2024)
    seen = {Verdict.OK: 0, Verdict.ILLEGAL: 0}
    for _ in range(300):
        ops = random_small_history(rng, rng.randint(1, 6))
        expected = Verdict.OK if brute_force(ops, model) else Verdict.ILLEGAL
        got = check(ops, model, timeout=5).verdict
        assert got == expected, ops
        seen[got] += 1
    # Both answers are exercised, or this test would prove little.
    assert min(seen.values()) >= 60, seen


# ---- large and hard histories -----------------------------------------------------------


@pytest.mark.timeout(60)
def test_large_random_history_is_decided_ok_in_time() -> None:
    history = simulate(seed=7, clients=10, per_client=2000, keys=5, lost=0.01)
    assert len(history) == 20_000
    started = time.monotonic()
    result = check(history, KVModel(), timeout=30)
    elapsed = time.monotonic() - started
    assert result.verdict == Verdict.OK
    assert elapsed < 10, f"took {elapsed:.1f} s for {len(history)} operations"


@pytest.mark.timeout(60)
def test_large_random_history_on_one_key_is_decided_ok_in_time() -> None:
    history = simulate(seed=11, clients=10, per_client=1000, keys=1)
    started = time.monotonic()
    result = check(history, KVModel(), timeout=30)
    assert result.verdict == Verdict.OK
    assert time.monotonic() - started < 10


@pytest.mark.timeout(60)
def test_one_corrupted_output_in_a_large_history_is_found() -> None:
    history = simulate(seed=8, clients=10, per_client=1000, keys=5)
    i = next(
        i
        for i in range(len(history) // 2, len(history))
        if history[i].input["op"] == "get" and history[i].output and history[i].input["key"] == "k3"
    )
    bad = history[i]
    history[i] = Operation(bad.client, bad.input, bad.call, bad.output + "!", bad.ret)
    result = check(history, KVModel(), timeout=30)
    assert result.verdict == Verdict.ILLEGAL
    assert [p.name for p in result.illegal] == ["key 'k3'"]
    assert history[i] in result.illegal[0].stuck_ops


def hard_history(appends: int) -> list[Operation]:
    """Overlapping appends that never returned and a read no order explains: exponential to refute."""
    return [append(c, "hard", f"<{c}>", None, 0, None) for c in range(appends)] + [get(99, "hard", "impossible", 10, 20)]


def test_hard_history_is_illegal_when_small_enough_to_finish() -> None:
    assert check(hard_history(5), KVModel(), timeout=None).verdict == Verdict.ILLEGAL


def test_exhausted_budget_is_unknown_never_ok() -> None:
    result = check(hard_history(18), KVModel(), timeout=0.05)
    assert result.verdict == Verdict.UNKNOWN
    assert [p.verdict for p in result.partitions] == [Verdict.UNKNOWN]
    # Even a trivially legal history is UNKNOWN when there is no budget at all.
    assert check([get(0, "k", "", 0, 1)], KVModel(), timeout=0).verdict == Verdict.UNKNOWN


def test_a_hard_part_does_not_hide_an_easy_illegal_one() -> None:
    # The hard key sorts first; taking turns still reaches the stale read.
    history = [*hard_history(18), put(0, "x", "a", 0, 10), get(1, "x", "", 20, 30)]
    result = check(history, KVModel(), timeout=0.3)
    assert result.verdict == Verdict.ILLEGAL
    assert {p.name: p.verdict for p in result.partitions} == {"key 'hard'": Verdict.UNKNOWN, "key 'x'": Verdict.ILLEGAL}


# ---- recording -----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        self.now += 10
        return self.now


def test_recorder_takes_call_and_return_times() -> None:
    recorder = Recorder(clock=FakeClock())
    with recorder.op(1, {"op": "get", "key": "k"}) as rec:
        rec.output = "v"
    assert recorder.history() == [Operation(1, {"op": "get", "key": "k"}, 10, "v", 20)]


def test_recorder_leaves_failed_abandoned_and_running_operations_open() -> None:
    recorder = Recorder(clock=FakeClock())
    with pytest.raises(TimeoutError), recorder.op(2, {"op": "put", "key": "k", "value": "x"}) as rec:
        rec.output = "half-done"
        raise TimeoutError
    with recorder.op(3, {"op": "append", "key": "k", "value": "y"}) as rec:
        rec.output = "whatever"
        rec.no_reply()
    running = recorder.op(4, {"op": "get", "key": "k"})
    running.__enter__()
    running.output = "not yet"
    history = recorder.history()
    assert [(op.client, op.output, op.ret) for op in history] == [(2, None, None), (3, None, None), (4, None, None)]
    running.__exit__(None, None, None)
    assert recorder.history()[-1].ret is not None


def test_recorder_is_thread_safe_and_its_history_checks_ok() -> None:
    recorder = Recorder()
    store: dict[str, str] = {}
    lock = threading.Lock()
    start = threading.Barrier(6)

    def client(cid: int) -> None:
        rng = random.Random(cid)
        start.wait()
        for n in range(200):
            key = f"k{rng.randrange(3)}"
            if rng.random() < 0.5:
                with recorder.op(cid, {"op": "append", "key": key, "value": f"{cid}.{n};"}) as rec, lock:
                    rec.output = store.get(key, "")
                    store[key] = rec.output + f"{cid}.{n};"
            else:
                with recorder.op(cid, {"op": "get", "key": key}) as rec, lock:
                    rec.output = store.get(key, "")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = recorder.history()
    assert len(history) == len(recorder) == 1200
    assert all(op.ret is not None for op in history)
    assert [op.call for op in history] == sorted(op.call for op in history)
    assert check(history, KVModel(), timeout=10).verdict == Verdict.OK


# ---- history files ------------------------------------------------------------------------


def test_history_file_round_trip(tmp_path: Path) -> None:
    history = simulate(seed=3, clients=3, per_client=30, lost=0.1)
    assert any(op.ret is None for op in history)
    path = save(history, tmp_path / "h.jsonl")
    assert load(path) == history


def test_typed_inputs_are_saved_as_objects(tmp_path: Path) -> None:
    save([Operation(0, KVInput("put", "k", "v"), 1, None, 2)], tmp_path / "h.jsonl")
    (op,) = load(tmp_path / "h.jsonl")
    assert op.input == {"op": "put", "key": "k", "value": "v"}


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text('\n{"client": 0, "call": 1, "return": null, "input": {"op": "get", "key": "k"}}\n\n')
    assert load(path) == [Operation(0, {"op": "get", "key": "k"}, 1, None, None)]


GOOD_LINE = b'{"client": 0, "call": 1, "return": 2, "input": {"op": "get", "key": "k"}, "output": ""}\n'


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"client": 0, "call": 1, "return": 2}', 'no "input" field'),
        (b'{"call": 1, "return": 2, "input": {}}', 'no "client" field'),
        (b'{"client": 0, "call": "1", "return": 2, "input": {}}', '"call" must be an integer'),
        (b'{"client": true, "call": 1, "return": 2, "input": {}}', '"client" must be an integer'),
        (b'{"client": 0, "call": 1, "return": 2.5, "input": {}}', '"return" must be an integer or null'),
        (b'{"client": 0, "call": 5, "return": 1, "input": {}}', "before its call"),
        (b'{"client": 0, "call": 1, "return": 2, "input": "\xff"}', "not UTF-8"),
    ],
)
def test_malformed_lines_are_reported_with_their_line_number(tmp_path: Path, line: bytes, message: str) -> None:
    path = tmp_path / "h.jsonl"
    path.write_bytes(GOOD_LINE + line + b"\n" + GOOD_LINE)
    with pytest.raises(HistoryError, match=f"line 2: .*{re.escape(message)}") as err:
        load(path)
    assert err.value.line == 2


# ---- the page ---------------------------------------------------------------------------------


def page_data(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="history-data">(.*?)</script>', page, re.S)
    assert match is not None
    return json.loads(match.group(1))


def test_html_shows_the_failing_operation_and_the_prefix(tmp_path: Path) -> None:
    history = [
        put(0, "k", "a", 0, 10),
        append(1, "k", "b", "a", 12, 18),
        get(2, "k", "zzz", 20, 30),
        put(3, "fine", "v", 0, 5),
    ]
    model = KVModel()
    result = check(history, model, timeout=5)
    page = render_html(history, model, result, tmp_path / "h.html").read_text(encoding="utf-8")
    failing = model.describe_operation(history[2].input, history[2].output)
    assert failing == "get('k') -> 'zzz'"
    # In the plain-HTML summary (readable without script) ...
    assert "not linearizable" in page
    assert f"cannot place {html.escape(failing)} (client 2)" in page
    # ... and in the data the time line is drawn from.
    data = page_data(page)
    assert data["verdict"] == "illegal"
    first = data["parts"][0]
    assert first["name"] == "key 'k'" and first["verdict"] == "illegal"
    stuck = [op for op in first["ops"] if op[5]]
    assert [op[3] for op in stuck] == [failing]
    prefix = sorted((op for op in first["ops"] if op[4] >= 0), key=lambda op: op[4])
    assert [(op[3], op[6]) for op in prefix] == [("put('k', 'a')", "'a'"), ("append('k', 'b') -> 'a'", "'ab'")]
    assert first["final"] == "'ab'"
    # Self-contained: no fetched resources.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "@import" not in page


def test_html_data_cannot_break_out_of_its_script_element(tmp_path: Path) -> None:
    history = [put(0, "k", "</script><script>alert(1)</script>", 0, 10)]
    result = check(history, KVModel(), timeout=5)
    page = render_html(history, KVModel(), result, tmp_path / "h.html").read_text(encoding="utf-8")
    assert "<script>alert(1)" not in page
    assert page_data(page)["parts"][0]["ops"][0][3].startswith("put('k', '</script>")


def test_html_renders_ok_and_unknown_histories(tmp_path: Path) -> None:
    ok = simulate(seed=5, clients=4, per_client=50, keys=2, lost=0.05)
    page = render_html(ok, KVModel(), check(ok, KVModel(), timeout=10), tmp_path / "ok.html").read_text(encoding="utf-8")
    assert len(page_data(page)["parts"]) == 2 and ">linearizable<" in page
    hard = hard_history(18)
    page = render_html(hard, KVModel(), check(hard, KVModel(), timeout=0.02), tmp_path / "u.html").read_text(encoding="utf-8")
    assert page_data(page)["parts"][0]["verdict"] == "unknown"


# ---- the command ------------------------------------------------------------------------------


def test_cli_exit_codes_and_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad, hard = tmp_path / "good.jsonl", tmp_path / "bad.jsonl", tmp_path / "hard.jsonl"
    save(simulate(seed=1, clients=3, per_client=30), good)
    save([put(0, "k", "a", 0, 10), get(1, "k", "b", 20, 30), put(0, "j", "c", 0, 10)], bad)
    save(hard_history(18), hard)

    assert check_main([str(good)]) == 0
    assert capsys.readouterr().out.startswith("linearizable: 90 operations")

    assert check_main([str(bad), "--model", "kv", "--html", str(tmp_path / "bad.html")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("not linearizable")
    assert "key 'k': after 1 of 2 operations (state 'a'), cannot place: get('k') -> 'b' by client 1" in out
    assert "key 'j'" not in out
    assert html.escape("get('k') -> 'b'") in (tmp_path / "bad.html").read_text(encoding="utf-8")

    assert check_main([str(hard), "--timeout", "0.05"]) == 3
    assert "unknown" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.jsonl"], "no such file"),
        (["junk.jsonl"], "junk.jsonl, line 1: not JSON"),
        (["wrong-op.jsonl"], "does not fit the kv model"),
        (["good.jsonl", "--model", "nope"], "invalid choice"),
        (["good.jsonl", "--timeout", "soon"], "not a number of seconds"),
        (["good.jsonl", "--timeout", "-1"], ">= 0"),
        ([], "required"),
        (["."], "cannot read"),
    ],
)
def test_cli_bad_usage_or_input_exits_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    save([get(0, "k", "", 0, 1)], "good.jsonl")
    Path("junk.jsonl").write_text("junk\n")
    save([kv(0, "delete", "k", None, None, 0, 1)], "wrong-op.jsonl")
    assert check_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_cli_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "HISTORY_FILE" in out and "exit status: 0 linearizable, 1 not linearizable" in out


def test_cli_knows_models_added_to_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODELS, "set", SetModel())
    path = save([Operation(0, {"op": "add", "value": "a"}, 0, None, 5), Operation(1, {"op": "read"}, 10, [], 20)], tmp_path / "s.jsonl")
    assert check_main([str(path), "--model", "set"]) == 1


def test_cli_as_a_module_in_a_subprocess(tmp_path: Path) -> None:
    path = save([put(0, "k", "a", 0, 10), get(1, "k", "b", 20, 30)], tmp_path / "h.jsonl")
    out = subprocess.run(
        [sys.executable, "-m", "apps.linearizability", str(path), "--timeout", "10"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.returncode == 1, out.stderr
    assert "not linearizable" in out.stdout and "cannot place: get('k') -> 'b'" in out.stdout
