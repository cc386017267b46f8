"""``zactor kv cluster members|add|remove|replace``: the servers of a running replicated KV cluster, changed live.

A server is added the way etcd adds a member: this command starts its
process here (under a supervisor, as ``zactor kv cluster`` runs its own),
tells the cluster about it as a learner, waits while it copies the state
(InstallSnapshot and the log), promotes it to a voter, and then keeps it
running until Ctrl-C. Its number, the cluster's first size and its endpoint
are written to ``member.json`` in its data directory, so the same command
with the same ``--data-dir`` starts it again as the same server (it is never
added twice). ``replace`` is ``add`` followed by ``remove`` of the old server.

A removed server stops by itself, wherever it runs, as etcd's removed member
does: once it learns that a committed configuration leaves it out (it applies
the change, the leader tells it, or, if it was cut off then, the first peer it
reaches does), it logs one line and its process exits with
``REMOVED_EXIT``, which its supervisor takes as "done" and does not restart;
``zactor kv cluster`` and the ``add``/``replace`` command that runs it then
print "server N removed from the cluster; its process stopped". A server
merely cut off or behind never stops itself.

Every change is safe to ask again (after a timeout, or by a second
operator): adding a server that is already a member at the same endpoint,
promoting a voter, or removing a server that is already out answers with
the configuration as it is. Clerks need no restart: one that hears of a
leader it does not know asks the cluster for its members.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from actors import ActorSystem, ChildSpec, RemoteError, Supervisor
from apps.kvraft.server import READ_MODES, ServerConfig, serve
from apps.raft.admin import JoinPlan, MembershipError, ask_peer, change_membership, find_leader, plan_join
from apps.raft.membership import ADD_LEARNER, PROMOTE, REMOVE
from apps.raft.peer import REMOVED_EXIT, PeerStatus, Status
from apps.raft.roster import MembersInfo
from apps.raft.watch import data_root, stop_on_signals
from transport.private_files import open_private

MEMBER_FILE = "member.json"
ACTIONS = ("members", "add", "remove", "replace")


def add_membership_parsers(cluster: argparse.ArgumentParser, security: Callable[[argparse.ArgumentParser], object]) -> None:
    """``members``, ``add``, ``remove`` and ``replace`` under ``zactor kv cluster``; ``security`` adds --keys/--insecure."""
    sub = cluster.add_subparsers(dest="cluster_action", metavar="[ACTION]")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--servers", dest="members", required=True,
                        help="endpoints of the running cluster, comma-separated (one that answers is enough)")
    common.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds (default 60)")
    sub.add_parser("members", parents=[common], help="list the servers: number, endpoint, voter or learner, up or down",
                   description="List the running cluster's servers as its leader sees them, and which of them answer.")
    new = argparse.ArgumentParser(add_help=False)
    new.add_argument("--endpoint", help="where the new server listens (required unless --data-dir holds a server already)")
    new.add_argument("--data-dir", help="the new server's state (default: a temporary directory, removed when this command stops; "
                     "the same --data-dir later starts the same server again)")
    new.add_argument("--maxraftstate", type=int, default=-1, help="as for `zactor kv cluster` (default -1: never snapshot)")
    new.add_argument("--read", choices=READ_MODES, default="index", help="as for `zactor kv cluster`")
    new.add_argument("--for", dest="duration", type=float, help="stop after this many seconds instead of at Ctrl-C")
    p = sub.add_parser("add", parents=[common, new], help="start a new server here and add it to the cluster (learner, then voter)",
                       description="Start a new, empty server on this machine, add it to the running cluster as a learner, "
                       "promote it to voter once it has caught up, and keep it running until Ctrl-C.")
    p.add_argument("--learner", action="store_true", help="leave it a learner (it copies the log but never votes)")
    p = sub.add_parser("remove", parents=[common], help="take a server out of the cluster (by number or endpoint)",
                       description="Remove a server from the running cluster; its process stops by itself once it learns of "
                       "its removal. Asking again for a server already removed succeeds.")
    p.add_argument("server", help="the server's number (see `members`) or endpoint")
    p = sub.add_parser("replace", parents=[common, new], help="add a new server here, then remove an old one",
                       description="Replace a (dead) server: start and add a new one on this machine as `add` does, "
                       "then remove the old one; keeps the new one running until Ctrl-C.")
    p.add_argument("server", help="the server to replace: its number (see `members`) or endpoint")
    for name in ACTIONS:
        security(sub.choices[name])


def run_membership(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from apps.kvraft.cli import parse_endpoints

    action = args.cluster_action
    try:
        endpoints = parse_endpoints(args.members)
    except ValueError as exc:
        parser.error(f"--servers: {exc}")
    if args.timeout <= 0:
        parser.error("--timeout must be positive seconds")
    if getattr(args, "duration", None) is not None and args.duration <= 0:
        parser.error("--for must be positive seconds")
    with ActorSystem() as system:
        try:
            if action == "members":
                return _members(system, endpoints, args.timeout)
            if action == "remove":
                return _remove(system, endpoints, args.server, args.timeout)
            return _run_new_server(system, endpoints, args)
        except MembershipError as exc:
            print(f"zactor kv cluster {action}: {exc}", file=sys.stderr)
            return 1


def _members(system: ActorSystem, endpoints: list[str], timeout: float) -> int:
    info, _ = find_leader(system, endpoints, timeout=timeout)
    print(f"term {info.term}, leader: server {info.leader}; {len(info.voters)} voters, {len(info.learners)} learners", flush=True)
    book = dict(info.endpoints)
    for server in sorted(info.voters + info.learners):
        status = _status(system, book.get(server))
        state = "down (no answer)" if status is None else f"up, {status.role}, applied {status.applied_index}"
        print(f"  server {server}  {book.get(server, '?')}  {'voter' if server in info.voters else 'learner'}  {state}", flush=True)
    print(f"servers: {','.join(book[s] for s in sorted(book))}", flush=True)
    return 0


def _status(system: ActorSystem, endpoint: str | None) -> PeerStatus | None:
    if endpoint is None:
        return None
    try:
        status = ask_peer(system, endpoint, Status(), timeout=1.0)
    except RemoteError:  # it refused this key's ask: as good as no answer here
        return None
    return status if isinstance(status, PeerStatus) else None


def _which(info: MembersInfo, server: str) -> int:
    """A server named by number or endpoint, as a member's number; MembershipError if it is neither."""
    book = dict(info.endpoints)
    if server.isdigit():
        return int(server)
    for number, endpoint in book.items():
        if endpoint == server:
            return number
    raise MembershipError(f"{server} is not a member's endpoint nor a server number (members: {book}); "
                          "a server removed already is named by its number")


