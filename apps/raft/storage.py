"""A peer's durable state: term, vote, log and snapshot, saved together and atomically.

Each save writes the whole persistent state through the runtime's Persister
(temporary file, fsync, rename, fsync of the directory), so after a kill -9
at any instant the file holds the state of one complete save: a torn write is
impossible, and a damaged file is refused with CorruptStateError rather than
read as a fresh peer. The raft state (term, vote, log, snapshot position) and
the snapshot's bytes are two sections, so their sizes can be reported apart
(the lab bounds the first).
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

from actors import CorruptStateError, Persister
from apps.raft.core import HardState, RaftCore, Restored, Snapshot

_SECTIONS = struct.Struct(">QQ")


class RaftStorage:
    def __init__(self, directory: str | Path, *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.persister = Persister(self.directory / "raft-state", fsync=fsync)
        self.raft_state_size = 0
        self.snapshot_size = 0

    def save(self, core: RaftCore) -> None:
        state = pickle.dumps(
            (core.term, core.voted_for, core.log.snapshot_index, core.log.snapshot_term, tuple(core.log.entries)),
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        snapshot = core.snapshot_data
        self.persister.save(_SECTIONS.pack(len(state), len(snapshot)) + state + snapshot)
        self.raft_state_size, self.snapshot_size = len(state), len(snapshot)

    def load(self) -> Restored | None:
        """What was saved last, or None for a peer that never saved anything."""
        raw = self.persister.load()
        if raw is None:
            return None
        try:
            n_state, n_snap = _SECTIONS.unpack_from(raw)
            body = raw[_SECTIONS.size :]
            if len(body) != n_state + n_snap:
                raise ValueError("section lengths do not add up")
            term, voted_for, snap_index, snap_term, entries = pickle.loads(body[:n_state])
        except (ValueError, struct.error, pickle.UnpicklingError, EOFError, TypeError) as exc:
            raise CorruptStateError(f"raft state in {self.persister.path} is unreadable: {exc}") from exc
        self.raft_state_size, self.snapshot_size = n_state, n_snap
        snapshot = Snapshot(snap_index, snap_term, body[n_state:]) if snap_index else None
        return Restored(HardState(term, voted_for), snapshot, tuple(entries))
