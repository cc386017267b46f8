"""Reduce parallelism: each reduce reports how many reduces ran at once."""

from __future__ import annotations

from apps.mapreduce.apps.parallelism import count_parallel


def map(filename: str, contents: str) -> list[tuple[str, str]]:
    return [(k, "1") for k in "abcdefghij"]


def reduce(key: str, values: list[str]) -> str:
    return str(count_parallel("reduce"))
