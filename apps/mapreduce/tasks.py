"""One map or reduce task, as plain functions: read inputs, call the user's code, write files atomically."""

from __future__ import annotations

import traceback
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from apps.mapreduce.app import App
from apps.mapreduce.files import (
    dump_groups,
    intermediate_name,
    load_groups,
    output_name,
    partition,
    write_atomically,
)


class TaskError(RuntimeError):
    """The user's Map or Reduce raised; the message carries the task, the input and the traceback."""


@dataclass(frozen=True)
class MapResult:
    pairs: int
    keys: int


@dataclass(frozen=True)
class ReduceResult:
    keys: int
    path: Path


def read_input(filename: str) -> str:
    """Input as text; bytes that are not UTF-8 become replacement characters, never an error."""
    with open(filename, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def group(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for key, value in pairs:
        groups[key].append(value)
    return groups


def run_map(app: App, map_id: int, filename: str, n_reduce: int, workdir: Path) -> MapResult:
    contents = read_input(filename)
    try:
        pairs = list(app.map(filename, contents))
        groups = group(pairs)
        if app.combine is not None:
            groups = {k: list(app.combine(k, v)) for k, v in groups.items()}
    except Exception as exc:
        raise TaskError(f"map task {map_id} (input {filename}) raised:\n{traceback.format_exc()}") from exc
    buckets: list[list[tuple[str, list[str]]]] = [[] for _ in range(n_reduce)]
    for key, values in groups.items():
        buckets[partition(key, n_reduce)].append((key, values))
    workdir.mkdir(parents=True, exist_ok=True)
    for r, bucket in enumerate(buckets):
        write_atomically(workdir / intermediate_name(map_id, r), dump_groups(bucket))
    return MapResult(len(pairs), len(groups))


def run_reduce(app: App, reduce_id: int, n_map: int, workdir: Path, outdir: Path) -> ReduceResult:
    merged: dict[str, list[str]] = defaultdict(list)
    for m in range(n_map):
        path = workdir / intermediate_name(m, reduce_id)
        if not path.exists():
            raise FileNotFoundError(f"reduce task {reduce_id}: intermediate file {path} is missing")
        for key, values in load_groups(path):
            merged[key].extend(values)
    lines = []
    try:
        for key in sorted(merged):
            lines.append(f"{key} {app.reduce(key, merged[key])}\n")
    except Exception as exc:
        raise TaskError(f"reduce task {reduce_id} (key {key!r}) raised:\n{traceback.format_exc()}") from exc
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / output_name(reduce_id)
    write_atomically(path, "".join(lines).encode("utf-8", "surrogatepass"))
    return ReduceResult(len(merged), path)
