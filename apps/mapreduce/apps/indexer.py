"""Inverted index: for each word, how many documents hold it and which."""

from __future__ import annotations

from apps.mapreduce.text import words


def map(filename: str, contents: str) -> list[tuple[str, str]]:
    return [(w, filename) for w in sorted(set(words(contents)))]


def reduce(key: str, values: list[str]) -> str:
    docs = sorted(set(values))
    return f"{len(docs)} {','.join(docs)}"
