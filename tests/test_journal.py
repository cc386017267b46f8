"""The Journal: appends survive, a torn tail is cut, damage before the tail is refused.

A torn append is modelled as it happens: a prefix of the record written where
the records end, inside the zeros the journal reserved there.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from actors import CorruptStateError, Journal
from actors import journal as journal_module
from actors.journal import RESERVE, record_spans


def test_appends_read_back_in_order(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j")
    assert j.load() == []
    j.append([b"one", b""])
    j.append([b"three"])
    j.append([])
    j.close()
    again = Journal(tmp_path / "j")
    assert again.load() == [b"one", b"", b"three"]
    raw = (tmp_path / "j").read_bytes()
    assert again.cut_bytes == 0 and len(raw) >= again.size() + RESERVE // 2  # space reserved ahead
    assert raw[again.size() :].count(0) == len(raw) - again.size()  # and it is zeros, read as no record


def test_appends_go_on_where_the_reserve_begins_and_it_grows_when_used_up(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j")
    big = [bytes([n % 251 + 1]) * (RESERVE // 3) for n in range(7)]  # more than two reserves' worth
    for record in big:
        j.append([record])
    j.append([b"last"])
    assert Journal(tmp_path / "j").load() == [*big, b"last"]


def test_a_filesystem_that_cannot_reserve_space_still_gets_every_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    j = Journal(tmp_path / "j")
    j.append([b"one"])
    j.append([b"two"])
    assert os.path.getsize(tmp_path / "j") == j.size()  # no reserve: the file ends with the records
    assert Journal(tmp_path / "j").load() == [b"one", b"two"]


def test_rewrite_replaces_everything_and_appends_continue(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j")
    j.append([b"a" * 100, b"b" * 100])
    j.rewrite([b"c"])
    j.append([b"d"])
    assert Journal(tmp_path / "j").load() == [b"c", b"d"]
    assert sorted(os.listdir(tmp_path)) == ["j"]


def _tear(path: Path, at: int, keep: int) -> bytes:
    """Zero what an append wrote at ``at`` past its first ``keep`` bytes: what a crash mid-write leaves."""
    raw = bytearray(path.read_bytes())
    record_end = at + 8 + int.from_bytes(raw[at : at + 4], "big")
    raw[at + keep : record_end] = bytes(record_end - at - keep)
    path.write_bytes(bytes(raw))
    return bytes(raw[at : at + keep])


@pytest.mark.parametrize("keep", range(1, 19))
def test_a_torn_last_append_is_cut_at_every_length(tmp_path: Path, keep: int) -> None:
    j = Journal(tmp_path / "j")
    j.append([b"kept-1", b"kept-2"])
    whole = j.size()
    j.append([b"torn-record"])  # 8 bytes of header + 11 of payload
    j.close()
    written = _tear(tmp_path / "j", whole, keep)
    again = Journal(tmp_path / "j")
    assert again.load() == [b"kept-1", b"kept-2"]
    assert again.cut_bytes == len(written.rstrip(b"\0"))  # a prefix of zeros is the reserve's, not a tear
    raw = (tmp_path / "j").read_bytes()
    assert raw[whole:].count(0) == len(raw) - whole  # the cut is on disk, not only in memory
    again.append([b"after"])
    assert Journal(tmp_path / "j").load() == [b"kept-1", b"kept-2", b"after"]


def test_a_torn_tail_of_garbage_or_zeros_is_cut(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j")
    j.append([b"x" * 50])
    end = j.size()
    j.close()
    garbage = bytes(range(1, 256)) * 16 + b"\xff"  # 4,081 bytes, none of them zero
    with open(tmp_path / "j", "r+b") as f:
        f.seek(end)
        f.write(b"\0" * 4096 + garbage)
    again = Journal(tmp_path / "j")
    assert again.load() == [b"x" * 50]
    assert again.cut_bytes == 4096 + len(garbage)


def test_garbage_past_the_reserve_is_cut_without_a_try_at_every_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = Journal(tmp_path / "j")
    j.append([b"kept"])
    j.close()
    size = os.path.getsize(tmp_path / "j")
    tail = b"\x01half an append"
    with open(tmp_path / "j", "ab") as f:  # past the reserve, where no append of ours ever writes
        f.write(tail)
    tries = []
    real_record_at = journal_module._record_at

    def counted(raw: bytes, pos: int) -> bytes | None:
        tries.append(pos)
        return real_record_at(raw, pos)

    monkeypatch.setattr(journal_module, "_record_at", counted)
    again = Journal(tmp_path / "j")
    assert again.load() == [b"kept"]
    assert again.cut_bytes == size + len(tail) - again.size()
    assert len(tries) <= 2 + len(tail) + 8  # the records, then starts near the tail only, not one per reserved zero


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
    real_pwrite = os.pwrite

    def disk_full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def short_then_full(fd: int, data: bytes, offset: int) -> int:
        monkeypatch.setattr(os, "pwrite", disk_full)
        return real_pwrite(fd, bytes(data[:5]), offset)  # part of the record lands, then the disk is full

    monkeypatch.setattr(os, "pwrite", short_then_full)
    with pytest.raises(OSError, match="No space left"):
        j.append([b"this one fails"])
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    j.append([b"after"])
    assert Journal(tmp_path / "j").load() == [b"before", b"after"]


def test_record_spans_name_each_valid_record_and_stop_at_damage(tmp_path: Path) -> None:
    path = tmp_path / "j"
    assert record_spans(b"") == []  # an empty or missing file
    j = Journal(path, fsync=False)
    j.append([b"a", b"", b"ccc"])  # inside the reserve: zeros follow the records
    raw = bytearray(path.read_bytes())
    assert record_spans(bytes(raw)) == [(4, 13), (13, 21), (21, 32)]
    raw[14] ^= 0x01  # the second record's length field
    assert record_spans(bytes(raw)) == [(4, 13)]
    assert record_spans(b"not a journal at all") == []


def test_a_flip_anywhere_in_a_record_that_a_valid_one_follows_is_refused(tmp_path: Path) -> None:
    """The soak's bit-flip nemesis picks any bit of the first record's span: every such flip must fail the load."""
    path = tmp_path / "j"
    Journal(path, fsync=False).append([b"first", b"second record"])
    raw = path.read_bytes()
    start, end = record_spans(raw)[0]
    for pos in range(start, end):
        for bit in range(8):
            damaged = bytearray(raw)
            damaged[pos] ^= 1 << bit
            path.write_bytes(bytes(damaged))
            with pytest.raises(CorruptStateError, match="damaged at byte 4"):
                Journal(path, fsync=False).load()
