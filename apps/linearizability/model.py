"""Models: the sequential specification a history is checked against.

A model is pure: ``step(state, input, output)`` says whether ``output`` is
what the object in ``state`` would answer to ``input``, and the state after.
States must be hashable (the checker remembers which it has seen). Output
``UNKNOWN`` (an operation that never returned) must be accepted whatever the
object would answer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from apps.linearizability.history import Operation

UNKNOWN: Any = type("Unknown", (), {"__repr__": lambda self: "?"})()


class Model:
    """Base class; override ``init`` and ``step``, and ``partition`` when parts are independent."""

    name = "model"

    def init(self) -> Any:
        raise NotImplementedError

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        raise NotImplementedError

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        return [list(ops)]

    def partition_name(self, ops: Sequence[Operation]) -> str:
        return "all"

    def describe_operation(self, input: Any, output: Any) -> str:
        return f"{input!r} -> {output!r}"

    def describe_state(self, state: Any) -> str:
        return repr(state)


def _field(input: Any, name: str) -> Any:
    return input[name] if isinstance(input, dict) else getattr(input, name)


class KVModel(Model):
    """get/put/append on string values; "" for a missing key; append returns the old value.

    Keys are independent, so the history is checked per key.
    """

    name = "kv"

    def init(self) -> str:
        return ""

    def step(self, state: str, input: Any, output: Any) -> tuple[bool, str]:
        op = _field(input, "op")
        if op == "get":
            return (output is UNKNOWN or output == state), state
        if op == "put":
            return True, _field(input, "value")
        if op == "append":
            return (output is UNKNOWN or output == state), state + _field(input, "value")
        raise ValueError(f"KV model: unknown operation {op!r}")

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        by_key: dict[str, list[Operation]] = defaultdict(list)
        for op in ops:
            by_key[_field(op.input, "key")].append(op)
        return [by_key[k] for k in sorted(by_key, key=str)]

    def partition_name(self, ops: Sequence[Operation]) -> str:
        return f"key {_field(ops[0].input, 'key')!r}" if ops else "no operations"

    def describe_operation(self, input: Any, output: Any) -> str:
        op, key = _field(input, "op"), _field(input, "key")
        if op == "get":
            return f"get({key!r}) -> {_short(output)}"
        if op == "put":
            return f"put({key!r}, {_short(_field(input, 'value'))})"
        return f"append({key!r}, {_short(_field(input, 'value'))}) -> {_short(output)}"

    def describe_state(self, state: str) -> str:
        return _short(state)


def _short(value: Any, limit: int = 40) -> str:
    if value is UNKNOWN:
        return "?"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 2 :]} ({len(value)} chars)"


MODELS: dict[str, Model] = {"kv": KVModel()}
"""Models by name, for the command line; add your own."""
