"""The sequential reference (the lab's mrsequential) and how outputs are compared."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from apps.mapreduce.app import App
from apps.mapreduce.tasks import group, map_pairs, read_input


def run_sequential(app: App, files: Sequence[str], out_path: str | Path) -> Path:
    """Map every file, sort all pairs by key, reduce each key into one output file. No combiner."""
    pairs: list[Any] = []
    for filename in files:
        pairs.extend(map_pairs(app.map(filename, read_input(filename))))
    groups = group(pairs)
    out = Path(out_path)
    with open(out, "w", encoding="utf-8", errors="surrogatepass") as f:
        for key in sorted(groups):
            f.write(f"{key} {app.reduce(key, groups[key])}\n")
    return out


def read_output_lines(paths: Iterable[str | Path]) -> list[str]:
    """Every non-empty line of every output file, sorted: what correctness checks compare."""
    lines: list[str] = []
    for path in paths:
        with open(path, encoding="utf-8", errors="surrogatepass") as f:
            lines.extend(line.rstrip("\n") for line in f if line.strip())
    return sorted(lines)
