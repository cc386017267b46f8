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

Test-only: ``Journal(path, lazy=True)`` (the soak tool's ``disk`` nemesis and
the KV simulation pass it in, through the storage they give the servers)
keeps appended bytes in process memory until the fsync, and writes and syncs
them together then. A SIGKILL thus loses exactly what a power cut would lose
from the page cache, which a plain kill -9 never does.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

from actors.errors import CorruptStateError
from actors.persister import replace_atomically, write_all

_FILE_HEADER = b"ZJL\x01"  # magic and format version
_RECORD = struct.Struct(">II")  # payload length, crc32 of (length bytes + payload)
_MAX_RECORD = 1 << 31

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
        """Bytes of torn tail the last ``load`` cut off (0 if the file was clean)."""
        self._fd: int | None = None
        self._size = 0
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
            self._size = 0
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
        while pos < len(raw):
            payload = _record_at(raw, pos)
            if payload is None:
                break
            records.append(payload)
            pos += _RECORD.size + len(payload)
        if pos < len(raw):
            following = _next_valid_record(raw, pos + 1)
            if following is not None:
                raise CorruptStateError(
                    f"journal {self.path} is damaged at byte {pos} (record {len(records) + 1}), "
                    f"and a valid record follows at byte {following}: this is not a torn append; "
                    "refusing to start from a state that lost acknowledged records"
                )
            self.cut_bytes = len(raw) - pos
            with open(self.path, "r+b") as f:
                f.truncate(pos)
                if self.fsync:
                    os.fsync(f.fileno())
        self._size = pos
        return records

    def append(self, records: Iterable[bytes]) -> None:
        """Add ``records`` at the end with one write and (if fsync is on) one fsync."""
        data = _encode(records)
        if not data:
            return
        fd = self._open()
        if self.lazy:
            self._unsynced += data
            self._size += len(data)
            if self.fsync:
                self.sync()
            return
        try:
            write_all(fd, data)
            if self.fsync:
                os.fdatasync(fd)
        except BaseException:
            # A failed append (a full disk, say) must not stay behind as a
            # bad record that later appends would bury in the middle.
            try:
                os.ftruncate(fd, self._size)
            except OSError:
                pass
            raise
        self._size += len(data)

    def sync(self) -> None:
        """Make every append durable; only the lazy disk mode ever has anything left to do here."""
        if not self._unsynced:
            return
        fd = self._open()
        durable = self._size - len(self._unsynced)
        try:
            write_all(fd, bytes(self._unsynced))
            os.fdatasync(fd)
        except BaseException:
            try:
                os.ftruncate(fd, durable)
            except OSError:
                pass
            raise
        self._unsynced.clear()

    def rewrite(self, records: Iterable[bytes]) -> None:
        """Replace the whole journal with ``records``, atomically."""
        self.close()
        self._unsynced.clear()
        data = _FILE_HEADER + _encode(records)
        replace_atomically(self.path, data, fsync=self.fsync)
        self._size = len(data)

    def size(self) -> int:
        """Bytes in the file, header included."""
        return self._size

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        if self._fd is None:
            if not self.path.exists():
                self.rewrite([])
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            self._size = os.fstat(self._fd).st_size
        return self._fd


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


def _next_valid_record(raw: bytes, start: int) -> int | None:
    """Where the first valid record at or after ``start`` begins, if any (a scan of the damaged tail)."""
    for pos in range(start, len(raw) - _RECORD.size + 1):
        if _record_at(raw, pos) is not None:
            return pos
    return None