def _remove(system: ActorSystem, endpoints: list[str], server: str, timeout: float) -> int:
    info, _ = find_leader(system, endpoints, timeout=timeout)
    number = _which(info, server)
    info = change_membership(system, endpoints, REMOVE, number, timeout=timeout)
    print(f"server {number} removed; voters now {list(info.voters)}, leader server {info.leader} "
          "(its process stops by itself once it learns of it)", flush=True)
    print(f"servers: {','.join(ep for _, ep in info.endpoints)}", flush=True)
    return 0


def _run_new_server(system: ActorSystem, endpoints: list[str], args: argparse.Namespace) -> int:
    """``add`` and ``replace``: start a server here (or resume one), bring it in, then keep it running."""
    stop = stop_on_signals()
    started = time.monotonic()
    name = f"zactor kv cluster {args.cluster_action}"
    with data_root(args.data_dir, "zactor-kv-member-") as root:
        saved = _load_plan(root)
        info, _ = find_leader(system, endpoints, timeout=args.timeout)
        old = _which(info, args.server) if args.cluster_action == "replace" else None
        if saved is not None:
            plan = saved
            if args.endpoint and args.endpoint != plan.endpoints[plan.me]:
                raise MembershipError(f"{root} holds server {plan.me} of {plan.endpoints[plan.me]}, not {args.endpoint}")
            print(f"server {plan.me} starts again from {root}", flush=True)
        else:
            if not args.endpoint:
                raise MembershipError("--endpoint is needed: where the new server listens")
            plan = plan_join(info, args.endpoint)
            _save_plan(root, plan)
        if args.data_dir is None:
            print(f"{name}: state in {root}, removed when this command stops; the cluster counts this server "
                  "until `zactor kv cluster remove` (use --data-dir to keep it)", file=sys.stderr, flush=True)
        config = ServerConfig(me=plan.me, endpoints=plan.endpoints, data_dir=str(root / "server"), maxraftstate=args.maxraftstate,
                              read=args.read, initial=plan.initial)
        with Supervisor(max_restarts=20, within=10.0) as sup:
            sup.start_child(ChildSpec(f"server-{plan.me}", serve, (config,)))
            endpoint = plan.endpoints[plan.me]
            print(f"server {plan.me}: {endpoint}  pid {sup.pid(f'server-{plan.me}')}", flush=True)
            if plan.me not in info.voters + info.learners:  # a server started again may be in already
                info = change_membership(system, endpoints, ADD_LEARNER, plan.me, endpoint, timeout=args.timeout)
                print(f"server {plan.me} added as a learner; copying the cluster's state", flush=True)
            if (args.cluster_action == "replace" or not args.learner) and plan.me not in info.voters:
                info = change_membership(system, [endpoint, *endpoints], PROMOTE, plan.me, timeout=args.timeout)
                print(f"server {plan.me} is a voter; voters now {list(info.voters)}", flush=True)
            if old is not None and old in info.voters + info.learners:
                info = change_membership(system, [endpoint, *endpoints], REMOVE, old, timeout=args.timeout)
                print(f"server {old} removed; voters now {list(info.voters)} (its process stops by itself)", flush=True)
            print(f"servers: {','.join(ep for _, ep in info.endpoints)}", flush=True)
            _serve_until_stopped(sup, plan.me, stop, started, args.duration)
    print("stopped", flush=True)
    return 0


