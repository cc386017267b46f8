"""Durable state that grows by appending: a file of checksummed records.

The :class:`~actors.persister.Persister` rewrites its whole file on every
save, which is right for small state and wrong for a log that grows with
every request: its cost would grow with the log. A ``Journal`` appends
records instead, so a save costs one write and one fsync of what is new,
however long the history. Records appended in one call share that fsync
(group commit).

A crash can leave the last append half-written. Each record carries its
length and a CRC32 of both, so ``load`` finds the first record that does not
check out. If no valid record follows it, it is a torn tail: that append never
completed, so nobody was told it was durable, and the tail is cut off the
file. If a valid record does follow, the damage is in the middle of what was
acknowledged, and ``load`` raises :class:`CorruptStateError` instead of
starting from a state that lost acknowledged records.

``rewrite`` replaces the whole file atomically; owners use it to drop records
that no longer matter (after a snapshot, say), so the file stays bounded.

Space is reserved ahead of the records (``RESERVE`` bytes of zeros at a
time, by ``posix_fallocate``), and an append writes into it at its offset.
An append that grows the file makes its fdatasync commit the file's new size
to the filesystem's journal as well; one inside the reserve writes data
only. On ext4 that halves the CPU of a small append's fdatasync and cuts
its wall time by a third (figures in the commit that brought it). So the
file ends in zeros, and ``load`` reads zeros after the last record as the
reserve, not as damage: no valid record is all zeros (its header holds a
CRC that is never zero for an empty one).

Test-only: ``Journal(path, lazy=True)`` (the soak tool's ``disk`` nemesis and
the KV simulation pass it in, through the storage they give the servers)
keeps appended bytes in process memory until the fsync, and writes and syncs
them together then. A SIGKILL thus loses exactly what a power cut would lose
from the page cache, which a plain kill -9 never does.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from actors.errors import CorruptStateError
from actors.persister import replace_atomically

_FILE_HEADER = b"ZJL\x01"  # magic and format version
_RECORD = struct.Struct(">II")  # payload length, crc32 of (length bytes + payload)
_MAX_RECORD = 1 << 31
_NON_ZERO = re.compile(rb"[^\x00]")
RESERVE = 1 << 20
"""Bytes of zeros reserved past the records each time an append reaches the end of the file."""

log = logging.getLogger(__name__)


def _crc(length: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(length.to_bytes(4, "big")))


def _encode(records: Iterable[bytes]) -> bytes:
    parts = []
    for payload in records:
        if len(payload) >= _MAX_RECORD:
            raise ValueError(f"a journal record is limited to {_MAX_RECORD - 1} bytes, got {len(payload)}")
        parts.append(_RECORD.pack(len(payload), _crc(len(payload), payload)))
        parts.append(payload)
    return b"".join(parts)


class Journal:
    """Appends records of bytes to ``path``; reads them back, cutting a torn tail."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True, lazy: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.cut_bytes = 0
        """Bytes of torn tail the last ``load`` cut off, up to its last non-zero byte (0 if none)."""
        self._fd: int | None = None
        self._size: int | None = None  # where the records end (None: not read yet)
        self._allocated = 0  # the file's length: the records, then zeros reserved for appends
        self.lazy = lazy
        """Test-only page-cache model: unsynced appends live in ``_unsynced`` until :meth:`sync`."""
        self._unsynced = bytearray()
        if self.lazy:
            log.info("journal %s: lazy disk (test-only): appends reach the file only at fsync", self.path)

    def __repr__(self) -> str:
        return f"<Journal {self.path}>"

    def load(self) -> list[bytes]:
        """Every complete record in order; [] for a missing file. Cuts a torn tail, raises on worse."""
        self.close()
        self.cut_bytes = 0
        self._unsynced.clear()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._size = self._allocated = 0
            return []
        if len(raw) < len(_FILE_HEADER):
            if _FILE_HEADER.startswith(raw):  # the first write itself was torn
                self.cut_bytes = len(raw)
                self.rewrite([])
                return []
            raise CorruptStateError(f"journal {self.path} is not a zactor journal ({len(raw)} bytes)")
        if raw[: len(_FILE_HEADER)] != _FILE_HEADER:
            raise CorruptStateError(
                f"journal {self.path} is not a zactor journal, or has another format version "
                f"(starts with {raw[:4]!r}, expected {_FILE_HEADER!r})"
            )
        records: list[bytes] = []
        pos = len(_FILE_HEADER)
        for at, payload in _valid_records(raw):
            records.append(payload)
            pos = at + _RECORD.size + len(payload)
        end = len(raw.rstrip(b"\0")) if pos < len(raw) else pos  # past it only the reserve's zeros
        if end > pos:
            following = _next_valid_record(raw, pos + 1, end)
            if following is not None:
                raise CorruptStateError(
                    f"journal {self.path} is damaged at byte {pos} (record {len(records) + 1}), "
                    f"and a valid record follows at byte {following}: this is not a torn append; "
                    "refusing to start from a state that lost acknowledged records"
                )
            self.cut_bytes = end - pos
            with open(self.path, "r+b") as f:
                f.truncate(pos)
                if self.fsync:
                    os.fsync(f.fileno())
            raw = raw[:pos]
        self._size, self._allocated = pos, len(raw)
        return records

    def append(self, records: Iterable[bytes]) -> None:
        """Add ``records`` at the end with one write and (if fsync is on) one fsync."""
        data = _encode(records)
        if not data:
            return
        fd = self._open()
        assert self._size is not None  # _open reads the file first
        if self.lazy:
            self._unsynced += data
            self._size += len(data)
            if self.fsync:
                self.sync()
            return
        self._write(fd, self._size, data, self.fsync)
        self._size += len(data)

    def sync(self) -> None:
        """Make every append durable; only the lazy disk mode ever has anything left to do here."""
        if not self._unsynced:
            return
        fd = self._open()
        assert self._size is not None
        self._write(fd, self._size - len(self._unsynced), bytes(self._unsynced), True)
        self._unsynced.clear()

    def _write(self, fd: int, offset: int, data: bytes, sync: bool) -> None:
        """Write ``data`` at ``offset`` (the end of the records), into the reserve, growing it first if short."""
        if offset + len(data) > self._allocated:
            try:
                os.posix_fallocate(fd, self._allocated, offset + len(data) + RESERVE - self._allocated)
                self._allocated = offset + len(data) + RESERVE
            except OSError:  # a filesystem that cannot reserve (or a full one): the write grows the file
                pass
        try:
            view = memoryview(data)
            while view:
                view = view[os.pwrite(fd, view, offset + len(data) - len(view)) :]
            if sync:
                os.fdatasync(fd)
        except BaseException:
            # A failed append (a full disk, say) must not stay behind as a
            # bad record that later appends would bury in the middle.
            try:
                os.ftruncate(fd, offset)
                self._allocated = offset
            except OSError:
                pass
            raise
        self._allocated = max(self._allocated, offset + len(data))

    def rewrite(self, records: Iterable[bytes]) -> None:
        """Replace the whole journal with ``records``, atomically."""
        self.close()
        self._unsynced.clear()
        data = _FILE_HEADER + _encode(records)
        replace_atomically(self.path, data, fsync=self.fsync)
        self._size = self._allocated = len(data)

    def size(self) -> int:
        """Bytes of the records, header included (the file also holds the reserve's zeros); 0 before
        the journal is read (by ``load``, or by the first append), as before the reserve existed."""
        return self._size or 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        """The file open for writing; read first if it was not (appends go where the records end)."""
        if self._fd is None:
            if self._size is None:
                self.load()
            if not self.path.exists():
                self.rewrite([])
            self._fd = os.open(self.path, os.O_WRONLY)
        return self._fd


