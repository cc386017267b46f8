"""``zactor node``: run a node agent, list what one hosts, or stop one of its actors.

    zactor node --endpoint tcp://127.0.0.2:7070 --dir ./node     # serve until Ctrl-C or SIGTERM
    zactor node list --node tcp://127.0.0.2:7070                 # name, status, pid, restarts, uptime
    zactor node stop there --node tcp://127.0.0.2:7070           # one actor, for good
"""

from __future__ import annotations

import argparse
import sys

from actors import ActorSystem, AskTimeout
from actors.agent import run_agent
from actors.spawn import node_children, stop_on_node
from apps.keys_cli import add_security_options, apply_security_options

ACTIONS = ("serve", "list", "stop")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zactor node",
        description="Run a node agent: a supervisor that hosts actors which authenticated peers "
        "(keys in the keyring) place on it with system.spawn_process(..., node=ENDPOINT); "
        "list what a running agent hosts, or stop one of its actors. `zactor node ACTION --help` tells about one action.",
        epilog="examples:\n  zactor node --endpoint tcp://127.0.0.2:7070 --dir ./node      (serve is the default action)\n"
        "  zactor node list --node tcp://127.0.0.2:7070\n"
        "  zactor node stop there --node tcp://127.0.0.2:7070",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("serve", help="run a node agent until Ctrl-C or SIGTERM (the default action)",
                       description="Run a node agent until Ctrl-C or SIGTERM: it hosts the actors that peers whose "
                       "keys are in the keyring place on it, each in its own supervised process.")
    p.add_argument("--endpoint", required=True, help="where the agent listens, tcp://HOST:PORT (or ipc://PATH)")
    p.add_argument("--dir", default=".", help="the agent's directory; each actor works in a subdirectory (default: .)")
    add_security_options(p)
    p = sub.add_parser("list", help="list the actors a running agent hosts",
                       description="List the actors a running agent hosts: name, status, pid, restarts, uptime, class, endpoint.")
    p.add_argument("--node", required=True, help="the agent to ask, tcp://HOST:PORT")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")
    add_security_options(p)
    p = sub.add_parser("stop", help="stop one actor an agent hosts, for good",
                       description="Stop one actor a running agent hosts, for good (it is not restarted): for one spawned "
                       "with detached=True, or one whose spawner died without stopping it.")
    p.add_argument("name", help="the actor's name, as `zactor node list` shows it")
    p.add_argument("--node", required=True, help="the agent that hosts it, tcp://HOST:PORT")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to give the actor's process to end (default 5)")
    add_security_options(p)
    return parser


def _with_action(argv: list[str]) -> list[str]:
    """``zactor node --endpoint ...`` (no action) serves, as it always has."""
    if argv and argv[0] in (*ACTIONS, "-h", "--help"):
        return argv
    return ["serve", *argv]


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_with_action(list(sys.argv[1:] if argv is None else argv)))
    apply_security_options(args)
    if args.action == "serve":
        try:
            run_agent(args.endpoint, args.dir, announce=True)
        except (OSError, ValueError) as exc:
            print(f"zactor node: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        if args.action == "stop":
            stop_on_node(ActorSystem.shared(), args.node, args.name, timeout=args.timeout)
            print(f"stopped {args.name!r} on {args.node}")
            return 0
        children = node_children(ActorSystem.shared(), args.node, timeout=args.timeout)
    except AskTimeout:
        print(f"zactor node: no answer from {args.node} within {args.timeout} s (is an agent running there, and is its key in your keyring?)", file=sys.stderr)
        return 1
    except (OSError, ValueError, LookupError) as exc:
        print(f"zactor node {args.action}: {exc}", file=sys.stderr)
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
