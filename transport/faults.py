"""Fault injection: the lab network's failure model, as rules on a live node.

A rule matches traffic by the other side's endpoint (``peer``, ``"*"`` for
any), by ``direction`` (``"out"`` is what this node sends, ``"in"`` what it
receives) and by kind (requests are tells and asks, replies are replies and
errors). A matching rule may cut the traffic (``connected=False``), drop it
with a probability, delay it uniformly, or hold it back long enough to
reorder it. Rules compose: every matching rule is applied.

The profile functions give the lab's numbers (``spec/LABS.md`` section 1):
``unreliable()`` delays requests 0-26 ms and drops 10% of requests and 10% of
replies; ``long_reordering()`` holds two replies in three back for
200 + U(0, U(0, 2000)) ms; ``disconnected()`` cuts both directions.
Traffic to and from a node's control name is never touched.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Literal

from transport.message import message

Direction = Literal["out", "in", "both"]
Applies = Literal["all", "requests", "replies"]

DROP = -1.0
"""What :meth:`FaultTable.decide` returns for a message that must vanish."""


@message  # crosses the wire in a control request (set_faults)
class FaultRule:
    peer: str = "*"
    direction: Direction = "out"
    applies_to: Applies = "all"
    connected: bool = True
    drop: float = 0.0
    """Probability in [0, 1] that a matching message is lost."""
    delay: tuple[float, float] = (0.0, 0.0)
    """Uniform extra delay in seconds, (low, high)."""
    reorder: float = 0.0
    """Probability that a matching message is held back 0.2 + U(0, U(0, 2)) s."""
    types: tuple[str, ...] = ()
    """Only messages of these type names (class names), when given: a protocol that
    sends its replies as tells (Raft) marks them as replies this way."""

    def __post_init__(self) -> None:
        if self.direction not in ("out", "in", "both"):
            raise ValueError(f"direction must be 'out', 'in' or 'both', not {self.direction!r}")
        if self.applies_to not in ("all", "requests", "replies"):
            raise ValueError(
                f"applies_to must be 'all', 'requests' or 'replies', not {self.applies_to!r}"
            )
        for name in ("drop", "reorder"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {p}")
        lo, hi = self.delay
        if not 0.0 <= lo <= hi:
            raise ValueError(f"delay must be (low, high) seconds with 0 <= low <= high, got {self.delay}")

    def matches(self, peer: str, direction: str, is_reply: bool, mtype: str = "") -> bool:
        if self.peer != "*" and self.peer != peer:
            return False
        if self.direction != "both" and self.direction != direction:
            return False
        if self.types and mtype not in self.types:
            return False
        if self.applies_to == "requests":
            return not is_reply
        if self.applies_to == "replies":
            return is_reply
        return True


def unreliable(peer: str = "*") -> list[FaultRule]:
    """The lab's unreliable network, applied to what this node sends."""
    return [
        FaultRule(peer, "out", "requests", drop=0.1, delay=(0.0, 0.026)),
        FaultRule(peer, "out", "replies", drop=0.1),
    ]


def long_reordering(peer: str = "*") -> list[FaultRule]:
    """The lab's long reordering of replies (about two in three held back)."""
    return [FaultRule(peer, "out", "replies", reorder=600 / 900)]


def disconnected(peer: str = "*") -> list[FaultRule]:
    """Nothing reaches ``peer`` from this node and nothing from it is delivered."""
    return [FaultRule(peer, "both", connected=False)]


FaultSpec = FaultRule | Sequence["FaultSpec"]
"""A rule, or a list of specs: ``[unreliable(), disconnected(peer)]`` reads as it is meant."""


def flatten(rules: FaultSpec) -> tuple[FaultRule, ...]:
    """The rules of ``rules`` in order; the profiles above return lists, so users nest them."""
    if isinstance(rules, FaultRule):
        return (rules,)
    if isinstance(rules, str | bytes) or not isinstance(rules, Sequence):
        raise TypeError(f"fault rules must be FaultRule or lists of them, not {type(rules).__name__}")
    return tuple(rule for item in rules for rule in flatten(item))


class FaultTable:
    """The rules in force on one node.

    Decided on by every thread that sends or reads replies on the node (callers
    on their channels, actor threads, the I/O thread), always under the node's
    send lock, which also guards the shared random generator; replaced as a
    whole tuple, so a reader sees the old rules or the new, never a mix.
    """

    def __init__(self, rules: Iterable[FaultRule] = (), seed: int | None = None) -> None:
        self.rules: tuple[FaultRule, ...] = tuple(rules)
        """Read-only outside ``replace``; a plain attribute, as every message looks at it."""
        self._rng = random.Random(seed)

    def replace(self, rules: FaultSpec) -> None:
        self.rules = flatten(rules)

    def decide(self, peer: str, direction: str, is_reply: bool, mtype: str = "") -> float:
        """Seconds to hold the message back (0 = now), or DROP."""
        if not self.rules:
            return 0.0
        rng = self._rng
        delay = 0.0
        for rule in self.rules:
            if not rule.matches(peer, direction, is_reply, mtype):
                continue
            if not rule.connected:
                return DROP
            if rule.drop and rng.random() < rule.drop:
                return DROP
            lo, hi = rule.delay
            if hi:
                delay += rng.uniform(lo, hi)
            if rule.reorder and rng.random() < rule.reorder:
                delay += 0.2 + rng.uniform(0.0, rng.uniform(0.0, 2.0))
        return delay
