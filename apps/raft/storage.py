"""A peer's durable state: term, vote, log and snapshot, in one append-only journal.

Each Ready that changes durable state becomes one append to the runtime's
:class:`~actors.Journal`: a record for a new term or vote, a record for the
entries it adds, written together and fsync'd once, so entries that arrive
together share one fsync and a save costs what is new, not the whole log. An
entries record starting at or below the last stored index replaces the stored
entries from there on, as Raft's log truncation does.

A snapshot rewrites the journal atomically: the snapshot (always the first
record), its configuration (the second; a journal written before membership
changes has none, and its snapshot stands for the starting peers), then the
term and vote, then the entries after the snapshot. That is also how superseded
records (old votes, truncated entries) are dropped when they add up. On load
the records are replayed in order; a torn last append is cut by the journal
(it was never acknowledged), and anything worse raises CorruptStateError,
which stops the peer instead of letting it start with a wrong state.
"""

from __future__ import annotations

import logging
import pickle
import struct
from dataclasses import replace
from pathlib import Path

from actors import CorruptStateError, Journal
from apps.raft.core import HardState, RaftCore, Ready, Restored, Snapshot
from apps.raft.membership import Membership
from apps.raft.messages import Entry

JOURNAL_NAME = "raft-journal"
_HARD_STATE, _ENTRIES, _SNAPSHOT, _MEMBERSHIP = b"H", b"E", b"S", b"C"
_SNAPSHOT_HEAD = struct.Struct(">QQ")
_MIN_GARBAGE_FOR_REWRITE = 1 << 20

log = logging.getLogger(__name__)


class RaftStorage:
    """The peer's storage; ``lazy_disk`` puts it on the test-only page-cache model (see :class:`~actors.Journal`).

    Harnesses choose the class a peer uses (``PeerConfig.storage``), which is
    how the soak tool and the simulation run deliberately broken variants
    (``apps/soak/broken.py``) without a switch in here.
    """

    def __init__(self, directory: str | Path, *, fsync: bool = True, lazy_disk: bool = False) -> None:
        self.directory = Path(directory)
        self.journal = Journal(self.directory / JOURNAL_NAME, fsync=fsync, lazy=lazy_disk)
        self.snapshot_size = 0
        """Bytes of the service's snapshot."""
        self._snapshot_record = 0  # bytes the snapshot takes in the journal
        self._hard_state_record = 0  # bytes of the record that holds the current term and vote
        self._entry_records: list[tuple[int, int]] = []  # (first index, bytes) of each entries record
        self._last_index = 0
        self._garbage = 0  # bytes of records that later records superseded

    @property
    def raft_state_size(self) -> int:
        """Bytes of term, vote and log on disk: the journal without the snapshot's bytes."""
        return max(0, self.journal.size() - self._snapshot_record)

    def save(self, rd: Ready, core: RaftCore) -> None:
        """Make what ``rd`` asks to persist durable; ``core`` is the state it was taken from."""
        if rd.snapshot is not None or self._garbage > max(_MIN_GARBAGE_FOR_REWRITE, self.journal.size() // 2):
            self._rewrite(core)
            return
        records = []
        if rd.hard_state is not None:
            records.append(_encode_hard_state(rd.hard_state))
            self._note_hard_state(len(records[-1]))
        if rd.entries:
            records.append(_encode_entries(rd.entries))
            self._note_entries(rd.entries[0].index, rd.entries[-1].index, len(records[-1]))
        self.journal.append(records)

    def load(self) -> Restored | None:
        """What was saved, or None for a peer that never saved anything."""
        if (self.directory / "raft-state").exists():
            raise CorruptStateError(
                f"{self.directory} holds a raft-state file of an older zactor release; "
                "this release keeps a raft-journal and cannot read it"
            )
        records = self.journal.load()
        if not records:
            return None
        term, voted_for = 0, None
        snapshot: Snapshot | None = None
        entries: list[Entry] = []
        base = 0  # index of the last entry the snapshot covers
        for number, record in enumerate(records, 1):
            kind, body = record[:1], record[1:]
            try:
                if kind == _HARD_STATE:
                    term, voted_for = pickle.loads(body)
                    self._note_hard_state(len(record))
                elif kind == _SNAPSHOT:
                    if number != 1:
                        raise ValueError("a snapshot record is only ever written first, by a rewrite")
                    index, snap_term = _SNAPSHOT_HEAD.unpack_from(body)
                    snapshot = Snapshot(index, snap_term, bytes(body[_SNAPSHOT_HEAD.size :]))
                    base = index
                    self._snapshot_record, self.snapshot_size = len(record), len(snapshot.data)
                elif kind == _MEMBERSHIP:
                    if number != 2 or snapshot is None:
                        raise ValueError("a configuration record is only ever written right after a snapshot")
                    voters, learners, contexts, *next_id = pickle.loads(body)  # journals before next_id have three
                    snapshot = replace(snapshot, membership=Membership(tuple(voters), tuple(learners), tuple(contexts), *next_id))
                    self._snapshot_record += len(record)
                elif kind == _ENTRIES:
                    new = [Entry(t, i, c) for t, i, c in pickle.loads(body) if i > base]
                    if new:
                        first = new[0].index
                        if first > base + len(entries) + 1:
                            raise ValueError(f"entries from {first} leave a gap after {base + len(entries)}")
                        del entries[first - base - 1 :]
                        entries.extend(new)
                        self._note_entries(first, new[-1].index, len(record))
                else:
                    raise ValueError(f"unknown record kind {kind!r}")
            except (ValueError, TypeError, struct.error, pickle.UnpicklingError, EOFError) as exc:
                raise CorruptStateError(f"raft journal {self.journal.path}, record {number}: {exc}") from exc
        self._last_index = base + len(entries)
        return Restored(HardState(term, voted_for), snapshot, tuple(entries))

    def close(self) -> None:
        self.journal.close()

    def _rewrite(self, core: RaftCore) -> None:
        records = []
        self._snapshot_record = self.snapshot_size = 0
        if core.log.snapshot_index:
            records.append(_SNAPSHOT + _SNAPSHOT_HEAD.pack(core.log.snapshot_index, core.log.snapshot_term) + core.snapshot_data)
            m = core.snapshot_membership
            records.append(_MEMBERSHIP + pickle.dumps((m.voters, m.learners, m.contexts, m.fresh_id), protocol=pickle.HIGHEST_PROTOCOL))
            self._snapshot_record, self.snapshot_size = len(records[0]) + len(records[1]), len(core.snapshot_data)
        records.append(_encode_hard_state(core.hard_state))
        if core.log.entries:
            records.append(_encode_entries(core.log.entries))
        self.journal.rewrite(records)
        self._hard_state_record = 0
        self._entry_records = []
        self._garbage = 0
        self._last_index = core.log.last_index

    def _note_hard_state(self, size: int) -> None:
        self._garbage += self._hard_state_record
        self._hard_state_record = size

    def _note_entries(self, first: int, last: int, size: int) -> None:
        if first <= self._last_index:  # a truncation: records wholly at or after `first` are dead now
            while self._entry_records and self._entry_records[-1][0] >= first:
                self._garbage += self._entry_records.pop()[1]
        self._entry_records.append((first, size))
        self._last_index = last


def _encode_hard_state(hard_state: HardState) -> bytes:
    return _HARD_STATE + pickle.dumps((hard_state.term, hard_state.voted_for))


def _encode_entries(entries: tuple[Entry, ...] | list[Entry]) -> bytes:
    return _ENTRIES + pickle.dumps(tuple((e.term, e.index, e.command) for e in entries), protocol=pickle.HIGHEST_PROTOCOL)
