"""``zactor top``: the nodes of a running system or cluster, refreshed each second.

    zactor top --nodes tcp://127.0.0.1:7001,tcp://127.0.0.1:7002,tcp://127.0.0.1:7003
    zactor top --nodes EPS --once                       # one table, then exit (for scripts)
    zactor top --nodes EPS --metrics-port 9464 --headless   # Prometheus only, on 127.0.0.1:9464

Per actor: mailbox depth, messages handled per second and in all, the p99 of
its recent handling times and its restarts; per Raft peer: role, term,
commit and applied index. The terminal view uses ``rich`` and the metrics
``prometheus_client`` (both in the ``top`` extra: ``pip install 'zactor[top]'``).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from actors import ActorSystem
from apps.keys_cli import add_security_options, apply_security_options
from apps.kvraft.cli import parse_endpoints
from apps.raft.watch import stop_on_signals
from apps.top.metrics import serve_metrics
from apps.top.sample import NodeLook, Sampler

COLUMNS = ("NODE", "PID", "ACTOR", "CLASS", "MAILBOX", "MSG/S", "HANDLED", "P99 MS", "RESTARTS", "RAFT")
NUMBERS = ("PID", "MAILBOX", "MSG/S", "HANDLED", "P99 MS", "RESTARTS")


def _rich() -> Any:
    try:
        import rich  # optional: the `top` extra
    except ImportError as exc:
        raise SystemExit("zactor top needs rich for its terminal view: pip install 'zactor[top]' "
                         "(or use --headless with --metrics-port)") from exc
    return rich


def rows(looks: list[NodeLook]) -> list[tuple[str, ...]]:
    """The table's rows: one per actor, or one saying a node is down."""
    out: list[tuple[str, ...]] = []
    for look in looks:
        if look.stats is None:
            out.append((look.endpoint, "-", "(no answer)", "", "", "", "", "", "", ""))
            continue
        raft = ""
        if look.raft is not None:
            r = look.raft
            raft = f"{r.role} t={r.term} commit={r.commit_index} applied={r.applied_index}"
        for a in look.stats["actors"] or [{"name": "(no actors)", "class": "", "mailbox": None, "handled": None,
                                           "p99_ms": None, "restarts": 0}]:
            rate = look.rates.get(a["name"])
            out.append((
                look.endpoint, str(look.stats["pid"]), a["name"], a["class"],
                "-" if a["mailbox"] is None else str(a["mailbox"]),
                "-" if rate is None else f"{rate:.0f}",
                "-" if a["handled"] is None else str(a["handled"]),
                "-" if a["p99_ms"] is None else f"{a['p99_ms']:.2f}",
                str(a["restarts"]),
                raft if a["name"] == "raft" else "",
            ))
    return out


def table(looks: list[NodeLook]) -> Any:
    from rich.table import Table

    t = Table(title=f"zactor top  {time.strftime('%H:%M:%S')}", title_justify="left")
    for col in COLUMNS:
        if col in NUMBERS:  # figures never shrink: on a narrow terminal the names fold instead
            t.add_column(col, justify="right", no_wrap=True, min_width=len(col))
        else:
            t.add_column(col, overflow="fold", min_width=5)
    for row in rows(looks):
        t.add_row(*row)
    return t


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zactor top", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", required=True, help="the nodes to watch, comma-separated endpoints "
                        "(e.g. what `zactor kv cluster` prints)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between looks (default 1)")
    parser.add_argument("--once", action="store_true", help="print one table (two looks an interval apart, for rates) and exit")
    parser.add_argument("--metrics-port", type=int, help="also serve Prometheus metrics on 127.0.0.1:PORT/metrics")
    parser.add_argument("--headless", action="store_true", help="no terminal view: serve --metrics-port until Ctrl-C")
    parser.add_argument("--for", dest="duration", type=float, help="stop after this many seconds instead of at Ctrl-C")
    add_security_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_security_options(args)
    try:
        endpoints = parse_endpoints(args.nodes)
    except ValueError as exc:
        parser.error(f"--nodes: {exc}")
    if args.interval <= 0:
        parser.error("--interval must be positive seconds")
    if args.headless and args.metrics_port is None:
        parser.error("--headless needs --metrics-port (there would be nothing to see)")
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        parser.error("--metrics-port must be a port number (1-65535)")
    if not args.headless:
        _rich()
    stop = stop_on_signals()
    deadline = None if args.duration is None else time.monotonic() + args.duration
    with ActorSystem() as system:
        sampler = Sampler(system, endpoints)
        if args.metrics_port is not None:
            try:
                serve_metrics(Sampler(system, endpoints), args.metrics_port)
            except OSError as exc:
                print(f"zactor top: cannot serve metrics on 127.0.0.1:{args.metrics_port}: {exc}", file=sys.stderr)
                return 1
            print(f"metrics: http://127.0.0.1:{args.metrics_port}/metrics", file=sys.stderr, flush=True)
        if args.once:
            sampler.look()
            time.sleep(args.interval)  # rates need a second look; an interval is what they are measured over
            from rich.console import Console

            Console(width=200).print(table(sampler.look()))
            return 0
        if args.headless:
            while not stop.wait(0.2) and (deadline is None or time.monotonic() < deadline):
                pass
            return 0
        from rich.live import Live

        with Live(table(sampler.look()), auto_refresh=False, screen=False) as live:
            while not stop.wait(args.interval) and (deadline is None or time.monotonic() < deadline):
                live.update(table(sampler.look()), refresh=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
