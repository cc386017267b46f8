"""The verdict: windows checked as the run goes, the final reads, and the exit code.

Exit codes: 0 the run passed; 1 a violation was found (a window's history is
not linearizable, an acknowledged append was lost, duplicated or reordered,
replicas differ after the final heal, a corrupt journal was loaded); 2 the
run is invalid: too little traffic to mean anything, or the checker could
not decide (UNKNOWN is never a pass), or the final reads never got through.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps.linearizability import CheckResult, KVModel, Operation, Verdict, check
from apps.linearizability.history import save

log = logging.getLogger(__name__)

PASS, VIOLATION, INVALID = 0, 1, 2
INTERRUPTED = 130
"""Ctrl-C or SIGTERM ended the run early: the report holds what was found until then (the shell's 128 + SIGINT)."""
EXIT_NAMES = {PASS: "pass", VIOLATION: "violation", INVALID: "invalid", INTERRUPTED: "interrupted"}


@dataclass
class WindowResult:
    number: int
    ops: int
    verdict: str
    seconds: float
    illegal_keys: list[str] = field(default_factory=list)
    undecided_keys: list[str] = field(default_factory=list)


@dataclass
class Findings:
    """Everything the run found, accumulated by the checker thread and the runner."""

    windows: list[WindowResult] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    illegal: list[tuple[int, list[Operation], CheckResult]] = field(default_factory=list)
    """(window, its history, the checker's result) of each window found not linearizable."""

    def exit_code(self) -> int:
        if self.violations:
            return VIOLATION
        if self.invalid:
            return INVALID
        return PASS


def check_window(number: int, history: list[Operation], budget: float, findings: Findings) -> WindowResult:
    """Check one window's history; a non-linearizable or undecided one goes into ``findings``."""
    result = check(history, KVModel(), timeout=budget)
    out = WindowResult(number, len(history), result.verdict.name, round(result.seconds, 3))
    if result.verdict is Verdict.ILLEGAL:
        out.illegal_keys = [p.name for p in result.illegal]
        findings.violations.append(f"window {number}: history not linearizable on {', '.join(out.illegal_keys)}")
        findings.illegal.append((number, history, result))
    elif result.verdict is Verdict.UNKNOWN:
        out.undecided_keys = [p.name for p in result.undecided]
        findings.invalid.append(f"window {number}: the checker reached no verdict in {budget} s on {', '.join(out.undecided_keys)}")
    findings.windows.append(out)
    return out


HISTORY_FILE = "history.jsonl"
"""The recorded history's name in a run's report directory."""
INTERRUPTED_BUDGET = 1.0
"""Seconds the checker may spend on each window still unchecked after a Ctrl-C (UNKNOWN after that)."""


class WindowChecker:
    """A thread that checks each window once all its calls are done.

    Each checked window's history is appended to ``history`` (JSON lines, as
    ``zactor check`` reads them) before the window is compacted: windows use
    keys of their own, so the file is the whole run's history and checks to the
    same verdict.
    """

    def __init__(self, workload: Any, findings: Findings, budget: float, grace: float, history: Path | None = None) -> None:
        self.workload = workload
        self.findings = findings
        self.budget = budget
        self.grace = grace
        self.history = history
        if history is not None:
            history.parent.mkdir(parents=True, exist_ok=True)
            history.write_text("")
        self.done: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-checker", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.check_ready()

    def check_ready(self) -> None:
        with self._lock:
            for w in self.workload.finished_windows(self.grace):
                if w.number not in self.done:
                    self._check(w, self.budget)
            for w in self.workload.windows:
                # Checked windows shrink to their appends, once no call of theirs is still out.
                if w.number in self.done and w.in_flight == 0:
                    w.compact()

    def _check(self, w: Any, budget: float) -> None:
        self.done.add(w.number)
        history = w.history()
        if self.history is not None:
            save(history, self.history, append=True)
        check_window(w.number, history, budget, self.findings)

    def finish(self, interrupted: bool = False) -> None:
        """Stop the thread and check every window not checked yet (after an interrupt, on a short budget each)."""
        self._stop.set()
        budget = INTERRUPTED_BUDGET if interrupted else self.budget
        wait = 5.0 if interrupted else self.budget * 2 + 10
        self._thread.join(wait)
        if not self._lock.acquire(timeout=wait):  # a window's check is still running (interrupted: not waited for)
            self.findings.invalid.append("a window's check was still running when the run was interrupted")
            return
        try:
            for w in self.workload.windows:
                if w.number not in self.done:
                    self._check(w, budget)
        finally:
            self._lock.release()


def check_appends(key: str, ops: list[Operation], final: str) -> list[str]:
    """What the final read of a list-append key says about its acknowledged appends.

    Every append's token is unique, so: an acknowledged token missing from the
    final value was lost; a token there twice was duplicated; a token no
    client ever appended is a phantom; and if append A was acknowledged
    before append B was called, A must come first, or they were reordered.
    """
    problems: list[str] = []
    tokens = final.split()
    position: dict[str, int] = {}
    for i, t in enumerate(tokens):
        position.setdefault(t, i)
    appends = [op for op in ops if op.input.get("op") == "append"]
    sent = {op.input["value"].strip() for op in appends}
    acked = [op for op in appends if op.ret is not None]
    lost = [op.input["value"].strip() for op in acked if op.input["value"].strip() not in position]
    if lost:
        problems.append(f"{key}: {len(lost)} acknowledged append(s) lost, e.g. {lost[:3]}")
    dup = [t for t, n in Counter(tokens).items() if n > 1]
    if dup:
        problems.append(f"{key}: {len(dup)} append(s) duplicated, e.g. {dup[:3]}")
    phantom = [t for t in position if t not in sent]
    if phantom:
        problems.append(f"{key}: {len(phantom)} value(s) nobody appended, e.g. {phantom[:3]}")
    # Reordering: sort acknowledged appends by return; for each B, every A that
    # returned before B's call must sit before B (prefix maximum of positions).
    present = [op for op in acked if op.input["value"].strip() in position]
    by_ret = sorted(present, key=lambda op: op.ret)  # type: ignore[arg-type,return-value]
    rets: list[int] = [op.ret for op in by_ret]  # type: ignore[misc]  # acknowledged: every one returned
    prefix_max: list[int] = []
    for op in by_ret:
        p = position[op.input["value"].strip()]
        prefix_max.append(max(p, prefix_max[-1]) if prefix_max else p)
    reordered = []
    for b in present:
        k = bisect.bisect_left(rets, b.call)  # appends acknowledged strictly before b was called
        if k and prefix_max[k - 1] > position[b.input["value"].strip()]:
            reordered.append(b.input["value"].strip())
    if reordered:
        problems.append(f"{key}: {len(reordered)} acknowledged append(s) reordered, e.g. {reordered[:3]}")
    return problems


def window_throughputs(answered_per_second: list[int], ran: float, window: float) -> list[float]:
    """Answered calls per second in each full ``window`` of the timed part, one after another.

    The run's average hides an outage: 40 s at 0 calls/s in a ten-minute run
    still averages well above any bar. A window shorter than ``window`` at the
    end (the rest of the run) is left out: it would be judged on too little.
    """
    step = max(1, round(window))
    full = int(ran // step)
    return [round(sum(answered_per_second[i * step : (i + 1) * step]) / step, 1) for i in range(full)]


def slow_windows(per_window: list[float], window: float, minimum: float) -> list[str]:
    """The invalid-run findings for the windows below ``minimum`` (one line for them all)."""
    step = max(1, round(window))
    slow = [(i, rate) for i, rate in enumerate(per_window) if rate < minimum]
    if not slow:
        return []
    shown = ", ".join(f"{i * step}-{(i + 1) * step} s: {rate:g}/s" for i, rate in slow[:5]) + (" ..." if len(slow) > 5 else "")
    return [f"throughput below the minimum {minimum:g}/s in {len(slow)} of {len(per_window)} windows of {step} s ({shown})"]


class FinalReadFailed(Exception):
    """A target's final read got no answer in its time: the run is invalid, not passed."""


def check_final_reads(windows: Iterable[Any], read: Callable[[str], str], findings: Findings) -> int | None:
    """Read every list-append key that has appends once more, after the final heal, and check them.

    ``read(key)`` is the target's linearizable read; it raises
    :class:`FinalReadFailed` when it gets no answer. Each key's appends go
    through :func:`check_appends`. Returns how many keys were read, or None
    after the first failed read (noted in ``findings.invalid``; the other keys
    are not read: the run is invalid whatever they hold).
    """
    checked = 0
    for w in windows:
        history = w.history()
        for key in w.keys("list-append"):
            ops = [op for op in history if op.input["key"] == key]
            if not ops:
                continue
            try:
                final = read(key)
            except FinalReadFailed as exc:
                findings.invalid.append(f"final read of {key} failed: {exc}")
                return None
            checked += 1
            findings.violations.extend(check_appends(key, ops, final))
    return checked
