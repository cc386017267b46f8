"""Actor ask vs raw pyzmq between two processes, each with CURVE security and without.

Four contenders, side by side in one run: (a) raw pyzmq, a DEALER here and a
ROUTER echo in a child process, a small pickled tuple each way, with CURVE
and (b) without; (c) an actor ``ask`` from this process's ActorSystem to an
Echo actor in a child process, through the whole runtime (encode, node,
mailbox, actor thread, reply over the request's connection), with CURVE (the
default) and (d) with ``secure=False``. Every server stays up for the whole
run; the four are measured in short alternating batches so all see the same
noise. Reported: the median round trip and pipelined rate of each, the ratio
of each batch (actor/raw, and CURVE/plain: the cost of security) as a median
with its spread (quartiles over batches).

The raw CURVE server has no ZAP handler (a handshake cost, not a per-message
one); the actor's has, as every node does.

The whole alternation runs ``--trials`` times (default 3); every figure is
the median over trials of that trial's median. After the timed batches, two
costs of one round trip are counted for each contender, not estimated:
*Python thread wake-ups* (the kernel's count of voluntary context switches of
every thread of the client and the server process except ZeroMQ's own
background threads, over ``--messages`` round trips) and *allocations*
(tracemalloc in the client: Python memory blocks allocated during one round
trip that were freed by its end, i.e. the peak above the start, in blocks is
not traced, so bytes are reported: ``alloc_peak_bytes``).

    python -m benchmarks.transport [--json] [--trials N] [--batches N] [--messages N]
"""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import pickle
import statistics
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from actors import ActorSystem
from actors.host import Hosted, host
from actors.testing import Echo
from benchmarks import bench_parser
from transport.keys import SecurityWarning, resolve_keyring

PAYLOAD = (12345, "ping", 3.5)
MODES = ("raw_curve", "actor_curve", "raw_plain", "actor_plain")


