"""Job count: every map call leaves a file behind; reduce counts them (each map must run once)."""

from __future__ import annotations

import itertools
import os
import random
import time

_calls = itertools.count()


def map(filename: str, contents: str) -> list[tuple[str, str]]:
    with open(f"mr-worker-jobcount-{os.getpid()}-{next(_calls)}", "w"):
        pass
    time.sleep(2.0 + random.random() * 3.0)
    return [("a", "x")]


def reduce(key: str, values: list[str]) -> str:
    return str(sum(1 for name in os.listdir(".") if name.startswith("mr-worker-jobcount")))
