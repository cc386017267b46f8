"""The mutation campaign's catalogue stays applicable: each named mutant changes its file in exactly one place.

The campaign itself runs on demand (``python -m benchmarks.mutate``); what CI
keeps is that an edit to the code does not silently turn a mutant into a
no-op or a patch that no longer applies.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.mutate import MUTANTS, ROOT, TARGETS, Mutant, Outcome, apply, copy_tree, score


def test_the_catalogue_names_at_least_fifteen_distinct_bugs_over_every_target_file():
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names)) >= 15
    assert {m.path for m in MUTANTS} == {p for paths in TARGETS.values() for p in paths}
    assert all(m.breaks and m.old != m.new for m in MUTANTS)


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_each_mutant_changes_its_file_in_exactly_one_place(mutant: Mutant):
    assert (ROOT / mutant.path).read_text().count(mutant.old) == 1


def test_apply_changes_the_copy_and_refuses_an_ambiguous_patch(tmp_path: Path):
    copy_tree(tmp_path)
    m = MUTANTS[0]
    original = (ROOT / m.path).read_text()
    apply(m, tmp_path)
    assert (tmp_path / m.path).read_text() == original.replace(m.old, m.new) != original
    assert (ROOT / m.path).read_text() == original  # the tree itself is untouched
    with pytest.raises(ValueError, match="occurs 0 times"):
        apply(Mutant("gone", "x", m.path, "no such text anywhere", "y"), tmp_path)


def test_the_score_leaves_equivalent_mutants_out_and_lists_survivors():
    outcomes = [Outcome("a", "", "f", "killed", "sim", 3.0), Outcome("b", "", "f", "survived"),
                Outcome("c", "", "f", "survived", equivalent="cannot be observed")]
    s = score(outcomes)
    assert (s["non_equivalent"], s["killed"], s["kill_rate"], s["survivors"], s["equivalent"]) == (2, 1, 0.5, ["b"], ["c"])
