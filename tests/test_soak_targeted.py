"""The sharper kvraft soak: targeted nemeses, and a planted bug only the state-machine-safety check catches.

The runs are real (server processes, SIGKILL, fsync) and take a minute or
so each, so they are ``slow``; the ``--help`` and flag checks are instant.
The planted bug is the campaign's ``restart-trusts-whole-log`` mutant
(``benchmarks/mutate.py``), applied to a copy of the tree as the campaign
does: a restarted peer takes its whole log as committed and applies entries
that a new leader then replaces, so one server has applied a command at an
index where the others applied another. ``burst``'s leader-crashed variant
makes the moment: the leader is killed holding a tail nobody else has.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from apps.soak.cli import SYSTEMS, build_parser
from benchmarks.mutate import MUTANTS, apply, copy_tree
from tests.processes import ROOT, soak_run


def test_help_lists_every_targeted_nemesis_on_a_line_of_its_own():
    text = build_parser().format_help()
    for name in ("burst", "vote", "stale"):
        assert name in SYSTEMS["kvraft"]
        [line] = [line for line in text.splitlines() if line.startswith(f"  {name} ")]
        assert len(line.split()) > 5, line  # says what it does


def test_targeted_nemeses_are_kvraft_only():
    for system in ("raft", "etcd", "mr"):
        assert not {"burst", "vote", "stale"} & set(SYSTEMS[system])
    proc = subprocess.run([sys.executable, "-m", "apps.cli", "soak", "raft", "--nemesis", "vote"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown nemesis vote" in proc.stderr


@pytest.mark.slow
def test_each_targeted_nemesis_hits_its_moment_and_clean_code_passes(tmp_path):
    code, summary, err = soak_run(tmp_path / "report", "kvraft", "--no-history", "--minutes", "0.75", "--seed", "11", "--nemesis", "burst,vote,stale",
                              "--min-throughput", "10")
    assert code == 0, err[-3000:]
    notes = {e["kind"]: [] for e in summary["events"]}
    for e in summary["events"]:
        notes[e["kind"]].append(e["note"])
        assert not e["error"], e
    assert set(notes) == {"burst", "vote", "stale"}, summary["events"]
    assert any("appended" in n and ("then was isolated" in n or "then was killed" in n) and " appended ? " not in n
               for n in notes["burst"]), notes["burst"]
    assert any("killed as its term rose" in n for n in notes["vote"]), notes["vote"]
    assert all("held back" in n for n in notes["stale"])
    safety = summary["state_machine_safety"]
    assert safety["conflicting_indexes"] == 0 and safety["indexes_checked"] > 1000
    assert min(safety["applies_recorded"]) > 0


@pytest.mark.slow
def test_a_peer_that_trusts_its_whole_log_after_a_restart_is_caught_by_state_machine_safety(tmp_path):
    [mutant] = [m for m in MUTANTS if m.name == "restart-trusts-whole-log"]
    tree = tmp_path / "tree"
    copy_tree(tree)
    apply(mutant, tree)
    # Seed 4's first burst fault is leader-crashed, at 3 s. The soak before the targeted nemeses and this
    # check ran the same mutant for a minute at seeds 1 and 2 with every nemesis it had, and found nothing.
    code, summary, err = soak_run(tmp_path / "report", "kvraft", "--no-history", "--minutes", "1", "--seed", "4", "--nemesis", "burst",
                              "--fail-fast", "--min-throughput", "10", tree=tree)
    assert code == 1, err[-3000:]
    assert summary["verdict"] == "violation"
    first = summary["violations"][0]
    assert first.startswith("state machine safety: server "), summary["violations"]
    assert summary["state_machine_safety"]["conflicting_indexes"] >= 1
