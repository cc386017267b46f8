"""Word count: (word, "1") for every word; reduce sums. The combiner pre-sums in the mapper."""

from __future__ import annotations

from apps.mapreduce.text import words


def map(filename: str, contents: str) -> list[tuple[str, str]]:
    return [(w, "1") for w in words(contents)]


def combine(key: str, values: list[str]) -> list[str]:
    return [reduce(key, values)]


def reduce(key: str, values: list[str]) -> str:
    # A sum, not a count, so it is right with or without the combiner.
    return str(sum(int(v) for v in values))
