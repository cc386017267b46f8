"""Task files: intermediate partitions and outputs, always written whole or not at all."""

from __future__ import annotations

import os
import pickle
import tempfile
import zlib
from pathlib import Path
from typing import Any


def partition(key: str, n_reduce: int) -> int:
    """The reduce task a key belongs to: a hash that is the same in every process (unlike ``hash``)."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % n_reduce


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` under a temporary name in the same directory, then rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def intermediate_name(map_id: int, reduce_id: int) -> str:
    return f"mr-{map_id}-{reduce_id}"


def output_name(reduce_id: int) -> str:
    return f"mr-out-{reduce_id}"


def dump_groups(groups: list[tuple[str, list[str]]]) -> bytes:
    """Intermediate encoding: one pickle of (key, values) groups; compact, and read in one C call."""
    return pickle.dumps(groups, protocol=pickle.HIGHEST_PROTOCOL)


def load_groups(path: Path) -> list[tuple[str, list[str]]]:
    data: Any = pickle.loads(path.read_bytes())
    if not isinstance(data, list):
        raise ValueError(f"{path} is not an intermediate file")
    return data
