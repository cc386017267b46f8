"""What a node does for a request addressed to its control name (:data:`~transport.envelope.CONTROL_NAME`).

Why a room: the harness (tests, ``zactor soak``, the CLI) reaches every node
through the same few operations: ping it, set its fault rules, read and reset
its counters. Control traffic is never subject to faults, so a node whose
actors are cut off can still be healed. What a control request may do is
written here once; the node's part is only to hand the request to
:func:`perform` and send back what it returns (or the error it raises).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from typing import Any, Protocol

from transport.counters import Counters
from transport.faults import FaultRule
from transport.message import message, register_message


class ControlOp(enum.StrEnum):
    """What a node's control name does (a StrEnum: equal to the plain strings older callers send)."""

    PING = "ping"
    SET_FAULTS = "set_faults"
    COUNTERS = "counters"
    RESET_COUNTERS = "reset_counters"
    STATS = "stats"


register_message(ControlOp)  # a client key's ping names it (see CLIENT_OPS)


@message
class ControlRequest:
    """A request to a node itself: one of :class:`ControlOp`, with its argument."""

    op: str
    arg: Any = None


CLIENT_OPS = frozenset({ControlOp.PING, ControlOp.COUNTERS})
"""What a client-role key may ask of a node (look, never change): fault rules and counter resets
are the harness's, which runs with a member key."""


class Controlled(Protocol):
    """What a control request acts on (a :class:`~transport.node.Node`)."""

    endpoint: str
    counters: Counters

    @property
    def open_peers(self) -> int: ...

    @property
    def held_back(self) -> int: ...

    def describe(self) -> list[dict]:
        """What the layer above hosts here (its actors), for a live view."""

    def set_faults(self, rules: Sequence[FaultRule]) -> None: ...


def perform(node: Controlled, request: object, *, client: bool = False) -> Any:
    """Run one control request on ``node``; its result. ValueError for what is not a control request;
    PermissionError for one a client-role key (``client``) may not make (see :data:`CLIENT_OPS`)."""
    if not isinstance(request, ControlRequest):
        raise ValueError(f"not a control request: {type(request).__name__}")
    if client and request.op not in CLIENT_OPS:
        raise PermissionError(
            f"control op {request.op!r} needs a member key; a client-role key may only "
            f"{' and '.join(sorted(CLIENT_OPS))} (`zactor keys add NAME KEY --role member` to trust a key with more)"
        )
    if request.op == ControlOp.PING:
        return {"endpoint": node.endpoint, "pid": os.getpid()}
    if request.op == ControlOp.STATS:
        return {"endpoint": node.endpoint, "pid": os.getpid(), "counters": node.counters.snapshot(), "actors": node.describe()}
    if request.op == ControlOp.SET_FAULTS:
        rules = list(request.arg or ())
        node.set_faults(rules)
        return len(rules)
    if request.op == ControlOp.COUNTERS:
        result = node.counters.snapshot()
        result["open_peers"] = node.open_peers
        result["held_back"] = node.held_back
        return result
    if request.op == ControlOp.RESET_COUNTERS:
        node.counters.reset()
        return None
    raise ValueError(f"unknown control op {request.op!r}")
