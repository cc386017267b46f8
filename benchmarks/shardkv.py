"""Sharded KV: ops/s and CPU per operation with 1, 2 and 3 replica groups, beside lab 4's groups; the cost of a move.

One sharded cluster (a controller of 3 servers and 3 groups of 3) and three
lab-4 clusters (3 servers each; one with ``--clients-per-group 0``) run on
this machine at once. The groups join one at a time; after each join, the same client processes
(``benchmarks.kvdriver``) drive both systems in alternating slices, on keys
spread over all shards, so both see the same noise. Reported: ops/s,
latency, and CPU per operation of all server processes of each system (the
sharded one's controller and idle groups included), at two loads:

- ``total``: ``--clients`` (16) clients in all, whatever the number of
  groups. With G groups each leader sees a G-th of them, so each Raft batch
  (appends, fsync, replies) carries a G-th as many operations: CPU per
  operation grows with G as lab 4's does with fewer clients. That is Raft's
  batching, not the sharding layer.
- ``per_group``: ``--clients-per-group`` (16) clients per group (16, 32, 48),
  and beside it lab 4 as G independent groups (``kvraft-groups``: the first
  G of the lab-4 clusters, no controller, each key on the group the
  controller would give its shard) driven by as many clients, so every Raft group,
  sharded or not, sees the same batches and the machine runs as many busy
  Raft groups in both. In these rows shardkv / kvraft is what the sharding
  layer costs per operation (controller, polls, shard checks, idle groups);
  kvraft's G groups : 1 group ratio is what more Raft groups than cores cost
  on this machine, and shardkv's is the two together. (With G = 1 the rows
  differ from the total-load rows only by noise: the same clients, the same
  single lab-4 group.)

Before each group count's measurements, both systems' servers are left idle
for ``--idle-seconds`` and their CPU per second is recorded: every server
process ticks Raft and the groups' leaders poll the controller, so that much
CPU is spent per second whatever the load; the report gives its share of
each row's CPU per operation.

On a 2-core machine more groups cannot add CPU, so their throughput cannot
grow; what the sharding layer costs shows in CPU per operation, and the
throughput one core per server would give is projected from it: with G
groups, G leaders work in parallel, each at the rate its share of the CPU
allows.

Then the cost of a reconfiguration: ``--move-keys`` keys are written into
one shard, the shard is moved to another group, and the time until the new
owner serves it and the bytes of ``ShardData`` sent are measured.

    python -m benchmarks.shardkv [--json] [--clients 16] [--clients-per-group 16] [--seconds S] [--move-keys N]
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
from benchmarks.kvdriver import Batch, DriverPool, Target, cpu_seconds

OPS = (("put", 10), ("get", 10))


def _pids(cluster: Any) -> list[int]:
    return [pid for i in range(cluster.n) if (pid := cluster._sup.pid(f"peer-{i}")) is not None]


def _idle_cpu(pids: dict[str, list[int]], seconds: float) -> dict[str, float]:
    """Milliseconds of CPU per second each system's servers spend with no client: what every row pays whatever its load."""
    if seconds <= 0:
        return {name: 0.0 for name in pids}
    before = {name: cpu_seconds(p) for name, p in pids.items()}
    time.sleep(seconds)  # the measuring window itself: nothing is awaited
    return {name: round((cpu_seconds(p) - before[name]) / seconds * 1e3, 1) for name, p in pids.items()}


def _loads(groups: int, clients: int, per_group: int) -> list[tuple[str, int, int]]:
    """(load, clients of each system, lab-4 groups): ``clients`` in total against lab 4's one group, then
    ``per_group`` per group against as many lab-4 groups as the sharded service has."""
    loads = [("total", clients, 1)]
    if per_group:
        loads.append(("per_group", per_group * groups, groups))
    return loads


def _measure(pool: DriverPool, targets: dict[str, Target], pids: dict[str, list[int]], op: str, size: int,
             clients: dict[str, int], seconds: float, warmup: float, rounds: int) -> dict[str, Batch]:
    """Both systems driven in ``rounds`` alternating slices (the order flips each round), so both see the same noise."""
    batches = {name: Batch() for name in targets}
    for r in range(rounds):
        order = list(targets) if r % 2 == 0 else list(reversed(targets))
        for name in order:
            batches[name] += pool.measure(targets[name], op, size, clients[name], warmup if r == 0 else 0.0,
                                          seconds / rounds, pids[name])
    return batches


