"""Files and directories only this user may open: data at rest is 0600 and 0700, whatever the umask.

A node's state (Raft journals, persisted actors, MapReduce runs, an agent's
files) holds whatever the application stores, so another local user has no
business reading it. The mode given to ``open``/``mkdir`` is filtered by the
umask, which can only remove bits: creating with 0600/0700 is never more
open than that, and the explicit ``chmod`` after creation makes the mode
exactly that even under an odd umask (0o277 would leave a file we cannot
write). Directories that already exist are left as they are: a ``--data-dir``
the user made is the user's choice.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dirs(path: str | os.PathLike[str]) -> Path:
    """``mkdir -p path``, every directory made here 0700; returns the path."""
    target = Path(path)
    missing: list[Path] = []
    p = target
    while not os.path.lexists(p) and p != p.parent:
        missing.append(p)
        p = p.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            continue  # made by a racing process (or a file: the next mkdir, or the caller, says so)
        os.chmod(directory, DIR_MODE)
    if not target.is_dir():
        raise NotADirectoryError(f"{target} exists and is not a directory")
    return target


def open_private(path: str | os.PathLike[str], flags: int) -> int:
    """``os.open(path, flags | O_CREAT)`` with the file 0600 (also if it already existed)."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def socket_directory(path: str) -> str:
    """``path`` as this user's directory for ipc:// sockets: made 0700 on first use, refused unless ours.

    It sits in the shared temporary directory, so another user can make it
    first; then no default endpoint can be made, and the refusal says whose it
    is and the way out (the path is not ours to remove in a sticky /tmp).
    """
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if st.st_uid != os.getuid() or not stat.S_ISDIR(st.st_mode):
        what = "is not a directory" if not stat.S_ISDIR(st.st_mode) else f"belongs to {owner_name(st.st_uid)}"
        raise PermissionError(
            errno.EACCES,
            f"cannot use {path} for this user's ipc:// sockets: it {what} (made by someone else first, or left "
            f"behind); set TMPDIR to a directory of your own (e.g. `mkdir -p -m 700 ~/.cache/tmp && export "
            f"TMPDIR=~/.cache/tmp`), give explicit endpoints (--endpoint), or have root remove {path}",
        )
    if st.st_mode & 0o077:
        os.chmod(path, DIR_MODE)
    return path


def owner_name(uid: int) -> str:
    """A uid as a person reads it: "alice (uid 1000)"."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
