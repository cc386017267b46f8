"""Models: the sequential object a history is checked against.

A model says what one correct, single-copy object would do. The checker
asks it for the initial state and, again and again, whether an operation
with a given output is possible in a state and what the state is after it.
``step`` must be pure: the checker tries the same step from the same state
along many orders and remembers the states it has already been in. States
must be hashable, or the model overrides :meth:`Model.state_key`.

An operation that never returned reaches ``step`` with output
:data:`NO_REPLY`; the model must then accept whatever the input allows,
since nobody saw what the object answered.
"""

from __future__ import annotations

import abc
import enum
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from apps.linearizability.history import Operation

__all__ = ["MODELS", "NO_REPLY", "KVInput", "KVModel", "Model"]


class _NoReply(enum.Enum):
    # An enum member, so that it stays the same object through pickling.
    NO_REPLY = "no reply"

    def __repr__(self) -> str:
        return "NO_REPLY"


NO_REPLY = _NoReply.NO_REPLY
"""The output ``step`` sees for an operation that never returned: accept whatever it would answer."""


class Model(abc.ABC):
    """A sequential specification. Override ``init`` and ``step``; the rest has defaults.

    ``partition`` should split a history into parts that cannot constrain
    each other (the KV model: one part per key). The search is exponential
    in the size of a part in the worst case, so this is what keeps real
    histories cheap to check.
    """

    name: str = "model"
    """The name the command line knows the model by."""

    @abc.abstractmethod
    def init(self) -> Any:
        """The state before any operation."""

    @abc.abstractmethod
    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        """Whether ``input`` may answer ``output`` in ``state``, and the state after it."""

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        """Independent parts of the history, each checked on its own (default: one part)."""
        return [list(ops)] if ops else []

    def describe_partition(self, ops: Sequence[Operation]) -> str:
        """A name for one part, as a person would search for it (e.g. ``key 'x'``)."""
        return "all operations"

    def describe_operation(self, input: Any, output: Any) -> str:
        """One short line for an operation; ``output`` is :data:`NO_REPLY` if it never returned."""
        return f"{input!r} -> {'?' if output is NO_REPLY else repr(output)}"

    def describe_state(self, state: Any) -> str:
        """One short line for a state."""
        return repr(state)

    def is_read_only(self, input: Any) -> bool:
        """Whether ``input`` leaves every state as it is (default: no).

        Saying yes is an optimization, and must be true: the checker then
        places such an operation at the first point it is legal and never
        tries it later, which is safe because moving a read earlier, to where
        it is legal and concurrent with everything left, breaks nothing.
        """
        return False

    def state_key(self, state: Any) -> Hashable:
        """What the checker remembers a state by; override when states are not hashable."""
        return state  # states are hashable unless this is overridden


_KV_OPS = ("get", "put", "append")


@dataclass(frozen=True, slots=True)
class KVInput:
    """A KV request, the typed alternative to ``{"op": ..., "key": ..., "value": ...}``."""

    op: str
    key: str
    value: str = ""

    def __post_init__(self) -> None:
        if self.op not in _KV_OPS:
            raise ValueError(f"op must be one of {', '.join(_KV_OPS)}, not {self.op!r}")


def _unpack(input: Any) -> tuple[str, Any, Any]:
    if isinstance(input, KVInput):
        return input.op, input.key, input.value
    return input["op"], input["key"], input.get("value", "")


class KVModel(Model):
    """The lab's key/value store of strings; a missing key reads as "".

    ``get`` answers the current value; ``put`` replaces it (its output is
    ignored: the lab's Put answers nothing); ``append`` extends it and answers
    the value from *before* the append. Keys are independent, so a history
    is checked one key at a time.
    """

    name = "kv"

    def init(self) -> str:
        return ""

    def step(self, state: str, input: Any, output: Any) -> tuple[bool, str]:
        op, _key, value = _unpack(input)
        if op == "get":
            return output is NO_REPLY or output == state, state
        if op == "append":
            return output is NO_REPLY or output == state, state + value
        return True, value  # put: partition() has turned away every other op

    def is_read_only(self, input: Any) -> bool:
        return _unpack(input)[0] == "get"

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        # Every input is validated here, once, so that a malformed one is
        # reported by name before the search starts rather than as a stray
        # KeyError from inside it (or not at all, if the search never
        # reaches it).
        by_key: dict[str, list[Operation]] = defaultdict(list)
        for n, op in enumerate(ops, 1):
            by_key[self._validated_key(n, op)].append(op)
        return [by_key[key] for key in sorted(by_key)]

    @staticmethod
    def _validated_key(n: int, op: Operation) -> str:
        where = f"operation {n} (client {op.client}, call {op.call})"
        if not isinstance(op.input, (dict, KVInput)):
            raise ValueError(f"{where}: a KV input is an object with op, key and value, not {op.input!r}")
        try:
            kind, key, value = _unpack(op.input)
        except KeyError as exc:
            raise ValueError(f"{where}: input {op.input!r} has no {exc.args[0]!r}") from None
        if kind not in _KV_OPS:
            raise ValueError(f"{where}: unknown op {kind!r} (expected {', '.join(_KV_OPS)})")
        if not isinstance(key, str):
            raise ValueError(f"{where}: key {key!r} is not a string")
        if kind != "get" and isinstance(op.input, dict) and "value" not in op.input:
            raise ValueError(f"{where}: {kind} needs a value")
        if kind != "get" and not isinstance(value, str):
            raise ValueError(f"{where}: {kind} needs a string value, not {value!r}")
        return key

    def describe_partition(self, ops: Sequence[Operation]) -> str:
        return f"key {_unpack(ops[0].input)[1]!r}" if ops else "no operations"

    def describe_operation(self, input: Any, output: Any) -> str:
        op, key, value = _unpack(input)
        if op == "put":
            return f"put({key!r}, {_short(value)})"
        args = repr(key) if op == "get" else f"{key!r}, {_short(value)}"
        return f"{op}({args}) -> {_short(output)}"

    def describe_state(self, state: str) -> str:
        return _short(state)


def _short(value: Any, limit: int = 48) -> str:
    """A value cut to a readable length: lab values grow to kilobytes by appending."""
    if value is NO_REPLY:
        return "?"
    text = repr(value)
    if len(text) <= limit:
        return text
    half = limit // 2 - 2
    size = f" ({len(value)} chars)" if isinstance(value, str) else ""
    return f"{text[:half]}…{text[-half:]}{size}"


MODELS: dict[str, Model] = {KVModel.name: KVModel()}
"""Models by name, for the command line; other packages add theirs here."""
