"""Sharded KV: ops/s and CPU per operation with 1, 2 and 3 replica groups, beside lab 4's single group; the cost of a move.

One sharded cluster (a controller of 3 servers and 3 groups of 3) and one
lab-4 cluster (3 servers) run on this machine at once. The groups join one
at a time; after each join, the same client processes
(``benchmarks.kvdriver``) drive both systems in alternating slices, 16
clients on keys spread over all shards, so both see the same noise.
Reported: ops/s, latency, and CPU per operation of all server processes of
each system (the sharded one's controller and idle groups included).

On a 2-core machine more groups cannot add CPU, so their throughput cannot
grow; what the sharding layer costs shows in CPU per operation, and the
throughput one core per server would give is projected from it: with G
groups, G leaders work in parallel, each at the rate its share of the CPU
allows.

Then the cost of a reconfiguration: ``--move-keys`` keys are written into
one shard, the shard is moved to another group, and the time until the new
owner serves it and the bytes of ``ShardData`` sent are measured.

    python -m benchmarks.shardkv [--json] [--clients 16] [--seconds S] [--move-keys N]
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from typing import Any

from apps.kvraft.testing import KVCluster
from apps.shardkv.messages import key2shard
from apps.shardkv.testing import ShardCluster
from benchmarks import bench_parser
from benchmarks.kvdriver import Batch, DriverPool, Target

OPS = (("put", 10), ("get", 10))


def _pids(cluster: Any) -> list[int]:
    return [pid for i in range(cluster.n) if (pid := cluster._sup.pid(f"peer-{i}")) is not None]


def run(clients: int = 16, seconds: float = 2.0, warmup: float = 0.3, rounds: int = 4, procs: int = 4,
        move_keys: int = 1000, progress: bool = False) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="zactor-bench-shardkv-") as tmp, contextlib.ExitStack() as stack:
        single = stack.enter_context(KVCluster(3, data_dir=f"{tmp}/kvraft"))
        sharded = stack.enter_context(ShardCluster(3, 3))
        pool = stack.enter_context(DriverPool(procs))
        targets = {"kvraft": Target("kvraft", "zactor", tuple(single.endpoints)),
                   "shardkv": Target("shardkv", "shardkv", tuple(sharded.ctrler.endpoints))}
        for g in range(3):
            sharded.join(g)
            for k in range(g + 1):
                sharded.wait_caught_up(k)
            pids = {"kvraft": _pids(single), "shardkv": _pids(sharded.ctrler) + [p for grp in sharded.groups for p in _pids(grp)]}
            for op, size in OPS:
                batches = {name: Batch() for name in targets}
                for r in range(rounds):
                    order = list(targets) if r % 2 == 0 else list(reversed(targets))
                    for name in order:
                        batches[name] += pool.measure(targets[name], op, size, clients, warmup if r == 0 else 0.0,
                                                      seconds / rounds, pids[name])
                row: dict[str, Any] = {"groups": g + 1, "op": op, "value_bytes": size, "clients": clients}
                for name, batch in batches.items():
                    row.update({f"{name}_{k}": v for k, v in batch.summary(seconds).items()})
                cpu1 = row["kvraft_server_cpu_us_per_op"]
                row["cpu_ratio"] = round(row["shardkv_server_cpu_us_per_op"] / cpu1, 2) if cpu1 else None
                rows.append(row)
                if progress:
                    print(f"  {g + 1} group(s), {op}: shardkv {row['shardkv_ops_per_s']:.0f}/s, kvraft {row['kvraft_ops_per_s']:.0f}/s",
                          file=sys.stderr, flush=True)
        # The cost of moving one shard of move_keys keys.
        ck = sharded.make_clerk(record=False)
        shard = 3
        keys = [k for k in (f"{c}{i}" for i in range(move_keys * 10) for c in "abcdefghij") if key2shard(k) == shard][:move_keys]
        for key in keys:
            ck.put(key, "v" * 10)
        config = sharded.mck.query(-1)
        owner = config.shards[shard]
        target_gid = next(gid for gid in sorted(config.groups) if gid != owner)
        src = next(grp for grp in sharded.groups if grp.gid == owner)
        before = _shard_bytes(src)
        started = time.monotonic()
        sharded.mck.move(shard, target_gid)
        g_target = next(i for i, grp in enumerate(sharded.groups) if grp.gid == target_gid)
        sharded.wait_caught_up(g_target)
        moved_in = time.monotonic() - started
        assert ck.get(keys[0]) == "v" * 10
        move = {"keys": move_keys, "value_bytes": 10, "seconds": round(moved_in, 3), "shard_data_bytes": _shard_bytes(src) - before}
    return {"clients": clients, "seconds": seconds, "rounds": rounds, "rows": rows, "move": move}


def _shard_bytes(group: Any) -> int:
    total = 0
    for i in range(group.n):
        with contextlib.suppress(Exception):
            total += group._system.control(group.endpoints[i], timeout=2.0).counters()["sent_bytes"].get("ShardData", 0)
    return total


def report(result: dict[str, Any]) -> str:
    lines = [f"shardkv: {result['clients']} clients, {result['seconds']} s per system and measurement in {result['rounds']} "
             "alternating slices; kvraft = lab 4's single group of 3 in the same run",
             f"  {'groups':>6} {'op':<4}{'shardkv ops/s':>14}{'p50 ms':>8}{'kvraft ops/s':>13}{'p50 ms':>8}"
             f"{'CPU us/op shardkv':>19}{'kvraft':>8}{'ratio':>7}"]
    for r in result["rows"]:
        lines.append(f"  {r['groups']:>6} {r['op']:<4}{r['shardkv_ops_per_s']:>14.0f}{r['shardkv_p50_ms']:>8.2f}"
                     f"{r['kvraft_ops_per_s']:>13.0f}{r['kvraft_p50_ms']:>8.2f}{r['shardkv_server_cpu_us_per_op']:>19.0f}"
                     f"{r['kvraft_server_cpu_us_per_op']:>8.0f}{r['cpu_ratio']!s:>7}")
    for op, _ in OPS:
        mine = [r for r in result["rows"] if r["op"] == op]
        if len(mine) >= 2 and mine[0]["shardkv_server_cpu_us_per_op"]:
            first, last = mine[0], mine[-1]
            lines.append(f"  {op}: server CPU per op, {last['groups']} groups / 1 group: "
                         f"{last['shardkv_server_cpu_us_per_op'] / first['shardkv_server_cpu_us_per_op']:.2f}")
        for r in mine:
            cpu = r["shardkv_server_cpu_us_per_op"]
            if cpu:
                r_proj = r["groups"] * 3e6 / cpu
                lines.append(f"    {op}, {r['groups']} group(s): projected {r_proj:.0f} ops/s with one core per server "
                             "(G x 3 servers x 1e6 / CPU us per op: an upper bound, the leader does more than its share)")
    lines.append("  this machine has fewer cores than servers: more groups cannot add throughput here; CPU per op is the measure")
    m = result["move"]
    lines.append(f"  moving one shard of {m['keys']} keys ({m['value_bytes']} B values): {m['seconds']:.2f} s until the new owner "
                 f"serves it, {m['shard_data_bytes']} bytes of ShardData sent by the old owner's servers")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("shardkv", __doc__)
    parser.add_argument("--clients", type=int, default=16, help="clients (default 16)")
    parser.add_argument("--seconds", type=float, default=2.0, help="measured load per system and measurement (default 2)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating slices per measurement (default 4)")
    parser.add_argument("--procs", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--move-keys", type=int, default=1000, help="keys in the shard that is moved (default 1000)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.rounds < 1 or args.procs < 1 or args.move_keys < 1:
        parser.error("--clients, --seconds, --rounds, --procs and --move-keys must be positive")
    started = time.monotonic()
    result = run(args.clients, args.seconds, 0.3, args.rounds, args.procs, args.move_keys, progress=not args.json)
    print(json.dumps(result) if args.json else report(result))
    if not args.json:
        print(f"  ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