def _row(groups: int, op: str, size: int, load: str, clients: dict[str, int], kv_groups: int, batches: dict[str, Batch],
         idle: dict[str, float], seconds: float) -> dict[str, Any]:
    row: dict[str, Any] = {"groups": groups, "op": op, "value_bytes": size, "load": load,
                           "clients": clients["shardkv"], "kvraft_clients": clients["kvraft"], "kvraft_groups": kv_groups}
    for name, batch in batches.items():
        row.update({f"{name}_{k}": v for k, v in batch.summary(seconds).items()})
        rate = row[f"{name}_ops_per_s"]
        row[f"{name}_idle_cpu_ms_per_s"] = idle[name]
        row[f"{name}_idle_us_per_op"] = round(idle[name] * 1e3 / rate, 1) if rate else None
    cpu1 = row["kvraft_server_cpu_us_per_op"]
    row["cpu_ratio"] = round(row["shardkv_server_cpu_us_per_op"] / cpu1, 2) if cpu1 else None
    return row


def group_ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per load, op and system: CPU per operation in the row with the most groups over that in the row with one."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for r in rows:
        mine = [x for x in rows if x["load"] == r["load"] and x["op"] == r["op"]]
        first, last = min(mine, key=lambda x: x["groups"]), max(mine, key=lambda x: x["groups"])
        ratios: dict[str, float | None] = {}
        for name in ("shardkv", "kvraft"):
            base = first[f"{name}_server_cpu_us_per_op"]
            ratios[name] = round(last[f"{name}_server_cpu_us_per_op"] / base, 2) if base and last is not first else None
        out.setdefault(r["load"], {})[r["op"]] = ratios
    return out


def run(clients: int = 16, seconds: float = 2.0, warmup: float = 0.3, rounds: int = 4, procs: int = 4,
        move_keys: int = 1000, progress: bool = False, clients_per_group: int = 16,
        idle_seconds: float = 1.0) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="zactor-bench-shardkv-") as tmp, contextlib.ExitStack() as stack:
        singles = [stack.enter_context(KVCluster(3, data_dir=f"{tmp}/kvraft-{i}")) for i in range(3 if clients_per_group else 1)]
        sharded = stack.enter_context(ShardCluster(3, 3))
        pool = stack.enter_context(DriverPool(procs))
        shardkv = Target("shardkv", "shardkv", tuple(sharded.ctrler.endpoints))
        for g in range(3):
            sharded.join(g)
            for k in range(g + 1):
                sharded.wait_caught_up(k)
            sk_pids = _pids(sharded.ctrler) + [p for grp in sharded.groups for p in _pids(grp)]
            idle = _idle_cpu({"shardkv": sk_pids, **{f"kvraft-{i}": _pids(c) for i, c in enumerate(singles)}}, idle_seconds)
            for load, n_clients, kv_groups in _loads(g + 1, clients, clients_per_group):
                targets = {"kvraft": _kvraft_target(singles[:kv_groups], load), "shardkv": shardkv}
                pids = {"kvraft": [p for c in singles[:kv_groups] for p in _pids(c)], "shardkv": sk_pids}
                idle_of = {"shardkv": idle["shardkv"], "kvraft": round(sum(idle[f"kvraft-{i}"] for i in range(kv_groups)), 1)}
                n = {"shardkv": n_clients, "kvraft": n_clients}
                for op, size in OPS:
                    batches = _measure(pool, targets, pids, op, size, n, seconds, warmup, rounds)
                    row = _row(g + 1, op, size, load, n, kv_groups, batches, idle_of, seconds)
                    rows.append(row)
                    if progress:
                        print(f"  {g + 1} group(s), {load} load, {op}, {n_clients} clients: shardkv {row['shardkv_ops_per_s']:.0f}/s, "
                              f"kvraft ({kv_groups} group(s)) {row['kvraft_ops_per_s']:.0f}/s", file=sys.stderr, flush=True)
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
    return {"clients": clients, "clients_per_group": clients_per_group, "seconds": seconds, "rounds": rounds,
            "idle_seconds": idle_seconds, "rows": rows, "ratios": group_ratios(rows), "move": move}


def _kvraft_target(clusters: list[KVCluster], load: str) -> Target:
    """Lab 4 as the clients of this load see it: one group (its own clerk), or G groups with the keys shared as the
    controller shares the shards."""
    if load == "total":
        return Target("kvraft", "zactor", tuple(clusters[0].endpoints))
    return Target(f"kvraft-{len(clusters)}", "kvraft-groups", tuple(tuple(c.endpoints) for c in clusters))


def _shard_bytes(group: Any) -> int:
    total = 0
    for i in range(group.n):
        with contextlib.suppress(Exception):
            total += group._system.control(group.endpoints[i], timeout=2.0).counters()["sent_bytes"].get("ShardData", 0)
    return total


_LOADS = {
    "total": "{clients} clients in all, kvraft = lab 4's one group at {clients}: with G groups each shardkv leader's Raft "
             "batches are a G-th as large, so CPU per op grows with G as lab 4's does with fewer clients (Raft's batching)",
    "per_group": "{per_group} clients per group, kvraft = as many lab-4 groups (no controller) with as many clients: "
                 "the same batches and as many busy Raft groups in both, so shardkv / kvraft (ratio) is the sharding "
                 "layer's cost per op",
}


