"""The Journal: appends survive, a torn tail is cut, damage before the tail is refused."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from actors import CorruptStateError, Journal


def test_appends_read_back_in_order(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j")
    assert j.load() == []
    j.append([b"one", b""])
    j.append([b"three"])
    j.append([])
    j.close()
    again = Journal(tmp_path / "j")
    assert again.load() == [b"one", b"", b"three"]
    assert again.cut_bytes == 0 and again.size() == os.path.getsize(tmp_path / "j")


def test_rewrite_replaces_everything_and_appends_continue(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j")
    j.append([b"a" * 100, b"b" * 100])
    j.rewrite([b"c"])
    j.append([b"d"])
    assert Journal(tmp_path / "j").load() == [b"c", b"d"]
    assert sorted(os.listdir(tmp_path)) == ["j"]


@pytest.mark.parametrize("keep", range(1, 13))
def test_a_torn_last_append_is_cut_at_every_length(tmp_path: Path, keep: int) -> None:
    j = Journal(tmp_path / "j")
    j.append([b"kept-1", b"kept-2"])
    whole = os.path.getsize(tmp_path / "j")
    j.append([b"torn-record"])  # 8 bytes of header + 11 of payload
    j.close()
    with open(tmp_path / "j", "r+b") as f:
        f.truncate(whole + keep)
    again = Journal(tmp_path / "j")
    assert again.load() == [b"kept-1", b"kept-2"]
    assert again.cut_bytes == keep
    assert os.path.getsize(tmp_path / "j") == whole  # the cut is on disk, not only in memory
    again.append([b"after"])
    assert Journal(tmp_path / "j").load() == [b"kept-1", b"kept-2", b"after"]


def test_a_torn_tail_of_garbage_or_zeros_is_cut(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j")
    j.append([b"x" * 50])
    j.close()
    with open(tmp_path / "j", "ab") as f:
        f.write(b"\0" * 4096 + os.urandom(4096))
    again = Journal(tmp_path / "j")
    assert again.load() == [b"x" * 50]
    assert again.cut_bytes == 8192


def test_damage_before_the_tail_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j")
    j.append([b"first-record", b"second-record", b"third-record"])
    j.close()
    raw = bytearray((tmp_path / "j").read_bytes())
    raw[4 + 8 + 3] ^= 0x01  # a bit of the first record's payload
    (tmp_path / "j").write_bytes(bytes(raw))
    with pytest.raises(CorruptStateError, match=r"damaged at byte 4 .*valid record follows"):
        Journal(tmp_path / "j").load()
    assert (tmp_path / "j").read_bytes() == bytes(raw)  # nothing was cut


def test_a_damaged_length_field_is_refused(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j")
    j.append([b"a" * 20, b"b" * 20, b"c" * 20])
    j.close()
    raw = bytearray((tmp_path / "j").read_bytes())
    raw[4] = 0x7F  # the first record now claims to run far past the end of the file
    (tmp_path / "j").write_bytes(bytes(raw))
    with pytest.raises(CorruptStateError, match="damaged"):
        Journal(tmp_path / "j").load()


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    (tmp_path / "j").write_bytes(b"hello world, not a journal")
    with pytest.raises(CorruptStateError, match="not a zactor journal"):
        Journal(tmp_path / "j").load()


def test_a_torn_first_write_reads_as_empty(tmp_path: Path) -> None:
    (tmp_path / "j").write_bytes(b"ZJ")
    j = Journal(tmp_path / "j")
    assert j.load() == [] and j.cut_bytes == 2
    j.append([b"ok"])
    assert Journal(tmp_path / "j").load() == [b"ok"]


def test_a_failed_append_leaves_no_partial_record_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = Journal(tmp_path / "j")
    j.append([b"before"])
    real_write = os.write

    def disk_full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def short_then_full(fd: int, data: bytes) -> int:
        monkeypatch.setattr(os, "write", disk_full)
        return real_write(fd, bytes(data[:5]))  # part of the record lands, then the disk is full

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(OSError, match="No space left"):
        j.append([b"this one fails"])
    monkeypatch.setattr(os, "write", real_write)
    j.append([b"after"])
    assert Journal(tmp_path / "j").load() == [b"before", b"after"]
