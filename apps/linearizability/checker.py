"""Deciding whether a history is linearizable: a search for a legal total order.

A history is linearizable if its operations can be put in one order that
(a) respects real time: an operation that returned before another was called
comes first, and (b) the model accepts, output by output. The search is
Wing and Gong's, with Lowe's memoization:

* Every call and return becomes an entry in a doubly linked list in time
  order. A call and a return at the same instant: the call first, so
  touching intervals count as overlapping, since two clock readings that tie
  do not say which event came first.
* Walking the list from its head, each call met is a candidate to take
  effect next. If the model accepts it, it is *linearized*: pushed on a stack
  with the state before it, its call and return entries are unlinked, and the
  walk starts again from the head. Meeting a *return* means the operation
  returning there has not taken effect although it has finished, so the last
  choice was wrong: pop it, link its entries back, and try the call after it.
  An empty stack at a return means that no order exists.
* The set of linearized operations and the state after them determine
  everything that can still happen, so each such pair is remembered and
  never explored twice. On real histories this keeps the search close to
  linear.

For operations the model calls read-only there is one sound shortcut on
top (see ``_Search``), checked against brute force in the tests.

An operation that never returned gets its return at infinity and its output
replaced by :data:`~apps.linearizability.model.NO_REPLY`, so it may take effect
anywhere after its call; being placed after everything else is the same as
never taking effect.

Each part of the model's partition is searched on its own. The parts take
turns in slices of a few thousand steps, so one hard part cannot use up the
whole budget before an easy illegal part is found. When the budget runs out,
the undecided parts are UNKNOWN, never OK.
"""

from __future__ import annotations

import collections
import enum
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from apps.linearizability.history import Operation
from apps.linearizability.model import NO_REPLY, Model

__all__ = ["CheckResult", "ModelError", "PartitionResult", "Verdict", "check"]

log = logging.getLogger(__name__)

_SLICE = 2048
"""Search steps a part takes before the next part's turn (a few milliseconds)."""


class Verdict(enum.Enum):
    """The answer. UNKNOWN is an answer of its own so that a search cut short is never taken for a pass."""

    OK = "linearizable"
    ILLEGAL = "not linearizable"
    UNKNOWN = "unknown (time budget ran out)"


class ModelError(ValueError):
    """The model could not handle an operation of the history (a malformed input)."""


