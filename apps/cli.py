"""The ``zactor`` command: one entry point, a subcommand per system.

Subcommands import their module only when chosen, so ``zactor --help`` is
instant and a broken optional part cannot break the others.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import logging
import sys
import time
from collections.abc import Callable

from apps.keys_cli import add_security_options, apply_security_options
from benchmarks import BENCHMARKS

DESCRIPTION = """\
zactor: multiprocess actors over ZeroMQ, and the distributed systems built on them.

First use: `zactor bench` measures every benchmark on generated data and
prints a table. Each benchmark compares zactor with a baseline in the same run.
"""

EPILOG = """\
examples:
  zactor bench                       run every benchmark, print a table
  zactor bench transport --json      one benchmark, one JSON object
  zactor bench transport --help      that benchmark's own options
  zactor keys init                   create this machine's keyring, print its public key

security: every command that serves or connects takes --keys DIR and --insecure
(also before the command: `zactor --keys DIR mr run ...`); see `zactor keys --help`.
"""


def _add_bench(sub: argparse._SubParsersAction) -> None:
    names = ", ".join(BENCHMARKS)
    p = sub.add_parser(
        "bench",
        help="run benchmarks (all, or one by name)",
        description=f"Run benchmarks side by side with their baselines. Available: {names}. "
        "Options after the name go to that benchmark (see `zactor bench NAME --help`).",
    )
    p.add_argument("name", nargs="?", choices=[*BENCHMARKS, "all"], default="all", help="which benchmark (default: all)")
    add_security_options(p)
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    apply_security_options(args)
    if args.name != "all":
        return importlib.import_module(BENCHMARKS[args.name]).main(args.args)
    want_json = "--json" in args.args
    unknown = [a for a in args.args if a != "--json"]
    if unknown:
        print(f"zactor bench: options {' '.join(unknown)} need a benchmark name", file=sys.stderr)
        return 2
    results: dict[str, dict] = {}
    for i, (name, module_name) in enumerate(BENCHMARKS.items(), 1):
        if not want_json:
            print(f"[{i}/{len(BENCHMARKS)}] {name} ...", file=sys.stderr, flush=True)
        module = importlib.import_module(module_name)
        started = time.monotonic()
        results[name] = module.run()
        if not want_json:
            print(module.report(results[name]), flush=True)
            print(f"  ({time.monotonic() - started:.1f} s)\n", flush=True)
    if want_json:
        print(json.dumps(results))
    return 0


def _delegate(module: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(module).main(args.args)

    return run


def _add_delegate(sub: argparse._SubParsersAction, name: str, module: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_delegate(module))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zactor", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)")
    parser.add_argument("--version", action="version", version=f"zactor {version()}", help="print zactor's version and exit")
    add_security_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_bench(sub)
    for name, module, help_text in SUBCOMMANDS:
        _add_delegate(sub, name, module, help_text)
    return parser


SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("mr", "apps.mapreduce.cli", "run a MapReduce job, or its coordinator / workers"),
    ("kv", "apps.kvsrv.cli", "run a KV server, or get/put/append against one"),
    ("raft", "apps.raft.cli", "run a local Raft cluster and watch its leader"),
    ("check", "apps.linearizability.cli", "check a recorded history for linearizability"),
    ("soak", "apps.soak.cli", "crash-recovery soak test of a system, with a verdict and a report"),
    ("keys", "apps.keys_cli", "manage the cluster keyring (CURVE keys of the machines allowed in)"),
    ("node", "apps.node_cli", "run a node agent that hosts actors for the cluster, or list what one hosts"),
]
"""(name, module with ``main(argv) -> int``, one-line help) of the systems' commands."""


def version() -> str:
    """The installed package's version (from its metadata, so it is the one pip reports)."""
    try:
        return importlib.metadata.version("zactor")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed: run from a source tree without `pip install -e .`)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-V"]):
        print(f"zactor {version()}")
        return 0
    verbose = 0
    security = argparse.Namespace(keys=None, insecure=False)
    while argv and (argv[0] in ("-v", "-vv", "--verbose", "--insecure") or argv[0].startswith("--keys")):
        opt = argv.pop(0)
        if opt == "--insecure":
            security.insecure = True
        elif opt.startswith("--keys"):
            value = opt.partition("=")[2] or (argv.pop(0) if argv else "")
            if not value:
                print("zactor: --keys needs a directory", file=sys.stderr)
                return 2
            security.keys = value
        else:
            verbose += 2 if opt == "-vv" else 1
    apply_security_options(security)  # before any command: it reaches every system and child process
    level = [logging.ERROR, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    delegates = {name: module for name, module, _ in SUBCOMMANDS}
    if argv and argv[0] in delegates:
        # Handed over whole, --help included: each system's command has its own parser.
        try:
            return int(importlib.import_module(delegates[argv[0]]).main(argv[1:]) or 0)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
