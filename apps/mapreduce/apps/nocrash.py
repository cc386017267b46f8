"""The crash app's output without the crashes: the reference for the crash test."""

from __future__ import annotations


def map(filename: str, contents: str) -> list[tuple[str, str]]:
    return [("a", filename), ("b", str(len(filename))), ("c", str(len(contents))), ("d", "xyzzy")]


def reduce(key: str, values: list[str]) -> str:
    return " ".join(sorted(values))
