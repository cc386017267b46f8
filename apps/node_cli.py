"""``zactor node``: run a node agent, or list what one hosts.

    zactor node --endpoint tcp://127.0.0.2:7070 --dir ./node     # serve until Ctrl-C or SIGTERM
    zactor node list --node tcp://127.0.0.2:7070                 # name, status, pid, restarts, uptime
"""

from __future__ import annotations

import argparse
import sys

from actors import ActorSystem, AskTimeout
from actors.agent import run_agent
from actors.spawn import node_children
from apps.keys_cli import add_security_options, apply_security_options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zactor node",
        description="Run a node agent: a supervisor that hosts actors which authenticated peers "
        "(keys in the keyring) place on it with system.spawn_process(..., node=ENDPOINT); "
        "or list what a running agent hosts.",
        epilog="examples:\n  zactor node --endpoint tcp://127.0.0.2:7070 --dir ./node\n"
        "  zactor node list --node tcp://127.0.0.2:7070",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", nargs="?", choices=["serve", "list"], default="serve", help="serve (default) or list")
    parser.add_argument("--endpoint", help="serve: where the agent listens, tcp://HOST:PORT (or ipc://PATH)")
    parser.add_argument("--dir", default=".", help="serve: the agent's directory; each actor works in a subdirectory (default: .)")
    parser.add_argument("--node", help="list: the agent to ask, tcp://HOST:PORT")
    parser.add_argument("--timeout", type=float, default=5.0, help="list: seconds to wait for the answer (default 5)")
    add_security_options(parser)
    return parser


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_security_options(args)
    if args.action == "serve":
        if not args.endpoint:
            parser.error("serve needs --endpoint tcp://HOST:PORT")
        try:
            run_agent(args.endpoint, args.dir, announce=True)
        except (OSError, ValueError) as exc:
            print(f"zactor node: {exc}", file=sys.stderr)
            return 1
        return 0
    if not args.node:
        parser.error("list needs --node tcp://HOST:PORT")
    try:
        children = node_children(ActorSystem.shared(), args.node, timeout=args.timeout)
    except AskTimeout:
        print(f"zactor node: no answer from {args.node} within {args.timeout} s (is an agent running there, and is its key in your keyring?)", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"zactor node: {exc}", file=sys.stderr)
        return 1
    if not children:
        print(f"{args.node} hosts no actors")
        return 0
    rows = [("NAME", "STATUS", "PID", "RESTARTS", "UPTIME", "CLASS", "ENDPOINT")]
    for c in children:
        rows.append((c.name, c.status, str(c.pid or "-"), str(c.restarts), _uptime(c.uptime), f"{c.cls} ({c.via})", c.endpoint))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
