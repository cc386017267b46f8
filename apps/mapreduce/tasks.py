"""One map or reduce task, as plain functions: read a split, call the user's code, write sorted runs.

A map task reads its split, calls the user's Map once, and groups the
pairs in a buffer; when the buffer holds ``buffer_records`` values it is
combined (if the app has a combiner), partitioned, sorted and *spilled* as
one run per partition. Several spills are merged into one run per
partition at the end, so a map leaves exactly ``mr-M-0 .. mr-M-(R-1)``.
A reduce merges the runs of every map (``heapq.merge``), so it holds one
batch per run and the values of one key, never a whole partition.

The fast path: a Map may return a mapping (``Counter(words)``) instead of a
list of pairs; each item is one pair and the keys are already distinct, so
the framework skips the pair tuples and the grouping. What Reduce sees is
unchanged: the key and the list of the values Map produced for it.
"""

from __future__ import annotations

import heapq
import itertools
import os
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import repeat
from operator import is_, itemgetter
from pathlib import Path
from typing import Any

from apps.mapreduce.app import App
from apps.mapreduce.files import (
    Split,
    atomic_writer,
    intermediate_name,
    local_reader,
    output_name,
    partition,
    read_run,
    read_split,
    write_run,
)
from transport.private_files import private_dirs

DEFAULT_BUFFER_RECORDS = 1_000_000
"""Values a map groups in memory before it spills a sorted run (about 100 MB of small strings)."""

_KEY = itemgetter(0)

MAX_FAN_IN = 100
"""Runs a reduce merges at once (each an open file); more are first merged in passes."""


class TaskError(RuntimeError):
    """The user's Map or Reduce raised; the message carries the task, the input and the traceback."""


@dataclass
class MapResult:
    counters: dict[str, int] = field(default_factory=dict)


@dataclass
class ReduceResult:
    keys: int
    path: Path
    counters: dict[str, int] = field(default_factory=dict)