def record_spans(raw: bytes) -> list[tuple[int, int]]:
    """Where each valid record lies in a journal file's bytes ``raw``: (first byte of its header, byte after
    its payload), in order, up to the first that does not check out; [] for bytes that are not a journal.

    For a tool that damages a journal on purpose and must know where the
    records are (the soak's bit-flip nemesis), so that only this module knows
    the format; it takes the bytes the tool read, so the file is read once.
    """
    if raw[: len(_FILE_HEADER)] != _FILE_HEADER:
        return []
    return [(pos, pos + _RECORD.size + len(payload)) for pos, payload in _valid_records(raw)]


def _valid_records(raw: bytes) -> Iterator[tuple[int, bytes]]:
    """(offset, payload) of each record of a journal's bytes, header skipped, until one does not check out."""
    pos = len(_FILE_HEADER)
    while (payload := _record_at(raw, pos)) is not None:
        yield pos, payload
        pos += _RECORD.size + len(payload)


def _record_at(raw: bytes, pos: int) -> bytes | None:
    """The payload of a valid record starting at ``pos``, or None."""
    if pos + _RECORD.size > len(raw):
        return None
    length, crc = _RECORD.unpack_from(raw, pos)
    start = pos + _RECORD.size
    if start + length > len(raw):
        return None
    payload = raw[start : start + length]
    return payload if _crc(length, payload) == crc else None


def _next_valid_record(raw: bytes, start: int, end: int) -> int | None:
    """Where the first valid record at or after ``start`` begins, if any (a scan of the damaged tail).

    Only starts before ``end``, the last non-zero byte, are tried, and runs of
    zeros are jumped (a C search finds the next non-zero byte): every valid
    record's header holds a non-zero byte, so a record starts at most a
    header's length before one. The reserve's zeros thus cost no Python loop.
    """
    pos = start
    while pos < end:
        found = _NON_ZERO.search(raw, pos, end)
        if found is None:
            return None
        nonzero = found.start()
        for candidate in range(max(pos, nonzero - _RECORD.size + 1), nonzero + 1):
            if _record_at(raw, candidate) is not None:
                return candidate
        pos = nonzero + 1
    return None
