"""Map parallelism: each map reports when it started and how many maps ran at once."""

from __future__ import annotations

import os
import time

from apps.mapreduce.apps.parallelism import count_parallel


def map(filename: str, contents: str) -> list[tuple[str, str]]:
    started = time.time()
    n = count_parallel("map")
    pid = os.getpid()
    return [(f"times-{pid}", f"{started:.1f}"), (f"parallel-{pid}", str(n))]


def reduce(key: str, values: list[str]) -> str:
    return " ".join(sorted(values))
