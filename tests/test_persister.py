"""The Persister: durable, atomic, and loud about damage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actors import CorruptStateError, Persister


def test_round_trip_and_size(tmp_path: Path) -> None:
    p = Persister(tmp_path / "state")
    assert p.load() is None and p.size() == 0
    p.save(b"hello")
    assert p.load() == b"hello" and p.size() == 5
    p.save(b"")
    assert p.load() == b"" and p.size() == 0
    assert Persister(tmp_path / "state").size() == 0


def test_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    p = Persister(tmp_path / "state")
    for i in range(5):
        p.save(bytes([i]) * 100)
    assert os.listdir(tmp_path) == ["state"]


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    p = Persister(tmp_path / "state")
    p.save(b"x" * 100)
    raw = (tmp_path / "state").read_bytes()
    (tmp_path / "state").write_bytes(raw[:-10])
    with pytest.raises(CorruptStateError, match="truncated"):
        p.load()
    (tmp_path / "state").write_bytes(raw[:5])
    with pytest.raises(CorruptStateError, match="truncated"):
        p.load()


def test_damaged_bytes_fail_the_checksum(tmp_path: Path) -> None:
    p = Persister(tmp_path / "state")
    p.save(b"important state")
    raw = bytearray((tmp_path / "state").read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / "state").write_bytes(bytes(raw))
    with pytest.raises(CorruptStateError, match="checksum"):
        p.load()


def test_foreign_file_is_not_read_as_state(tmp_path: Path) -> None:
    (tmp_path / "state").write_bytes(b"this is somebody else's file")
    with pytest.raises(CorruptStateError, match="not a zactor state file"):
        Persister(tmp_path / "state").load()


def test_empty_file_is_an_error_not_an_empty_state(tmp_path: Path) -> None:
    (tmp_path / "state").write_bytes(b"")
    with pytest.raises(CorruptStateError):
        Persister(tmp_path / "state").load()
