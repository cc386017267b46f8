"""The soak's state-machine-safety check: every server's apply log compared index by index over the whole run."""

from __future__ import annotations

from pathlib import Path

from apps.kvraft.messages import Append, NoOp, Put
from apps.kvraft.server import command_digest
from apps.soak.applied import AppliedChecker
from apps.soak.verdict import Findings


def write(checker: AppliedChecker, i: int, lines: list[tuple[int, object]], end: str = "\n") -> None:
    text = "".join(f"{index} {command_digest(cmd)}\n" for index, cmd in lines)
    with checker.path(i).open("a") as f:
        f.write(text[: -1] + end if text else end)


def test_replicas_that_applied_the_same_commands_pass(tmp_path: Path) -> None:
    findings = Findings()
    checker = AppliedChecker(tmp_path / "applied", 3, findings)
    log = [(1, NoOp(1)), (2, Put("k", "v", 7, 1)), (3, Append("l", "x ", 7, 2))]
    for i in range(3):
        write(checker, i, log)
    write(checker, 2, log[1:])  # server 2 restarted from its snapshot at 1 and applied 2 and 3 again
    summary = checker.finish()
    assert findings.violations == []
    assert summary["indexes_checked"] == 3
    assert summary["applies_recorded"] == [3, 3, 5]
    assert summary["conflicting_indexes"] == 0
    assert summary["reapplied_after_restart"] == 2


def test_a_different_command_at_an_index_is_a_violation_naming_both_servers(tmp_path: Path) -> None:
    findings = Findings()
    checker = AppliedChecker(tmp_path / "applied", 2, findings)
    write(checker, 0, [(1, NoOp(1)), (2, Put("k", "a", 7, 1))])
    write(checker, 1, [(1, NoOp(1)), (2, Put("k", "b", 8, 1))])
    summary = checker.finish()
    assert summary["conflicting_indexes"] == 1
    [v] = findings.violations
    assert "state machine safety" in v and "index 2" in v and "server 1" in v and "server 0" in v
    assert command_digest(Put("k", "b", 8, 1)) in v


def test_the_same_server_applying_another_command_after_a_restart_is_a_violation(tmp_path: Path) -> None:
    findings = Findings()
    checker = AppliedChecker(tmp_path / "applied", 1, findings)
    write(checker, 0, [(1, NoOp(1)), (2, Put("k", "a", 7, 1))])
    checker.poll()
    write(checker, 0, [(2, Put("k", "other", 9, 1))])
    checker.finish()
    [v] = findings.violations
    assert "it had itself applied before" in v


def test_half_a_line_waits_for_the_rest_and_polls_see_only_what_is_new(tmp_path: Path) -> None:
    findings = Findings()
    checker = AppliedChecker(tmp_path / "applied", 1, findings)
    digest = command_digest(NoOp(4))
    checker.path(0).write_text(f"1 {digest}\n2 {digest[:5]}")
    checker.poll()
    assert checker.applies == [1]
    with checker.path(0).open("a") as f:
        f.write(f"{digest[5:]}\n")
    checker.poll()
    checker.poll()
    assert checker.applies == [2]
    assert checker.finish()["malformed_lines"] == 0
    assert findings.violations == []


def test_a_rerun_into_the_same_directory_starts_from_empty_logs(tmp_path: Path) -> None:
    first = AppliedChecker(tmp_path / "applied", 1, Findings())
    write(first, 0, [(1, Put("k", "a", 7, 1))])
    findings = Findings()
    again = AppliedChecker(tmp_path / "applied", 1, findings)
    write(again, 0, [(1, Put("k", "b", 7, 1))])
    assert again.finish()["applies_recorded"] == [1]
    assert findings.violations == []
