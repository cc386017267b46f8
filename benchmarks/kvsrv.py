"""KV server throughput and latency with 1, 4 and 16 client processes, against a raw pyzmq echo.

For each client count, the same client processes (started before the clock,
released together) run for a fixed time against (a) zactor's KV server,
each doing put/get alternately through a Clerk, and (b) a raw pyzmq ROUTER
echo server that unpickles and re-pickles each request: the ceiling for this
transport, with the same security (CURVE, the keyring's keys). A third
side, ``frames``, splits the gap between the two: a bare DEALER socket (no
actor system, no futures) sending the KV server the very frames a clerk
sends (zactor's envelope around the ``Put``/``Get`` message classes,
:func:`transport.codec.encode_fields`) and decoding its replies. What
frames loses to echo is the wire format and the server; what kv loses to
frames is the client's ask path (clerk, future, channel). The sides take
turns (the order rotates every trial) and the whole set runs ``--trials``
times (default 3): reported per client count are the median over trials of
operations per second (all clients together), of the ratios kv/echo (each
trial's ratio is listed too) and frames/echo, and of p50/p99 latency.

    python -m benchmarks.kvsrv [--json] [--clients 1,4,16] [--seconds S] [--trials N]
"""

from __future__ import annotations

import json
import multiprocessing
import pickle
import random
import statistics
import sys
import tempfile
import time
from typing import Any

import zmq

from actors import ChildSpec, Supervisor
from apps.kvsrv import Clerk
from apps.kvsrv.client import SERVER_NAME
from apps.kvsrv.messages import Get, Put
from apps.kvsrv.server import serve
from benchmarks import bench_parser
from benchmarks.percentiles import p50_p99
from benchmarks.transport import zmq_echo_server
from transport.codec import decode, encode_fields
from transport.envelope import KIND_ASK
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


def _frames_client(endpoint: str, cid: int, ready: Any, start: Any, seconds: float, out: Any) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    resolve_keyring().secure_client(sock, endpoint)
    sock.connect(endpoint)
    key, value, client = f"key-{cid}", "v" * 16, random.getrandbits(62)  # a clerk's id, as big
    sock.send(encode_fields(KIND_ASK, SERVER_NAME, "", "", 1, Put(key, value, client, 1)))
    decode(sock.recv(), None, endpoint)
    ready.put(cid)
    start.wait()
    lat = []
    deadline = time.perf_counter() + seconds
    i = 2
    while (t0 := time.perf_counter()) < deadline:
        body = Get(key) if i & 1 else Put(key, value, client, i)
        sock.send(encode_fields(KIND_ASK, SERVER_NAME, "", "", i, body))
        reply = decode(sock.recv(), None, endpoint)
        if reply.corr != i:
            raise RuntimeError(f"frames client {cid}: reply {reply.corr} to request {i}")
        lat.append(time.perf_counter() - t0)
        i += 1
    ctx.destroy(linger=0)
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


_SIDES = (("kv", _kv_client), ("frames", _frames_client), ("echo", _echo_client))


def run(clients: tuple[int, ...] = (1, 4, 16), seconds: float = 2.0, progress: bool = False, trials: int = 3) -> dict[str, Any]:
    keys = str(resolve_keyring().directory)
    samples: dict[int, list[dict[str, dict[str, float]]]] = {n: [] for n in clients}
    with tempfile.TemporaryDirectory(prefix="zactor-bench-") as tmp, Supervisor() as sup:
        kv_ep, echo_ep = f"ipc://{tmp}/kv.sock", f"ipc://{tmp}/echo.sock"
        sup.start_child(ChildSpec("kv", serve, (kv_ep,)))
        sup.start_child(ChildSpec("echo", zmq_echo_server, (echo_ep, keys)))
        for t in range(trials):
            for n in clients:
                trial: dict[str, dict[str, float]] = {}
                for k in range(len(_SIDES)):  # who goes first rotates, so no side always runs on a warm (or cold) box
                    side, target = _SIDES[(t + k) % len(_SIDES)]
                    trial[side] = _run_clients(target, echo_ep if side == "echo" else kv_ep, n, seconds)
                samples[n].append(trial)
                if progress:
                    print(f"  trial {t + 1}/{trials}: {n} clients done", file=sys.stderr, flush=True)
    runs = []
    for n in clients:

        def med(side: str, field: str, n: int = n) -> float:
            return round(statistics.median(trial[side][field] for trial in samples[n]), 1)

        def ratios(side: str, n: int = n) -> list[float]:
            return [round(trial[side]["ops_per_s"] / trial["echo"]["ops_per_s"], 3) for trial in samples[n]]

        runs.append(
            {
                "clients": n,
                "kv_ops_per_s": med("kv", "ops_per_s"),
                "frames_ops_per_s": med("frames", "ops_per_s"),
                "echo_ops_per_s": med("echo", "ops_per_s"),
                "ratio": round(statistics.median(ratios("kv")), 2),
                "trial_ratios": ratios("kv"),
                "frames_ratio": round(statistics.median(ratios("frames")), 2),
                "frames_trial_ratios": ratios("frames"),
                "kv_p50_us": med("kv", "p50_us"),
                "kv_p99_us": med("kv", "p99_us"),
                "frames_p50_us": med("frames", "p50_us"),
                "echo_p50_us": med("echo", "p50_us"),
                "echo_p99_us": med("echo", "p99_us"),
            }
        )
    return {"seconds": seconds, "trials": trials, "runs": runs}


def report(result: dict[str, Any]) -> str:
    lines = [
        f"kv: put/get alternating, {result['seconds']} s per run, median of {result['trials']} trials, clients in separate processes",
        "  frames: zactor's request frames from a bare socket to the same server (the wire format's floor, no ask path)",
        f"  {'clients':>8}{'kv ops/s':>11}{'frames':>9}{'echo ops/s':>12}{'ratio':>7}{'frames':>8}"
        f"{'kv p50 us':>11}{'kv p99 us':>11}{'echo p50':>10}{'echo p99':>10}",
    ]
    for r in result["runs"]:
        lines.append(
            f"  {r['clients']:>8}{r['kv_ops_per_s']:>11.0f}{r['frames_ops_per_s']:>9.0f}{r['echo_ops_per_s']:>12.0f}"
            f"{r['ratio']:>7.2f}{r['frames_ratio']:>8.2f}"
            f"{r['kv_p50_us']:>11.0f}{r['kv_p99_us']:>11.0f}{r['echo_p50_us']:>10.0f}{r['echo_p99_us']:>10.0f}"
        )
    lines.append("  target: ratio (kv/echo) >= 0.80 at 16 clients; frames/echo bounds what the client's ask path can reach")
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
