"""Seeing and changing who is in a running Raft cluster, from outside it: the operator's side of membership.

The peers do the deciding (``apps/raft/membership.py``: one change at a
time, the leader's own-term rule, promotion only once caught up); this module
finds the leader, asks it, and waits until the change has committed, so that
whoever called it (``zactor kv cluster add``, a test harness) gets back a
configuration that is in force, or an error that says why not. A refusal that
is only for now (another change in flight, a learner still catching up, a
leader not yet settled in its term) is asked again until ``timeout``; one that
can never succeed (adding a server at another member's number, removing the
last voter) is raised at once. A change the configuration already shows (a
retry after a timeout, or a second operator's same change: the same server
added at the same endpoint, a voter promoted, a removed server removed) is
answered as accepted by the leader and returns the configuration as it is.

Adding a server is two steps for whoever starts its process: :func:`plan_join`
gives the number and address book the new server starts with (the
cluster's next free number: numbers are never reused), then
``change_membership(..., ADD_LEARNER, number, endpoint)`` tells the cluster
about it, and ``PROMOTE`` makes it a voter once it has caught up.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from actors import ActorDeadError, ActorSystem, AskTimeout, MailboxFull
from actors.errors import NoSuchActor
from apps.raft.membership import ADD_LEARNER, PROMOTE, REMOVE
from apps.raft.peer import PEER_NAME
from apps.raft.roster import ChangeAccepted, ChangeMembers, ChangeRefused, Members, MembersInfo

_ASK_TIMEOUT = 1.0
_RETRY_EVERY = 0.05


class MembershipError(Exception):
    """A membership change that was refused for good, or did not commit in time; the message says which and why."""


@dataclass(frozen=True)
class JoinPlan:
    """What a new server's process starts with: its number, where every member is, and the cluster's first size."""

    me: int
    endpoints: tuple[str, ...]
    initial: int


def ask_peer(system: ActorSystem, endpoint: str, message: object, timeout: float = _ASK_TIMEOUT) -> object:
    """The Raft peer at ``endpoint``'s answer, or None when it is down, busy or refuses this key."""
    try:
        return system.ref(endpoint, PEER_NAME).ask(message, timeout=timeout)
    except (AskTimeout, ActorDeadError, NoSuchActor, MailboxFull):
        return None


def find_leader(system: ActorSystem, endpoints: Sequence[str], *, timeout: float = 10.0) -> tuple[MembersInfo, str]:
    """The leader's view of the configuration and its endpoint; MembershipError if none leads within ``timeout``.

    Every peer that answers adds the members it knows to those asked, so a
    list that names one live member is enough to find them all.
    """
    if not endpoints:
        raise ValueError("no endpoints to ask")
    deadline = time.monotonic() + timeout
    known = list(dict.fromkeys(endpoints))
    while True:
        best: tuple[MembersInfo, str] | None = None
        answered = 0
        for endpoint in list(known):
            info = ask_peer(system, endpoint, Members())
            if not isinstance(info, MembersInfo):
                continue
            answered += 1
            known.extend(ep for _, ep in info.endpoints if ep not in known)
            if info.leader == info.me and (best is None or info.term > best[0].term):
                best = (info, endpoint)
        if best is not None:
            return best
        if time.monotonic() >= deadline:
            raise MembershipError(
                f"no leader among {', '.join(known)} within {timeout} s ({answered} of {len(known)} answered)"
            )
        time.sleep(_RETRY_EVERY)


def plan_join(info: MembersInfo, endpoint: str) -> JoinPlan:
    """The number and address book of a new server at ``endpoint`` (from the leader's ``MembersInfo``)."""
    for server, ep in info.endpoints:
        if ep == endpoint:
            # Not a new number for it: a member started again empty under a new number would be a second
            # server on one endpoint. The member itself is started again from its own data directory.
            raise MembershipError(f"{endpoint} is already a member's endpoint (server {server}): it is in the cluster "
                                  "already; to run that server again, start it from its data directory")
    me = info.fresh_id
    book = [""] * (me + 1)
    for server, ep in info.endpoints:
        book[server] = ep
    book[me] = endpoint
    return JoinPlan(me, tuple(book), info.initial)


def _in_force(info: MembersInfo, op: str, server: int) -> bool:
    """Whether the leader's configuration already shows the change (appended, committed or not)."""
    if op == ADD_LEARNER:
        return server in info.learners or server in info.voters
    if op == PROMOTE:
        return server in info.voters
    return server not in info.voters and server not in info.learners


def change_membership(
    system: ActorSystem,
    endpoints: Sequence[str],
    op: str,
    server: int,
    endpoint: str | None = None,
    *,
    timeout: float = 30.0,
) -> MembersInfo:
    """Make a one-server change and wait until it has committed; the leader's view of the configuration then.

    The change is asked of the leader first, so a change that cannot be made
    (adding a member at another endpoint, removing a server that never was
    one) is refused with the leader's reason; one this call got accepted, or
    that the leader says is made already, is waited for until committed, and
    asked again if a new leader's log lost it. ``endpoint``: where a server
    being added listens.
    """
    if op not in (ADD_LEARNER, PROMOTE, REMOVE):
        raise ValueError(f"unknown membership change {op!r} (one of {ADD_LEARNER}, {PROMOTE}, {REMOVE})")
    deadline = time.monotonic() + timeout
    asked = list(endpoints)
    proposed = False
    last = "no leader found"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise MembershipError(f"{op} of server {server} did not commit within {timeout} s: {last}")
        info, at = find_leader(system, asked, timeout=left)
        asked = list(dict.fromkeys([at, *(ep for _, ep in info.endpoints), *asked]))
        if proposed and _in_force(info, op, server):
            if not info.pending:
                return info
            last = f"waiting for the change at index {info.pending} to commit"
        else:  # not proposed yet, or proposed and lost with a leader that never replicated it
            reply = ask_peer(system, at, ChangeMembers(op, server, endpoint))
            if isinstance(reply, ChangeRefused):
                if not reply.later:
                    raise MembershipError(f"{op} of server {server} refused: {reply.reason}")
                last = reply.reason
            elif isinstance(reply, ChangeAccepted):
                proposed = True
                last = (f"made already (configuration entry {reply.index})" if reply.already
                        else f"proposed at index {reply.index} in term {reply.term}")
                continue  # look again at once: a change that shrinks the majority may commit with its append
        time.sleep(_RETRY_EVERY)
