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

    python -m benchmarks.transport [--json] [--batches N] [--messages N]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import statistics
import sys
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from actors import ActorSystem
from actors.testing import Echo
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
    with ActorSystem(endpoint, start=False, secure=secure, keys=keys) as system:
        system.spawn(Echo, name="echo")
        system.start()
        system.run_until_stopped()


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


def _spread(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"median": round(values[0], 3), "q1": round(values[0], 3), "q3": round(values[0], 3)}
    q1, _, q3 = statistics.quantiles(values, n=4)
    return {"median": round(statistics.median(values), 3), "q1": round(q1, 3), "q3": round(q3, 3)}


def run(batches: int = 10, messages: int = 300, window: int = 64, progress: bool = False) -> dict[str, Any]:
    """``batches`` rounds; in each, every contender does ``messages`` round trips, then 4x that pipelined."""
    keys = str(resolve_keyring().directory)
    ctx = multiprocessing.get_context("spawn")
    procs: list[Any] = []
    per_batch: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
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
                proc = ctx.Process(target=target, args=args, daemon=True)
                proc.start()
                procs.append(proc)
            for mode in MODES:
                ep = f"ipc://{tmp}/{mode}.sock"
                curve = mode.endswith("curve")
                if mode.startswith("raw"):
                    clients[mode] = _RawClient(zctx, ep, keys if curve else None)
                else:
                    clients[mode] = _ActorClient(secure_sys if curve else plain_sys, ep)
            for b in range(batches):
                order = MODES if b % 2 == 0 else MODES[::-1]  # neither side always goes first
                for mode in order:
                    rtt = statistics.median(clients[mode].rtt(messages)) * 1e6
                    rate = clients[mode].rate(messages * 4, window)
                    per_batch[mode].append((rtt, rate))
                if progress:
                    print(f"  batch {b + 1}/{batches} done", file=sys.stderr, flush=True)
            for mode in MODES:
                if mode.startswith("raw"):
                    clients[mode].sock.send(b"STOP")
        finally:
            secure_sys.stop()
            plain_sys.stop()
            zctx.destroy(linger=0)
            for proc in procs:
                proc.terminate()
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
    out: dict[str, Any] = {}
    for mode in MODES:
        out[f"{mode}_rtt_us"] = round(statistics.median(r for r, _ in per_batch[mode]), 1)
        out[f"{mode}_msgs_per_s"] = round(statistics.median(t for _, t in per_batch[mode]), 1)

    def ratio(a: str, b: str, i: int) -> dict[str, float]:
        return _spread([x[i] / y[i] for x, y in zip(per_batch[a], per_batch[b], strict=True)])

    out["rtt_ratio_actor_raw_curve"] = ratio("actor_curve", "raw_curve", 0)
    out["rtt_ratio_actor_raw_plain"] = ratio("actor_plain", "raw_plain", 0)
    out["rtt_cost_of_curve_actor"] = ratio("actor_curve", "actor_plain", 0)
    out["rtt_cost_of_curve_raw"] = ratio("raw_curve", "raw_plain", 0)
    out["rate_ratio_actor_raw_curve"] = ratio("actor_curve", "raw_curve", 1)
    out["rate_cost_of_curve_actor"] = ratio("actor_curve", "actor_plain", 1)
    # Kept for continuity with earlier reports: the secure actor against secure raw pyzmq.
    out["rtt_ratio"] = out["rtt_ratio_actor_raw_curve"]["median"]
    out["throughput_ratio"] = out["rate_ratio_actor_raw_curve"]["median"]
    out.update(batches=batches, messages=messages, window=window, cpus=os.cpu_count())
    return out


def report(result: dict[str, Any]) -> str:
    def fmt(r: dict[str, float]) -> str:
        return f"{r['median']:.2f} [{r['q1']:.2f}-{r['q3']:.2f}]"

    lines = [
        f"transport: {result['batches']} alternating batches of {result['messages']} round trips and "
        f"{result['messages'] * 4} pipelined (window {result['window']}) per contender",
        f"  {'':22}{'raw CURVE':>12}{'actor CURVE':>13}{'raw plain':>12}{'actor plain':>13}",
        f"  {'round trip (us)':22}{result['raw_curve_rtt_us']:>12.1f}{result['actor_curve_rtt_us']:>13.1f}"
        f"{result['raw_plain_rtt_us']:>12.1f}{result['actor_plain_rtt_us']:>13.1f}",
        f"  {'pipelined (msgs/s)':22}{result['raw_curve_msgs_per_s']:>12.0f}{result['actor_curve_msgs_per_s']:>13.0f}"
        f"{result['raw_plain_msgs_per_s']:>12.0f}{result['actor_plain_msgs_per_s']:>13.0f}",
        "  ratios per batch, median [quartiles]:",
        f"    actor/raw round trip, CURVE   {fmt(result['rtt_ratio_actor_raw_curve'])}   target <= 2.00",
        f"    actor/raw round trip, plain   {fmt(result['rtt_ratio_actor_raw_plain'])}",
        f"    cost of CURVE, actor ask      {fmt(result['rtt_cost_of_curve_actor'])}   target <= 1.15",
        f"    cost of CURVE, raw pyzmq      {fmt(result['rtt_cost_of_curve_raw'])}",
        f"    actor/raw pipelined, CURVE    {fmt(result['rate_ratio_actor_raw_curve'])}   target >= 0.50",
        f"    cost of CURVE, pipelined rate {fmt(result['rate_cost_of_curve_actor'])}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zactor bench transport", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--batches", type=int, default=10, help="alternating batches (default 10)")
    parser.add_argument("--messages", type=int, default=300, help="round trips per contender per batch (default 300; 4x that pipelined)")
    parser.add_argument("--window", type=int, default=64, help="messages in flight when pipelined (default 64)")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.messages < 1 or args.window < 1:
        parser.error("--batches, --messages and --window must be positive")
    result = run(args.batches, args.messages, args.window, progress=not args.json)
    print(json.dumps(result) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
