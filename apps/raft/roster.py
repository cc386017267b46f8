"""A peer's membership side: where each server is reached, and the answers to an operator's ``Members`` and
``ChangeMembers`` asks (``apps/raft/admin.py`` asks them).

Why a class of its own: the KV simulation (``apps/kvraft/sim.py``) runs
simulated servers with no actor system, and answers its operator and clerks
with this same class on a simulated core, so the changes it checks pass the
very code the real peer runs. It reads the core and the cluster's starting
endpoints, nothing of the actor.
"""

from __future__ import annotations

from apps.raft.core import RaftCore
from apps.raft.membership import ADD_LEARNER, PROMOTE, ConfChange, ConfChangeNotNow, ConfChangeRefused
from transport.message import members_only, message


@message
class Members:
    """Asked of a peer: the configuration it is in, and where each member is reached."""


@message
class MembersInfo:
    me: int
    term: int
    leader: int | None
    leader_endpoint: str | None
    voters: tuple[int, ...]
    learners: tuple[int, ...]
    endpoints: tuple[tuple[int, str], ...]
    """(server, endpoint) for every member this peer can reach, itself included."""
    fresh_id: int
    """The number a server added now would take (numbers are never reused)."""
    initial: int
    """How many servers the cluster started with (0..initial-1): a new server's core starts from that configuration."""
    commit_index: int
    pending: int
    """Index of a configuration entry not yet committed here (0: none): one change at a time."""


@members_only
@message
class ChangeMembers:
    """Asked of the leader's peer: propose a one-server change (``endpoint``: where a server being added listens).

    Members only: a client-role key may read and write keys, never decide who holds them."""

    op: str
    server: int
    endpoint: str | None = None


@message
class ChangeAccepted:
    index: int
    term: int
    already: bool = False
    """The configuration already had this change (a retry, or a second operator): nothing was appended, and
    ``index`` is that of the latest configuration entry (0: the starting or snapshot's configuration)."""


@message
class ChangeRefused:
    reason: str
    leader_endpoint: str | None = None
    later: bool = False
    """Refused for now only (another change in flight, a learner catching up, not the leader): ask again."""


class Roster:
    """Endpoints by server number, and the membership answers, for one peer's core."""

    def __init__(self, core: RaftCore, start: tuple[str, ...]) -> None:
        """``start``: where the servers the cluster started with are reached, by number (this server's own
        included); those added later are found in the configuration."""
        self.core = core
        self._start = start
        self._endpoints: dict[int, str] = {}

    def endpoint_of(self, server: int | None) -> str | None:
        """Where ``server`` is reached: the configuration's word for it, else the starting list's, else None.

        A number is never given to two servers (``Membership.fresh_id``), so
        what is found once stays true: a removed server is still reached
        while the leader tells it of its removal.
        """
        if server is None:
            return None
        found = self._endpoints.get(server)
        if found is None:
            found = dict(self.core.membership.contexts).get(server)
            if not isinstance(found, str):
                eps = self._start
                found = eps[server] if 0 <= server < len(eps) else ""
            if found:
                self._endpoints[server] = found
        return found or None

    def members_info(self) -> MembersInfo:
        c = self.core
        m = c.membership
        pending = c.confs.last_index if c.confs.last_index > c.commit_index else 0
        reachable = []
        for s in m.members:
            endpoint = self._start[c.me] if s == c.me else self.endpoint_of(s)
            if endpoint:  # a member whose change carried no endpoint, beyond the starting list: not reachable
                reachable.append((s, endpoint))
        return MembersInfo(c.me, c.term, c.leader_hint, self.endpoint_of(c.leader_hint), m.voters, m.learners, tuple(reachable),
                           m.fresh_id, c.n, c.commit_index, pending)

    def change(self, req: ChangeMembers) -> ChangeAccepted | ChangeRefused:
        if req.op == ADD_LEARNER and not (isinstance(req.endpoint, str) and req.endpoint):
            return ChangeRefused("a server is added with the endpoint it listens on")
        try:
            change = ConfChange(req.op, req.server, req.endpoint if req.op == ADD_LEARNER else None)
            if self.core.is_leader and self._already_made(change):
                return ChangeAccepted(self.core.confs.last_index, self.core.term, already=True)
            index = self.core.propose_conf_change(change)
        except (ConfChangeRefused, ValueError) as exc:
            return ChangeRefused(str(exc), self.endpoint_of(self.core.leader_hint), isinstance(exc, ConfChangeNotNow))
        return ChangeAccepted(index, self.core.term)

    def _already_made(self, change: ConfChange) -> bool:
        """Whether this leader's configuration already shows ``change`` (appended, committed or not): an add of
        the same server at the same endpoint, a promote of a voter, a remove of a server that can never be back.

        The caller waits for the commit as for any change it got accepted
        (``admin.change_membership``); a change that differs (the server at
        another endpoint) is refused as before.
        """
        m = self.core.membership
        if change.op == ADD_LEARNER:
            return change.server in m.members and self.endpoint_of(change.server) == change.context
        if change.op == PROMOTE:
            return change.server in m.voters
        return m.excludes_for_good(change.server)
