"""Deciding whether a history is linearizable: a depth-first search for a legal order.

The search follows Wing and Gong, with Lowe's memoization as porcupine uses
it. Calls and returns are laid out in time order in a linked list. Walking
it, the search tries to linearize the operation of each call it meets
(apply it to the model state now); meeting a *return* means the operation
that returns there was not linearized before its return, so the last choice
is undone and the next candidate tried. A linearized operation's call and
return leave the list; undoing puts them back. The set of linearized
operations plus the model state is remembered, so no configuration is
explored twice; this keeps ordinary histories close to linear time.

Intervals are closed: an operation called at the very instant another
returns counts as concurrent with it (calls sort before returns). An
operation that never returned gets its return at infinity and its output
unchecked, so it may take effect at any point after its call, or (by being
placed after everything else) effectively never.

A history is checked per partition of the model (per key for the KV model);
a time budget that runs out gives UNKNOWN, never OK.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from apps.linearizability.history import Operation
from apps.linearizability.model import UNKNOWN, Model


class Verdict(enum.Enum):
    OK = "linearizable"
    ILLEGAL = "not linearizable"
    UNKNOWN = "unknown (time budget ran out)"


@dataclass
class PartitionResult:
    name: str
    ops: list[Operation]
    verdict: Verdict
    longest: list[int] = field(default_factory=list)
    """Indexes into ``ops`` of the longest linearizable prefix found, in order."""
    stuck: list[int] = field(default_factory=list)
    """For ILLEGAL: operations that could not be placed after ``longest``."""
    states: list[Any] = field(default_factory=list)
    """Model state after each operation of ``longest``."""


@dataclass
class CheckResult:
    verdict: Verdict
    partitions: list[PartitionResult]

    @property
    def illegal(self) -> list[PartitionResult]:
        return [p for p in self.partitions if p.verdict == Verdict.ILLEGAL]


class _Node:
    __slots__ = ("op", "is_call", "match", "prev", "next")

    def __init__(self, op: int, is_call: bool) -> None:
        self.op = op
        self.is_call = is_call
        self.match: _Node | None = None
        self.prev: _Node | None = None
        self.next: _Node | None = None


def _build(ops: Sequence[Operation]) -> _Node:
    events = []
    for i, op in enumerate(ops):
        ret = op.ret if op.ret is not None else float("inf")
        events.append((op.call, 0, i, True))
        events.append((ret, 1, i, False))
    events.sort()
    head = _Node(-1, False)
    prev = head
    calls: dict[int, _Node] = {}
    for _, _, i, is_call in events:
        node = _Node(i, is_call)
        if is_call:
            calls[i] = node
        else:
            node.match = calls[i]
            calls[i].match = node
        prev.next, node.prev = node, prev
        prev = node
    return head


def _lift(call: _Node) -> None:
    for node in (call, call.match):
        node.prev.next = node.next  # type: ignore[union-attr]
        if node.next is not None:
            node.next.prev = node.prev


def _unlift(call: _Node) -> None:
    for node in (call.match, call):  # reverse order of _lift
        node.prev.next = node  # type: ignore[union-attr]
        if node.next is not None:
            node.next.prev = node


def _check_partition(model: Model, name: str, ops: list[Operation], deadline: float | None) -> PartitionResult:
    if not ops:
        return PartitionResult(name, ops, Verdict.OK)
    head = _build(ops)
    outputs = [UNKNOWN if op.ret is None else op.output for op in ops]
    state = model.init()
    linearized = 0
    seen: set[tuple[int, Any]] = set()
    stack: list[tuple[_Node, Any]] = []
    longest: list[int] = []
    stuck: list[int] = []
    node = head.next
    steps = 0
    while head.next is not None:
        steps += 1
        if deadline is not None and steps & 0x3FF == 0 and time.monotonic() > deadline:
            return PartitionResult(name, ops, Verdict.UNKNOWN, longest, [], _replay(model, ops, longest, outputs))
        assert node is not None
        if node.is_call:
            i = node.op
            legal, after = model.step(state, ops[i].input, outputs[i])
            if legal:
                bits = linearized | (1 << i)
                if (bits, after) not in seen:
                    seen.add((bits, after))
                    stack.append((node, state))
                    state, linearized = after, bits
                    _lift(node)
                    if len(stack) > len(longest):
                        longest = [n.op for n, _ in stack]
                        stuck = []
                    node = head.next
                    continue
            if len(stack) == len(longest):
                stuck.append(i)
            node = node.next
        else:
            if not stack:
                return PartitionResult(name, ops, Verdict.ILLEGAL, longest, sorted(set(stuck)), _replay(model, ops, longest, outputs))
            call, state = stack.pop()
            linearized &= ~(1 << call.op)
            _unlift(call)
            node = call.next
    return PartitionResult(name, ops, Verdict.OK, longest, [], [])


def _replay(model: Model, ops: list[Operation], order: list[int], outputs: list[Any]) -> list[Any]:
    state, states = model.init(), []
    for i in order:
        _, state = model.step(state, ops[i].input, outputs[i])
        states.append(state)
    return states


def check(history: Sequence[Operation], model: Model, timeout: float | None = None) -> CheckResult:
    """Is ``history`` linearizable under ``model``? ``timeout`` seconds in all (None: no limit)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    results = []
    for part in model.partition(history):
        results.append(_check_partition(model, model.partition_name(part), part, deadline))
    if any(r.verdict == Verdict.ILLEGAL for r in results):
        verdict = Verdict.ILLEGAL
    elif any(r.verdict == Verdict.UNKNOWN for r in results):
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.OK
    return CheckResult(verdict, results)
