"""Raft-KV failover: time from cutting the leader off to the first acknowledged write on a new leader.

Two kinds of cut of the same cluster, interleaved round by round so both see
the same noise:

  nft    the leader's host is cut off by packet filters (apps/hosts: three
         servers on hosts h1..h3 of their own, the clerk on h4). TCP
         connections go silent; nothing tells the transport.
  rules  the lab's model: transport fault rules, the leader drops everything
         it sends and receives and the others drop the leader's traffic
         (``disconnected``), set through each node's control channel.

Each round: wait for a leader and a first write, cut, time one put from the
cut to its acknowledgement, keep the cut ``--hold`` seconds more, heal, and
time until all three servers answer again (after a real cut that waits on
TCP's retransmission back-off, which grows with the cut's length). The
whole loop runs in a client process on h4 (``--inside``), which makes the
cuts itself; needs root, ``ip`` and ``nft``.

    python -m benchmarks.failover [--rounds 20] [--hold S] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import bench_parser

PORT = 7001
MODES = ("nft", "rules")


def _inside(prefix: str, rounds: int, hold: float) -> dict[str, Any]:
    """The measuring loop, run in host h4: the clerk, the cuts and the heals."""
    from actors import ActorSystem
    from apps.hosts import Hosts
    from apps.kvraft import Clerk
    from apps.raft.watch import take_view
    from transport.faults import disconnected

    hosts = Hosts.attach(prefix)
    servers = [hosts.endpoint(f"h{i + 1}", PORT) for i in range(3)]
    times: dict[str, list[float]] = {m: [] for m in MODES}
    rejoin: dict[str, list[float]] = {m: [] for m in MODES}
    with ActorSystem(hosts.endpoint("h4", 0)) as system:
        clerk = Clerk(servers, system=system, give_up_after=60.0)

        def settled(limit: float = 90.0) -> int:
            """Wait until all three answer and one leads; the leader's index."""
            deadline = time.monotonic() + limit
            while True:
                view = take_view(system, servers, timeout=0.5)
                if view.leader is not None and len(view.up) == 3:
                    return view.leader.me
                if time.monotonic() > deadline:
                    raise SystemExit(f"the cluster did not settle within {limit} s: {len(view.up)} up, leader {view.leader}")
                time.sleep(0.05)

        for r in range(2 * rounds):
            mode = MODES[r % 2]
            leader = settled()
            clerk.put("failover", f"before-{r}")
            if mode == "nft":
                hosts.isolate(f"h{leader + 1}")
            else:
                system.control(servers[leader]).set_faults(disconnected("*"))
            cut = time.monotonic()
            if mode == "rules":
                for i in range(3):
                    if i != leader:
                        system.control(servers[i]).set_faults(disconnected(servers[leader]))
            clerk.put("failover", f"after-{r}")
            times[mode].append(time.monotonic() - cut)
            time.sleep(hold)  # a longer partition: the old leader's connections back off further
            if mode == "nft":
                hosts.heal()
            else:
                for ep in servers:
                    system.control(ep).set_faults([])
            healed = time.monotonic()
            settled()
            rejoin[mode].append(time.monotonic() - healed)
            print(f"round {r + 1}/{2 * rounds} {mode}: failover {times[mode][-1]:.2f} s, rejoin {rejoin[mode][-1]:.2f} s",
                  file=sys.stderr, flush=True)
    return {"failover_s": times, "rejoin_s": rejoin}


def _server(hosts: Any, i: int, servers: list[str], data: Path, env: dict[str, str]) -> subprocess.Popen:
    code = (
        "from apps.kvraft.server import ServerConfig, serve\n"
        f"serve(ServerConfig(me={i}, endpoints={tuple(servers)!r}, data_dir={str(data / f'server-{i}')!r}))"
    )
    return hosts.popen(f"h{i + 1}", [sys.executable, "-c", code], stderr=subprocess.DEVNULL, env=env)


def run(rounds: int = 20, progress: bool = False, hold: float = 0.0) -> dict[str, Any]:
    from apps.hosts import Hosts, available, host_keyring
    from transport.keys import KEYS_ENV, resolve_keyring

    why = available()
    if why:
        return {"skipped": why}
    root = str(Path(__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory(prefix="zactor-failover-") as tmp, Hosts().up(4) as hosts:
        ring = host_keyring(resolve_keyring().directory, Path(tmp) / "keys")
        env = {**os.environ, KEYS_ENV: str(ring), "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        servers = [hosts.endpoint(f"h{i + 1}", PORT) for i in range(3)]
        procs = [_server(hosts, i, servers, Path(tmp), env) for i in range(3)]
        try:
            client = hosts.popen(
                "h4",
                [sys.executable, "-m", "benchmarks.failover", "--inside", hosts.prefix, "--rounds", str(rounds), "--hold", str(hold)],
                stdout=subprocess.PIPE, stderr=None if progress else subprocess.PIPE, text=True, env=env, cwd=root,
            )
            out, err = client.communicate(timeout=(60.0 + 2 * hold) * rounds)
        finally:
            for p in procs:
                p.kill()
                p.wait(timeout=10)
        if client.returncode != 0:
            raise SystemExit(f"the failover client failed ({client.returncode}): {(err or '')[-2000:]}")
        measured = json.loads(out.strip().splitlines()[-1])
    result: dict[str, Any] = {"rounds": rounds, "hold_s": hold}
    for mode in MODES:
        f, j = measured["failover_s"][mode], measured["rejoin_s"][mode]
        result[mode] = {"failover_median_s": statistics.median(f), "failover_worst_s": max(f), "failover_best_s": min(f),
                        "rejoin_median_s": statistics.median(j), "rejoin_worst_s": max(j), "failover_s": f, "rejoin_s": j}
    result["ratio_median"] = result["nft"]["failover_median_s"] / result["rules"]["failover_median_s"]
    return result


def report(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"failover: skipped ({result['skipped']})"
    lines = [
        f"failover: Raft-KV, 3 servers, leader cut off, {result['rounds']} rounds of each kind, interleaved; "
        f"healed {result['hold_s']} s after the first acknowledged write",
        f"  {'cut':<7}{'failover median s':>19}{'worst':>8}{'best':>8}{'rejoin median s':>17}{'worst':>8}",
    ]
    for mode in MODES:
        m = result[mode]
        lines.append(f"  {mode:<7}{m['failover_median_s']:>19.2f}{m['failover_worst_s']:>8.2f}{m['failover_best_s']:>8.2f}"
                     f"{m['rejoin_median_s']:>17.2f}{m['rejoin_worst_s']:>8.2f}")
    lines.append(f"  nft/rules median failover ratio: {result['ratio_median']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("failover", __doc__)
    parser.add_argument("--rounds", type=int, default=20, help="cuts of each kind (default 20)")
    parser.add_argument("--hold", type=float, default=0.0, help="keep the cut this many seconds after the new leader's first write (default 0)")
    parser.add_argument("--inside", metavar="PREFIX", help=argparse.SUPPRESS)  # the client, run in host h4
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.hold < 0:
        parser.error("--hold must be 0 or more seconds")
    if args.inside:
        print(json.dumps(_inside(args.inside, args.rounds, args.hold)), flush=True)
        return 0
    result = run(args.rounds, progress=not args.json, hold=args.hold)
    print(json.dumps(result) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
