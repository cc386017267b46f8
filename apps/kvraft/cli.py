"""``zactor kv cluster``: a local replicated KV cluster under a supervisor; clients for it.

The cluster runs each server (a Raft peer and the KV state machine) as a
supervised OS process: one killed with SIGKILL is started again by the
supervisor and recovers from its data directory. The command prints the
endpoints clerks should use, then a line whenever the leader changes or a
server comes back. A server removed from the cluster (``zactor kv cluster
remove``) stops by itself and is not started again: the command says so and
stops counting it.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time

from actors import ActorDeadError, ActorSystem, AskTimeout, ChildSpec, Supervisor
from apps.kvraft.server import READ_MODES, ServerConfig, serve
from apps.raft.peer import PEER_NAME, REMOVED_EXIT, PeerStatus
from apps.raft.roster import Members
from apps.raft.watch import data_root, stop_on_signals, watch

DEFAULT_FIRST_PORT = 7001


def add_cluster_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "cluster",
        help="run a local replicated (Raft) KV cluster until Ctrl-C",
        description="Run N replicated KV servers as supervised processes on this machine. A server killed "
        "(even with SIGKILL) is restarted and recovers from its data directory. Prints the endpoints for "
        "`zactor kv get/put/append --servers ...`, then who leads whenever that changes. With an ACTION, "
        "look at or change the servers of a running cluster instead (`zactor kv cluster add --help`).",
    )
    p.add_argument("--servers", type=int, help="number of servers (default 3, or as many as --endpoints names)")
    p.add_argument(
        "--endpoints",
        help=f"comma-separated endpoints, one per server (default tcp://127.0.0.1:{DEFAULT_FIRST_PORT} and up)",
    )
    p.add_argument("--data-dir", help="where servers persist their state (default: a temporary directory, removed at exit)")
    p.add_argument(
        "--maxraftstate", type=int, default=-1, help="snapshot when the persisted Raft state nears this many bytes (default -1: never)"
    )
    p.add_argument("--read", choices=READ_MODES, default="index", help="Gets by ReadIndex (default) or through the log")
    p.add_argument("--for", dest="duration", type=float, help="stop after this many seconds instead of at Ctrl-C")
    return p


def parse_endpoints(text: str) -> list[str]:
    """``ep1,ep2,...`` as a list; a clear ValueError for anything that is not an endpoint."""
    endpoints = [e.strip() for e in text.split(",") if e.strip()]
    if not endpoints:
        raise ValueError("no endpoints given")
    for ep in endpoints:
        if not ep.startswith(("tcp://", "ipc://")):
            raise ValueError(f"{ep!r} is not an endpoint (want tcp://HOST:PORT or ipc://PATH)")
    if len(set(endpoints)) != len(endpoints):
        raise ValueError("the same endpoint is given twice")
    return endpoints


def _tcp_in_use(endpoint: str) -> bool:
    if not endpoint.startswith("tcp://"):
        return False
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, int(port)))
    except (OSError, ValueError):
        return True
    return False


def run_cluster(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.servers is not None and args.servers < 1:
        parser.error("--servers must be at least 1")
    if args.maxraftstate == 0 or args.maxraftstate < -1:
        parser.error("--maxraftstate must be -1 (never snapshot) or a positive number of bytes")
    if args.duration is not None and args.duration <= 0:
        parser.error("--for must be positive seconds")
    if args.endpoints:
        try:
            endpoints = parse_endpoints(args.endpoints)
        except ValueError as exc:
            parser.error(f"--endpoints: {exc}")
        if args.servers is not None and len(endpoints) != args.servers:
            parser.error(f"--endpoints names {len(endpoints)} servers but --servers is {args.servers}")
        args.servers = len(endpoints)
    else:
        args.servers = args.servers or 3
        endpoints = [f"tcp://127.0.0.1:{DEFAULT_FIRST_PORT + i}" for i in range(args.servers)]
    busy = [ep for ep in endpoints if _tcp_in_use(ep)]
    if busy:
        print(f"zactor kv cluster: cannot listen on {', '.join(busy)} (in use, or not this machine); pick others with --endpoints", file=sys.stderr)
        return 1
    stop = stop_on_signals()
    started = time.monotonic()
    with data_root(args.data_dir, "zactor-kv-") as root:
        with Supervisor(max_restarts=20, within=10.0) as sup, ActorSystem() as system:
            for i in range(args.servers):
                config = ServerConfig(
                    me=i, endpoints=tuple(endpoints), data_dir=str(root / f"server-{i}"), maxraftstate=args.maxraftstate, read=args.read
                )
                sup.start_child(ChildSpec(f"server-{i}", serve, (config,)))
            print(f"{args.servers} KV servers, state in {root} (Ctrl-C stops everything)", flush=True)
            for i, ep in enumerate(endpoints):
                print(f"  server {i}: {ep}  pid {sup.pid(f'server-{i}')}", flush=True)
            print(f"servers: {','.join(endpoints)}", flush=True)
            print(f"try:     zactor kv put --servers {','.join(endpoints)} greeting hello", flush=True)
            _watch(sup, system, endpoints, stop, started, args.duration)
    print("stopped", flush=True)
    return 0


def _watch(sup: Supervisor, system: ActorSystem, endpoints: list[str], stop: threading.Event, started: float, duration: float | None) -> None:
    pids = {i: sup.pid(f"server-{i}") for i in range(len(endpoints))}
    watched = list(endpoints)  # the members: grows with servers added (`zactor kv cluster add`), shrinks with removals
    book = dict(enumerate(endpoints))
    last = None
    done: set[int] = set()  # servers of this command that were removed and stopped, or given up on
    for seen in watch(system, watched, stop, started=started, duration=duration):
        now = seen.elapsed
        left = False
        for i in range(len(endpoints)):
            if i in done:
                continue
            pid, status = sup.pid(f"server-{i}"), sup.status(f"server-{i}")
            if status == "exited" and sup.exit_code(f"server-{i}") == REMOVED_EXIT:
                print(f"{now:7.2f}s  server {i} removed from the cluster; its process stopped", flush=True)
                done.add(i)
                left = True
                if endpoints[i] in watched:
                    watched.remove(endpoints[i])
            elif status == "failed":
                print(f"{now:7.2f}s  server {i} keeps failing; the supervisor gave up on it", flush=True)
                pids[i] = None
                done.add(i)  # said once
            elif pid is not None and pid != pids[i]:
                pids[i] = pid
                print(f"{now:7.2f}s  server {i} restarted (pid {pid}), recovering from its data directory", flush=True)
        top = seen.leader
        view = (top.me, top.term) if top else (None, len(seen.up))
        if view != last or left:
            last = view
            _follow_members(system, top, seen.up, book, watched)
            up = sum(1 for s in seen.up if book.get(s.me) in watched)  # a server removed since the view is not counted
            if top:
                print(f"{now:7.2f}s  leader: server {top.me} ({book.get(top.me, '?')})  term {top.term}  servers up {up}/{len(watched)}", flush=True)
            else:
                print(f"{now:7.2f}s  no leader  servers up {up}/{len(watched)}", flush=True)


def _follow_members(system: ActorSystem, leader: PeerStatus | None, up: list[PeerStatus], book: dict[int, str], watched: list[str]) -> None:
    """Make the watched servers the cluster's members: those it has taken in since it started are added, and,
    when the leader answers, those it no longer has (removed) are dropped. Without a leader, one that answers
    is asked, and only adds: a lagging server's configuration may still name a server removed since."""
    for status in ([leader] if leader is not None else []) + up:
        endpoint = book.get(status.me)
        if endpoint is None:
            continue
        try:
            info = system.ref(endpoint, PEER_NAME).ask(Members(), timeout=0.5)
        except (AskTimeout, ActorDeadError):
            continue
        for server, ep in info.endpoints:
            book.setdefault(server, ep)
            if ep not in watched:
                watched.append(ep)
        if status is leader:
            members = {ep for _, ep in info.endpoints}
            watched[:] = [ep for ep in watched if ep in members]
        return
