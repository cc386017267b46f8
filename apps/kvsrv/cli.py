"""``zactor kv``: run a KV server, or talk to one from the command line."""

from __future__ import annotations

import argparse
import logging
import sys
from functools import partial

import apps.kvraft as kvraft
import apps.shardkv as shardkv
from apps.keys_cli import add_security_options, apply_security_options
from apps.kvraft import cli as kvraft_cli
from apps.kvraft import members_cli
from apps.kvraft.server import SERVER_NAME as KVRAFT_NAME
from apps.kvsrv.client import PROBE_EVERY, Clerk, KVMisdirected, KVUnavailable
from apps.kvsrv.server import serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zactor kv",
        description="An exactly-once, linearizable key/value server (`serve`, one process), its replicated "
        "version on Raft (`cluster`), and command-line clients for either or for a sharded cluster "
        "(`zactor shards cluster`, addressed by its controller with --ctrler).",
        epilog="examples: zactor kv serve --endpoint tcp://127.0.0.1:5555 &  "
        "zactor kv put --server tcp://127.0.0.1:5555 k hello;  "
        "zactor kv cluster --servers 3 &  "
        "zactor kv put --servers tcp://127.0.0.1:7001,tcp://127.0.0.1:7002,tcp://127.0.0.1:7003 k hello",
    )
    sub = parser.add_subparsers(dest="op", metavar="OP", required=True)
    p = sub.add_parser("serve", help="run a server in the foreground until Ctrl-C or SIGTERM")
    p.add_argument("--endpoint", default="tcp://127.0.0.1:5555", help="where to listen (default tcp://127.0.0.1:5555)")
    add_security_options(p)
    cluster = kvraft_cli.add_cluster_parser(sub)
    add_security_options(cluster)
    members_cli.add_membership_parsers(cluster, partial(add_security_options, nested=True))
    for op, help_text, nargs in (("get", "print a key's value", 0), ("put", "set a key", 1), ("append", "append to a key, print the old value", 1)):
        p = sub.add_parser(op, help=help_text)
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--server", help="a single KV server's endpoint (`zactor kv serve`), e.g. tcp://127.0.0.1:5555")
        where.add_argument("--servers", help="a replicated cluster's endpoints, comma-separated (`zactor kv cluster` prints them)")
        where.add_argument("--ctrler", help="a sharded cluster's controller endpoints, comma-separated "
                           "(`zactor shards cluster` prints them); the clerk finds the key's group")
        p.add_argument("--timeout", type=float, default=10.0, help="give up after this many seconds (default 10)")
        p.add_argument("key", help="the key (any string)")
        if nargs:
            p.add_argument("value", help="the value to " + op + (" (its old value is printed)" if op == "append" else ""))
        add_security_options(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_security_options(args)
    if args.op == "cluster":
        if args.cluster_action:
            return members_cli.run_membership(args, parser)
        return kvraft_cli.run_cluster(args, parser)
    if args.op == "serve":
        try:
            serve(args.endpoint, announce=True)
        except OSError as exc:
            print(f"zactor kv serve: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.timeout <= 0:
        print("zactor kv: --timeout must be positive", file=sys.stderr)
        return 2

    # A server that is starting (a cluster just put in the background) answers in a moment: the command says
    # at once why nothing answers yet, then waits for it to listen, failing with that reason a look before the
    # --timeout (after it, the reason would be lost to a plain "no answer").
    listen_wait = max(args.timeout - 2 * PROBE_EVERY, min(args.timeout, 0.5))

    def waiting(why: str) -> None:
        print(f"zactor kv {args.op}: {why}; waiting up to {listen_wait:g} s for it", file=sys.stderr, flush=True)

    try:
        clerk: kvraft.Clerk | Clerk | shardkv.Clerk
        if args.servers is not None:
            clerk = kvraft.Clerk(kvraft_cli.parse_endpoints(args.servers), give_up_after=args.timeout,
                                 unreachable_after=listen_wait, tell_waiting=waiting)
        elif args.ctrler is not None:
            clerk = shardkv.Clerk(kvraft_cli.parse_endpoints(args.ctrler), give_up_after=args.timeout)
        else:
            clerk = Clerk(args.server, give_up_after=args.timeout, unreachable_after=listen_wait, tell_waiting=waiting)
        if args.op == "get":
            print(clerk.get(args.key))
        elif args.op == "put":
            clerk.put(args.key, args.value)
        else:
            print(clerk.append(args.key, args.value))
    except KVMisdirected as exc:
        hint = ""
        if KVRAFT_NAME in exc.hosted:
            hint = (
                "; it is a server of a replicated KV cluster (`zactor kv cluster`): "
                "give all the cluster's endpoints with --servers EP1,EP2,... instead of --server"
            )
        print(f"zactor kv {args.op}: {exc}{hint}", file=sys.stderr)
        return 1
    except (KVUnavailable, ValueError, OSError) as exc:
        print(f"zactor kv {args.op}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    sys.exit(main())
