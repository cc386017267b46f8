"""Cluster membership for the Raft core: who votes, who only listens, and how that changes one server at a time.

A configuration is a set of voters (they elect leaders and form the
majorities that commit entries and confirm ReadIndex rounds) and a set of
learners (they receive the log and snapshots like anyone, but are never
asked for a vote, never counted toward any majority and never start an
election). It changes by one server per log entry, a :class:`ConfEntry`
holding the change and the whole configuration after it:

- ``add-learner``: a new server joins as a learner; it starts empty and
  catches up by InstallSnapshot and the log;
- ``promote``: a learner becomes a voter, refused until it has caught up
  (its match index within ``Config.catch_up_entries`` of the leader's last
  index: one AppendEntries from level), so a new voter never holds up commits
  while it copies a long log;
- ``remove``: a voter or learner leaves.

Replacing a server is the three in turn: add the new one as a learner,
promote it, remove the old one.

**Effective when appended (thesis §4.1), not when applied (etcd's way).** A
server uses the latest configuration in its log, committed or not, falling
back to its snapshot's; a truncation that drops a configuration entry brings
back the one before it. The reason is restart: this core keeps no commit
index on disk (a restarted server knows only its snapshot is committed), so
a configuration that took effect on apply would, after a restart, quietly
revert to the snapshot's until the entries committed again, and a restarted
server could campaign under a configuration the cluster left long ago. On
append the configuration is a function of the durable log alone, so a
restart restores exactly what was in force. It also lets a leader count a
new voter, and stop counting a removed one, at once.

Single-server changes are safe only with two rules, both enforced by
:meth:`~apps.raft.core.RaftCore.propose_conf_change`:

- one change in flight: no new change while the log holds an uncommitted
  configuration entry (any two configurations in force anywhere then differ
  by at most one server, so their majorities overlap);
- the 2015 fix (Ongaro, raft-dev, "bug in single-server membership
  changes"): a leader proposes a change only once an entry of its own term
  has committed. Without it, a leader of a new term can append a change
  over an uncommitted change of a deposed leader; the two configurations
  then differ by two servers, and the deposed leader can come back, be
  elected by the majority of its own configuration and overwrite committed
  entries. This core proposes no no-op at the start of a term (the lab's
  tests count indexes), so a change proposed before the service's no-op
  commits is refused with that reason, never queued.

A leader that removes itself keeps leading (without counting itself) until
the change commits, then steps down and stops sending; as a non-voter it
never campaigns again. Until it knows the removal committed, a server
whose own removal is in its log still campaigns (``RaftCore._may_campaign``):
a leader deposed right after appending it may hold the only copy, and
without its vote no one else can win. A leader keeps replicating to a server it removed
until the removal commits, and then tells it so (a ``Removed`` message).

**A removed server learns it is out for good, and stops** (etcd's removed
member). Only a *committed* configuration that leaves a server out, with its
number below ``fresh_id`` (:meth:`Membership.excludes_for_good`: numbers are
never given twice, so it can never come back), makes it ``removed``: one it
applied itself, or one a peer that committed it names in a ``Removed``
message. A peer answers any message from such a server with ``Removed``
instead of taking it, so one removed while cut off finds out with its first
RequestVote once it can reach anyone; a non-voter that hears from no leader
for an election timeout asks the voters (``MemberCheck``), so a removed
server whose notice was lost finds out too. A server merely cut off or
behind is never told: its peers' committed configurations still hold it.
A removed core takes part in nothing more; the shell stops its process.
Until a removed server finds out, thesis §4.2.3, narrowed to non-voters,
keeps it from deposing a healthy leader: a server that heard from a leader
within the minimum election timeout ignores a RequestVote from a server
that is not a voter in its own configuration (the core does this in
``step``). A voter's request is
taken as it always was, so a cluster whose membership never changes behaves
exactly as before; members that lack the removal can still be disturbed
until they get it (a majority has it: it committed). With no leader heard
from, any server answers any RequestVote whatever its own configuration
says: a candidate whose log promoted a server that the receiver still takes
for a learner may need exactly that vote. A candidate asks, and counts, only
the voters of its own configuration.

Snapshots carry the configuration as of their last index. One written before
this module existed has none, which means the starting peers ``0..n-1``.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from transport.message import message

ADD_LEARNER, PROMOTE, REMOVE = "add-learner", "promote", "remove"
OPS = (ADD_LEARNER, PROMOTE, REMOVE)


@message
class Membership:
    """A configuration: voters and learners (disjoint, sorted), and what each member was added with."""

    voters: tuple[int, ...]
    learners: tuple[int, ...] = ()
    contexts: tuple[tuple[int, Any], ...] = ()
    """(server, the context of the change that added it), for the members that came with one (the shell's
    business, e.g. an endpoint; the core never reads it), so a snapshot alone tells the shell how to reach everyone."""
    next_id: int = field(default=0, compare=False)
    """No server added from here on may have a lower number (see :attr:`fresh_id`); bookkeeping, not membership,
    so two configurations with the same members are equal whatever it says."""

    def __post_init__(self) -> None:
        if set(self.voters) & set(self.learners):
            raise ValueError(f"servers {sorted(set(self.voters) & set(self.learners))} are both voters and learners")
        if list(self.voters) != sorted(set(self.voters)) or list(self.learners) != sorted(set(self.learners)):
            raise ValueError(f"voters {self.voters} and learners {self.learners} must be sorted and distinct")

    @classmethod
    def of(cls, n: int) -> Membership:
        """The starting configuration of a cluster of ``n``: voters 0..n-1."""
        return cls(tuple(range(n)), next_id=n)

    @property
    def members(self) -> tuple[int, ...]:
        return tuple(sorted(self.voters + self.learners))

    @property
    def fresh_id(self) -> int:
        """The lowest number a new server may take: above every server this cluster ever had.

        A number is never given twice. A removed server's process may still
        run (it was cut off when it was removed, or its operator has not
        stopped it yet); were its number handed to a new server, its old
        votes and replies would count as the new one's, and one server's
        vote given twice in a term can elect two leaders.
        """
        return max(self.next_id, max(self.members, default=-1) + 1)

    def excludes_for_good(self, server: int) -> bool:
        """Whether ``server`` can never be a member again from here: it is not one, and its number is below
        :attr:`fresh_id` (it was removed, or passed over), so no change can ever add it back."""
        return server not in self.voters and server not in self.learners and server < self.fresh_id


@message
class ConfChange:
    """A request to change the configuration by one server."""

    op: str
    server: int
    context: Any = None
    """Kept with the server in the configuration (``Membership.contexts``) for the shell; the core never reads it."""

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown configuration change {self.op!r} (one of {', '.join(OPS)})")
        if not isinstance(self.server, int) or self.server < 0:
            raise ValueError(f"a server is a number >= 0, not {self.server!r}")


@message
class ConfEntry:
    """A log entry's command that changes the configuration: the change, and the whole configuration after it."""

    change: ConfChange
    membership: Membership


class ConfChangeRefused(Exception):
    """A configuration change that makes no sense against the configuration (adding a member, say)."""


class ConfChangeNotNow(ConfChangeRefused):
    """A change refused for now only (another change not yet committed, a learner still catching up, no
    entry of the leader's term committed yet, not the leader): the same change may be asked again later."""


def apply_change(current: Membership, change: ConfChange) -> Membership:
    """The configuration after ``change``; ConfChangeRefused if it makes no sense against ``current``."""
    voters, learners = set(current.voters), set(current.learners)
    contexts = dict(current.contexts)
    s = change.server
    next_id = current.fresh_id
    if change.op == ADD_LEARNER:
        if s in voters or s in learners:
            raise ConfChangeRefused(f"server {s} is already a {'voter' if s in voters else 'learner'}")
        if s < next_id:
            raise ConfChangeRefused(f"server number {s} was given before: numbers are never reused (the next free one is {next_id})")
        learners.add(s)
        next_id = s + 1
        if change.context is not None:
            contexts[s] = change.context
    elif change.op == PROMOTE:
        if s not in learners:
            raise ConfChangeRefused(f"server {s} is not a learner ({'already a voter' if s in voters else 'not a member'})")
        learners.discard(s)
        voters.add(s)
    else:
        if s not in voters and s not in learners:
            raise ConfChangeRefused(f"server {s} is not a member")
        if voters == {s}:
            raise ConfChangeRefused(f"server {s} is the last voter")
        voters.discard(s)
        learners.discard(s)
        contexts.pop(s, None)
    return Membership(tuple(sorted(voters)), tuple(sorted(learners)), tuple(sorted(contexts.items())), next_id)


def vet_change(
    current: Membership, change: ConfChange, *, own_term_committed: bool, uncommitted: int, match: int, last_index: int, catch_up: int
) -> Membership:
    """The configuration a leader may append for ``change`` now, or ConfChangeRefused naming the rule it breaks.

    ``uncommitted`` is the index of a configuration entry not yet committed
    (0: none); ``match`` what the leader knows the server holds.
    """
    if not own_term_committed:
        raise ConfChangeNotNow(
            "the leader has not yet committed an entry of its own term: propose one first (the KV service's no-op), "
            "then change the configuration"
        )
    if uncommitted:
        raise ConfChangeNotNow(f"the change at index {uncommitted} is not committed yet (one change at a time)")
    new = apply_change(current, change)
    if change.op == PROMOTE and match < last_index - catch_up:
        raise ConfChangeNotNow(
            f"learner {change.server} has not caught up: it holds {match} of {last_index} entries "
            f"(promotion waits until it is within {catch_up})"
        )
    return new


class Configurations:
    """The configurations one server's log and snapshot hold, and so the one in force: the latest of them.

    ``base`` is the configuration as of the snapshot (or the starting one);
    the rest are the configuration entries after it, in index order.
    """

    def __init__(self, base: Membership) -> None:
        self.base = base
        self.entries: list[tuple[int, Membership]] = []

    @property
    def current(self) -> Membership:
        return self.entries[-1][1] if self.entries else self.base

    @property
    def last_index(self) -> int:
        """Index of the latest configuration entry in the log; 0 when the snapshot's (or the starting one) is in force."""
        return self.entries[-1][0] if self.entries else 0

    def appended(self, index: int, command: Any) -> bool:
        """Note an entry put in the log; True if it changed the configuration."""
        if isinstance(command, ConfEntry):
            self.entries.append((index, command.membership))
            return True
        return False

    def truncated(self, index: int) -> bool:
        """Entries at ``index`` and after are gone; True if that brought back an older configuration."""
        keep = [e for e in self.entries if e[0] < index]
        changed = len(keep) != len(self.entries)
        self.entries = keep
        return changed

    def at(self, index: int) -> Membership:
        """The configuration in force right after the entry at ``index``."""
        found = self.base
        for at, membership in self.entries:
            if at > index:
                break
            found = membership
        return found

    def compacted(self, index: int, base: Membership) -> None:
        """A snapshot through ``index`` holding ``base`` now stands for everything up to there."""
        self.base = base
        self.entries = [e for e in self.entries if e[0] > index]
