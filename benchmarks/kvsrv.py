"""KV server throughput and latency with 1, 4 and 16 client processes, against a raw pyzmq echo.

For each client count, the same client processes (started before the clock,
released together) run for a fixed time against (a) zactor's KV server,
each doing put/get alternately through a Clerk, and (b) a raw pyzmq ROUTER
echo server that unpickles and re-pickles each request: the ceiling for this
transport. Reported: operations per second (all clients together) and
p50/p99 latency of one operation.

    python -m benchmarks.kvsrv [--json] [--clients 1,4,16] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import pickle
import sys
import tempfile
import time
from typing import Any

import zmq

from actors import ChildSpec, Supervisor
from apps.kvsrv import Clerk
from apps.kvsrv.server import serve
from benchmarks.percentiles import p50_p99
from benchmarks.transport import zmq_echo_server


def _kv_client(endpoint: str, cid: int, ready: Any, start: Any, seconds: float, out: Any) -> None:
    clerk = Clerk(endpoint, try_timeout=5.0)
    key, value = f"key-{cid}", "v" * 16
    clerk.put(key, value)  # connection set up before the clock starts
    ready.put(cid)
    start.wait()
    lat = []
    deadline = time.perf_counter() + seconds
    i = 0
    while (t0 := time.perf_counter()) < deadline:
        if i & 1:
            clerk.get(key)
        else:
            clerk.put(key, value)
        lat.append(time.perf_counter() - t0)
        i += 1
    out.put(lat)


def _echo_client(endpoint: str, cid: int, ready: Any, start: Any, seconds: float, out: Any) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    request = ("put", f"key-{cid}", "v" * 16, cid, 0)
    sock.send(pickle.dumps(request))
    sock.recv()
    ready.put(cid)
    start.wait()
    lat = []
    deadline = time.perf_counter() + seconds
    while (t0 := time.perf_counter()) < deadline:
        sock.send(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))
        pickle.loads(sock.recv())
        lat.append(time.perf_counter() - t0)
    ctx.destroy(linger=0)
    out.put(lat)


def _run_clients(target: Any, endpoint: str, n: int, seconds: float) -> dict[str, float]:
    ctx = multiprocessing.get_context("forkserver")
    ready, start, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(endpoint, i, ready, start, seconds, out), daemon=True) for i in range(n)]
    for p in procs:
        p.start()
    for _ in procs:  # every client has connected and been answered once
        ready.get(timeout=60)
    start.set()
    lat: list[float] = []
    for _ in procs:
        lat.extend(out.get(timeout=seconds + 60))
    for p in procs:
        p.join(timeout=10)
    p50, p99 = p50_p99(lat)
    return {
        "ops_per_s": round(len(lat) / seconds, 1),
        "p50_us": round(p50 * 1e6, 1),
        "p99_us": round(p99 * 1e6, 1),
    }


def run(clients: tuple[int, ...] = (1, 4, 16), seconds: float = 2.0, progress: bool = False) -> dict[str, Any]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="zactor-bench-") as tmp, Supervisor() as sup:
        kv_ep, echo_ep = f"ipc://{tmp}/kv.sock", f"ipc://{tmp}/echo.sock"
        sup.start_child(ChildSpec("kv", serve, (kv_ep,)))
        sup.start_child(ChildSpec("echo", zmq_echo_server, (echo_ep,)))
        for n in clients:
            kv = _run_clients(_kv_client, kv_ep, n, seconds)
            echo = _run_clients(_echo_client, echo_ep, n, seconds)
            runs.append(
                {
                    "clients": n,
                    "kv_ops_per_s": kv["ops_per_s"],
                    "echo_ops_per_s": echo["ops_per_s"],
                    "ratio": round(kv["ops_per_s"] / echo["ops_per_s"], 2),
                    "kv_p50_us": kv["p50_us"],
                    "kv_p99_us": kv["p99_us"],
                    "echo_p50_us": echo["p50_us"],
                    "echo_p99_us": echo["p99_us"],
                }
            )
            if progress:
                print(f"  {n} clients done", file=sys.stderr, flush=True)
    return {"seconds": seconds, "runs": runs}


def report(result: dict[str, Any]) -> str:
    lines = [
        f"kv: put/get alternating, {result['seconds']} s per run, clients in separate processes",
        f"  {'clients':>8}{'kv ops/s':>11}{'echo ops/s':>12}{'ratio':>7}{'kv p50 us':>11}{'kv p99 us':>11}{'echo p50':>10}",
    ]
    for r in result["runs"]:
        lines.append(
            f"  {r['clients']:>8}{r['kv_ops_per_s']:>11.0f}{r['echo_ops_per_s']:>12.0f}{r['ratio']:>7.2f}"
            f"{r['kv_p50_us']:>11.0f}{r['kv_p99_us']:>11.0f}{r['echo_p50_us']:>10.0f}"
        )
    lines.append("  target: ratio >= 0.50 at 16 clients")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zactor bench kv", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--clients", default="1,4,16", help="comma-separated client counts (default 1,4,16)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each run (default 2)")
    args = parser.parse_args(argv)
    try:
        clients = tuple(int(c) for c in args.clients.split(","))
    except ValueError:
        parser.error(f"--clients must be comma-separated integers, not {args.clients!r}")
    if not clients or min(clients) < 1 or args.seconds <= 0:
        parser.error("client counts and --seconds must be positive")
    result = run(clients, args.seconds, progress=not args.json)
    print(json.dumps(result) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
