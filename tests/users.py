"""A second unix user for the attacks that need one: another person on the same machine.

Created with ``useradd`` when the tests run as root (as CI does) and removed
after, by the session fixture ``other_user`` (tests/conftest.py); skipped
with the reason otherwise. The attacker's steps run in a
forked child that drops to that user (``setgid``/``setuid``), so they are
done with exactly that user's rights, by a real process. The interpreter
lives under ``/root``, which the user cannot read, hence a fork (modules
already loaded) rather than a fresh ``runuser python``.
"""

from __future__ import annotations

import os
import pickle
import pwd
import subprocess
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.helpers import readable


def make_user() -> User:
    """A fresh unix user (no home, no shell); remove it with :func:`remove_user`."""
    name = f"zatk{os.getpid()}{os.urandom(2).hex()}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True, timeout=60)
    entry = pwd.getpwnam(name)
    return User(name, entry.pw_uid, entry.pw_gid)


def remove_user(user: User) -> None:
    subprocess.run(["userdel", user.name], check=False, timeout=60)


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


class AttackerFailed(AssertionError):
    """The attacker's step raised (its traceback is the message)."""


def as_user(user: User, step: Callable[..., Any], *args: Any, timeout: float = 30.0) -> Any:
    """Run ``step(*args)`` in a forked child as ``user``; its return value (pickled back), or AttackerFailed."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the user, run, report, and leave without running the parent's cleanup
        status = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(user.gid)
            os.setuid(user.uid)
            result: tuple[str, Any] = ("ok", step(*args))
        except BaseException:
            result = ("error", traceback.format_exc())
        try:
            data = pickle.dumps(result)
            view = memoryview(data)
            while view:
                view = view[os.write(write_end, view) :]
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    try:
        while True:
            if not readable(read_end, timeout):
                os.kill(pid, 9)
                raise AttackerFailed(f"the attacker's step did not finish within {timeout} s")
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "error":
        raise AttackerFailed(f"the attacker's step raised:\n{value}")
    return value
