"""Raft's messages (Figure 2 of the extended paper, plus InstallSnapshot) and the apply stream."""

from __future__ import annotations

from typing import Any

from apps.raft.membership import Membership
from transport.message import message


@message
class Entry:
    term: int
    index: int
    command: Any


@message
class RequestVote:
    term: int
    src: int
    dst: int
    last_log_index: int
    last_log_term: int


@message
class RequestVoteReply:
    term: int
    src: int
    dst: int
    granted: bool


@message
class AppendEntries:
    term: int
    src: int
    dst: int
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int
    read_round: int = 0
    """The leader's latest ReadIndex round when it sent this; the reply echoes it."""


@message
class AppendEntriesReply:
    term: int
    src: int
    dst: int
    success: bool
    match_index: int
    """On success: the last index now known to match the leader's log."""
    conflict_term: int
    """On failure: the term of the follower's entry at prev_log_index (0: it has none there)."""
    conflict_index: int
    """On failure: the first index of conflict_term in the follower's log, or its log length + 1."""
    read_round: int = 0
    """The read_round of the AppendEntries this answers: the follower still took the sender as leader then."""


@message
class InstallSnapshot:
    term: int
    src: int
    dst: int
    last_included_index: int
    last_included_term: int
    data: bytes
    membership: Membership | None = None
    """The configuration as of last_included_index (a leader always sends it)."""


@message
class InstallSnapshotReply:
    term: int
    src: int
    dst: int
    last_included_index: int


@message
class ReadState:
    """A confirmed ReadIndex read: answer it once the service has applied ``index``."""

    request_id: Any
    index: int


Message = RequestVote | RequestVoteReply | AppendEntries | AppendEntriesReply | InstallSnapshot | InstallSnapshotReply
REQUEST_TYPES = ("RequestVote", "AppendEntries", "InstallSnapshot")
REPLY_TYPES = ("RequestVoteReply", "AppendEntriesReply", "InstallSnapshotReply")


@message
class ApplyMsg:
    """What the service receives, in index order, exactly once each (the lab's fields)."""

    command_valid: bool = False
    command: Any = None
    command_index: int = 0
    command_term: int = 0
    snapshot_valid: bool = False
    snapshot: bytes = b""
    snapshot_term: int = 0
    snapshot_index: int = 0