def zmq_echo_server(endpoint: str, keys: str | None) -> None:
    """Child process: a ROUTER that unpickles and re-pickles every message it gets."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    if keys is not None:
        resolve_keyring(keys).secure_server(sock)
    sock.bind(endpoint)
    try:
        while True:
            ident, payload = sock.recv_multipart()
            if payload == b"STOP":
                break
            sock.send_multipart([ident, pickle.dumps(pickle.loads(payload), protocol=pickle.HIGHEST_PROTOCOL)])
    finally:
        ctx.destroy(linger=0)


def actor_echo_host(endpoint: str, secure: bool, keys: str | None) -> None:
    """Child process: an Echo actor on a node with or without security."""
    warnings.simplefilter("ignore", SecurityWarning)
    host(endpoint, [Hosted("echo", Echo)], secure=secure, keys=keys)


class _RawClient:
    def __init__(self, ctx: zmq.Context, endpoint: str, keys: str | None) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 10_000)
        if keys is not None:
            resolve_keyring(keys).secure_client(self.sock, endpoint)
        self.sock.connect(endpoint)
        self.rtt(1)

    def rtt(self, n: int) -> list[float]:
        sock, dumps, loads = self.sock, pickle.dumps, pickle.loads
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            sock.send(dumps(PAYLOAD, protocol=pickle.HIGHEST_PROTOCOL))
            loads(sock.recv())
            samples.append(time.perf_counter() - t0)
        return samples

    def rate(self, total: int, window: int) -> float:
        sock, dumps, loads = self.sock, pickle.dumps, pickle.loads
        t0 = time.perf_counter()
        sent = received = 0
        while received < total:
            while sent < total and sent - received < window:
                sock.send(dumps(PAYLOAD, protocol=pickle.HIGHEST_PROTOCOL))
                sent += 1
            loads(sock.recv())
            received += 1
        return total / (time.perf_counter() - t0)


class _ActorClient:
    def __init__(self, system: ActorSystem, endpoint: str) -> None:
        self.echo = system.ref(endpoint, "echo")
        self.echo.ask(PAYLOAD, timeout=30.0)  # connection set-up (and the CURVE handshake)

    def rtt(self, n: int) -> list[float]:
        echo, samples = self.echo, []
        for _ in range(n):
            t0 = time.perf_counter()
            echo.ask(PAYLOAD, timeout=10.0)
            samples.append(time.perf_counter() - t0)
        return samples

    def rate(self, total: int, window: int) -> float:
        echo = self.echo
        t0 = time.perf_counter()
        in_flight: deque[Any] = deque()
        done = sent = 0
        while done < total:
            while sent < total and len(in_flight) < window:
                in_flight.append(echo.ask(PAYLOAD, block=False, timeout=10.0))
                sent += 1
            in_flight.popleft().get()
            done += 1
        return total / (time.perf_counter() - t0)


def python_wakeups(pid: int) -> int:
    """Voluntary context switches so far of ``pid``'s threads, ZeroMQ's background threads excepted.

    Each is one time a thread blocked and was woken again: a wake-up, counted by the kernel.
    """
    total = 0
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            with open(f"{task}/comm") as f:
                if f.read().startswith("ZMQbg"):
                    continue
            with open(f"{task}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        total += int(line.split()[1])
        except OSError:  # a thread that ended meanwhile
            continue
    return total


def _costs(client: Any, server_pid: int, n: int) -> tuple[float, float]:
    """(Python wake-ups per round trip in both processes, tracemalloc peak bytes per round trip)."""
    before = python_wakeups(os.getpid()) + python_wakeups(server_pid)
    client.rtt(n)
    wakeups = (python_wakeups(os.getpid()) + python_wakeups(server_pid) - before) / n
    peaks = []
    tracemalloc.start()
    try:
        for _ in range(min(n, 200)):
            tracemalloc.reset_peak()
            start, _ = tracemalloc.get_traced_memory()
            client.rtt(1)
            peaks.append(tracemalloc.get_traced_memory()[1] - start)
    finally:
        tracemalloc.stop()
    return wakeups, statistics.median(peaks)


def _spread(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"median": round(values[0], 3), "q1": round(values[0], 3), "q3": round(values[0], 3)}
    q1, _, q3 = statistics.quantiles(values, n=4)
    return {"median": round(statistics.median(values), 3), "q1": round(q1, 3), "q3": round(q3, 3)}


def run(
    batches: int = 6, messages: int = 300, window: int = 64, progress: bool = False, trials: int = 3
) -> dict[str, Any]:
    """``trials`` x ``batches`` rounds; in each, every contender does ``messages`` round trips, then 4x that pipelined."""
    keys = str(resolve_keyring().directory)
    ctx = multiprocessing.get_context("spawn")
    procs: dict[str, Any] = {}
    per_trial: list[dict[str, list[tuple[float, float]]]] = []
    costs: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="zactor-bench-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        zctx = zmq.Context()
        secure_sys, plain_sys = ActorSystem(), ActorSystem(secure=False)
        try:
            clients: dict[str, Any] = {}
            for mode in MODES:
                ep = f"ipc://{tmp}/{mode}.sock"
                curve = mode.endswith("curve")
                target: Callable[..., None] = zmq_echo_server if mode.startswith("raw") else actor_echo_host
                args = (ep, keys if curve else None) if mode.startswith("raw") else (ep, curve, keys)
                procs[mode] = ctx.Process(target=target, args=args, daemon=True)
                procs[mode].start()
            for mode in MODES:
                ep = f"ipc://{tmp}/{mode}.sock"
                curve = mode.endswith("curve")
                if mode.startswith("raw"):
                    clients[mode] = _RawClient(zctx, ep, keys if curve else None)
                else:
                    clients[mode] = _ActorClient(secure_sys if curve else plain_sys, ep)
            for t in range(trials):
                per_batch: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
                for b in range(batches):
                    order = MODES if b % 2 == 0 else MODES[::-1]  # neither side always goes first
                    for mode in order:
                        rtt = statistics.median(clients[mode].rtt(messages)) * 1e6
                        rate = clients[mode].rate(messages * 4, window)
                        per_batch[mode].append((rtt, rate))
                per_trial.append(per_batch)
                if progress:
                    print(f"  trial {t + 1}/{trials} done", file=sys.stderr, flush=True)
            for mode in MODES:
                costs[mode] = _costs(clients[mode], procs[mode].pid, messages)
            for mode in MODES:
                if mode.startswith("raw"):
                    clients[mode].sock.send(b"STOP")
        finally:
            secure_sys.stop()
            plain_sys.stop()
            zctx.destroy(linger=0)
            for proc in procs.values():
                proc.terminate()
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()
                    proc.join()

    def med(values: list[float]) -> float:
        return statistics.median(values)

    out: dict[str, Any] = {}
    for mode in MODES:
        out[f"{mode}_rtt_us"] = round(med([med([r for r, _ in trial[mode]]) for trial in per_trial]), 1)
        out[f"{mode}_msgs_per_s"] = round(med([med([x for _, x in trial[mode]]) for trial in per_trial]), 1)
        out[f"{mode}_wakeups_per_rtt"] = round(costs[mode][0], 2)
        out[f"{mode}_alloc_peak_bytes"] = round(costs[mode][1])

    def ratio(a: str, b: str, i: int) -> dict[str, Any]:
        """Per trial: the median of its batches' ratios; reported: the median trial, and every trial."""
        trial_ratios = [
            med([x[i] / y[i] for x, y in zip(trial[a], trial[b], strict=True)]) for trial in per_trial
        ]
        spread: dict[str, Any] = dict(_spread(trial_ratios))
        spread["trials"] = [round(r, 3) for r in trial_ratios]
        return spread

    out["rtt_ratio_actor_raw_curve"] = ratio("actor_curve", "raw_curve", 0)
    out["rtt_ratio_actor_raw_plain"] = ratio("actor_plain", "raw_plain", 0)
    out["rtt_cost_of_curve_actor"] = ratio("actor_curve", "actor_plain", 0)
    out["rtt_cost_of_curve_raw"] = ratio("raw_curve", "raw_plain", 0)
    out["rate_ratio_actor_raw_curve"] = ratio("actor_curve", "raw_curve", 1)
    out["rate_ratio_actor_raw_plain"] = ratio("actor_plain", "raw_plain", 1)
    out["rate_cost_of_curve_actor"] = ratio("actor_curve", "actor_plain", 1)
    # Kept for continuity with earlier reports: the secure actor against secure raw pyzmq.
    out["rtt_ratio"] = out["rtt_ratio_actor_raw_curve"]["median"]
    out["throughput_ratio"] = out["rate_ratio_actor_raw_curve"]["median"]
    out.update(trials=trials, batches=batches, messages=messages, window=window, cpus=os.cpu_count())
    return out


