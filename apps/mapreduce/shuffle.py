"""Moving files between machines: a small actor that serves files in chunks, and the fetching side.

Each worker with its own working directory hosts a ``FileServer`` that
serves its map outputs (``mr-M-R``) to reducers; a coordinator started with
``--ship-input`` hosts one that serves the input files. A file travels as a
sequence of asks for (offset, size), so no message is bigger than a chunk
and a reducer writes what it fetched to its own disk as it goes.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors import Actor, ActorDeadError, AskTimeout, wait
from apps.mapreduce.protocol import Ping, Probe, ReadChunk
from transport.message import message
from transport.private_files import open_private

if TYPE_CHECKING:
    from actors import ActorSystem

log = logging.getLogger(__name__)

CHUNK = 4 << 20
"""Bytes per fetch ask: far below the transport's frame limit, big enough that asks are few."""

MAX_READ = 16 << 20
"""The most a server reads for one ask; a bigger request is refused, never silently shortened."""

FILES_NAME = "files"
"""The name a file server has in its process's actor system (a worker's, or the coordinator's for inputs)."""

INTERMEDIATE = re.compile(r"mr-\d+-\d+")


class FetchError(RuntimeError):
    """The serving side did not answer (it is gone) or refused the read."""


@message
class Refused:
    """A file server's answer to a read it will not serve: no such file, a bad range."""

    reason: str


class FileServer(Actor):
    """Serves byte ranges of the files ``resolve`` names; anything it does not name is refused.

    A read returns fewer bytes than asked for only at the end of the file
    (the files it serves are complete: written under a temporary name and
    renamed), so a reader stops at the first short read.
    """

    def __init__(self, resolve: Callable[[str], Path | None]) -> None:
        super().__init__()
        self.resolve = resolve

    def on_receive(self, message: Any) -> bytes | Refused | bool:
        # Never raises: a raising tell would stop the actor, and a stranger's bad request must not.
        if isinstance(message, Ping):
            return True
        if not isinstance(message, ReadChunk):
            log.warning("file server: ignored a %s", type(message).__name__)
            return Refused(f"a file server reads files; got a {type(message).__name__}")
        path = self.resolve(message.name) if isinstance(message.name, str) else None
        if path is None:
            return Refused(f"no such file here: {message.name!r}")
        if not (isinstance(message.offset, int) and isinstance(message.size, int)) or not (
            0 <= message.offset and 0 <= message.size <= MAX_READ
        ):
            return Refused(f"bad range {message.offset!r}+{message.size!r} (at most {MAX_READ} bytes an ask)")
        try:
            with open(path, "rb") as f:
                f.seek(message.offset)
                return f.read(message.size)
        except OSError as exc:
            return Refused(f"cannot read {message.name}: {exc}")


def intermediate_resolver(workdir: Path) -> Callable[[str], Path | None]:
    """Names a worker serves: its map outputs, nothing else (no paths, no ``..``)."""

    def resolve(name: str) -> Path | None:
        return workdir / name if INTERMEDIATE.fullmatch(name) else None

    return resolve


def input_resolver(files: tuple[str, ...]) -> Callable[[str], Path | None]:
    """Names a coordinator that ships inputs serves: ``input-I`` for the I-th input file."""

    def resolve(name: str) -> Path | None:
        m = re.fullmatch(r"input-(\d+)", name)
        return Path(files[int(m.group(1))]) if m and int(m.group(1)) < len(files) else None

    return resolve


def remote_reader(server: Any, name: str, timeout: float) -> Callable[[int, int], bytes]:
    """``read_at(offset, n)`` over a FileServer ref; raises FetchError when it does not answer."""

    def read_at(offset: int, n: int) -> bytes:
        parts = []
        while n > 0:
            want = min(n, CHUNK)
            chunk = _ask(server, ReadChunk(name, offset, want), timeout)
            parts.append(chunk)
            offset += len(chunk)
            n -= len(chunk)
            if len(chunk) < want:  # a short read is the end of the file
                break
        return b"".join(parts)

    return read_at