def read_input(filename: str) -> str:
    """Input as text; bytes that are not UTF-8 become replacement characters, never an error."""
    with open(filename, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def group(pairs: Iterable[tuple[str, Any]]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = defaultdict(list)
    for key, value in pairs:
        groups[key].append(value)
    return groups


def map_pairs(output: Any) -> Iterable[tuple[str, Any]]:
    """A Map's output as pairs, whichever form it took (a list of pairs or a mapping)."""
    return output.items() if isinstance(output, Mapping) else output


class _Spiller:
    """Buffers grouped map output; writes sorted, partitioned runs when full and at the end."""

    def __init__(self, app: App, map_id: int, n_reduce: int, workdir: Path, counters: dict[str, int]) -> None:
        self.app, self.map_id, self.n_reduce, self.workdir, self.c = app, map_id, n_reduce, workdir, counters
        self.spills: list[list[Path]] = []

    def spill(self, groups: dict[str, list[Any]]) -> None:
        combine = self.app.combine
        buckets: list[list[tuple[str, list[Any]]]] = [[] for _ in range(self.n_reduce)]
        n = self.n_reduce
        for key, values in groups.items():
            if combine is not None and len(values) > 1:
                values = self._combined(combine, key, values)
            buckets[partition(key, n) if n > 1 else 0].append((key, values))
        paths = []
        k = len(self.spills)
        for r, bucket in enumerate(buckets):
            bucket.sort(key=_KEY)
            path = self.workdir / f".spill-{self.map_id}-{os.getpid()}-{k}-{r}"  # two attempts may share a directory
            records, _ = write_run(path, bucket)
            self.c["spilled_records"] += records
            paths.append(path)
        self.spills.append(paths)

    def finish(self) -> None:
        """Leave exactly one run per partition under its final name."""
        if not self.spills:
            self.spill({})
        final = [self.workdir / intermediate_name(self.map_id, r) for r in range(self.n_reduce)]
        if len(self.spills) == 1:
            for src, dst in zip(self.spills[0], final, strict=True):
                os.replace(src, dst)
        else:
            for r, dst in enumerate(final):
                runs = [spill[r] for spill in self.spills]
                records, _ = write_run(dst, self._merged(runs))
                self.c["spilled_records"] += records
                for path in runs:
                    path.unlink()
        self.c["map_output_bytes"] += sum(p.stat().st_size for p in final)

    def _merged(self, runs: list[Path]) -> Iterator[tuple[str, list[Any]]]:
        combine = self.app.combine
        for key, groups in itertools.groupby(heapq.merge(*(read_run(p) for p in runs), key=_KEY), key=_KEY):
            values = [v for _, vs in groups for v in vs]
            if combine is not None and len(values) > 1:
                values = self._combined(combine, key, values)
            yield key, values

    def _combined(self, combine: Callable[[str, list[Any]], Iterable[Any]], key: str, values: list[Any]) -> list[Any]:
        self.c["combine_input_records"] += len(values)
        values = fold(combine, key, values)
        self.c["combine_output_records"] += len(values)
        return values


FOLD_MIN = 8
"""Copies of one value from which ``fold`` combines by doubling; fewer go to the combiner as they are."""


def fold(combine: Callable[[str, list[Any]], Iterable[Any]], key: str, values: list[Any]) -> list[Any]:
    """``combine(key, values)``, from far fewer values when they are n copies of one object.

    A combiner already runs on parts of a key's values and again on its own
    output (each spill is combined, then the merge combines the spills), so
    it must be a pure function that its output can be fed back into. Then n
    copies of one value fold by the binary digits of n: 2^k copies combine
    to ``combine(key, c + c)`` where c is what 2^(k-1) copies combined to,
    and the digits' outputs are combined once more. About log2(n) calls on
    short lists replace one call on n values: the lab's ``wc`` emits the
    same "1" for every word, and its combiner (an ``int`` per value, 0.09 µs
    a word) cost more than grouping the pairs. Copies means the same
    object, not equal ones (1, 1.0 and True are equal): a list of anything
    else goes to the combiner unchanged, in its order.
    """
    first = values[0]
    if len(values) < FOLD_MIN or not all(map(is_, values, repeat(first))):
        return list(combine(key, values))
    n = len(values)
    power: list[Any] = [first]
    digits: list[Any] = []
    while True:
        if n & 1:
            digits += power
        n >>= 1
        if not n:
            break
        if power:  # a combiner may leave nothing; nothing needs no combining (nor a call with [])
            power = list(combine(key, power + power))
    return list(combine(key, digits)) if len(digits) > 1 else digits


def _counters(*names: str) -> dict[str, int]:
    return dict.fromkeys(names, 0)


def run_map(
    app: App,
    map_id: int,
    split: Split | str,
    n_reduce: int,
    workdir: Path,
    *,
    read_at: Callable[[int, int], bytes] | None = None,
    buffer_records: int = DEFAULT_BUFFER_RECORDS,
) -> MapResult:
    """Map one split (or a whole file, given by name) into ``workdir/mr-<map_id>-<r>`` runs."""
    if isinstance(split, str):
        split = Split(split, 0, os.path.getsize(split))
    close = None
    if read_at is None:
        read_at, close = local_reader(split.filename)
    try:
        data = read_split(split, read_at)
    finally:
        if close is not None:
            close()
    c = _counters("input_bytes", "map_output_records", "combine_input_records", "combine_output_records",
                  "spilled_records", "map_output_bytes", "spills")
    c["input_bytes"] = len(data)
    contents = data.decode("utf-8", errors="replace")
    del data
    private_dirs(workdir)
    spiller = _Spiller(app, map_id, n_reduce, workdir, c)
    try:
        output = app.map(split.filename, contents)
        del contents
        if isinstance(output, Mapping):  # the fast path: keys distinct, one value each
            c["map_output_records"] = len(output)
            spiller.spill({key: [value] for key, value in output.items()})
        else:
            groups: dict[str, list[Any]] = defaultdict(list)
            buffered = 0
            if isinstance(output, list) and len(output) <= buffer_records:
                chunks: Iterable[list[Any]] = [output]  # in memory already and no spill due: group it, no copies
            else:
                pairs = iter(output)
                chunks = iter(lambda: list(itertools.islice(pairs, min(65536, buffer_records))), [])
            for chunk in chunks:
                for key, value in chunk:
                    groups[key].append(value)
                buffered += len(chunk)
                c["map_output_records"] += len(chunk)
                if buffered >= buffer_records:
                    spiller.spill(groups)
                    groups, buffered = defaultdict(list), 0
            if groups or not spiller.spills:
                spiller.spill(groups)
        del output
        c["spills"] = len(spiller.spills)
        spiller.finish()
    except Exception as exc:
        for paths in spiller.spills:
            for path in paths:
                path.unlink(missing_ok=True)
        where = split.filename if split.start == 0 and split.end >= os.path.getsize(split.filename) else (
            f"{split.filename} bytes {split.start}-{split.end}")
        raise TaskError(f"map task {map_id} (input {where}) raised:\n{traceback.format_exc()}") from exc
    return MapResult(c)


def run_reduce(app: App, reduce_id: int, runs: list[Path], outdir: Path) -> ReduceResult:
    """Merge the sorted runs, reduce each key, write ``outdir/mr-out-<reduce_id>`` atomically."""
    for path in runs:
        if not path.exists():
            raise FileNotFoundError(f"reduce task {reduce_id}: intermediate file {path} is missing")
    c = _counters("reduce_input_groups", "reduce_input_records", "reduce_output_records")
    private_dirs(outdir)
    path = outdir / output_name(reduce_id)
    runs, scratch = _fan_in(runs, runs[0].parent if runs else outdir, reduce_id)
    try:
        _reduce_runs(app, reduce_id, runs, path, c)
    finally:
        for tmp in scratch:
            tmp.unlink(missing_ok=True)
    c["reduce_output_records"] = c["reduce_input_groups"]
    return ReduceResult(c["reduce_input_groups"], path, c)


def _concatenated(runs: list[Path]) -> Iterator[tuple[str, list[Any]]]:
    """The runs merged into one sorted stream, each key once with all its values."""
    for key, groups in itertools.groupby(heapq.merge(*(read_run(p) for p in runs), key=_KEY), key=_KEY):
        yield key, [v for _, vs in groups for v in vs]


def _fan_in(runs: list[Path], scratch_dir: Path, reduce_id: int) -> tuple[list[Path], list[Path]]:
    """Merge runs in groups of MAX_FAN_IN until that many remain (bounds open files); returns (runs, scratch)."""
    scratch: list[Path] = []
    while len(runs) > MAX_FAN_IN:
        merged = []
        for i in range(0, len(runs), MAX_FAN_IN):
            group = runs[i : i + MAX_FAN_IN]
            if len(group) == 1:
                merged.append(group[0])
                continue
            tmp = scratch_dir / f".merge-{reduce_id}-{os.getpid()}-{len(scratch)}"
            write_run(tmp, _concatenated(group))
            scratch.append(tmp)
            merged.append(tmp)
        runs = merged
    return runs, scratch


def _reduce_runs(app: App, reduce_id: int, runs: list[Path], path: Path, c: dict[str, int]) -> None:
    with atomic_writer(path) as f:
        lines: list[str] = []
        for key, values in _concatenated(runs):
            c["reduce_input_groups"] += 1
            c["reduce_input_records"] += len(values)
            try:
                result = app.reduce(key, values)
            except Exception as exc:
                raise TaskError(f"reduce task {reduce_id} (key {key!r}) raised:\n{traceback.format_exc()}") from exc
            lines.append(f"{key} {result}\n")
            if len(lines) >= 4096:
                f.write("".join(lines).encode("utf-8", "surrogatepass"))
                lines = []
        f.write("".join(lines).encode("utf-8", "surrogatepass"))


def shared_runs(workdir: Path, reduce_id: int, n_map: int) -> list[Path]:
    """The runs of a reduce in the shared-directory mode: every map wrote into ``workdir``."""
    return [workdir / intermediate_name(m, reduce_id) for m in range(n_map)]
