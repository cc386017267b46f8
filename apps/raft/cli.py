"""``zactor raft cluster``: run a local supervised Raft cluster and watch who leads."""

from __future__ import annotations

import argparse
import sys
import time

from actors import ActorSystem, ChildSpec, EventKind, Supervisor, SupervisorEvent
from apps.keys_cli import add_security_options, apply_security_options
from apps.raft.peer import PEER_NAME, PeerConfig, Start, serve_peer
from apps.raft.watch import data_root, stop_on_signals, watch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zactor raft",
        description="Raft on the actor runtime. `cluster` runs N peers as supervised processes on this machine "
        "and prints who leads, with term and commit index, whenever that changes.",
    )
    sub = parser.add_subparsers(dest="op", metavar="OP", required=True)
    p = sub.add_parser("cluster", help="run a local cluster until Ctrl-C",
                       description="Run N Raft peers as supervised processes on this machine; print each peer's pid, "
                       "then who leads, with term and commit index, whenever that changes. Each new leader commits a "
                       "no-op command, so the commit index moves. kill -9 a peer's pid to watch an election and the restart.")
    p.add_argument("--peers", type=int, default=3, help="number of peers (default 3)")
    p.add_argument("--data-dir", help="where peers persist their state (default: a temporary directory, removed at exit)")
    p.add_argument("--for", dest="duration", type=float, help="stop after this many seconds instead of at Ctrl-C")
    add_security_options(p)
    return parser


def _print_restarts(event: SupervisorEvent) -> None:
    """Each peer the supervisor starts again, with its new pid (on the supervisor's thread: a print only)."""
    if event.kind == EventKind.STARTED:
        print(f"  {event.child.replace('-', ' ')} started again: pid {event.pid}", flush=True)


def _propose_no_op(system: ActorSystem, endpoint: str, term: int) -> None:
    """A new leader gets one command of its term, so the commit index moves (a leader commits nothing of
    earlier terms until an entry of its own is committed), as a service would do with its first write."""
    try:
        system.ref(endpoint, PEER_NAME).tell(Start(("no-op", term)))
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_security_options(args)
    if args.peers < 1:
        parser.error("--peers must be at least 1")
    stop = stop_on_signals()
    started = time.monotonic()
    with data_root(args.data_dir, "zactor-raft-") as root:
        endpoints = tuple(f"ipc://{root}/peer-{i}.sock" for i in range(args.peers))
        with Supervisor(max_restarts=20, within=10.0) as sup, ActorSystem() as system:
            pids = {}
            for i in range(args.peers):
                config = PeerConfig(me=i, endpoints=endpoints, data_dir=str(root / f"data-{i}"))
                pids[i] = sup.start_child(ChildSpec(f"peer-{i}", serve_peer, (config,)))
            print(f"{args.peers} peers running, state in {root} (Ctrl-C stops everything)", flush=True)
            for i, pid in pids.items():
                print(f"  peer {i}: pid {pid}  {endpoints[i]}", flush=True)
            print("kill -9 a pid to see an election; the supervisor restarts the peer from its journal", flush=True)
            sup.add_listener(_print_restarts)
            last = None
            proposed: set[tuple[int, int]] = set()
            for seen in watch(system, endpoints, stop, started=started, duration=args.duration):
                top = seen.leader
                if top is not None and (top.me, top.term) not in proposed:
                    proposed.add((top.me, top.term))
                    _propose_no_op(system, endpoints[top.me], top.term)
                view = (top.me, top.term, top.commit_index) if top else (None, max((s.term for s in seen.up), default=0), None)
                if view != last:
                    last = view
                    stamp = f"{seen.elapsed:7.2f}s"
                    if top:
                        print(f"{stamp}  leader {top.me}  term {top.term}  commit index {top.commit_index}  peers up {len(seen.up)}/{args.peers}", flush=True)
                    else:
                        print(f"{stamp}  no leader  (highest term {view[1]})  peers up {len(seen.up)}/{args.peers}", flush=True)
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
