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
    groups: int = 3
    """shardkv: replica groups (of ``servers`` servers each)."""
    maxraftstate: int = 4000
    check_budget: float = 60.0
    """Seconds the checker may spend on one window before it is UNKNOWN."""
    command: str = ""
    """The command line that replays this run."""
    broken: str = ""
    """The test-only broken variant the servers run (``--broken``; see ``apps/soak/broken.py``), if any."""
    fail_fast: bool = False
    """Stop the faults and traffic at the first violation found while they run (the report is written all the same)."""
    throughput_window: float = 10.0
    """Seconds per window of the minimum-throughput rule: every full window of the timed part must reach it."""
    history: bool = True
    hosts: str = "local"
    """Where the servers run: ``local`` (this machine; partition and net faults as transport rules) or ``netns``
    (a network namespace each; those faults as packet filters, see ``apps/soak/netns.py``)."""
    """Write every checked window's calls to ``out/history.jsonl`` (kvraft, etcd)."""
    interrupt: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)
    """Set by Ctrl-C or SIGTERM: the timed part ends at once, the final steps are cut short, the report is written."""


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
        self.ran: float | None = None
        """Seconds the timed part ran, once it has ended (the status clock stops there)."""
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

    def end_timed_part(self, elapsed: float) -> float:
        """The timed part is over after ``elapsed`` seconds (an interrupt's phase says so); returns ``elapsed``."""
        self.ran = elapsed
        if self.config.interrupt.is_set():
            self.phase = "interrupted"
        return elapsed

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
    if config.interrupt.is_set():
        return False
    return elapsed < config.seconds and not (config.fail_fast and (findings.violations or found))


AFTER_INTERRUPT = 3.0
"""Seconds each step after a Ctrl-C may take (the nemesis's last heal, the clients' last calls): a user who
pressed Ctrl-C gets the report within a few seconds, not after the minutes the steps may take otherwise."""


def bounded(config: SoakConfig, seconds: float) -> float:
    """``seconds``, or :data:`AFTER_INTERRUPT` once the run was interrupted."""
    return min(seconds, AFTER_INTERRUPT) if config.interrupt.is_set() else seconds


def wait_while_running(config: SoakConfig, seconds: float) -> None:
    """Sleep up to ``seconds``, waking at once on an interrupt (the main loop's tick)."""
    config.interrupt.wait(max(0.0, seconds))


def stopped_early(config: SoakConfig, ran: float) -> dict[str, Any]:
    """The summary's note on a run that ``fail_fast`` or an interrupt cut short (nothing when it ran its time)."""
    if config.interrupt.is_set():
        return {"stopped_early": f"interrupted (Ctrl-C or SIGTERM) at {ran:.0f} s of {config.seconds:.0f} s"}
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



def nemesis_still_healing(nemesis: threading.Thread, extra: dict[str, Any]) -> bool:
    """After an interrupt: whether the nemesis's own heal is still going (a restart), so the final heal must not
    run beside it (two restarts of one server at once); the teardown then stops everything, healed or not."""
    if not nemesis.is_alive():
        return False
    extra["final_heal"] = "skipped: interrupted while the nemesis was still healing its last fault"
    return True


def drive(config: Any, target: Target, workload: Any, checker: Any, schedule: list[Fault], findings: Findings, status: Status) -> dict[str, Any]:
    """The timed part of a run that every target shares: workload and nemesis until time is up, then the
    final heal, the target's final checks and the last window checks.

    Returns the summary's fields for the run: what the final checks found, with the seconds the workload
    ran, the schedule, the fault events, the samples, the errors and the checked windows.
    """
    events: list[FaultEvent] = []
    extra: dict[str, Any] = {}
    stop = threading.Event()
    workload.start()
    checker.start()
    status.start(lambda: status_line(config, status, workload.elapsed(), workload.ops(), "calls", workload.errors, findings))
    nemesis = threading.Thread(target=play, args=(schedule, target, workload.elapsed, stop, events, status), name="soak-nemesis", daemon=True)
    nemesis.start()
    try:
        while keep_going(config, workload.elapsed(), findings):
            wait_while_running(config, min(0.5, config.seconds - workload.elapsed()))
    finally:
        stop.set()
        ran = status.end_timed_part(workload.elapsed())
        nemesis.join(bounded(config, 60.0))
        workload.stop(bounded(config, 30.0))
        status.phase = "final heal"
        if not nemesis_still_healing(nemesis, extra) and heal_everything(target, findings):
            if config.interrupt.is_set():
                extra = {"final_reads": "skipped: interrupted"}
            else:
                status.phase = "final reads"
                extra = target.final_checks(workload, findings)
        if nemesis.is_alive() and not config.interrupt.is_set():  # a run judged without its final reads is no pass
            findings.invalid.append("the nemesis was still inflicting or healing its last fault 60 s after the end: "
                                    "no final heal, no final reads")
        status.phase = "checking"
        checker.finish(interrupted=config.interrupt.is_set())
        status.stop()
    extra.update({
        "seconds": round(ran, 2),
        "schedule": [f.to_json() for f in schedule],
        "events": [e.to_json() for e in events],
        "samples": workload.samples,
        "errors": workload.errors,
        "error_kinds": workload.error_kinds,
        "windows": [vars(w) for w in findings.windows],
    })
    return extra

def status_line(config: Any, status: Status, elapsed: float, done: int, unit: str, errors: int, findings: Findings,
                more: str = "") -> str:
    """The live status, one format for every system: phase, elapsed of planned time, work done and its rate
    (``unit``: calls, commands, jobs), faults, errors, windows checked, ``more`` (a system's own figure), violations.

    The clock stops with the timed part: the final heal and checks are shown as phases, not as overtime.
    """
    t = min(elapsed if status.ran is None else status.ran, config.seconds)
    bad = len(findings.violations)
    rate = done / max(t, 1e-9)
    return (
        f"soak {config.system} {status.phase} {_mmss(t)}/{_mmss(config.seconds)}  {unit} {done} "
        f"({rate:.{0 if rate >= 10 else 1}f}/s)  faults {status.faults}  errors {errors}"
        + (f"  windows checked {len(findings.windows)}" if config.system in ("kvraft", "etcd", "shardkv") else "")
        + (f"  {more}" if more else "") + (f"  VIOLATIONS {bad}" if bad else "")
    )


def _mmss(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60:02d}:{s % 60:02d}"
