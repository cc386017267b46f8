"""One look at a set of nodes: what each hosts, and the rates since the look before.

Why a module of its own: the terminal view and the Prometheus endpoint show
the same figures, so both read them here. A node is asked over its control
name (``STATS``: counters and each hosted actor's mailbox, handled count,
p99 and restarts), so it costs the node one small reply per look and its
actors nothing; a Raft peer among them is also asked its ``Status``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from actors import ActorSystem
from apps.raft.peer import PEER_NAME, PeerStatus, Status


@dataclass
class NodeLook:
    """One node as last seen: its STATS reply (None if it did not answer) and its Raft status if it runs a peer."""

    endpoint: str
    stats: dict[str, Any] | None
    raft: PeerStatus | None = None
    rates: dict[str, float] = field(default_factory=dict)
    """Messages handled per second by each actor since the previous look."""


class Sampler:
    """Looks at ``endpoints`` each time :meth:`look` is called, keeping what rates need."""

    def __init__(self, system: ActorSystem, endpoints: Sequence[str], timeout: float = 0.5) -> None:
        self.system = system
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._before: dict[tuple[str, str], tuple[float, int]] = {}

    def look(self) -> list[NodeLook]:
        return [self._one(ep) for ep in self.endpoints]

    def _one(self, endpoint: str) -> NodeLook:
        try:
            stats = self.system.control(endpoint, timeout=self.timeout).stats()
        except Exception:  # down, refusing us, or not a zactor node: shown as down
            return NodeLook(endpoint, None)
        look = NodeLook(endpoint, stats)
        now = time.monotonic()
        for actor in stats["actors"]:
            handled = actor.get("handled")
            if handled is None:
                continue
            key = (endpoint, actor["name"])
            then = self._before.get(key)
            if then is not None and now > then[0]:
                look.rates[actor["name"]] = max(0.0, (handled - then[1]) / (now - then[0]))
            self._before[key] = (now, handled)
        if any(a["name"] == PEER_NAME for a in stats["actors"]):
            try:
                look.raft = self.system.ref(endpoint, PEER_NAME).ask(Status(), timeout=self.timeout)
            except Exception:
                pass  # busy or restarting: the row shows no Raft figures this time
        return look
