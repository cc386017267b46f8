"""The in-memory log: entries after the last snapshot, with the snapshot's index and term as the base."""

from __future__ import annotations

from apps.raft.messages import Entry


class InvariantError(RuntimeError):
    """A Raft invariant is broken: stop the peer rather than go on with a wrong state."""


class RaftLog:
    def __init__(self, snapshot_index: int = 0, snapshot_term: int = 0, entries: tuple[Entry, ...] = ()) -> None:
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self.entries: list[Entry] = list(entries)
        for offset, entry in enumerate(self.entries):
            if entry.index != snapshot_index + 1 + offset:
                raise InvariantError(f"log entry {entry.index} found at position {snapshot_index + 1 + offset}")

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot_term

    def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index``; None if compacted away (below the snapshot) or beyond the end."""
        if index == self.snapshot_index:
            return self.snapshot_term
        if index < self.snapshot_index or index > self.last_index:
            return None
        return self.entries[index - self.snapshot_index - 1].term

    def entry(self, index: int) -> Entry:
        if not self.snapshot_index < index <= self.last_index:
            raise InvariantError(f"entry {index} is not in the log ({self.snapshot_index + 1}..{self.last_index})")
        return self.entries[index - self.snapshot_index - 1]

    def slice(self, start: int, stop: int) -> list[Entry]:
        """Entries with start <= index < stop (start above the snapshot)."""
        base = self.snapshot_index + 1
        return self.entries[max(0, start - base) : max(0, stop - base)]

    def append(self, entry: Entry) -> None:
        if entry.index != self.last_index + 1:
            raise InvariantError(f"appending entry {entry.index} after {self.last_index}")
        self.entries.append(entry)

    def truncate_from(self, index: int) -> None:
        """Drop entries at ``index`` and after."""
        if index <= self.snapshot_index:
            raise InvariantError(f"cannot truncate at {index}: entries through {self.snapshot_index} are in the snapshot")
        del self.entries[index - self.snapshot_index - 1 :]

    def first_index_of_term(self, index: int) -> int:
        """The first index of the run of entries with the term of the entry at ``index``."""
        term = self.term_at(index)
        while index - 1 > self.snapshot_index and self.term_at(index - 1) == term:
            index -= 1
        return index

    def last_index_of_term(self, term: int) -> int | None:
        for entry in reversed(self.entries):
            if entry.term == term:
                return entry.index
            if entry.term < term:
                break
        return None

    def compact(self, index: int, term: int) -> None:
        """Make ``index`` (of ``term``) the new base: entries through it are in a snapshot now."""
        if index <= self.snapshot_index:
            return
        if index <= self.last_index and self.term_at(index) == term:
            self.entries = self.entries[index - self.snapshot_index :]
        else:
            self.entries = []
        self.snapshot_index, self.snapshot_term = index, term
