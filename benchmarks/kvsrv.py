"""KV server throughput and latency with 1, 4 and 16 client processes, against a raw pyzmq echo.

For each client count, the same client processes (started before the clock,
released together) run for a fixed time against (a) zactor's KV server,
each doing put/get alternately through a Clerk, and (b) a raw pyzmq ROUTER
echo server that unpickles and re-pickles each request: the ceiling for this
transport, with the same security (CURVE, the keyring's keys). The two
alternate (which goes first flips every trial) and the whole set runs
``--trials`` times (default 3): reported per client count are the median
over trials of operations per second (all clients together), of the ratio
kv/echo (each trial's ratio is listed too), and of p50/p99 latency.

    python -m benchmarks.kvsrv [--json] [--clients 1,4,16] [--seconds S] [--trials N]
"""

from __future__ import annotations

import json
import multiprocessing
import pickle
import statistics
import sys
import tempfile
import time
from typing import Any

import zmq

from actors import ChildSpec, Supervisor
from apps.kvsrv import Clerk
from apps.kvsrv.server import serve
from benchmarks import bench_parser
from benchmarks.percentiles import p50_p99
from benchmarks.transport import zmq_echo_server
from transport.keys import resolve_keyring


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
    resolve_keyring().secure_client(sock, endpoint)  # the same security as the KV server's clients
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


def run(clients: tuple[int, ...] = (1, 4, 16), seconds: float = 2.0, progress: bool = False, trials: int = 3) -> dict[str, Any]:
    keys = str(resolve_keyring().directory)
    samples: dict[int, list[tuple[dict[str, float], dict[str, float]]]] = {n: [] for n in clients}
    with tempfile.TemporaryDirectory(prefix="zactor-bench-") as tmp, Supervisor() as sup:
        kv_ep, echo_ep = f"ipc://{tmp}/kv.sock", f"ipc://{tmp}/echo.sock"
        sup.start_child(ChildSpec("kv", serve, (kv_ep,)))
        sup.start_child(ChildSpec("echo", zmq_echo_server, (echo_ep, keys)))
        for t in range(trials):
            for n in clients:
                if t % 2 == 0:
                    kv = _run_clients(_kv_client, kv_ep, n, seconds)
                    echo = _run_clients(_echo_client, echo_ep, n, seconds)
                else:
                    echo = _run_clients(_echo_client, echo_ep, n, seconds)
                    kv = _run_clients(_kv_client, kv_ep, n, seconds)
                samples[n].append((kv, echo))
                if progress:
                    print(f"  trial {t + 1}/{trials}: {n} clients done", file=sys.stderr, flush=True)
    runs = []
    for n in clients:

        def med(side: int, field: str, n: int = n) -> float:
            return round(statistics.median(pair[side][field] for pair in samples[n]), 1)

        ratios = [round(kv["ops_per_s"] / echo["ops_per_s"], 3) for kv, echo in samples[n]]
        runs.append(
            {
                "clients": n,
                "kv_ops_per_s": med(0, "ops_per_s"),
                "echo_ops_per_s": med(1, "ops_per_s"),
                "ratio": round(statistics.median(ratios), 2),
                "trial_ratios": ratios,
                "kv_p50_us": med(0, "p50_us"),
                "kv_p99_us": med(0, "p99_us"),
                "echo_p50_us": med(1, "p50_us"),
                "echo_p99_us": med(1, "p99_us"),
            }
        )
    return {"seconds": seconds, "trials": trials, "runs": runs}


def report(result: dict[str, Any]) -> str:
    lines = [
        f"kv: put/get alternating, {result['seconds']} s per run, median of {result['trials']} trials, clients in separate processes",
        f"  {'clients':>8}{'kv ops/s':>11}{'echo ops/s':>12}{'ratio':>7}{'kv p50 us':>11}{'kv p99 us':>11}{'echo p50':>10}{'echo p99':>10}",
    ]
    for r in result["runs"]:
        lines.append(
            f"  {r['clients']:>8}{r['kv_ops_per_s']:>11.0f}{r['echo_ops_per_s']:>12.0f}{r['ratio']:>7.2f}"
            f"{r['kv_p50_us']:>11.0f}{r['kv_p99_us']:>11.0f}{r['echo_p50_us']:>10.0f}{r['echo_p99_us']:>10.0f}"
        )
    lines.append("  target: ratio >= 0.80 at 16 clients")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("kv", __doc__)
    parser.add_argument("--clients", default="1,4,16", help="comma-separated client counts (default 1,4,16)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each run (default 2)")
    parser.add_argument("--trials", type=int, default=3, help="repetitions; figures are medians over them (default 3)")
    args = parser.parse_args(argv)
    try:
        clients = tuple(int(c) for c in args.clients.split(","))
    except ValueError:
        parser.error(f"--clients must be comma-separated integers, not {args.clients!r}")
    if not clients or min(clients) < 1 or args.seconds <= 0 or args.trials < 1:
        parser.error("client counts, --seconds and --trials must be positive")
    result = run(clients, args.seconds, progress=not args.json, trials=args.trials)
    print(json.dumps(result) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