@dataclass(frozen=True, slots=True)
class PartitionResult:
    """What the search found in one part of the history."""

    name: str
    """The model's name for the part, e.g. ``key 'x'``."""
    ops: tuple[Operation, ...]
    """The part's operations, in call order."""
    verdict: Verdict
    prefix: tuple[int, ...]
    """Indexes into ``ops``, in order: a complete linearization when OK; the
    longest linearizable prefix found when ILLEGAL or UNKNOWN."""
    state: Any
    """The model state after ``prefix``, where the ``stuck`` operations were
    refused. States along the way come from :meth:`replay`; they are not
    kept, as a key appended to thousands of times has thousands of long
    states."""
    stuck: tuple[int, ...]
    """ILLEGAL only: the operations that real time allows right after
    ``prefix`` and that the model refuses there. The bug is one of them, or
    an operation of the prefix that should not have taken effect."""
    steps: int
    """Search steps spent on this part: how hard it was."""

    def replay(self, model: Model) -> Iterator[tuple[int, Any]]:
        """``(index, state after it)`` along ``prefix``, recomputed with ``model``."""
        state = model.init()
        for i in self.prefix:
            op = self.ops[i]
            _, state = model.step(state, op.input, NO_REPLY if op.ret is None else op.output)
            yield i, state

    @property
    def prefix_ops(self) -> list[Operation]:
        return [self.ops[i] for i in self.prefix]

    @property
    def stuck_ops(self) -> list[Operation]:
        return [self.ops[i] for i in self.stuck]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict on a whole history, and on each of its parts."""

    verdict: Verdict
    """ILLEGAL if any part is; else UNKNOWN if any part is undecided; else OK."""
    partitions: tuple[PartitionResult, ...]
    seconds: float

    @property
    def illegal(self) -> list[PartitionResult]:
        return [p for p in self.partitions if p.verdict is Verdict.ILLEGAL]

    @property
    def undecided(self) -> list[PartitionResult]:
        return [p for p in self.partitions if p.verdict is Verdict.UNKNOWN]


class _Entry:
    """A call or a return in the time-ordered list; ``match`` links the pair."""

    __slots__ = ("index", "is_call", "match", "next", "prev")

    def __init__(self, index: int, is_call: bool) -> None:
        self.index = index
        self.is_call = is_call
        self.match: _Entry = self
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _entries(ops: Sequence[Operation]) -> _Entry:
    """The list of calls and returns in time order; returns its head sentinel."""
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        events.append((math.inf if op.ret is None else op.ret, 1, i))
    events.sort()
    head = _Entry(-1, False)
    last = head
    calls: dict[int, _Entry] = {}
    for _, kind, i in events:
        entry = _Entry(i, kind == 0)
        if kind == 0:
            calls[i] = entry
        else:
            entry.match = calls[i]
            calls[i].match = entry
        last.next, entry.prev = entry, last
        last = entry
    return head


class _Search:
    """The search over one part, resumable so that parts can take turns.

    The set of linearized operations is ``floor`` (operations ``0 ..
    floor-1``, in call order, are all linearized) plus ``high``, a bitset of
    the linearized ones above it (bit j is operation floor + j; bit 0 is
    always clear). Operations take effect roughly in call order, so ``high``
    stays a small int, where one plain bitset would grow to thousands of bits
    and make every memo entry cost kilobytes to build, hash and keep. The
    pair is canonical, so it can serve as the memo key.

    One shortcut beyond Wing-Gong-Lowe, for operations the model calls
    read-only: if some order continues from the current point, one continues
    with such an operation placed next, as long as it is legal here and a
    candidate (its call comes before every pending return). Moving it
    forward from wherever that order put it keeps the state the same for
    everything else and breaks no real-time constraint, since every pending
    operation returns after it was called. So when a read placed here fails,
    the current point fails too, and the search backtracks past it instead
    of trying the other candidates; it halves the steps on lab-like
    histories. Both search variants are checked against brute force in the
    tests.
    """

    def __init__(self, model: Model, name: str, ops: tuple[Operation, ...]) -> None:
        self.model = model
        self.name = name
        self.ops = ops
        self.inputs = [op.input for op in ops]
        self.outputs = [NO_REPLY if op.ret is None else op.output for op in ops]
        self.reads = [model.is_read_only(op.input) for op in ops]
        self.head = _entries(ops)
        # Only a model that overrides state_key pays for calling it.
        self.key_of = None if type(model).state_key is Model.state_key else model.state_key
        self.state: Any = model.init()
        self.floor = 0
        self.high = 0
        self.seen: set[tuple[int, int, Any]] = set()
        self.stack: list[tuple[_Entry, Any, int, int]] = []
        self.best: list[int] = []
        """The deepest stack so far, as operation indexes."""
        self.low = 0
        """How deep the stack has stayed equal to ``best`` since ``best`` was last updated."""
        self.entry = self.head.next
        self.steps = 0
        self.verdict: Verdict | None = Verdict.OK if self.entry is None else None

    def advance(self, budget: int) -> Verdict | None:
        """Search for up to ``budget`` steps; the verdict once decided, else None."""
        if self.verdict is not None:
            return self.verdict
        step, key_of, inputs, outputs, reads = self.model.step, self.key_of, self.inputs, self.outputs, self.reads
        head, seen, stack = self.head, self.seen, self.stack
        state, floor, high, entry = self.state, self.floor, self.high, self.entry
        best, low = self.best, self.low
        best_len = len(best)
        verdict: Verdict | None = None
        done = 0
        while done < budget:
            done += 1
            assert entry is not None  # the list always ends with a return
            if entry.is_call:
                i = entry.index
                try:
                    legal, after = step(state, inputs[i], outputs[i])
                    memo_state = after if key_of is None else key_of(after)
                except Exception as exc:  # a model failing on an input: name the operation, keep the cause
                    raise ModelError(f"{self.name}: the {self.model.name} model cannot step {self.ops[i]}: {exc!r}") from exc
                if not legal:
                    entry = entry.next
                    continue
                if i == floor:
                    # Move the floor past i and past the run of linearized ones after it.
                    new_high = high >> 1
                    ones = ((new_high + 1) & ~new_high).bit_length() - 1
                    new_high >>= ones
                    new_floor = floor + 1 + ones
                else:
                    new_high = high | (1 << (i - floor))
                    new_floor = floor
                memo = (new_floor, new_high, memo_state)
                if memo not in seen:
                    seen.add(memo)
                    stack.append((entry, state, floor, high))
                    state, floor, high = after, new_floor, new_high
                    # Unlink the call and its return. They keep their own
                    # links, so a pop can put them back.
                    ret = entry.match
                    entry.prev.next = entry.next  # type: ignore[union-attr]
                    entry.next.prev = entry.prev  # type: ignore[union-attr]  # a return follows every call
                    ret.prev.next = ret.next  # type: ignore[union-attr]
                    if ret.next is not None:
                        ret.next.prev = ret.prev
                    entry = head.next
                    if entry is None:
                        verdict = Verdict.OK
                        break
                    continue
                if not reads[i]:
                    entry = entry.next
                    continue
                # A read that is legal here leads somewhere already known
                # to fail, and a read could go first (see _Search), so
                # this configuration fails as well: backtrack.
            # A return of an operation not yet linearized, or a dead end: backtrack.
            # The stack only grows between backtracks, so its deepest
            # moments are all seen here. Frames below `low` have not
            # changed since the last copy, so only the rest is copied:
            # copying the whole stack each time made long histories
            # quadratic.
            if len(stack) > best_len:
                del best[low:]
                best.extend(frame[0].index for frame in stack[low:])
                best_len = low = len(stack)
            while stack:
                call, state, floor, high = stack.pop()
                # Relink in the reverse order of the unlinking.
                ret = call.match
                ret.prev.next = ret  # type: ignore[union-attr]
                if ret.next is not None:
                    ret.next.prev = ret
                call.prev.next = call  # type: ignore[union-attr]
                call.next.prev = call  # type: ignore[union-attr]
                if not reads[call.index]:
                    break
                # A read placed as early as it was legal failed, so every
                # other choice at that point fails too: keep backtracking.
            else:
                verdict = Verdict.ILLEGAL
                break
            if len(stack) < low:
                low = len(stack)
            entry = call.next
        self.state, self.floor, self.high, self.entry, self.low = state, floor, high, entry, low
        self.steps += done
        self.verdict = verdict
        return verdict

    def result(self) -> PartitionResult:
        """The outcome so far: UNKNOWN while undecided."""
        verdict = self.verdict or Verdict.UNKNOWN
        current = tuple(frame[0].index for frame in self.stack)
        prefix = current if verdict is Verdict.OK or len(current) > len(self.best) else tuple(self.best)
        state = self.model.init()
        for i in prefix:
            _, state = self.model.step(state, self.inputs[i], self.outputs[i])
        stuck = self._refused_after(prefix, state) if verdict is Verdict.ILLEGAL else ()
        self.seen = set()  # the memo is the bulk of the memory; done with it
        return PartitionResult(self.name, self.ops, verdict, prefix, state, stuck, self.steps)

    def _refused_after(self, prefix: Sequence[int], state: Any) -> tuple[int, ...]:
        """The operations real time allows right after ``prefix`` that the model refuses there.

        The search ended with ``prefix`` as its deepest point, so every
        candidate there was tried, and any the model accepted would have made
        a longer prefix. What remains are refusals.
        """
        placed = set(prefix)
        rest = [i for i in range(len(self.ops)) if i not in placed]
        first_return = min(math.inf if (ret := self.ops[i].ret) is None else ret for i in rest)
        candidates = [i for i in rest if self.ops[i].call <= first_return]  # ops are in call order
        return tuple(i for i in candidates if not self.model.step(state, self.inputs[i], self.outputs[i])[0])


def _in_call_order(part: Iterable[Operation]) -> tuple[Operation, ...]:
    return tuple(sorted(part, key=lambda op: (op.call, math.inf if op.ret is None else op.ret, op.client)))


def check(history: Iterable[Operation], model: Model, timeout: float | None = None) -> CheckResult:
    """Is ``history`` linearizable under ``model``?

    Args:
        history: the operations, in any order.
        model: the sequential specification (e.g. ``KVModel()``).
        timeout: seconds for the whole check, None for no limit. Parts still
            undecided when it runs out are UNKNOWN, and so is the verdict
            unless another part is ILLEGAL.

    Raises:
        ModelError: the model failed on an input while partitioning or stepping.
    """
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    ops = list(history)
    try:
        parts = model.partition(ops)
    except Exception as exc:  # a model failing on an input: report it as such, keep the cause
        raise ModelError(f"the {model.name} model cannot partition the history: {exc}") from exc
    searches = [_Search(model, model.describe_partition(part), _in_call_order(part)) for part in parts if part]
    turns = collections.deque(s for s in searches if s.verdict is None)
    while turns:
        if deadline is not None and time.monotonic() >= deadline:
            log.info("time budget of %s s ran out with %d of %d parts undecided", timeout, len(turns), len(searches))
            break
        search = turns.popleft()
        if search.advance(_SLICE) is None:
            turns.append(search)
    results = tuple(s.result() for s in searches)
    verdicts = {r.verdict for r in results}
    if Verdict.ILLEGAL in verdicts:
        verdict = Verdict.ILLEGAL
    elif Verdict.UNKNOWN in verdicts:
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.OK
    seconds = time.monotonic() - started
    for r in results:
        log.debug("%s: %s after %d steps (%d operations)", r.name, r.verdict.name, r.steps, len(r.ops))
    log.info("%d operations in %d parts: %s in %.3f s", len(ops), len(results), verdict.name, seconds)
    return CheckResult(verdict, results, seconds)