def report(result: dict[str, Any]) -> str:
    def fmt(r: dict[str, Any]) -> str:
        return f"{r['median']:.2f} [{r['q1']:.2f}-{r['q3']:.2f}]"

    cols = ("raw_curve", "actor_curve", "raw_plain", "actor_plain")
    lines = [
        f"transport: {result['trials']} trials of {result['batches']} alternating batches of {result['messages']} round trips and "
        f"{result['messages'] * 4} pipelined (window {result['window']}) per contender",
        f"  {'':26}{'raw CURVE':>12}{'actor CURVE':>13}{'raw plain':>12}{'actor plain':>13}",
        f"  {'round trip (us)':26}" + "".join(f"{result[c + '_rtt_us']:>{w}.1f}" for c, w in zip(cols, (12, 13, 12, 13), strict=True)),
        f"  {'pipelined (msgs/s)':26}" + "".join(f"{result[c + '_msgs_per_s']:>{w}.0f}" for c, w in zip(cols, (12, 13, 12, 13), strict=True)),
        f"  {'Python wake-ups per rtt':26}" + "".join(f"{result[c + '_wakeups_per_rtt']:>{w}.2f}" for c, w in zip(cols, (12, 13, 12, 13), strict=True)),
        f"  {'alloc peak bytes per rtt':26}" + "".join(f"{result[c + '_alloc_peak_bytes']:>{w}}" for c, w in zip(cols, (12, 13, 12, 13), strict=True)),
        "  ratios, median of trials [quartiles]:",
        f"    actor/raw round trip, CURVE   {fmt(result['rtt_ratio_actor_raw_curve'])}   target <= 1.15",
        f"    actor/raw round trip, plain   {fmt(result['rtt_ratio_actor_raw_plain'])}",
        f"    cost of CURVE, actor ask      {fmt(result['rtt_cost_of_curve_actor'])}",
        f"    cost of CURVE, raw pyzmq      {fmt(result['rtt_cost_of_curve_raw'])}",
        f"    actor/raw pipelined, CURVE    {fmt(result['rate_ratio_actor_raw_curve'])}   target >= 0.60",
        f"    actor/raw pipelined, plain    {fmt(result['rate_ratio_actor_raw_plain'])}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("transport", __doc__)
    parser.add_argument("--trials", type=int, default=3, help="whole alternations; figures are medians over them (default 3)")
    parser.add_argument("--batches", type=int, default=6, help="alternating batches per trial (default 6)")
    parser.add_argument("--messages", type=int, default=300, help="round trips per contender per batch (default 300; 4x that pipelined)")
    parser.add_argument("--window", type=int, default=64, help="messages in flight when pipelined (default 64)")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.batches < 1 or args.messages < 1 or args.window < 1:
        parser.error("--trials, --batches, --messages and --window must be positive")
    result = run(args.batches, args.messages, args.window, progress=not args.json, trials=args.trials)
    print(json.dumps(result) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
