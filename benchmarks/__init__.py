"""Runnable benchmarks, each measuring zactor side by side with a baseline in the same run.

Each module has ``run(...) -> dict`` (defaults are the published settings),
``report(result) -> str`` and ``main(argv) -> int``; ``zactor bench NAME``
calls ``main``, plain ``zactor bench`` runs them all and prints a table.
"""

import argparse

BENCHMARKS: dict[str, str] = {
    "transport": "benchmarks.transport",
    "supervisor": "benchmarks.supervisor",
    "kv": "benchmarks.kvsrv",
    "mr": "benchmarks.mapreduce",
    "raft": "benchmarks.raft",
    "kvraft": "benchmarks.kvraft",
    "shardkv": "benchmarks.shardkv",
    "failover": "benchmarks.failover",
    "membership": "benchmarks.membership",
}
"""Name on the command line -> module."""


def bench_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser every ``zactor bench NAME`` starts from, so that all of them describe themselves and take ``--json`` alike."""
    parser = argparse.ArgumentParser(prog=f"zactor bench {name}", description=(doc or "").split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser
