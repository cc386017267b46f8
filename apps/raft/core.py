"""Raft as a pure state machine: messages and ticks in, a Ready batch out.

Nothing here touches a socket, a clock, a thread or a disk. The shell that
runs a peer (``apps.raft.peer``) loops::

    core.step(message) / core.tick() / core.propose(command)
    while core.has_ready():
        rd = core.ready()
        send rd.messages (a leader's appends may leave before its own write)
        persist rd.hard_state, rd.snapshot, rd.entries (fsync if rd.must_sync)
        send rd.messages_after_persist; deliver rd.apply
        core.advance(rd)

Durable before acknowledged is a property of the Ready, not a convention:
vote grants, append acknowledgements and a candidate's requests for votes
sit in ``messages_after_persist``, and a leader counts its own entries
toward a majority only after ``advance`` says they are on disk. Everything
proposed between two Readys is persisted by one write (group commit).

Divergences from Figure 2, all standard: fast backtracking (a rejecting
follower names the conflicting term and its first index, so the leader
skips a term per round trip); a leader sends every entry a follower lacks in
one AppendEntries (up to ``max_batch``) with at most ``max_inflight``
unanswered ones per follower (a second only when a full batch waits, unless
``pipeline_partial_batches``), and retransmits on each heartbeat; no no-op
entry at the start of a term (the lab's tests expect commands at exact
indexes), so a new leader commits older entries with its first command.

ReadIndex (Raft thesis §6.4): ``read_index(id)`` on a leader records the
commit index as the read's index, once the leader has committed an entry of
its own term (until then the read waits; the service proposes a no-op when
its peer becomes leader). Reads that arrive together share one round of
leadership confirmation: every AppendEntries carries the leader's latest
round number and each reply echoes it, so a round is confirmed when a
majority (the leader included) has answered a message of that round or a
later one in the leader's term. Confirmed reads come out in
``Ready.read_states``; the service answers each once it has applied its
index. A leader that steps down drops its unconfirmed reads, and one cut off
in a minority never confirms a round, so it never yields a read. No leases.

Membership (``apps.raft.membership``): configuration entries take effect
when appended; voters elect and form every majority, learners only receive.
``propose_conf_change`` refuses what is unsafe now, with the reason. A server
that a committed configuration leaves out for good becomes ``removed`` (it
applied that configuration, or a peer told it with ``Removed``) and takes
part in nothing more.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any

from apps.raft.log import InvariantError, RaftLog
from apps.raft.membership import ConfChange, ConfChangeNotNow, ConfChangeRefused, ConfEntry, Configurations, Membership, vet_change
from apps.raft.messages import (
    AppendEntries,
    AppendEntriesReply,
    ApplyMsg,
    Entry,
    InstallSnapshot,
    InstallSnapshotReply,
    MemberCheck,
    Message,
    ReadState,
    Removed,
    RequestVote,
    RequestVoteReply,
)
from apps.raft.ready import Config, HardState, Ready, Restored, Role, Snapshot

__all__ = ["Config", "HardState", "RaftCore", "Ready", "Restored", "Role", "Snapshot"]  # the boundary types live in apps.raft.ready

log = logging.getLogger(__name__)


@dataclass
class _Progress:
    next_index: int
    match_index: int = 0
    inflight: int = 0


@dataclass
class _Pending:
    messages: list = field(default_factory=list)
    after: list = field(default_factory=list)
    apply: list = field(default_factory=list)
    reads: list = field(default_factory=list)


class RaftCore:
    """One Raft server of a cluster that started with voters ``0..n-1``.

    Every server of the cluster is built with the same ``n``: a server that
    joins later has a new number (``me >= n``) and, not a member of the
    starting configuration, waits quietly to be added and sent the log.
    """

    def __init__(self, me: int, n: int, config: Config, rng: random.Random, restored: Restored | None = None) -> None:
        if me < 0 or n < 1:
            raise ValueError(f"peer {me} of a cluster that started with {n}: need me >= 0 and n >= 1")
        self.me, self.n, self.config, self.rng = me, n, config, rng
        self.term = 0
        self.voted_for: int | None = None
        self.log = RaftLog()
        self.snapshot_data = b""
        self.confs = Configurations(Membership.of(n))
        self._told_removed: Membership | None = None  # the configuration a peer's Removed named
        if restored is not None:
            self.term = restored.hard_state.term
            self.voted_for = restored.hard_state.voted_for
            snap = restored.snapshot
            if snap is not None:
                self.log = RaftLog(snap.index, snap.term, restored.entries)
                self.snapshot_data = snap.data
                if snap.membership is not None:
                    self.confs = Configurations(snap.membership)
            else:
                self.log = RaftLog(0, 0, restored.entries)
            for entry in self.log.entries:
                self.confs.appended(entry.index, entry.command)
        self.commit_index = self.log.snapshot_index
        self.last_applied = self.log.snapshot_index
        self.role = Role.FOLLOWER
        self.leader_hint: int | None = None
        self.votes: set[int] = set()
        self.progress: dict[int, _Progress] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.election_timeout = self._random_timeout()
        # Messages from an older term (all of them turned away by the term checks below), and of
        # those the AppendEntries that carried entries: what a healed link delivers late, counted
        # so that tests on real hosts can see that the late mail arrived and changed nothing.
        self.old_term_messages = 0
        self.old_term_entries_refused = 0
        self._pending = _Pending()
        self._hs_dirty = False
        self._unstable_from = self.log.last_index + 1  # entries from here on are not yet durable
        self._persisted_index = self.log.last_index
        self._snapshot_to_persist: Snapshot | None = None
        self._replicate = False
        # ReadIndex: reads waiting for an entry of this term to commit, reads
        # waiting for a round, the reads of the round in flight (its number).
        self._read_round = 0
        self._acked_round: dict[int, int] = {}
        self._reads_need_commit: list[Any] = []
        self._reads_unsent: list[ReadState] = []
        self._reads_in_round: list[tuple[int, ReadState]] = []  # (round, read), rounds ascending
        if self.log.snapshot_index > 0:
            # A restarted peer gives its service the snapshot first, then what follows.
            self._pending.apply.append(
                ApplyMsg(snapshot_valid=True, snapshot=self.snapshot_data, snapshot_term=self.log.snapshot_term, snapshot_index=self.log.snapshot_index)
            )

    # ---- queries -----------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    @property
    def last_index(self) -> int:
        return self.log.last_index

    @property
    def hard_state(self) -> HardState:
        return HardState(self.term, self.voted_for)

    @property
    def membership(self) -> Membership:
        """The configuration in force here: the latest in the log, else the snapshot's."""
        return self.confs.current

    @property
    def committed_membership(self) -> Membership:
        """The configuration as of the commit index: the latest one this server knows the cluster committed."""
        return self.confs.at(min(self.commit_index, self.log.last_index))

    @property
    def removed_by(self) -> Membership | None:
        """The committed configuration that leaves this server out for good, once it knows one (it applied it,
        or a peer named it in ``Removed``); None until then.

        Never set for a server merely cut off or behind: only a committed
        configuration counts, and only one whose ``fresh_id`` is above this
        server's number (numbers are never given twice), so it can never be
        added back.
        """
        if self._told_removed is not None:
            return self._told_removed
        committed = self.committed_membership
        return committed if committed.excludes_for_good(self.me) else None

    @property
    def removed(self) -> bool:
        """Out of the cluster for good (``removed_by``): the core ignores every message and never campaigns."""
        return self.removed_by is not None

    @property
    def snapshot_membership(self) -> Membership:
        """The configuration as of the snapshot's last index (the starting one without a snapshot)."""
        return self.confs.base

    # ---- inputs ------------------------------------------------------------------------

    def tick(self, may_lead: bool = True) -> None:
        """One tick of the clock. ``may_lead=False``: this server cannot serve clients now (its host is out
        of open files, so new connections fail): a leader steps down and a follower does not campaign, so
        the others elect a leader that clients can reach (a leader's heartbeats would otherwise keep it)."""
        if self.removed:
            return
        if not may_lead:
            if self.role is not Role.FOLLOWER:
                if self.role is Role.LEADER:
                    log.warning("peer %d: stepping down in term %d: this server cannot serve clients now", self.me, self.term)
                self._become_follower(self.term, None)
                self.election_elapsed = 0
            self.election_elapsed += 1  # it follows a leader it hears as before, and never campaigns
            return
        if self.role is Role.LEADER:
            self.heartbeat_elapsed += 1
            if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
                self.heartbeat_elapsed = 0
                for peer, prog in self.progress.items():
                    if prog.inflight:  # unanswered: assume lost, resend from what is known to match
                        prog.inflight = 0
                        prog.next_index = prog.match_index + 1
                    self._send_append(peer, heartbeat=True)
            return
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout and self._may_campaign():
            self._campaign()  # learners, removed servers and servers not yet added never campaign
        elif self.election_elapsed % self.election_timeout == 0 and self.me < self.membership.fresh_id:
            self._check_membership()  # a learner, or removed by a change not known here to have committed

    def propose(self, command: Any) -> tuple[int, int, bool]:
        """Append ``command`` if this peer leads; returns (index, term, is_leader) at once."""
        if isinstance(command, ConfEntry):  # that would skip every rule of propose_conf_change
            raise ConfChangeRefused("a configuration change is proposed with propose_conf_change")
        return self._append(command)

    def _append(self, command: Any) -> tuple[int, int, bool]:
        if self.role is not Role.LEADER:
            return -1, self.term, False
        entry = Entry(self.term, self.log.last_index + 1, command)
        self.log.append(entry)
        self.confs.appended(entry.index, command)
        self._replicate = True  # sent when the Ready is taken: one AppendEntries for all new entries
        if self.membership.voters == (self.me,):
            self._maybe_commit()
        return entry.index, self.term, True

    def propose_conf_change(self, change: ConfChange) -> int:
        """Append a one-server configuration change; its index. ConfChangeRefused says why not now (``vet_change``)."""
        if self.role is not Role.LEADER:
            raise ConfChangeNotNow(f"peer {self.me} is not the leader (leader: {self.leader_hint})")
        prog = self.progress.get(change.server)
        membership = vet_change(
            self.membership, change, own_term_committed=self._committed_own_term(),
            uncommitted=self.confs.last_index if self.confs.last_index > self.commit_index else 0,
            match=prog.match_index if prog is not None else 0, last_index=self.log.last_index, catch_up=self.config.catch_up_entries,
        )
        index, _, _ = self._append(ConfEntry(change, membership))
        for peer in membership.members:  # a removed server keeps its progress until the removal commits
            if peer != self.me and peer not in self.progress:
                self.progress[peer] = _Progress(next_index=max(1, self.log.snapshot_index))
        self._maybe_commit()  # a removal can shrink the majority
        return index

    def _committed_own_term(self) -> bool:
        return self.log.term_at(self.commit_index) == self.term

    def read_index(self, request_id: Any) -> bool:
        """Start a linearizable read; False (and nothing queued) unless this peer leads.

        The read comes out of a later Ready as ``ReadState(request_id, index)``
        once a majority has confirmed this peer still led after the call; it
        never comes out if leadership is lost first.
        """
        if self.role is not Role.LEADER:
            return False
        if self.log.term_at(self.commit_index) != self.term:
            self._reads_need_commit.append(request_id)
        else:
            self._reads_unsent.append(ReadState(request_id, self.commit_index))
        return True

    def snapshot(self, index: int, data: bytes) -> None:
        """The service has a snapshot of everything through ``index``; drop the log up to there."""
        if index <= self.log.snapshot_index:
            return
        if index > self.last_applied:
            raise InvariantError(f"service snapshot at {index}, but only {self.last_applied} was applied")
        term = self.log.term_at(index)
        if term is None:
            raise InvariantError(f"no entry at {index} to snapshot")
        membership = self.confs.at(index)
        self.log.compact(index, term)
        self.confs.compacted(index, membership)
        self.snapshot_data = bytes(data)
        self._snapshot_to_persist = Snapshot(index, term, self.snapshot_data, membership)

    def step(self, msg: Message) -> None:
        if msg.dst != self.me or msg.src < 0 or msg.src == self.me:
            log.warning("peer %d: dropped a misaddressed %s", self.me, type(msg).__name__)
            return
        if self.removed:
            return
        if isinstance(msg, Removed):
            self._on_removed(msg)
            return
        committed = self.committed_membership
        if committed.excludes_for_good(msg.src):
            # etcd's answer to a removed member: not taken (not even its term), and told why.
            self._pending.messages.append(Removed(self.term, self.me, msg.src, committed))
            return
        if isinstance(msg, MemberCheck):
            return  # still a member, or one this server has not heard of yet: its leader is in touch
        if isinstance(msg, RequestVote) and msg.term > self.term and msg.src not in self.membership.voters and self._leader_alive():
            # Thesis §4.2.3, for non-voters only: a server removed while cut off never learns it and keeps
            # asking; while a leader is heard from, its term is not even taken. Voters ask as they always did.
            return
        if msg.term > self.term:
            self._become_follower(msg.term, msg.src if isinstance(msg, (AppendEntries, InstallSnapshot)) else None)
        elif msg.term < self.term:
            self.old_term_messages += 1
        if isinstance(msg, RequestVote):
            self._on_request_vote(msg)
        elif isinstance(msg, RequestVoteReply):
            self._on_vote_reply(msg)
        elif isinstance(msg, AppendEntries):
            self._on_append(msg)
        elif isinstance(msg, AppendEntriesReply):
            self._on_append_reply(msg)
        elif isinstance(msg, InstallSnapshot):
            self._on_install_snapshot(msg)
        elif isinstance(msg, InstallSnapshotReply):
            self._on_install_snapshot_reply(msg)

    # ---- the Ready cycle ----------------------------------------------------------------

    def has_ready(self) -> bool:
        p = self._pending
        return bool(
            self._replicate
            or self._hs_dirty
            or self._snapshot_to_persist is not None
            or self._unstable_from <= self.log.last_index
            or p.messages
            or p.after
            or p.apply
            or p.reads
            or self.last_applied < min(self.commit_index, self.log.last_index)
            or bool(self._reads_unsent and self.role is Role.LEADER)
        )

    def ready(self) -> Ready:
        if self._replicate and self.role is Role.LEADER:
            for peer in self.progress:
                self._send_append(peer)
        self._replicate = False
        if self._reads_unsent and self.role is Role.LEADER:
            self._start_read_round()
        self._collect_applies()
        unstable = tuple(self.log.slice(max(self._unstable_from, self.log.snapshot_index + 1), self.log.last_index + 1))
        rd = Ready(
            hard_state=self.hard_state if self._hs_dirty else None,
            entries=unstable,
            snapshot=self._snapshot_to_persist,
            messages=tuple(self._pending.messages),
            messages_after_persist=tuple(self._pending.after),
            apply=tuple(self._pending.apply),
            must_sync=self._hs_dirty or bool(unstable) or self._snapshot_to_persist is not None,
            read_states=tuple(self._pending.reads),
        )
        self._pending = _Pending()
        self._hs_dirty = False
        self._snapshot_to_persist = None
        self._unstable_from = self.log.last_index + 1
        return rd

    def advance(self, rd: Ready) -> None:
        """``rd`` is durable (and its messages sent): count the leader's own entries now."""
        durable = self._persisted_index
        if rd.snapshot is not None:
            durable = max(durable, rd.snapshot.index)
        if rd.entries:
            durable = rd.entries[-1].index
        self._persisted_index = min(durable, self.log.last_index)
        if self.role is Role.LEADER:
            self._maybe_commit()

    # ---- elections --------------------------------------------------------------------------

    def _may_campaign(self) -> bool:
        """A voter of its latest configuration, or of the committed one while an uncommitted change (its own
        removal) leaves it out: its log may be the only one that holds that change, and then no one else can
        win an election without its vote; a majority of the new configuration elects it, and as leader it
        commits the removal and steps down (a leader deposed just after appending its removal, else, leaves
        the cluster with no leader for good)."""
        return self.me in self.membership.voters or self.me in self.committed_membership.voters

    def _random_timeout(self) -> int:
        return self.rng.randint(self.config.election_ticks_min, self.config.election_ticks_max)

    def _leader_alive(self) -> bool:
        return self.role is Role.LEADER or (self.leader_hint is not None and self.election_elapsed < self.config.election_ticks_min)

    def _won(self) -> bool:
        voters = self.membership.voters
        return sum(1 for v in voters if v in self.votes) * 2 > len(voters)

    def _become_follower(self, term: int, leader: int | None) -> None:
        if term > self.term:
            self.term = term
            self.voted_for = None
            self._hs_dirty = True
        self.role = Role.FOLLOWER
        self.leader_hint = leader
        self.votes = set()
        self.progress = {}
        self._drop_reads()

    def _campaign(self) -> None:
        self.term += 1
        self.role = Role.CANDIDATE
        self.voted_for = self.me
        self.leader_hint = None
        self.votes = {self.me}
        self._hs_dirty = True
        self.election_elapsed = 0
        self.election_timeout = self._random_timeout()
        if self._won():
            self._become_leader()
            return
        for peer in self.membership.voters:
            if peer == self.me:
                continue
            # After the write: this term and this vote must be durable before anyone counts them.
            self._pending.after.append(RequestVote(self.term, self.me, peer, self.log.last_index, self.log.last_term))

    def _on_request_vote(self, m: RequestVote) -> None:
        up_to_date = (m.last_log_term, m.last_log_index) >= (self.log.last_term, self.log.last_index)
        granted = m.term == self.term and self.voted_for in (None, m.src) and up_to_date
        if granted:
            if self.voted_for != m.src:
                self.voted_for = m.src
                self._hs_dirty = True
            self.election_elapsed = 0
        self._pending.after.append(RequestVoteReply(self.term, self.me, m.src, granted))

    def _on_vote_reply(self, m: RequestVoteReply) -> None:
        if self.role is not Role.CANDIDATE or m.term != self.term or not m.granted:
            return
        self.votes.add(m.src)  # a grant from a non-voter is kept but never counted (_won)
        if self._won():
            self._become_leader()

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader_hint = self.me
        self.heartbeat_elapsed = 0
        self.progress = {p: _Progress(next_index=self.log.last_index + 1) for p in self.membership.members if p != self.me}
        self._acked_round = {}
        log.info("peer %d: leader of term %d", self.me, self.term)
        for peer in self.progress:
            self._send_append(peer, heartbeat=True)

    # ---- replication ---------------------------------------------------------------------------

    def _send_append(self, peer: int, heartbeat: bool = False) -> None:
        prog = self.progress.get(peer)
        if prog is None:  # removed by the commit this answer brought (or this leader stepped down)
            return
        if prog.next_index <= self.log.snapshot_index:
            if heartbeat or prog.inflight == 0:
                prog.inflight = 1
                self._pending.messages.append(InstallSnapshot(
                    self.term, self.me, peer, self.log.snapshot_index, self.log.snapshot_term, self.snapshot_data, self.confs.base
                ))
            return
        if not heartbeat:  # a heartbeat always goes; new entries only while the pipeline has room
            backlog = self.log.last_index - prog.next_index + 1
            if backlog <= 0 or prog.inflight >= self.config.max_inflight:
                return
            if prog.inflight and backlog < self.config.max_batch and not self.config.pipeline_partial_batches:
                return  # a partial batch waits for the answer in flight, and grows meanwhile
        prev = prog.next_index - 1
        prev_term = self.log.term_at(prev)
        if prev_term is None:
            raise InvariantError(f"leader {self.me} has no term for index {prev}")
        entries = tuple(self.log.slice(prog.next_index, prog.next_index + self.config.max_batch))
        if entries:
            prog.inflight += 1
            prog.next_index = entries[-1].index + 1  # optimistic: pipelines the next batch
        self._pending.messages.append(
            AppendEntries(self.term, self.me, peer, prev, prev_term, entries, self.commit_index, self._read_round)
        )

    def _on_append(self, m: AppendEntries) -> None:
        if m.term < self.term:
            # No read round in the refusal: it carries this peer's term, and the sender may lead
            # that term by now in a new incarnation whose rounds count from 0 again, so an old
            # round echoed here would confirm a round it has not yet sent (a stale read).
            self._pending.messages.append(AppendEntriesReply(self.term, self.me, m.src, False, 0, 0, 0, 0))
            if m.entries:
                self.old_term_entries_refused += 1
            return
        if self.role is not Role.FOLLOWER:
            self._become_follower(m.term, m.src)
        self.leader_hint = m.src
        self.election_elapsed = 0
        prev, prev_term, entries = m.prev_log_index, m.prev_log_term, m.entries
        if prev < self.log.snapshot_index:
            # Entries through the snapshot are committed, so they match; skip them.
            entries = tuple(e for e in entries if e.index > self.log.snapshot_index)
            prev, prev_term = self.log.snapshot_index, self.log.snapshot_term
            if m.prev_log_index + len(m.entries) < self.log.snapshot_index:
                entries = ()
        if prev > self.log.last_index:
            self._pending.after.append(
                AppendEntriesReply(self.term, self.me, m.src, False, 0, 0, self.log.last_index + 1, m.read_round)
            )
            return
        mine = self.log.term_at(prev)
        if mine != prev_term:
            assert mine is not None
            first = self.log.first_index_of_term(prev)
            self._pending.after.append(AppendEntriesReply(self.term, self.me, m.src, False, 0, mine, first, m.read_round))
            return
        for entry in entries:
            have = self.log.term_at(entry.index)
            if have == entry.term:
                continue
            if have is not None:
                if entry.index <= self.commit_index:
                    raise InvariantError(f"peer {self.me}: leader {m.src} overwrites committed entry {entry.index}")
                self.log.truncate_from(entry.index)
                self.confs.truncated(entry.index)  # an uncommitted change goes with its entry
                self._unstable_from = min(self._unstable_from, entry.index)
                self._persisted_index = min(self._persisted_index, entry.index - 1)
            self.log.append(entry)
            self.confs.appended(entry.index, entry.command)
        last_new = prev + len(entries)
        if m.leader_commit > self.commit_index:
            self.commit_index = max(self.commit_index, min(m.leader_commit, last_new))
        self._pending.after.append(AppendEntriesReply(self.term, self.me, m.src, True, last_new, 0, 0, m.read_round))

    def _on_append_reply(self, m: AppendEntriesReply) -> None:
        if self.role is not Role.LEADER or m.term != self.term:
            return
        if m.read_round > self._acked_round.get(m.src, 0):
            self._acked_round[m.src] = m.read_round
            self._confirm_reads()
        prog = self.progress.get(m.src)
        if prog is None:  # a removed server's late answer
            return
        if m.success:
            if m.match_index > prog.match_index:
                prog.match_index = m.match_index
            prog.next_index = max(prog.next_index, prog.match_index + 1)
            prog.inflight = max(0, prog.inflight - 1)
            self._maybe_commit()
            self._send_append(m.src)
            return
        if m.conflict_term:
            last = self.log.last_index_of_term(m.conflict_term)
            next_index = last + 1 if last is not None else m.conflict_index
        else:
            next_index = m.conflict_index
        prog.next_index = max(prog.match_index + 1, min(next_index, self.log.last_index + 1), 1)
        prog.inflight = 0
        self._send_append(m.src, heartbeat=True)

    def _maybe_commit(self) -> None:
        # A leader tracks every member but itself; its own entries count once durable, and only if it votes.
        matches = sorted((self._persisted_index if v == self.me else self.progress[v].match_index for v in self.membership.voters), reverse=True)
        candidate = matches[len(matches) // 2]  # the highest index a majority of the voters holds
        # Only an entry of the current term commits by counting replicas (Figure 8).
        if candidate > self.commit_index and self.log.term_at(candidate) == self.term:
            before, self.commit_index = self.commit_index, candidate
            if self._reads_need_commit:  # this term's first commit: the waiting reads can have an index now
                self._reads_unsent.extend(ReadState(rid, candidate) for rid in self._reads_need_commit)
                self._reads_need_commit = []
            if before < self.confs.last_index <= candidate:
                self._conf_committed()

    def _conf_committed(self) -> None:
        """The configuration in force is committed: tell those it removed, and stop sending to them; leave if it
        removed this leader."""
        members = self.membership.members
        for p in self.progress:
            if p not in members:
                self._pending.messages.append(Removed(self.term, self.me, p, self.membership))
        self.progress = {p: prog for p, prog in self.progress.items() if p in members}
        if self.me not in self.membership.voters:
            log.info("peer %d: removed from the cluster, steps down as leader of term %d", self.me, self.term)
            self._become_follower(self.term, None)

    def _check_membership(self) -> None:
        """Ask the voters whether this server is still a member: one that is not is answered ``Removed``."""
        for voter in self.membership.voters:
            if voter != self.me:
                self._pending.messages.append(MemberCheck(self.term, self.me, voter))

    def _on_removed(self, m: Removed) -> None:
        if not m.membership.excludes_for_good(self.me):
            log.warning("peer %d: peer %d says it is removed, but the configuration it sent has it: ignored", self.me, m.src)
            return
        log.info("peer %d: peer %d says a committed configuration (voters %s) has removed it", self.me, m.src, list(m.membership.voters))
        self._told_removed = m.membership
        self._become_follower(self.term, None)

    # ---- ReadIndex --------------------------------------------------------------------------

    def _start_read_round(self) -> None:
        """One round of heartbeats confirms leadership for every read waiting now.

        Rounds may overlap: a lost round does not hold up the reads of the
        next, whose answers confirm it too (a later round implies an earlier).
        """
        self._read_round += 1
        self._reads_in_round.extend((self._read_round, rs) for rs in self._reads_unsent)
        self._reads_unsent = []
        for peer in list(self.progress):
            if self.progress[peer].next_index > self.log.snapshot_index:  # never resend a snapshot for a read
                self._send_append(peer, heartbeat=True)
        self._confirm_reads()  # a single peer is its own majority

    def _confirm_reads(self) -> None:
        if not self._reads_in_round:
            return
        # The highest round a majority (this leader included) has answered.
        voters = self.membership.voters
        rounds = sorted((self._read_round if p == self.me else self._acked_round.get(p, 0) for p in voters), reverse=True)
        confirmed = rounds[len(rounds) // 2]
        done = 0
        while done < len(self._reads_in_round) and self._reads_in_round[done][0] <= confirmed:
            done += 1
        if done:
            self._pending.reads.extend(rs for _, rs in self._reads_in_round[:done])
            del self._reads_in_round[:done]

    def _drop_reads(self) -> None:
        if self._reads_need_commit or self._reads_unsent or self._reads_in_round:
            log.info("peer %d: dropped %d unconfirmed reads on losing leadership", self.me,
                     len(self._reads_need_commit) + len(self._reads_unsent) + len(self._reads_in_round))
        self._reads_need_commit, self._reads_unsent, self._reads_in_round = [], [], []

    # ---- snapshots --------------------------------------------------------------------------------

    def _on_install_snapshot(self, m: InstallSnapshot) -> None:
        if m.term < self.term:
            self._pending.messages.append(InstallSnapshotReply(self.term, self.me, m.src, 0))
            return
        if self.role is not Role.FOLLOWER:
            self._become_follower(m.term, m.src)
        self.leader_hint = m.src
        self.election_elapsed = 0
        if m.last_included_index > self.commit_index:
            self._collect_applies()  # what was committed before goes to the service first
            self.log.compact(m.last_included_index, m.last_included_term)
            self.confs.compacted(m.last_included_index, m.membership or Membership.of(self.n))
            self.confs.truncated(self.log.last_index + 1)  # entries after it that did not match are gone
            self.snapshot_data = m.data
            self.commit_index = m.last_included_index
            self.last_applied = m.last_included_index
            self._unstable_from = max(self._unstable_from, m.last_included_index + 1)
            self._persisted_index = min(self._persisted_index, self.log.last_index)
            self._snapshot_to_persist = Snapshot(m.last_included_index, m.last_included_term, m.data, self.confs.base)
            self._pending.apply.append(
                ApplyMsg(snapshot_valid=True, snapshot=m.data, snapshot_term=m.last_included_term, snapshot_index=m.last_included_index)
            )
        self._pending.after.append(InstallSnapshotReply(self.term, self.me, m.src, m.last_included_index))

    def _on_install_snapshot_reply(self, m: InstallSnapshotReply) -> None:
        if self.role is not Role.LEADER or m.term != self.term:
            return
        prog = self.progress.get(m.src)
        if prog is None:
            return
        prog.inflight = 0
        prog.match_index = max(prog.match_index, m.last_included_index)
        prog.next_index = max(prog.next_index, prog.match_index + 1)
        self._send_append(m.src)

    def _collect_applies(self) -> None:
        upto = min(self.commit_index, self.log.last_index)
        for index in range(self.last_applied + 1, upto + 1):
            entry = self.log.entry(index)
            self._pending.apply.append(ApplyMsg(command_valid=True, command=entry.command, command_index=index, command_term=entry.term))
        self.last_applied = max(self.last_applied, upto)
