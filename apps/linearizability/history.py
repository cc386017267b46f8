"""Histories: what each client asked, what it got back, and when.

Times are ``time.monotonic_ns()`` taken in the one process that records
(calls and returns of every client on one clock). ``ret=None`` means the
operation never returned to its client (it timed out or the client gave
up): it may have taken effect at any time after its call, or never, and its
output is not checked.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Operation:
    client: int
    input: Any
    call: int
    output: Any
    ret: int | None


class HistoryError(ValueError):
    """A history file that cannot be read as a history."""


def save(ops: Iterable[Operation], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for op in ops:
            f.write(json.dumps({"client": op.client, "call": op.call, "return": op.ret, "input": op.input, "output": op.output}))
            f.write("\n")


def load(path: str | Path) -> list[Operation]:
    ops = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                call, ret = row["call"], row["return"]
                if not isinstance(call, int) or not (ret is None or isinstance(ret, int)):
                    raise TypeError("call and return must be integers (return may be null)")
                if ret is not None and ret < call:
                    raise ValueError("returns before it is called")
                ops.append(Operation(int(row["client"]), row["input"], call, row.get("output"), ret))
            except (ValueError, KeyError, TypeError) as exc:
                raise HistoryError(f"{path}, line {n}: not an operation ({exc})") from exc
    return ops


class _Pending:
    __slots__ = ("output",)

    def __init__(self) -> None:
        self.output: Any = None


class Recorder:
    """Thread-safe recording of operations by concurrent clients.

    ``with recorder.op(client, input) as rec: rec.output = do_it()`` records
    the call time on entry and the return time on a normal exit; an exception
    records the operation as never returned.
    """

    def __init__(self) -> None:
        self._ops: list[Operation] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def op(self, client: int, input: Any) -> Iterator[_Pending]:
        pending = _Pending()
        call = time.monotonic_ns()
        try:
            yield pending
        except BaseException:
            self._add(Operation(client, input, call, None, None))
            raise
        self._add(Operation(client, input, call, pending.output, time.monotonic_ns()))

    def _add(self, op: Operation) -> None:
        with self._lock:
            self._ops.append(op)

    def history(self) -> list[Operation]:
        with self._lock:
            return list(self._ops)
