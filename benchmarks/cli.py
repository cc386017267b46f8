"""``zactor bench``: the benchmarks' command, plugged into ``zactor`` from above.

``setup.cfg`` names this module in the ``zactor.commands`` entry-point group,
which :mod:`apps.cli` reads: so the command dispatcher (in apps) never
imports the benchmarks, the layer above it. A plugin module has ``HELP``
(its line in ``zactor --help``), ``EXAMPLES`` (lines for the epilog) and
``main(argv) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

from apps.keys_cli import add_security_options, apply_security_options
from benchmarks import BENCHMARKS

HELP = "run benchmarks (all, or one by name)"

EXAMPLES = [
    ("zactor bench", "run every benchmark, print a table"),
    ("zactor bench transport --json", "one benchmark, one JSON object"),
    ("zactor bench transport --help", "that benchmark's own options"),
]


def build_parser() -> argparse.ArgumentParser:
    names = ", ".join(BENCHMARKS)
    p = argparse.ArgumentParser(
        prog="zactor bench",
        description=f"Run benchmarks side by side with their baselines. Available: {names}. "
        "Options after the name go to that benchmark (see `zactor bench NAME --help`).",
    )
    p.add_argument("name", nargs="?", choices=[*BENCHMARKS, "all"], default="all", help="which benchmark (default: all)")
    add_security_options(p)
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_security_options(args)
    if args.name != "all":
        return int(importlib.import_module(BENCHMARKS[args.name]).main(args.args) or 0)
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
