"""Early exit: a few reduces are slow, so a process that leaves before the job ends is caught."""

from __future__ import annotations

import time


def map(filename: str, contents: str) -> list[tuple[str, str]]:
    return [(filename, "1")]


def reduce(key: str, values: list[str]) -> str:
    if "sherlock" in key or "tom" in key:
        time.sleep(3.0)
    return str(len(values))
