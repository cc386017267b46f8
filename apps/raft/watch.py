"""Watch a running Raft cluster from outside: who answers, and who leads.

``zactor raft cluster`` and ``zactor kv cluster`` both print a line whenever
the leadership they see changes. Both look the same way: every 0.2 s they ask
each peer for its ``PeerStatus`` and take the leader of the highest term
among those that answered (a deposed leader cut off in a minority may still
think it leads, in an older term). The watching lives here, in apps.raft,
so the KV command can use it without apps.raft knowing about the KV service;
what each command prints stays with the command. The two commands also share
how they stop (Ctrl-C or SIGTERM) and where their peers keep state.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from actors import ActorDeadError, ActorSystem, AskTimeout
from actors.signals import setting
from apps.raft.peer import PEER_NAME, PeerStatus, Status
from transport.private_files import private_dirs


@dataclass(frozen=True)
class ClusterView:
    """One view of the cluster: when, which peers answered, and whom they say leads."""

    elapsed: float
    """Seconds since the watch's start, taken before the peers were asked."""
    up: list[PeerStatus]
    """The status of every peer that answered within the ask timeout, in endpoint order."""
    leader: PeerStatus | None
    """The answering leader of the highest term, or None when no peer that answered leads."""


def take_view(system: ActorSystem, endpoints: Sequence[str], *, elapsed: float = 0.0, timeout: float = 0.5) -> ClusterView:
    """Ask each peer for its status (a peer silent for ``timeout`` seconds counts as down)."""
    up = []
    for ep in endpoints:
        try:
            up.append(system.ref(ep, PEER_NAME).ask(Status(), timeout=timeout))
        except (AskTimeout, ActorDeadError):
            pass
    leaders = [s for s in up if s.role == "leader"]
    return ClusterView(elapsed, up, max(leaders, key=lambda s: s.term) if leaders else None)


def watch(
    system: ActorSystem,
    endpoints: Sequence[str],
    stop: threading.Event,
    *,
    started: float,
    duration: float | None = None,
    every: float = 0.2,
    timeout: float = 0.5,
) -> Iterator[ClusterView]:
    """ClusterView at the cluster every ``every`` seconds until ``stop`` is set or ``duration`` has passed.

    ``started`` is the ``time.monotonic()`` the duration and each view's
    ``elapsed`` count from (the command's start, not the first view's).
    """
    while not stop.wait(every):
        elapsed = time.monotonic() - started
        if duration is not None and elapsed > duration:
            return
        yield take_view(system, endpoints, elapsed=elapsed, timeout=timeout)


def stop_on_signals() -> threading.Event:
    """An event that Ctrl-C (SIGINT) and SIGTERM set, so the command stops its cluster and cleans up."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, setting(stop))
    signal.signal(signal.SIGTERM, setting(stop))
    return stop


@contextmanager
def data_root(data_dir: str | None, prefix: str) -> Iterator[Path]:
    """``data_dir`` (made if missing, and kept), or a new temporary directory removed at exit."""
    temporary = data_dir is None
    root = Path(data_dir or tempfile.mkdtemp(prefix=prefix))
    private_dirs(root)  # 0700 if made here: the peers' state is nobody else's to read
    try:
        yield root
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
