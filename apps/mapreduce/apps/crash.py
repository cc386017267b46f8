"""Crash: before every map and reduce, a third of the time the worker process dies, a third it stalls."""

from __future__ import annotations

import os
import random
import time

from apps.mapreduce.apps import nocrash


def _maybe_crash() -> None:
    r = random.random()
    if r < 0.33:
        os._exit(1)
    if r < 0.66:
        time.sleep(random.random() * 10.0)


def map(filename: str, contents: str) -> list[tuple[str, str]]:
    _maybe_crash()
    return nocrash.map(filename, contents)


def reduce(key: str, values: list[str]) -> str:
    _maybe_crash()
    return nocrash.reduce(key, values)
