"""Durable state for an actor: one file, replaced atomically, checked on load.

``save`` writes a temporary file beside the target, fsyncs it, renames it over
the target and fsyncs the directory, so after a crash at any instant the file
holds either the old state or the new one, and a completed ``save`` survives a
power cut. The file carries a magic, a format version, the payload length and
a CRC32, so a truncated or damaged file raises :class:`CorruptStateError`
naming the file and what is wrong; it is never read as empty. A missing file
means "never saved" (``load`` returns None).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from actors.errors import CorruptStateError
from transport.private_files import open_private, private_dirs

_MAGIC = b"ZST"
_VERSION = 1
_HEADER = struct.Struct(">3sBQI")  # magic, version, payload length, crc32


class Persister:
    """Saves and loads one blob of bytes at ``path``."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._size: int | None = None

    def __repr__(self) -> str:
        return f"<Persister {self.path}>"

    def save(self, data: bytes) -> None:
        """Replace the stored state with ``data``, durably (see the module docstring)."""
        payload = bytes(data)
        header = _HEADER.pack(_MAGIC, _VERSION, len(payload), zlib.crc32(payload))
        replace_atomically(self.path, header + payload, fsync=self.fsync)
        self._size = len(payload)

    def load(self) -> bytes | None:
        """The stored state, None if nothing was ever saved; CorruptStateError if damaged."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._size = 0
            return None
        if len(raw) < _HEADER.size:
            raise CorruptStateError(
                f"state file {self.path} is truncated: {len(raw)} bytes, shorter than its {_HEADER.size}-byte header"
            )
        magic, version, length, crc = _HEADER.unpack_from(raw)
        if magic != _MAGIC:
            raise CorruptStateError(f"state file {self.path} is not a zactor state file (magic {magic!r})")
        if version != _VERSION:
            raise CorruptStateError(f"state file {self.path} has format version {version}; this zactor reads {_VERSION}")
        payload = raw[_HEADER.size :]
        if len(payload) != length:
            raise CorruptStateError(
                f"state file {self.path} is truncated or padded: header says {length} bytes, found {len(payload)}"
            )
        if zlib.crc32(payload) != crc:
            raise CorruptStateError(f"state file {self.path} fails its checksum: the contents are damaged")
        self._size = length
        return payload

    def size(self) -> int:
        """Bytes of state stored (the payload, without the header)."""
        if self._size is None:
            try:
                self.load()
            except CorruptStateError:
                return self.path.stat().st_size
        return self._size or 0


def replace_atomically(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Make ``data`` the contents of ``path`` so that a crash at any instant leaves old or new, never a mix.

    A temporary file beside the target is written and fsync'd, renamed over
    the target, and the directory is fsync'd so the rename itself survives.
    """
    private_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = open_private(tmp, os.O_WRONLY | os.O_TRUNC)  # 0600: state is nobody else's to read
    try:
        write_all(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if fsync:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
