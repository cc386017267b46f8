"""``zactor shards``: a local sharded KV cluster under a supervisor, and the commands that administer and use it.

``cluster`` starts the shard controller (3 servers) and ``--groups`` replica
groups of ``--servers`` servers each, every server a supervised OS process
(restarted after a crash, recovering from its data directory), and prints
the endpoints. The groups serve nothing until they join:
``zactor shards join --ctrler EPS 100=EP,EP,EP``. Keys are read and written
with ``zactor kv get|put|append --ctrler EPS``, as for the other KV services.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from actors import ActorSystem, ChildSpec, Supervisor
from apps.kvraft.cli import _tcp_in_use, parse_endpoints
from apps.kvraft.server import ServerConfig
from apps.kvsrv.client import KVUnavailable
from apps.raft.watch import data_root, stop_on_signals
from apps.shardctrler import CtrlerClerk, ShardConfig
from apps.shardctrler import serve as serve_ctrler
from apps.shardkv import ShardServerConfig
from apps.shardkv import serve as serve_group

FIRST_GID = 100
DEFAULT_FIRST_PORT = 7201
CTRLERS = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zactor shards", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    p = sub.add_parser("cluster", help="run a controller and replica groups until Ctrl-C",
                       description="Run the shard controller (3 servers) and --groups replica groups (gids 100, 101, ...) "
                       "of --servers servers each, as supervised processes on this machine; print their endpoints.")
    p.add_argument("--groups", type=int, default=3, help="replica groups (default 3)")
    p.add_argument("--servers", type=int, default=3, help="servers per group (default 3)")
    p.add_argument("--data-dir", help="where servers persist their state (default: a temporary directory, removed at exit)")
    p.add_argument("--first-port", type=int, default=DEFAULT_FIRST_PORT,
                   help=f"controller on 127.0.0.1 from this port, group k from port + 10*(k+1) (default {DEFAULT_FIRST_PORT})")
    p.add_argument("--ipc", metavar="DIR", help="listen on ipc:// sockets in DIR instead of TCP ports")
    p.add_argument("--maxraftstate", type=int, default=-1, help="snapshot when the Raft state nears this many bytes (default -1: never)")
    p.add_argument("--for", dest="duration", type=float, help="stop after this many seconds instead of at Ctrl-C")

    def ctrler(q: argparse.ArgumentParser) -> None:
        q.add_argument("--ctrler", required=True, help="comma-separated endpoints of the shard controller's servers")
        q.add_argument("--timeout", type=float, default=10.0, help="give up after this many seconds (default 10)")

    q = sub.add_parser("join", help="add replica groups (GID=EP,EP,...)")
    ctrler(q)
    q.add_argument("groups", nargs="+", metavar="GID=EP,EP,...")
    q = sub.add_parser("leave", help="remove replica groups")
    ctrler(q)
    q.add_argument("gids", nargs="+", type=int, metavar="GID")
    q = sub.add_parser("move", help="assign one shard to a group by hand")
    ctrler(q)
    q.add_argument("shard", type=int)
    q.add_argument("gid", type=int)
    q = sub.add_parser("query", help="print a configuration (default: the latest)")
    ctrler(q)
    q.add_argument("num", nargs="?", type=int, default=-1)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd == "cluster":
        return run_cluster(args, parser)
    try:
        ctrlers = parse_endpoints(args.ctrler)
    except ValueError as exc:
        parser.error(f"--ctrler: {exc}")
    if args.timeout <= 0:
        parser.error("--timeout must be positive seconds")
    try:
        with ActorSystem() as system:
            return _admin(args, parser, ctrlers, system)
    except KVUnavailable as exc:
        print(f"zactor shards {args.cmd}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"zactor shards {args.cmd}: {exc}", file=sys.stderr)
        return 1


def _admin(args: argparse.Namespace, parser: argparse.ArgumentParser, ctrlers: list[str], system: ActorSystem) -> int:
    mck = CtrlerClerk(ctrlers, system=system, give_up_after=args.timeout)
    if args.cmd == "join":
        groups: dict[int, list[str]] = {}
        for item in args.groups:
            gid, sep, eps = item.partition("=")
            if not sep or not gid.isdigit() or int(gid) <= 0:
                parser.error(f"join: {item!r} is not GID=EP,EP,... with a gid > 0")
            try:
                groups[int(gid)] = parse_endpoints(eps)
            except ValueError as exc:
                parser.error(f"join: group {gid}: {exc}")
        mck.join(groups)
    elif args.cmd == "leave":
        mck.leave(args.gids)
    elif args.cmd == "move":
        mck.move(args.shard, args.gid)
    if args.cmd == "query" or args.cmd in ("join", "leave", "move"):
        print(describe(mck.query(args.num if args.cmd == "query" else -1)))
    return 0


def describe(config: ShardConfig) -> str:
    lines = [f"configuration {config.num}", f"  shards: {' '.join(str(g) for g in config.shards)}"]
    for gid in sorted(config.groups):
        lines.append(f"  group {gid}: {','.join(config.groups[gid])}  shards {config.shards_of(gid)}")
    return "\n".join(lines)


def _endpoints(args: argparse.Namespace, base: int, count: int, name: str) -> list[str]:
    if args.ipc:
        return [f"ipc://{Path(args.ipc).resolve()}/{name}-{i}.sock" for i in range(count)]
    return [f"tcp://127.0.0.1:{base + i}" for i in range(count)]


def run_cluster(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.groups < 1 or args.servers < 1:
        parser.error("--groups and --servers must be at least 1")
    if args.servers > 9:
        parser.error("--servers must be at most 9 (each group has 10 ports)")
    if args.maxraftstate == 0 or args.maxraftstate < -1:
        parser.error("--maxraftstate must be -1 (never snapshot) or a positive number of bytes")
    if args.duration is not None and args.duration <= 0:
        parser.error("--for must be positive seconds")
    if args.ipc:
        Path(args.ipc).mkdir(parents=True, exist_ok=True)
    ctrlers = _endpoints(args, args.first_port, CTRLERS, "ctrler")
    groups = {FIRST_GID + g: _endpoints(args, args.first_port + 10 * (g + 1), args.servers, f"group-{FIRST_GID + g}")
              for g in range(args.groups)}
    busy = [ep for ep in [*ctrlers, *(e for eps in groups.values() for e in eps)] if _tcp_in_use(ep)]
    if busy:
        print(f"zactor shards cluster: cannot listen on {', '.join(busy)} (in use); pick another --first-port", file=sys.stderr)
        return 1
    stop = stop_on_signals()
    with data_root(args.data_dir, "zactor-shards-") as root, Supervisor(max_restarts=50, within=10.0) as sup:
        for i in range(CTRLERS):
            config = ServerConfig(me=i, endpoints=tuple(ctrlers), data_dir=str(root / "ctrler" / f"server-{i}"))
            sup.start_child(ChildSpec(f"ctrler-{i}", serve_ctrler, (config,)))
        for gid, eps in groups.items():
            for i in range(len(eps)):
                sconfig = ShardServerConfig(me=i, endpoints=tuple(eps), data_dir=str(root / f"group-{gid}" / f"server-{i}"),
                                            maxraftstate=args.maxraftstate, gid=gid, ctrlers=tuple(ctrlers))
                sup.start_child(ChildSpec(f"group-{gid}-{i}", serve_group, (sconfig,)))
        print(f"shard controller and {args.groups} groups of {args.servers}, state in {root} (Ctrl-C stops everything)", flush=True)
        print(f"ctrler: {','.join(ctrlers)}", flush=True)
        for gid, eps in groups.items():
            print(f"group {gid}: {','.join(eps)}", flush=True)
        first = next(iter(groups))
        print(f"try:    zactor shards join --ctrler {','.join(ctrlers)} {first}={','.join(groups[first])}", flush=True)
        names = [f"ctrler-{i}" for i in range(CTRLERS)] + [f"group-{g}-{i}" for g, eps in groups.items() for i in range(len(eps))]
        pids = {n: sup.pid(n) for n in names}
        started = time.monotonic()
        while not stop.wait(0.5):
            for n in names:
                pid = sup.pid(n)
                if pid is not None and pid != pids[n]:
                    pids[n] = pid
                    print(f"{time.monotonic() - started:7.2f}s  {n} restarted (pid {pid}), recovering from its data directory", flush=True)
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
    print("stopped", flush=True)
    return 0