def report(result: dict[str, Any]) -> str:
    lines = [f"shardkv: {result['seconds']} s per system and measurement in {result['rounds']} alternating slices; CPU = "
             "all server processes of the system (shardkv: controller and all 3 groups, joined or not)"]
    for load in dict.fromkeys(r["load"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["load"] == load]
        lines.append(f"  {load} load: " + _LOADS[load].format(clients=result["clients"], per_group=result.get("clients_per_group")))
        lines.append(f"  {'groups':>6} {'op':<4}{'clients':>8}{'shardkv ops/s':>14}{'p50 ms':>8}{'kvraft ops/s':>13}{'p50 ms':>8}"
                     f"{'CPU us/op shardkv':>19}{'(idle)':>7}{'kvraft':>8}{'(idle)':>7}{'ratio':>7}")
        for r in rows:
            lines.append(f"  {r['groups']:>6} {r['op']:<4}{r['clients']:>8}{r['shardkv_ops_per_s']:>14.0f}{r['shardkv_p50_ms']:>8.2f}"
                         f"{r['kvraft_ops_per_s']:>13.0f}{r['kvraft_p50_ms']:>8.2f}{r['shardkv_server_cpu_us_per_op']:>19.0f}"
                         f"{_num(r['shardkv_idle_us_per_op']):>7}{r['kvraft_server_cpu_us_per_op']:>8.0f}"
                         f"{_num(r['kvraft_idle_us_per_op']):>7}{r['cpu_ratio']!s:>7}")
        for op, ratios in result["ratios"].get(load, {}).items():
            if ratios["shardkv"] is not None:
                most = max(r["groups"] for r in rows if r["op"] == op)
                lines.append(f"  {op}, {load} load, CPU per op {most} groups / 1 group: shardkv {ratios['shardkv']:.2f}, "
                             f"kvraft {ratios['kvraft']:.2f}" + ("" if load == "total" else f" ({most} lab-4 groups / 1)"))
    idle = {r["groups"]: r["shardkv_idle_cpu_ms_per_s"] for r in result["rows"]}
    kv_idle = {r["kvraft_groups"]: r["kvraft_idle_cpu_ms_per_s"] for r in result["rows"]}
    lines.append("  idle servers (no client), CPU ms per s: shardkv (12 processes) " + ", ".join(
        f"{v:.0f} with {g} joined" for g, v in sorted(idle.items())) + "; kvraft " + ", ".join(
        f"{v:.0f} for {g} group(s) of 3" for g, v in sorted(kv_idle.items())))
    lines.append("  (idle) = that idle CPU per s / ops per s: the part of CPU per op paid per second (Raft ticks, polls), "
                 "not per operation")
    for r in result["rows"]:
        cpu = r["shardkv_server_cpu_us_per_op"]
        if r["load"] == "total" and cpu:
            lines.append(f"    {r['op']}, {r['groups']} group(s), total load: projected {r['groups'] * 3e6 / cpu:.0f} ops/s with one "
                         "core per server (G x 3 servers x 1e6 / CPU us per op: an upper bound, the leader does more than its share)")
    lines.append("  this machine has fewer cores than servers: more groups cannot add throughput here; CPU per op is the measure")
    m = result["move"]
    lines.append(f"  moving one shard of {m['keys']} keys ({m['value_bytes']} B values): {m['seconds']:.2f} s until the new owner "
                 f"serves it, {m['shard_data_bytes']} bytes of ShardData sent by the old owner's servers")
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("shardkv", __doc__)
    parser.add_argument("--clients", type=int, default=16, help="clients (default 16)")
    parser.add_argument("--clients-per-group", type=int, default=16,
                        help="clients per group in the equal-load rows, beside as many lab-4 groups with as many clients "
                             "(default 16; 0: no such rows)")
    parser.add_argument("--idle-seconds", type=float, default=1.0,
                        help="seconds the servers' idle CPU is measured before each group count (default 1; 0: not measured)")
    parser.add_argument("--seconds", type=float, default=2.0, help="measured load per system and measurement (default 2)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating slices per measurement (default 4)")
    parser.add_argument("--procs", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--move-keys", type=int, default=1000, help="keys in the shard that is moved (default 1000)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.rounds < 1 or args.procs < 1 or args.move_keys < 1:
        parser.error("--clients, --seconds, --rounds, --procs and --move-keys must be positive")
    if args.clients_per_group < 0 or args.idle_seconds < 0:
        parser.error("--clients-per-group and --idle-seconds must not be negative")
    started = time.monotonic()
    result = run(args.clients, args.seconds, 0.3, args.rounds, args.procs, args.move_keys, progress=not args.json,
                 clients_per_group=args.clients_per_group, idle_seconds=args.idle_seconds)
    print(json.dumps(result) if args.json else report(result))
    if not args.json:
        print(f"  ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