def fetch_to_file(server: Any, name: str, dest: Path, timeout: float) -> int:
    """Copy file ``name`` from a FileServer to ``dest`` (atomically), chunk by chunk; returns bytes."""
    tmp = dest.with_name(f".{dest.name}.part")
    offset = 0
    try:
        with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as f:
            while True:
                chunk = _ask(server, ReadChunk(name, offset, CHUNK), timeout)
                f.write(chunk)
                offset += len(chunk)
                if len(chunk) < CHUNK:  # a short read is the end of the file
                    break
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return offset


def _ask(server: Any, message: ReadChunk, timeout: float) -> bytes:
    """One chunk, with one retry: a single lost message is not yet a dead worker."""
    last: Exception | None = None
    for _ in range(2):
        try:
            chunk = server.ask(message, timeout=timeout)
        except (AskTimeout, ActorDeadError) as exc:
            last = exc
            continue
        if isinstance(chunk, Refused):  # the file is not there (a restarted worker) or the read was bad
            raise FetchError(f"{server!r} refused {message.name}: {chunk.reason}")
        if not isinstance(chunk, bytes):
            raise FetchError(f"{server!r} answered {type(chunk).__name__} for {message.name}")
        return chunk
    raise FetchError(f"{server!r} did not answer for {message.name} ({type(last).__name__})")


def unreachable(system: ActorSystem, endpoints: Iterable[str], timeout: float, tries: int = 2) -> list[str]:
    """The endpoints whose file server did not answer a ``Ping`` in any of ``tries`` rounds of ``timeout`` s.

    Every ping of a round is in flight at once, so a round costs one
    timeout however many workers are dead, and a reducer or the coordinator
    learns of all of them together (issue #14: one at a time, deaths piled up
    faster than they were found). The silent ones are asked once more, the
    same rule as a fetch's: a single lost message is not yet a dead worker.
    """
    silent = list(dict.fromkeys(endpoints))
    for _ in range(tries):
        if not silent:
            break
        silent = _one_round(system, silent, timeout)
    return silent


def _one_round(system: ActorSystem, endpoints: list[str], timeout: float) -> list[str]:
    """Ping each endpoint at once; those with no answer within ``timeout``.

    One ``wait`` on every ping: a reply is read off its connection only while
    someone waits on it, and ``wait`` reads them all together, so the first
    dead one does not use up the time the others' replies need. The asks'
    own deadline is later than ``timeout``, so the wait's last, non-blocking
    read still takes a reply that came in at the end.
    """
    pending: dict[str, Any] = {}
    silent: list[str] = []
    for endpoint in endpoints:
        try:
            pending[endpoint] = system.ref(endpoint, FILES_NAME).ask(Ping(), block=False, timeout=timeout + 1.0)
        except Exception as exc:  # a malformed endpoint, no key for its host: it cannot be reached either
            log.warning("cannot ping %r: %s", endpoint, exc)
            silent.append(endpoint)
    done, _ = wait(pending.values(), timeout)
    for endpoint, future in pending.items():
        if future not in done:
            silent.append(endpoint)
            continue
        try:
            future.get(timeout=0)
        except (AskTimeout, ActorDeadError):  # swept at its deadline; or the process serves no files: as good as gone
            silent.append(endpoint)
    return [ep for ep in endpoints if ep in silent]


class Prober(Actor):
    """Runs the coordinator's liveness checks on a thread of their own: a check waits up to two timeouts,
    and the coordinator must keep answering workers meanwhile. Answers a ``Probe`` with the silent endpoints."""

    def on_receive(self, message: Any) -> list[str] | None:
        if not isinstance(message, Probe):
            log.warning("prober: ignored a %s", type(message).__name__)
            return None
        assert self.actor_system is not None  # spawned by a system
        return unreachable(self.actor_system, message.endpoints, message.timeout)
