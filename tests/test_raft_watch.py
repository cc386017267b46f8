"""apps.raft.watch's data directory rule, shared by ``zactor raft cluster`` and ``zactor kv cluster``."""

from __future__ import annotations

from pathlib import Path

import pytest

from apps.raft.watch import data_root


def test_a_temporary_data_root_is_removed_at_exit_even_after_an_error() -> None:
    with pytest.raises(RuntimeError), data_root(None, "zactor-test-") as root:
        assert root.is_dir() and root.name.startswith("zactor-test-")
        (root / "state").write_text("x")
        raise RuntimeError("the command failed")
    assert not root.exists()


def test_a_given_data_root_is_made_and_kept(tmp_path: Path) -> None:
    wanted = tmp_path / "a" / "b"
    with data_root(str(wanted), "zactor-test-") as root:
        assert root == wanted and root.is_dir()
        (root / "state").write_text("x")
    assert (wanted / "state").read_text() == "x"
