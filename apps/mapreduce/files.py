"""Task files: input splits, intermediate sorted runs, outputs; always written whole or not at all.

An intermediate file ``mr-M-R`` (map task M, partition R) is one *sorted
run*: a sequence of pickled batches, each a list of ``(key, values)`` groups,
keys ascending over the whole file and each key once. A reduce merges the
runs of every map with ``heapq.merge`` and reads them batch by batch, so no
partition is ever loaded whole.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from transport.message import message

BATCH = 2048
"""Groups per pickled batch of a run: big enough that pickle works in C, small enough to stream."""


def partition(key: str, n_reduce: int) -> int:
    """The reduce task a key belongs to: a hash that is the same in every process (unlike ``hash``)."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % n_reduce


@contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A file object under a temporary name in ``path``'s directory, renamed into place on success."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` under a temporary name in the same directory, then rename it into place."""
    with atomic_writer(path) as f:
        f.write(data)


def intermediate_name(map_id: int, reduce_id: int) -> str:
    return f"mr-{map_id}-{reduce_id}"


def output_name(reduce_id: int) -> str:
    return f"mr-out-{reduce_id}"


def write_run(path: Path, groups: Iterable[tuple[str, list[Any]]]) -> tuple[int, int]:
    """Write sorted ``groups`` as a run, atomically; returns (values written, bytes written)."""
    records = 0
    with atomic_writer(path) as f:
        batch: list[tuple[str, list[Any]]] = []
        for group in groups:
            batch.append(group)
            records += len(group[1])
            if len(batch) >= BATCH:
                pickle.dump(batch, f, protocol=pickle.HIGHEST_PROTOCOL)
                batch = []
        if batch:
            pickle.dump(batch, f, protocol=pickle.HIGHEST_PROTOCOL)
        size = f.tell()
    return records, size


def read_run(path: Path) -> Iterator[tuple[str, list[Any]]]:
    """The groups of a run, in order, one batch in memory at a time."""
    with open(path, "rb", buffering=1 << 16) as f:
        while True:
            try:
                batch = pickle.load(f)
            except EOFError:
                return
            if not isinstance(batch, list):
                raise ValueError(f"{path} is not an intermediate run")
            yield from batch


# ---- input splits ---------------------------------------------------------------------------


@message
class Split:
    """Bytes [start, end) of an input file; the split owns every line that *starts* in that range.

    A map task carries its split to the worker, so it is a wire class.
    """

    filename: str
    start: int
    end: int
    index: int = 0
    """Which input file (position in the job's list): names it on a server that ships inputs."""


def make_splits(files: Iterable[str], split_bytes: int) -> list[Split]:
    """One split per ``split_bytes`` of each file, at least one per file (an empty file is a map too)."""
    if split_bytes < 1:
        raise ValueError(f"split_bytes must be positive, got {split_bytes}")
    splits: list[Split] = []
    for i, name in enumerate(files):
        size = os.path.getsize(name)
        starts = range(0, max(size, 1), split_bytes)
        splits.extend(Split(name, s, min(s + split_bytes, size), i) for s in starts)
    return splits


SCAN = 64 * 1024


def read_split(split: Split, read_at: Callable[[int, int], bytes]) -> bytes:
    """The split's lines: skip the line that began in the previous split, finish the last one.

    ``read_at(offset, n)`` returns up to n bytes (fewer only at the end of
    the file): ``os.pread`` on a local file, or asks to a server that ships
    the input. Lines end at ``\\n``; a UTF-8 character never contains that
    byte, so every split decodes on its own.
    """
    pos = split.start
    if pos > 0:  # the line holding byte start-1 belongs to the split before
        pos -= 1
        while True:
            block = read_at(pos, SCAN)
            if not block:
                return b""
            nl = block.find(b"\n")
            if nl >= 0:
                pos += nl + 1
                break
            pos += len(block)
    if pos >= split.end and split.start > 0:
        return b""
    parts: list[bytes] = []
    while pos < split.end:
        block = read_at(pos, min(split.end - pos, 4 << 20))
        if not block:
            return b"".join(parts)
        parts.append(block)
        pos += len(block)
    if parts and not parts[-1].endswith(b"\n"):  # finish the line that started inside
        while True:
            block = read_at(pos, SCAN)
            if not block:
                break
            nl = block.find(b"\n")
            if nl >= 0:
                parts.append(block[: nl + 1])
                break
            parts.append(block)
            pos += len(block)
    return b"".join(parts)


def local_reader(path: str) -> tuple[Callable[[int, int], bytes], Callable[[], None]]:
    """``read_at`` over a local file, and the function that closes it."""
    fd = os.open(path, os.O_RDONLY)
    return (lambda offset, n: os.pread(fd, n, offset)), (lambda: os.close(fd))
