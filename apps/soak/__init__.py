"""Crash-recovery soak testing with a verdict: ``zactor soak SYSTEM``.

A nemesis schedule drawn from a seed (:mod:`apps.soak.schedule`), workload
clients that record histories (:mod:`apps.soak.workload`), windows checked
for linearizability as the run goes and the final reads after the last heal
(:mod:`apps.soak.verdict`), and a report (:mod:`apps.soak.report`). Each
system is driven through its own public client and test harness
(:mod:`apps.soak.kvraft`, :mod:`apps.soak.mr`).
"""

from apps.soak.schedule import NEMESES, Fault, make_schedule, parse_nemeses

__all__ = ["NEMESES", "Fault", "make_schedule", "parse_nemeses"]
