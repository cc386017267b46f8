"""Runnable benchmarks, each measuring zactor side by side with a baseline in the same run.

Each module has ``run(...) -> dict`` (defaults are the published settings),
``report(result) -> str`` and ``main(argv) -> int``; ``zactor bench NAME``
calls ``main``, plain ``zactor bench`` runs them all and prints a table.
"""

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
