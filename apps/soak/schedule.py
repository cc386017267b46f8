"""The nemesis schedule: every fault of a run, drawn up front from the seed.

A run's faults are decided before it starts, as a list of :class:`Fault`
(offset from the start, nemesis, variant, targets, duration), so that the
same seed replays the same faults at the same offsets and the schedule can
be written into the report. Faults never overlap: each one is healed before
the next begins, with a quiet gap between them, and the run ends with a heal
of everything and the final reads. Faults aimed at "the leader" name no
target here (nobody knows who leads until the moment comes); the run log
records whom they hit.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

NEMESES: dict[str, tuple[str, ...]] = {
    "kill": ("one", "leader", "minority", "all"),
    "pause": ("one", "leader"),
    "partition": ("majority-minority", "leader-isolated", "bridge"),
    "net": ("unreliable", "long-reordering"),
    "disk": ("lose-unsynced-all", "lose-unsynced-leader", "bitflip"),
    "burst": ("leader-isolated", "leader-crashed"),  # the targeted nemeses: see apps/soak/targeted.py
    "vote": ("follower",),
    "stale": ("leader", "one"),
    "reconfig": ("leave", "move", "churn", "lossy-churn", "crash-churn", "muted-leave"),
    "membership": ("replace-one", "replace-leader", "replace-dead"),  # kvraft's: see apps/soak/kvraft.py
}
"""Every nemesis and its variants (what a fault of that kind does, see the runners)."""

_DURATION = {"kill": (1.0, 4.0), "pause": (1.5, 3.0), "partition": (2.0, 5.0), "net": (3.0, 6.0), "disk": (1.0, 3.0),
             "burst": (2.0, 4.0), "vote": (1.5, 3.0), "stale": (2.0, 4.0),
             "reconfig": (2.0, 5.0), "membership": (3.0, 6.0)}
"""Seconds a fault of each kind lasts before its heal. A pause outlasts the
election timeout (0.4-0.8 s at the default tick), so the paused leader wakes
up deposed but believing it leads."""

WARMUP = 3.0
"""Seconds of fault-free traffic at the start."""
COOLDOWN = 3.0
"""Seconds before the end in which no fault starts."""
_GAP = (1.0, 3.0)


@dataclass(frozen=True)
class Fault:
    offset: float
    """Seconds from the start of the run."""
    kind: str
    variant: str
    targets: tuple[int, ...]
    """Server (or worker) indexes; empty when the target is decided at run time (the leader). For kvraft
    they are slots: the server that holds the slot when the fault comes (a replacement takes its old one's)."""
    duration: float
    """Seconds until the heal."""

    def describe(self) -> str:
        who = ",".join(map(str, self.targets)) if self.targets else "leader" if "leader" in self.variant else "-"
        return f"{self.offset:7.1f}s {self.kind}/{self.variant} on {who} for {self.duration:.1f}s"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["targets"] = list(self.targets)
        return out


def parse_nemeses(text: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """``"kill,pause"`` -> ``("kill", "pause")``; ``"all"`` is every allowed one; ``"none"`` is none.

    Raises ValueError naming the unknown nemesis and the allowed ones.
    """
    words = [w.strip() for w in text.split(",") if w.strip()]
    if words == ["all"]:
        return tuple(allowed)
    if words == ["none"]:
        return ()
    if not words:
        raise ValueError(f"no nemesis named; choose from {', '.join(allowed)}, or all, or none")
    unknown = [w for w in words if w not in allowed]
    if unknown:
        raise ValueError(f"unknown nemesis {', '.join(unknown)}; this system takes {', '.join(allowed)} (or all, or none)")
    return tuple(dict.fromkeys(words))


def make_schedule(seed: int, seconds: float, nemeses: Sequence[str], servers: int) -> list[Fault]:
    """The faults of a run of ``seconds`` over ``servers`` servers, drawn from ``seed`` alone."""
    rng = random.Random(f"zactor-soak-{seed}")
    faults: list[Fault] = []
    if not nemeses:
        return faults
    kinds = sorted(nemeses)  # the order the user typed them in must not change the schedule
    t = WARMUP
    while True:
        kind = rng.choice(kinds)
        variant = rng.choice(NEMESES[kind])
        low, high = _DURATION[kind]
        duration = round(rng.uniform(low, high), 2)
        if t + duration > seconds - COOLDOWN:
            break
        faults.append(Fault(round(t, 2), kind, variant, _targets(rng, kind, variant, servers), duration))
        t += duration + rng.uniform(*_GAP)
    return faults


def _targets(rng: random.Random, kind: str, variant: str, n: int) -> tuple[int, ...]:
    minority = (n - 1) // 2
    if "leader" in variant or variant == "follower":
        return ()
    if variant in ("all", "lose-unsynced-all", "unreliable", "long-reordering"):
        return tuple(range(n))
    if variant == "minority":
        return tuple(sorted(rng.sample(range(n), max(1, minority))))
    if variant == "majority-minority":
        return tuple(sorted(rng.sample(range(n), max(1, minority))))  # the minority side
    if variant == "bridge":
        order = rng.sample(range(n), n)
        return tuple(order)  # order[n // 2] is the bridge; see the runner
    return (rng.randrange(n),)
