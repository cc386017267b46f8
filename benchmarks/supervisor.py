"""Supervisor restart latency: kill -9 of a child until its restarted actor answers an ask.

zactor restarts children from a preloaded fork server. The baseline, in the
same run, restarts the same child the usual way: a fresh interpreter
(multiprocessing's spawn) that imports the runtime before it can serve. Both
measure the time from SIGKILL to the first successful ``ask`` of the
restarted PersistentCounter, which must also have reloaded its persisted
value.

It also measures ``system.spawn_process`` latency: from the call to the
first answer of the new actor (a fork from the fork server, an
``ActorSystem`` binding its endpoint, the CURVE handshake, one ask),
against ``multiprocessing.Process`` from the same fork server plus one
round trip on a ``Pipe``. The two alternate, one of each per round, so both
see the same noise; the report gives the ratio of each round's pair, its
median and quartiles.

    python -m benchmarks.supervisor [--json] [--restarts N] [--spawns N]
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from actors import ActorDeadError, ActorSystem, AskTimeout, ChildSpec, Supervisor
from actors.testing import Get, Incr, PersistentCounter, serve_counter
from benchmarks import bench_parser


def _await_answer(ref: Any, expect: int, limit: float = 10.0) -> float:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            value = ref.ask(Get(), timeout=0.02)
        except (AskTimeout, ActorDeadError):
            continue
        if value != expect:
            raise RuntimeError(f"restarted counter says {value}, expected its persisted {expect}")
        return time.perf_counter()
    raise RuntimeError(f"no answer within {limit} s of the kill")


@contextlib.contextmanager
def _kills_expected() -> Iterator[None]:
    """The supervisor warns of every crash it restarts; here each is a kill of the bench's own, and
    twenty such lines would bury the report. Errors (a child given up on) still show."""
    logger = logging.getLogger("actors.supervisor")
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


def _measure_supervisor(system: ActorSystem, tmp: str, restarts: int) -> list[float]:
    endpoint = f"ipc://{tmp}/sup.sock"
    # No back-off and a generous limit: this measures the restart itself.
    with _kills_expected(), Supervisor(max_restarts=restarts + 5, within=3600.0, backoff_step=0.0) as sup:
        sup.start_child(ChildSpec("counter", serve_counter, (endpoint, f"{tmp}/sup.state")))
        ref = system.ref(endpoint, "counter")
        expect = ref.ask(Incr(7), timeout=10.0)
        samples = []
        for _ in range(restarts):
            t0 = time.perf_counter()
            sup.kill("counter")
            samples.append(_await_answer(ref, expect) - t0)
        return samples


def _measure_fresh_interpreter(system: ActorSystem, tmp: str, restarts: int) -> list[float]:
    endpoint = f"ipc://{tmp}/fresh.sock"
    ctx = multiprocessing.get_context("spawn")
    ref = system.ref(endpoint, "counter")
    proc = ctx.Process(target=serve_counter, args=(endpoint, f"{tmp}/fresh.state"), daemon=True)
    proc.start()
    samples = []
    try:
        expect = ref.ask(Incr(7), timeout=30.0)
        for _ in range(restarts):
            t0 = time.perf_counter()
            os.kill(proc.pid or 0, signal.SIGKILL)
            proc.join()
            proc = ctx.Process(target=serve_counter, args=(endpoint, f"{tmp}/fresh.state"), daemon=True)
            proc.start()
            samples.append(_await_answer(ref, expect) - t0)
    finally:
        proc.kill()
        proc.join()
    return samples


def _pipe_echo(conn: Any) -> None:
    conn.send(conn.recv())
    conn.close()


def _measure_spawns(system: ActorSystem, tmp: str, rounds: int) -> tuple[list[float], list[float]]:
    """Interleaved: one spawn_process (call -> first answer) and one Process + pipe round trip per round."""
    ctx = multiprocessing.get_context("forkserver")  # the fork server spawn_process uses, preloaded alike
    ours: list[float] = []
    base: list[float] = []
    for i in range(rounds + 1):  # round 0 warms both up (the fork server's first start) and is not kept
        t0 = time.perf_counter()
        ref = system.spawn_process(PersistentCounter, "s.state", name=f"spawned-{i}", persist_dir=f"{tmp}/spawn-{i}")
        ref.ask(Get(), timeout=30.0)
        t1 = time.perf_counter()
        ref.stop()
        parent, child = ctx.Pipe()
        t2 = time.perf_counter()
        proc = ctx.Process(target=_pipe_echo, args=(child,), daemon=True)
        proc.start()
        parent.send(i)
        parent.recv()
        t3 = time.perf_counter()
        proc.join(timeout=10)
        parent.close()
        child.close()
        if i:
            ours.append(t1 - t0)
            base.append(t3 - t2)
    return ours, base


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return q[0], statistics.median(values), q[2]


def run(restarts: int = 20, spawns: int = 20) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="zactor-bench-") as tmp, ActorSystem() as system:
        ours = _measure_supervisor(system, tmp, restarts)
        base = _measure_fresh_interpreter(system, tmp, max(3, restarts // 4))
        spawned, processes = _measure_spawns(system, tmp, spawns)
    ratio_q1, ratio_p50, ratio_q3 = _quartiles([a / b for a, b in zip(spawned, processes, strict=True)])
    out = {
        "spawns": spawns,
        "spawn_process_p50_ms": round(statistics.median(spawned) * 1000, 1),
        "mp_process_pipe_p50_ms": round(statistics.median(processes) * 1000, 1),
        "spawn_ratio_p50": round(ratio_p50, 2),
        "spawn_ratio_q1": round(ratio_q1, 2),
        "spawn_ratio_q3": round(ratio_q3, 2),
        "restarts": restarts,
        "restart_p50_ms": round(statistics.median(ours) * 1000, 1),
        "restart_max_ms": round(max(ours) * 1000, 1),
        "fresh_interpreter_p50_ms": round(statistics.median(base) * 1000, 1),
    }
    out["speedup"] = round(out["fresh_interpreter_p50_ms"] / out["restart_p50_ms"], 1)
    return out


def report(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"supervisor: kill -9 -> restarted actor answers, {result['restarts']} restarts",
            f"  {'':24}{'fork server':>14}{'fresh interp.':>14}{'ratio':>8}   target",
            f"  {'median restart (ms)':24}{result['restart_p50_ms']:>14.1f}{result['fresh_interpreter_p50_ms']:>14.1f}"
            f"{result['speedup']:>7.1f}x   zactor <= 100 ms",
            f"supervisor: spawn_process call -> first answer, {result['spawns']} spawns interleaved with the baseline",
            f"  {'':24}{'spawn_process':>14}{'mp.Process+pipe':>16}{'ratio':>8}   ratio quartiles",
            f"  {'median (ms)':24}{result['spawn_process_p50_ms']:>14.1f}{result['mp_process_pipe_p50_ms']:>16.1f}"
            f"{result['spawn_ratio_p50']:>7.2f}x   {result['spawn_ratio_q1']:.2f}-{result['spawn_ratio_q3']:.2f}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("supervisor", __doc__)
    parser.add_argument("--restarts", type=int, default=20, help="kills to measure (default 20)")
    parser.add_argument("--spawns", type=int, help="spawn_process calls to measure, each paired with a baseline (default: as many as --restarts)")
    args = parser.parse_args(argv)
    spawns = args.restarts if args.spawns is None else args.spawns
    if args.restarts < 1 or spawns < 1:
        parser.error("--restarts and --spawns must be positive")
    result = run(args.restarts, spawns)
    print(json.dumps(result) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
