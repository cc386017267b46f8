"""``zactor check``: decide whether a recorded history is linearizable, and draw it.

Exit status: 0 linearizable, 1 not linearizable, 3 unknown (the time budget
ran out), 2 for bad usage or a file that is not a history. Bad input gets a
one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import sys

from apps.linearizability.checker import CheckResult, ModelError, Verdict, check
from apps.linearizability.history import HistoryError, Operation, load
from apps.linearizability.html import render_html
from apps.linearizability.model import MODELS, NO_REPLY, Model

__all__ = ["EXIT_CODES", "main"]

EXIT_CODES = {Verdict.OK: 0, Verdict.ILLEGAL: 1, Verdict.UNKNOWN: 3}
_USAGE_ERROR = 2
_PROG = "zactor check"

_DESCRIPTION = """\
Check a recorded history for linearizability against a sequential model,
and optionally draw it as one self-contained HTML page.

The history is JSON lines, one operation per line, times in nanoseconds
from one monotonic clock; "return": null marks an operation that never
returned (it may take effect any time after its call, or never):

  {"client": 0, "call": 100, "return": 250, "input": {"op": "append", "key": "k", "value": "x"}, "output": ""}
"""

_EPILOG = """\
exit status: 0 linearizable, 1 not linearizable, 2 bad usage or input,
3 unknown (the time budget ran out before a verdict)

examples:
  zactor check history.jsonl
  zactor check history.jsonl --html history.html --timeout 10
"""


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG, description=_DESCRIPTION, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("history", metavar="HISTORY_FILE", help="the history, one JSON operation per line")
    parser.add_argument(
        "--model", default="kv", choices=sorted(MODELS), help="the sequential model to check against (default: %(default)s)"
    )
    parser.add_argument("--html", metavar="OUT", help="also write the history's time line to this HTML file")
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_timeout,
        default=60.0,
        help="time budget for the search; 0 means no limit (default: %(default)s)",
    )
    return parser


def _describe(model: Model, op: Operation) -> str:
    output = NO_REPLY if op.ret is None else op.output
    returned = "never returned" if op.ret is None else f"returned {op.ret}"
    return f"{model.describe_operation(op.input, output)} by client {op.client} (called {op.call}, {returned})"


def _report(history: list[Operation], model: Model, result: CheckResult) -> list[str]:
    n, parts = len(history), len(result.partitions)
    head = f"{result.verdict.value}: {n} operations in {parts} part(s), checked in {result.seconds:.2f} s"
    lines = [head]
    for part in result.illegal:
        stuck = "; ".join(_describe(model, op) for op in part.stuck_ops) or "(none found)"
        lines.append(
            f"  {part.name}: after {len(part.prefix)} of {len(part.ops)} operations "
            f"(state {model.describe_state(part.state)}), cannot place: {stuck}"
        )
    if result.verdict is Verdict.UNKNOWN:
        names = ", ".join(p.name for p in result.undecided[:5]) + (" ..." if len(result.undecided) > 5 else "")
        lines.append(f"  undecided: {names}; try a larger --timeout")
    return lines


def _fail(message: str) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return _USAGE_ERROR


def main(argv: list[str] | None = None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits for --help (0) and usage errors (2); return, do not exit
        return exc.code if isinstance(exc.code, int) else _USAGE_ERROR
    try:
        history = load(args.history)
    except HistoryError as exc:
        return _fail(str(exc))
    except FileNotFoundError:
        return _fail(f"no such file: {args.history}")
    except OSError as exc:
        return _fail(f"cannot read {args.history}: {exc.strerror or exc}")
    model = MODELS[args.model]
    try:
        result = check(history, model, timeout=args.timeout or None)
    except ModelError as exc:
        return _fail(f"{args.history} does not fit the {args.model} model: {exc}")
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
    print("\n".join(_report(history, model, result)))
    if args.html:
        try:
            out = render_html(history, model, result, args.html)
        except OSError as exc:
            return _fail(f"cannot write {args.html}: {exc.strerror or exc}")
        print(f"  time line: {out}")
    return EXIT_CODES[result.verdict]


if __name__ == "__main__":
    sys.exit(main())
