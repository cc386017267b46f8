"""``zactor check``: decide whether a recorded history is linearizable, and draw it."""

from __future__ import annotations

import argparse
import sys

from apps.linearizability.checker import Verdict, check
from apps.linearizability.history import HistoryError, load
from apps.linearizability.html import render_html
from apps.linearizability.model import MODELS

EXIT = {Verdict.OK: 0, Verdict.ILLEGAL: 1, Verdict.UNKNOWN: 3}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zactor check",
        description="Check a history (JSON lines: client, call, return, input, output) for linearizability.",
        epilog="exit status: 0 linearizable, 1 not linearizable, 3 unknown (time budget ran out), 2 bad usage or input",
    )
    parser.add_argument("history", help="the history file, one JSON operation per line")
    parser.add_argument("--model", default="kv", choices=sorted(MODELS), help="the sequential model (default kv)")
    parser.add_argument("--html", metavar="OUT", help="also write a time line of the history to this HTML file")
    parser.add_argument("--timeout", type=float, default=60.0, help="time budget in seconds (default 60)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    try:
        history = load(args.history)
    except FileNotFoundError:
        print(f"zactor check: no such file: {args.history}", file=sys.stderr)
        return 2
    except (HistoryError, UnicodeDecodeError) as exc:
        print(f"zactor check: {exc}", file=sys.stderr)
        return 2
    model = MODELS[args.model]
    try:
        result = check(history, model, timeout=args.timeout)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        print(f"zactor check: the history does not fit the {args.model} model: {exc!r}", file=sys.stderr)
        return 2
    print(f"{len(history)} operations in {len(result.partitions)} partitions: {result.verdict.value}")
    for part in result.illegal:
        names = ", ".join(model.describe_operation(part.ops[i].input, part.ops[i].output) for i in part.stuck[:3])
        print(f"  {part.name}: after {len(part.longest)} linearizable operations, cannot place: {names}")
    if args.html:
        print(f"  time line: {render_html(history, model, result, args.html)}")
    return EXIT[result.verdict]


if __name__ == "__main__":
    sys.exit(main())
