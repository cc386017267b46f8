"""Histories: what each client asked, what it got back, and when.

A history is a list of :class:`Operation`. Call and return times are
``time.monotonic_ns()`` readings; they are only comparable when taken on one
clock, so record every client of a test in one process (the :class:`Recorder`
does). ``ret=None`` marks an operation whose client never saw a reply (it
timed out, crashed, or was still waiting when the history was taken): it may
have taken effect at any moment after its call, or never, so the checker does
not look at its output.

On disk a history is JSON lines, one operation per line::

    {"client": 0, "call": 17, "return": 42, "input": {"op": "append", "key": "k", "value": "x"}, "output": ""}

``return`` may be ``null``; ``output`` may be left out when it is.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["HistoryError", "Operation", "Recorder", "Recording", "load", "parse_line", "save"]


@dataclass(frozen=True, slots=True)
class Operation:
    """One call by one client, with its reply.

    Intervals are closed: an operation called at the very nanosecond another
    returns is concurrent with it, because two clock readings that tie say
    nothing about which event came first.
    """

    client: int
    input: Any
    call: int
    output: Any
    ret: int | None

    def __post_init__(self) -> None:
        # Caught here rather than in the checker: a reply before its request
        # is a recording bug, and the search would silently treat it as a
        # constraint that no order satisfies.
        if self.ret is not None and self.ret < self.call:
            raise ValueError(f"returns at {self.ret}, before its call at {self.call}")


class HistoryError(ValueError):
    """A history file that cannot be read as a history; the message names the line."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def _jsonable(value: Any) -> Any:
    # Inputs may be small dataclasses (KVInput); on disk they become objects,
    # and loading gives them back as dicts, which the models accept as well.
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def save(history: Iterable[Operation], path: str | Path, append: bool = False) -> Path:
    """Write ``history`` as JSON lines to ``path`` (after what it holds, with ``append``); returns the path."""
    out = Path(path)
    with out.open("a" if append else "w", encoding="utf-8") as f:
        for op in history:
            row = {"client": op.client, "call": op.call, "return": op.ret, "input": op.input, "output": op.output}
            f.write(json.dumps(row, default=_jsonable, ensure_ascii=False))
            f.write("\n")
    return out


def _int_field(row: dict[str, Any], name: str, nullable: bool = False) -> int | None:
    if name not in row:
        raise ValueError(f'no "{name}" field')
    value = row[name]
    if value is None and nullable:
        return None
    # bool is an int to Python, but never a time or a client id.
    if not isinstance(value, int) or isinstance(value, bool):
        kind = "an integer or null" if nullable else "an integer"
        raise ValueError(f'"{name}" must be {kind}, not {json.dumps(value)}')
    return value


def parse_line(text: str) -> Operation:
    """One operation from one JSON line; the ``ValueError`` says what is wrong with it."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    client = _int_field(row, "client")
    call = _int_field(row, "call")
    ret = _int_field(row, "return", nullable=True)
    if "input" not in row:
        raise ValueError('no "input" field')
    assert client is not None and call is not None
    return Operation(client, row["input"], call, row.get("output"), ret)


def load(path: str | Path) -> list[Operation]:
    """Read a JSON-lines history; blank lines are skipped.

    Raises:
        HistoryError: a line is not an operation (the message names the file and line).
        OSError: the file cannot be read.
    """
    ops: list[Operation] = []
    # Bytes, decoded line by line, so that even an encoding error is reported
    # on the right line.
    with Path(path).open("rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise HistoryError(f"{path}, line {line_no}: not UTF-8 text ({exc.reason})", line_no) from None
            if not line.strip():
                continue
            try:
                ops.append(parse_line(line))
            except ValueError as exc:
                raise HistoryError(f"{path}, line {line_no}: {exc}", line_no) from None
    return ops


class Recording:
    """The operation a client is performing; set :attr:`output` before the block ends."""

    __slots__ = ("_answered", "_recorder", "call", "client", "input", "output", "ret")

    def __init__(self, recorder: Recorder, client: int, input: Any) -> None:
        self._recorder = recorder
        self._answered = True
        self.client = client
        self.input = input
        self.call = 0
        self.output: Any = None
        self.ret: int | None = None

    def no_reply(self) -> None:
        """Record this operation as never answered, although the block ends normally.

        For clients that give up without raising (a clerk returning a
        sentinel): the operation may still take effect later, so it must not
        be given a return time.
        """
        self._answered = False

    def __enter__(self) -> Recording:
        self._recorder._begin(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        # An exception (a timeout, a dead client) means no reply was seen: the
        # operation stays open-ended rather than being dropped, since the
        # server may well have applied it. The exception propagates.
        self._recorder._finish(self, answered=exc_type is None and self._answered)


class Recorder:
    """Collects the operations of concurrent clients, thread-safely, on one clock.

    ``with recorder.op(client, input) as rec: rec.output = clerk.get(key)``
    reads the clock on entry (call) and on a normal exit (return). An
    operation whose block raised, that called :meth:`Recording.no_reply`, or
    that is still running when :meth:`history` is taken appears with
    ``ret=None``: leaving it out would claim it never happened, which can make
    a correct server look wrong.

    ``clock`` is injectable so that tests can drive time by hand.
    """

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._recordings: list[Recording] = []

    def op(self, client: int, input: Any) -> Recording:
        """A context manager that records one operation of ``client``."""
        return Recording(self, client, input)

    def _begin(self, rec: Recording) -> None:
        with self._lock:
            # Read under the lock so that the list stays in call order.
            rec.call = self._clock()
            self._recordings.append(rec)

    def _finish(self, rec: Recording, answered: bool) -> None:
        now = self._clock()
        with self._lock:
            if answered:
                rec.ret = now
            else:
                rec.output = None

    def history(self) -> list[Operation]:
        """The operations so far, in call order; unfinished ones have ``ret=None``."""
        with self._lock:
            return [Operation(r.client, r.input, r.call, r.output if r.ret is not None else None, r.ret) for r in self._recordings]

    def __len__(self) -> int:
        with self._lock:
            return len(self._recordings)
