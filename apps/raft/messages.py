"""Raft's messages (Figure 2 of the extended paper, plus InstallSnapshot) and the apply stream.

Every one is members-only: only the cluster's own servers speak Raft, and a
client key that could send an AppendEntries of a high term could depose
leaders and write entries into logs.
"""

from __future__ import annotations

from typing import Any

from apps.raft.membership import Membership
from transport.message import members_only, message


@members_only
@message
class Entry:
    term: int
    index: int
    command: Any


@members_only
@message
class RequestVote:
    term: int
    src: int
    dst: int
    last_log_index: int
    last_log_term: int


@members_only
@message
class RequestVoteReply:
    term: int
    src: int
    dst: int
    granted: bool


@members_only
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


@members_only
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


@members_only
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


@members_only
@message
class InstallSnapshotReply:
    term: int
    src: int
    dst: int
    last_included_index: int


@members_only
@message
class MemberCheck:
    """A non-voter that has heard from no leader for an election timeout asks a voter whether it is still a member.

    A server removed while it was cut off (or whose last notice was lost) is
    sent nothing more by anyone; this is how it finds out. The term is the
    sender's, for the record only: it is never taken.
    """

    term: int
    src: int
    dst: int


@members_only
@message
class Removed:
    """Told to a server that a committed configuration leaves out for good (etcd's "member removed"): the answer to
    any message it sends a peer that knows this, and a leader's last word to the servers a change removed.

    Members only: it makes its receiver stop for good, so a client-role key may never send one."""

    term: int
    src: int
    dst: int
    membership: Membership
    """The committed configuration that has no place for ``dst`` (the receiver checks it leaves it out)."""


@members_only
@message
class ReadState:
    """A confirmed ReadIndex read: answer it once the service has applied ``index``."""

    request_id: Any
    index: int


Message = (
    RequestVote | RequestVoteReply | AppendEntries | AppendEntriesReply | InstallSnapshot | InstallSnapshotReply | MemberCheck | Removed
)
REQUEST_TYPES = ("RequestVote", "AppendEntries", "InstallSnapshot")
REPLY_TYPES = ("RequestVoteReply", "AppendEntriesReply", "InstallSnapshotReply")


@members_only
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
