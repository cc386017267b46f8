"""One soak run: the schedule played against a system while the workload runs, then the verdict.

The loop is the same for every system; what differs is a *target*, which
knows how to start the system, make clients, inflict and heal each fault,
and do the final checks after the last heal (see ``apps/soak/kvraft.py``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from apps.soak.schedule import Fault
from apps.soak.verdict import Findings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SoakConfig:
    system: str
    seconds: float
    seed: int
    nemeses: tuple[str, ...]
    clients: int
    out: Path
    min_throughput: float
    """Answered calls per second over the run below which it is invalid, not passed."""
    window: float = 15.0
    """Seconds per checked window of the history."""
    servers: int = 5
    maxraftstate: int = 4000
    check_budget: float = 60.0
    """Seconds the checker may spend on one window before it is UNKNOWN."""
    command: str = ""
    """The command line that replays this run."""
    broken: str = ""
    """The test-only broken variant the servers run (``--broken``; see ``apps/soak/broken.py``), if any."""
    fail_fast: bool = False
    """Stop the faults and traffic at the first violation found while they run (the report is written all the same)."""


@dataclass
class FaultEvent:
    """What one scheduled fault did when its time came."""

    fault: Fault
    started: float
    healed: float | None = None
    targets: list[int] = field(default_factory=list)
    note: str = ""
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            **self.fault.to_json(),
            "started": round(self.started, 3),
            "healed": None if self.healed is None else round(self.healed, 3),
            "hit": self.targets,
            "note": self.note,
            "error": self.error,
        }


class Target(Protocol):
    """A system under test, from the soak loop's point of view."""

    def inflict(self, fault: Fault, event: FaultEvent) -> None: ...

    def heal(self, fault: Fault, event: FaultEvent) -> None: ...

    def heal_all(self) -> None: ...

    def final_checks(self, workload: Any, findings: Findings) -> dict[str, Any]: ...


class Status:
    """The one-line live status on stderr: elapsed, answered calls, faults so far, errors."""

    def __init__(self, config: SoakConfig, stream: TextIO | None = None) -> None:
        self.config = config
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.faults = 0
        self.phase = "running"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_plain = -1e9

    def start(self, line: Any) -> None:
        self._thread = threading.Thread(target=self._run, args=(line,), name="soak-status", daemon=True)
        self._thread.start()

    def _run(self, line: Any) -> None:
        while not self._stop.wait(1.0):
            self.show(line())

    def show(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
        elif time.monotonic() - self._last_plain >= 10.0:  # a log file gets a line every 10 s, not 600 repaints
            self._last_plain = time.monotonic()
            self.stream.write(text + "\n")
        self.stream.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def play(schedule: list[Fault], target: Target, clock: Any, stop: threading.Event, events: list[FaultEvent], status: Status) -> None:
    """Inflict each fault at its offset and heal it after its duration; ``clock()`` is seconds since the start."""
    for fault in schedule:
        if stop.wait(max(0.0, fault.offset - clock())):
            return
        event = FaultEvent(fault, clock())
        events.append(event)
        status.faults += 1
        try:
            target.inflict(fault, event)
        except Exception as exc:  # a fault that could not be inflicted is reported, and still healed
            log.warning("nemesis %s/%s failed: %s", fault.kind, fault.variant, exc)
            event.error = f"{type(exc).__name__}: {exc}"
        stop.wait(max(0.0, fault.offset + fault.duration - clock()))
        try:
            target.heal(fault, event)
        except Exception as exc:
            log.warning("heal of %s/%s failed: %s", fault.kind, fault.variant, exc)
            event.error += f" heal: {type(exc).__name__}: {exc}"
        event.healed = clock()


def keep_going(config: SoakConfig, elapsed: float, findings: Findings, found: int = 0) -> bool:
    """Whether the timed part of a run goes on: time is left, and with ``fail_fast`` nothing is found yet.

    ``found``: violations a target keeps outside ``findings`` until its final check (Raft's apply check).
    """
    return elapsed < config.seconds and not (config.fail_fast and (findings.violations or found))


def stopped_early(config: SoakConfig, ran: float) -> dict[str, Any]:
    """The summary's note on a run that ``fail_fast`` cut short (nothing when it ran its time)."""
    if not config.fail_fast or ran >= config.seconds:
        return {}
    return {"stopped_early": f"--fail-fast: stopped at {ran:.0f} s of {config.seconds:.0f} s, at the first violation"}


def heal_everything(target: Target, findings: Any) -> bool:
    """The final heal; a system that cannot be brought back makes the run invalid (and the report still gets written)."""
    try:
        target.heal_all()
    except Exception as exc:
        log.error("the final heal failed: %s", exc)
        findings.invalid.append(f"the final heal failed: {type(exc).__name__}: {exc}")
        return False
    return True



def drive(config: Any, target: Target, workload: Any, checker: Any, schedule: list[Fault], findings: Findings, status: Status) -> tuple[float, list[FaultEvent], dict[str, Any]]:
    """The timed part of a run that every target shares: workload and nemesis until time is up, then the
    final heal, the target's final checks and the last window checks.

    Returns the seconds the workload ran, the fault events and what the final checks found.
    """
    events: list[FaultEvent] = []
    extra: dict[str, Any] = {}
    stop = threading.Event()
    workload.start()
    checker.start()
    status.start(lambda: status_line(config, workload, status, findings))
    nemesis = threading.Thread(target=play, args=(schedule, target, workload.elapsed, stop, events, status), name="soak-nemesis", daemon=True)
    nemesis.start()
    try:
        while keep_going(config, workload.elapsed(), findings):
            time.sleep(min(0.5, max(0.0, config.seconds - workload.elapsed())))
    finally:
        stop.set()
        nemesis.join(60.0)
        ran = workload.elapsed()
        workload.stop()
        status.phase = "final heal"
        if heal_everything(target, findings):
            status.phase = "final reads"
            extra = target.final_checks(workload, findings)
        status.phase = "checking"
        checker.finish()
        status.stop()
    return ran, events, extra

def status_line(config: Any, workload: Any, status: Any, findings: Findings) -> str:
    """The live status: phase, elapsed of planned time, answered calls and rate, faults, errors, windows, violations."""
    t = workload.elapsed()
    ops = workload.ops()
    bad = len(findings.violations)
    return (
        f"soak {config.system} {status.phase} {_mmss(t)}/{_mmss(config.seconds)}  ops {ops} ({ops / max(t, 1e-9):.0f}/s)  "
        f"faults {status.faults}  errors {workload.errors}  windows checked {len(findings.windows)}"
        + (f"  VIOLATIONS {bad}" if bad else "")
    )


def _mmss(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60:02d}:{s % 60:02d}"
