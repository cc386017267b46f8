"""The Raft core's boundary: its timing, its roles, the durable state it restarts from, and the Ready batch it hands its shell.

Kept apart from ``apps.raft.core`` (which re-exports them) so the core
module holds the protocol alone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from apps.raft.membership import Membership
from apps.raft.messages import ApplyMsg, Entry, Message, ReadState


class Role(enum.Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class Config:
    """Timing in ticks (the shell decides how long a tick is; 10 ms by default).

    The lab allows at most ten heartbeats a second and wants a new leader
    within five seconds of a failure; elections must time out well after a
    heartbeat is due, or a healthy leader would be deposed.
    """

    election_ticks_min: int = 40
    election_ticks_max: int = 80
    heartbeat_ticks: int = 10
    max_batch: int = 512
    """Most entries in one AppendEntries."""
    max_inflight: int = 2
    """Most unanswered AppendEntries carrying entries, per follower."""
    pipeline_partial_batches: bool = False
    """Whether a batch smaller than ``max_batch`` may go to a follower while another is unanswered.
    Off: only a follower that is behind by a full batch or more gets pipelined batches; in the steady
    state new entries wait for the answer and go together, so each follower's round (a decode, a write,
    an fsync, an answer) carries more entries. With 16 clients putting that cut the followers' CPU per
    put by a sixth. The simulations turn it on, to keep exploring every interleaving of batches."""
    catch_up_entries: int = 64
    """A learner counts as caught up, and may be promoted, when its match index is within this many entries
    of the leader's last index (one AppendEntries from level, at the default ``max_batch``)."""

    def __post_init__(self) -> None:
        if self.heartbeat_ticks < 1:
            raise ValueError(f"heartbeat_ticks must be at least 1, got {self.heartbeat_ticks}")
        if self.election_ticks_min <= 2 * self.heartbeat_ticks:
            raise ValueError(
                f"election_ticks_min ({self.election_ticks_min}) must exceed twice heartbeat_ticks ({self.heartbeat_ticks})"
            )
        if self.election_ticks_max < self.election_ticks_min:
            raise ValueError("election_ticks_max must be at least election_ticks_min")
        if self.max_batch < 1 or self.max_inflight < 1:
            raise ValueError("max_batch and max_inflight must be at least 1")
        if self.catch_up_entries < 0:
            raise ValueError("catch_up_entries must be at least 0")


@dataclass(frozen=True, slots=True)
class HardState:
    term: int
    voted_for: int | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    index: int
    term: int
    data: bytes
    membership: Membership | None = None
    """The configuration as of ``index``; None (a snapshot saved before membership changes) means the starting peers."""


@dataclass(frozen=True, slots=True)
class Restored:
    """What a restarted peer read back from its storage."""

    hard_state: HardState
    snapshot: Snapshot | None
    entries: tuple[Entry, ...]


@dataclass(slots=True)
class Ready:
    hard_state: HardState | None
    entries: tuple[Entry, ...]
    """To persist: first drop stored entries at index >= entries[0].index, then append these."""
    snapshot: Snapshot | None
    """To persist: replaces the stored log through snapshot.index."""
    messages: tuple[Message, ...]
    messages_after_persist: tuple[Message, ...]
    apply: tuple[ApplyMsg, ...]
    must_sync: bool
    """Whether anything above must be written (and fsync'd) before the messages go out."""
    read_states: tuple[ReadState, ...] = ()
    """ReadIndex reads whose leadership round is confirmed (see ``RaftCore.read_index``)."""
