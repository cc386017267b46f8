"""Actor ask vs raw pyzmq between two processes: round-trip latency and pipelined throughput.

Baseline (a): a pyzmq DEALER in this process, a ROUTER echo in a child
process, a small pickled tuple each way. Contender (b): an actor ``ask`` from
this process's ActorSystem to an Echo actor hosted by a child process, through
the whole runtime (encode, I/O thread, node, mailbox, actor thread, reply).
Both are measured in the same run, one after the other, several trials each;
the reported figures are medians over trials.

    python -m benchmarks.transport [--json] [--trials N] [--messages N]
"""

from __future__ import annotations

import argparse
import json
from collections import deque
import multiprocessing
import os
import pickle
import statistics
import sys
import tempfile
import time
from typing import Any

import zmq

from actors import ActorSystem
from actors.testing import serve_echo

PAYLOAD = (12345, "ping", 3.5)


def zmq_echo_server(endpoint: str) -> None:
    """Child process: a ROUTER that unpickles and re-pickles every message it gets."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(endpoint)
    try:
        while True:
            ident, payload = sock.recv_multipart()
            if payload == b"STOP":
                break
            sock.send_multipart([ident, pickle.dumps(pickle.loads(payload), protocol=pickle.HIGHEST_PROTOCOL)])
    finally:
        ctx.destroy(linger=0)


def _measure_zmq(endpoint: str, n: int, window: int) -> tuple[float, float]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(endpoint)
    dumps, loads = pickle.dumps, pickle.loads
    try:
        sock.send(dumps(PAYLOAD))  # warm-up and connection set-up
        loads(sock.recv())
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            sock.send(dumps(PAYLOAD, protocol=pickle.HIGHEST_PROTOCOL))
            loads(sock.recv())
            samples.append(time.perf_counter() - t0)
        rtt_us = statistics.median(samples) * 1e6
        total = n * 4
        t0 = time.perf_counter()
        sent = received = 0
        while received < total:
            while sent < total and sent - received < window:
                sock.send(dumps(PAYLOAD, protocol=pickle.HIGHEST_PROTOCOL))
                sent += 1
            loads(sock.recv())
            received += 1
        rate = total / (time.perf_counter() - t0)
        sock.send(b"STOP")
        return rtt_us, rate
    finally:
        ctx.destroy(linger=0)


def _measure_actor(system: ActorSystem, endpoint: str, n: int, window: int) -> tuple[float, float]:
    echo = system.ref(endpoint, "echo")
    echo.ask(PAYLOAD, timeout=10.0)  # warm-up and connection set-up
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        echo.ask(PAYLOAD, timeout=5.0)
        samples.append(time.perf_counter() - t0)
    rtt_us = statistics.median(samples) * 1e6
    total = n * 4
    t0 = time.perf_counter()
    in_flight: deque[Any] = deque()
    done = 0
    sent = 0
    while done < total:
        while sent < total and len(in_flight) < window:
            in_flight.append(echo.ask(PAYLOAD, block=False, timeout=10.0))
            sent += 1
        in_flight.popleft().get()
        done += 1
    rate = total / (time.perf_counter() - t0)
    return rtt_us, rate


def run(trials: int = 3, messages: int = 2000, window: int = 64, progress: bool = False) -> dict[str, Any]:
    """Measure both sides ``trials`` times; medians of each figure."""
    ctx = multiprocessing.get_context("spawn")
    results: dict[str, list[float]] = {k: [] for k in ("zmq_rtt_us", "zmq_msgs_per_s", "actor_rtt_us", "actor_msgs_per_s")}
    with tempfile.TemporaryDirectory(prefix="zactor-bench-") as tmp:
        for trial in range(trials):
            zep = f"ipc://{tmp}/zmq-{trial}.sock"
            server = ctx.Process(target=zmq_echo_server, args=(zep,), daemon=True)
            server.start()
            try:
                rtt, rate = _measure_zmq(zep, messages, window)
            finally:
                server.join(timeout=5)
                if server.is_alive():
                    server.kill()
                    server.join()
            results["zmq_rtt_us"].append(rtt)
            results["zmq_msgs_per_s"].append(rate)

            aep = f"ipc://{tmp}/actor-{trial}.sock"
            host = ctx.Process(target=serve_echo, args=(aep,), daemon=True)
            host.start()
            try:
                with ActorSystem() as system:
                    rtt, rate = _measure_actor(system, aep, messages, window)
            finally:
                host.terminate()
                host.join(timeout=5)
                if host.is_alive():
                    host.kill()
                    host.join()
            results["actor_rtt_us"].append(rtt)
            results["actor_msgs_per_s"].append(rate)
            if progress:
                print(f"  trial {trial + 1}/{trials} done", file=sys.stderr, flush=True)
    out: dict[str, Any] = {k: round(statistics.median(v), 1) for k, v in results.items()}
    out["rtt_ratio"] = round(out["actor_rtt_us"] / out["zmq_rtt_us"], 2)
    out["throughput_ratio"] = round(out["actor_msgs_per_s"] / out["zmq_msgs_per_s"], 2)
    out.update(trials=trials, messages=messages, window=window, cpus=os.cpu_count())
    return out


def report(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"transport: {result['messages']} round trips and {result['messages'] * 4} pipelined "
            f"(window {result['window']}), median of {result['trials']} trials",
            f"  {'':24}{'raw pyzmq':>14}{'actor ask':>14}{'ratio':>8}   target",
            f"  {'round trip (us)':24}{result['zmq_rtt_us']:>14.1f}{result['actor_rtt_us']:>14.1f}{result['rtt_ratio']:>8.2f}   <= 2.00",
            f"  {'pipelined (msgs/s)':24}{result['zmq_msgs_per_s']:>14.0f}{result['actor_msgs_per_s']:>14.0f}"
            f"{result['throughput_ratio']:>8.2f}   >= 0.50",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zactor bench transport", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--trials", type=int, default=3, help="trials per side (default 3)")
    parser.add_argument("--messages", type=int, default=2000, help="round trips per trial (default 2000; 4x that pipelined)")
    parser.add_argument("--window", type=int, default=64, help="messages in flight when pipelined (default 64)")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.messages < 1 or args.window < 1:
        parser.error("--trials, --messages and --window must be positive")
    result = run(args.trials, args.messages, args.window, progress=not args.json)
    print(json.dumps(result) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