def _serve_until_stopped(sup: Supervisor, me: int, stop: threading.Event, started: float, duration: float | None) -> None:
    pid = sup.pid(f"server-{me}")
    while not stop.wait(0.2):
        if duration is not None and time.monotonic() - started > duration:
            return
        now = sup.pid(f"server-{me}")
        if sup.status(f"server-{me}") == "exited" and sup.exit_code(f"server-{me}") == REMOVED_EXIT:
            print(f"{time.monotonic() - started:7.2f}s  server {me} removed from the cluster; its process stopped", flush=True)
            return
        if sup.status(f"server-{me}") == "failed":
            print(f"{time.monotonic() - started:7.2f}s  server {me} keeps failing; the supervisor gave up on it", flush=True)
            return
        if now is not None and now != pid:
            pid = now
            print(f"{time.monotonic() - started:7.2f}s  server {me} restarted (pid {pid}), recovering from its data directory", flush=True)


def _save_plan(root: Path, plan: JoinPlan) -> None:
    path = root / MEMBER_FILE
    tmp = path.with_suffix(".tmp")
    with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "w") as f:
        json.dump({"me": plan.me, "initial": plan.initial, "endpoints": list(plan.endpoints)}, f)
    tmp.replace(path)


def _load_plan(root: Path) -> JoinPlan | None:
    path = root / MEMBER_FILE
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
        plan = JoinPlan(int(saved["me"]), tuple(str(e) for e in saved["endpoints"]), int(saved["initial"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MembershipError(f"{path} is damaged ({exc}); move the directory aside to add a new server") from exc
    if not 0 <= plan.me < len(plan.endpoints) or not plan.endpoints[plan.me]:
        raise MembershipError(f"{path} is damaged (no endpoint for server {plan.me})")
    return plan
