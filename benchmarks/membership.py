"""Replacing a server under load: how far write throughput dips, and for how long, in zactor and in etcd.

Each trial starts a fresh 3-server cluster (fsync on, as always), puts 10 B
values from ``clients`` threads without pause, and after ``warmup`` seconds
replaces a follower the way an operator replaces a dead machine: a new,
empty server joins as a learner, catches up, is promoted to voter, and the
old one is removed and stopped. zactor does it with
``KVCluster.replace`` (``apps.raft.admin``, what ``zactor kv cluster
replace`` runs); etcd 3.5 with its own API, the calls ``etcdctl member add
--learner`` / ``member promote`` / ``member remove`` make, and a fourth
etcd started with ``--initial-cluster-state=existing``. Trials alternate
between the two systems so both see the same noise.

Reported per system, median of the trials (and the spread): the throughput
before the change, during it (from the first call to the old server's
removal) as a share of before, the worst 0.25 s window as a share of
before, and how long the change took.

    zactor bench membership [--trials 3] [--clients 8] [--json]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks import bench_parser

SYSTEMS = ("zactor", "etcd")
_BIN = 0.25
_VALUE = "x" * 10


def _load(clients: list[Any], stop: threading.Event) -> tuple[list[threading.Thread], list[float], list[BaseException]]:
    """One thread per client putting without pause; the completion time of every acknowledged put."""
    done: list[float] = []
    errors: list[BaseException] = []

    def run(c: int, client: Any) -> None:
        try:
            n = 0
            while not stop.is_set() and n < 10_000_000:
                client.put(f"m{c}", _VALUE)
                done.append(time.monotonic())  # list.append is atomic under the GIL
                n += 1
        except BaseException as exc:  # reported with the trial, never lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c, cl), daemon=True) for c, cl in enumerate(clients)]
    for t in threads:
        t.start()
    return threads, done, errors


def _shape(done: list[float], began: float, ended: float, warmup: float) -> dict[str, float]:
    """Throughput before the change (its last ``warmup`` seconds), during it, and the worst window of it."""
    before = sum(1 for t in done if began - warmup <= t < began) / warmup
    during = sum(1 for t in done if began <= t < ended) / max(ended - began, 1e-9)
    bins = max(1, int((ended - began) / _BIN))
    counts = [0] * bins
    for t in done:
        if began <= t < began + bins * _BIN:
            counts[int((t - began) / _BIN)] += 1
    worst = min(counts) / _BIN
    return {
        "before_ops_s": round(before, 1),
        "during_share": round(during / before, 3) if before else 0.0,
        "worst_window_share": round(worst / before, 3) if before else 0.0,
        "change_s": round(ended - began, 3),
    }


def _trial(clients: list[Any], replace: Callable[[], None], warmup: float, tail: float) -> dict[str, float]:
    stop = threading.Event()
    threads, done, errors = _load(clients, stop)
    try:
        time.sleep(warmup)  # measured load before the change (not an event to wait for: the length of a window)
        began = time.monotonic()
        replace()
        ended = time.monotonic()
        time.sleep(tail)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    if errors:
        raise RuntimeError(f"a client failed during the replacement: {errors[0]!r}")
    return _shape(done, began, ended, warmup)


def zactor_trial(clients: int, warmup: float, tail: float) -> dict[str, float]:
    from apps.kvraft.testing import KVCluster

    with KVCluster(3) as cluster:
        clerks = [cluster.make_clerk(record=False) for _ in range(clients)]
        for ck in clerks:
            ck.put("warm", _VALUE)
        old = (cluster.wait_for_leader() + 1) % 3

        def replace() -> None:
            cluster.replace(old, timeout=60)

        return _trial(clerks, replace, warmup, tail)


def etcd_trial(clients: int, warmup: float, tail: float) -> dict[str, float]:
    from apps.etcd.cluster import EtcdClient, EtcdCluster, etcd_binary, member_args
    from apps.etcd.ports import free_ports

    with tempfile.TemporaryDirectory(prefix="zactor-bench-members-") as tmp, EtcdCluster(tmp, 3) as etcd:
        old = (etcd.leader() + 1) % 3
        stay = [i for i in range(3) if i != old]
        conns = [EtcdClient(*etcd.endpoints[stay[c % 2]]) for c in range(clients)]
        admin = EtcdClient(*etcd.endpoints[etcd.leader()], retry_for=60.0)
        try:
            for conn in conns:
                conn.put("warm", _VALUE)
            members = admin.call("/v3/cluster/member/list", {})["members"]
            old_id = next(m["ID"] for m in members if m["name"] == f"m{old}")
            client_port, peer_port = free_ports(2)
            peer_url = f"http://127.0.0.1:{peer_port}"

            def replace() -> None:
                added = admin.call("/v3/cluster/member/add", {"peerURLs": [peer_url], "isLearner": True})
                new_id = added["member"]["ID"]
                cluster = ",".join([*(f"{m['name']}={m['peerURLs'][0]}" for m in members), f"m3={peer_url}"])
                args = member_args(etcd_binary(), 3, os.path.join(tmp, "etcd-3"), f"http://127.0.0.1:{client_port}",
                                   peer_url, peer_url, cluster, "unused-for-an-existing-cluster")
                args[args.index("--initial-cluster-state=new")] = "--initial-cluster-state=existing"
                with open(os.path.join(tmp, "etcd-3.log"), "wb") as out:
                    etcd.procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
                deadline = time.monotonic() + 60
                while True:  # refused until the learner has caught up ("can only promote a learner member which is in sync")
                    try:
                        admin.call("/v3/cluster/member/promote", {"ID": new_id})
                        break
                    except RuntimeError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
                admin.call("/v3/cluster/member/remove", {"ID": old_id})
                etcd.procs[old].kill()

            return _trial(conns, replace, warmup, tail)
        finally:
            for conn in [*conns, admin]:
                conn.close()


def run(trials: int = 3, clients: int = 8, warmup: float = 2.0, tail: float = 1.0, progress: bool = False) -> dict[str, Any]:
    from apps.etcd.cluster import etcd_binary

    try:
        etcd_binary()
    except RuntimeError as exc:
        return {"skipped": str(exc)}
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in SYSTEMS}
    for t in range(trials):
        for system in SYSTEMS if t % 2 == 0 else SYSTEMS[::-1]:
            one = (zactor_trial if system == "zactor" else etcd_trial)(clients, warmup, tail)
            runs[system].append(one)
            if progress:
                print(f"trial {t + 1}/{trials} {system}: {one}", file=sys.stderr, flush=True)
    result: dict[str, Any] = {"trials": trials, "clients": clients, "value_bytes": len(_VALUE), "runs": runs}
    for system, got in runs.items():
        result[system] = {
            key: {"median": statistics.median(r[key] for r in got), "min": min(r[key] for r in got), "max": max(r[key] for r in got)}
            for key in got[0]
        }
    return result


def report(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"membership: skipped ({result['skipped']})"
    lines = [f"membership: a follower replaced under {result['clients']} clients putting 10 B values, "
             f"median of {result['trials']} trials [min-max]"]
    for system in SYSTEMS:
        r = result[system]

        def cell(key: str, fmt: str) -> str:
            return f"{r[key]['median']:{fmt}} [{r[key]['min']:{fmt}}-{r[key]['max']:{fmt}}]"

        lines.append(f"  {system:7s} before {cell('before_ops_s', '.0f')} ops/s; during the change "
                     f"{cell('during_share', '.0%')} of that, worst 0.25 s {cell('worst_window_share', '.0%')}; "
                     f"the change took {cell('change_s', '.2f')} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("membership", __doc__)
    parser.add_argument("--trials", type=int, default=3, help="trials per system, alternating (default 3)")
    parser.add_argument("--clients", type=int, default=8, help="client threads putting during the change (default 8)")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.clients < 1:
        parser.error("--trials and --clients must be at least 1")
    result = run(args.trials, args.clients, progress=not args.json)
    print(json.dumps(result) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
