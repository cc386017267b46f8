"""The ``zactor`` command: one entry point, a subcommand per system.

Subcommands import their module only when chosen, so ``zactor --help`` is
instant and a broken optional part cannot break the others. The systems'
commands are listed here (``SUBCOMMANDS``); commands of the layer above
apps (``zactor bench``, from benchmarks) plug in through the entry-point
group ``zactor.commands`` (see ``setup.cfg``), so this module never imports
them. A plugin module has ``HELP``, ``EXAMPLES`` and ``main(argv) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Callable

from apps.keys_cli import add_security_options, apply_security_options
from apps.logs import LOG_FORMATS, configure

PLUGIN_GROUP = "zactor.commands"
"""Entry-point group of commands other packages add: ``NAME = module``."""

DESCRIPTION = """\
zactor: multiprocess actors over ZeroMQ, and the distributed systems built on them.

First use: the examples below; every command has its own --help.
"""

EPILOG = """\
examples:
{examples}
  zactor keys init                   create this machine's keyring, print its public key

security: every command that serves or connects takes --keys DIR and --insecure
(also before the command: `zactor --keys DIR mr run ...`); see `zactor keys --help`.
"""


def plugins() -> dict[str, str]:
    """The commands plugged in through ``zactor.commands``: name -> module (empty if none is installed)."""
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)}


def _delegate(module: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(module).main(args.args)

    return run


def _add_delegate(sub: argparse._SubParsersAction, name: str, module: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_delegate(module))


def build_parser() -> argparse.ArgumentParser:
    """The full parser, for ``--help`` and usage errors: imports each plugin module for its help line."""
    plugged = {name: importlib.import_module(module) for name, module in plugins().items()}
    examples = "\n".join(f"  {command:<34} {what}" for p in plugged.values() for command, what in p.EXAMPLES)
    parser = argparse.ArgumentParser(
        prog="zactor", description=DESCRIPTION, epilog=EPILOG.format(examples=examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug; default: warnings)")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text", help="log lines as text (default) or JSON, one object a line")
    parser.add_argument("--version", action="version", version=f"zactor {version()}", help="print zactor's version and exit")
    add_security_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in plugged.items():
        _add_delegate(sub, name, module.__name__, module.HELP)
    for name, module_name, help_text in SUBCOMMANDS:
        _add_delegate(sub, name, module_name, help_text)
    return parser


SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("mr", "apps.mapreduce.cli", "run a MapReduce job, or its coordinator / workers"),
    ("kv", "apps.kvsrv.cli", "run a KV server, or get/put/append against one"),
    ("raft", "apps.raft.cli", "run a local Raft cluster and watch its leader"),
    ("shards", "apps.shardkv.cli", "run a sharded KV cluster (controller + replica groups), administer and use it"),
    ("check", "apps.linearizability.cli", "check a recorded history for linearizability"),
    ("soak", "apps.soak.cli", "crash-recovery soak test of a system, with a verdict and a report"),
    ("kvsim", "apps.kvraft.sim", "deterministic simulation of the replicated KV service, seed by seed"),
    ("keys", "apps.keys_cli", "manage the cluster keyring (CURVE keys of the machines allowed in)"),
    ("node", "apps.node_cli", "run a node agent that hosts actors for the cluster, or list what one hosts"),
    ("top", "apps.top.cli", "a live view of running nodes: actors, mailboxes, rates, Raft roles (and Prometheus metrics)"),
    ("hosts", "apps.hosts.cli", "test hosts: network namespaces as machines, with packet-level faults between them"),
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
    log_format = "text"
    security = argparse.Namespace(keys=None, insecure=False)
    while argv and (argv[0] in ("-v", "-vv", "--verbose", "--insecure") or argv[0].startswith(("--keys", "--log-format"))):
        opt = argv.pop(0)
        if opt.startswith("--log-format"):
            log_format = opt.partition("=")[2] or (argv.pop(0) if argv else "")
            if log_format not in LOG_FORMATS:
                print(f"zactor: --log-format takes {' or '.join(LOG_FORMATS)}, not {log_format!r}", file=sys.stderr)
                return 2
        elif opt == "--insecure":
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
    configure(verbose, log_format)
    delegates = {**plugins(), **{name: module for name, module, _ in SUBCOMMANDS}}
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
