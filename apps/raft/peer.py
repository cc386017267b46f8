"""The Raft peer actor: the shell that runs a RaftCore on the actor runtime, one peer per process.

It owns the I/O the core must not do: a tick timer, persistence (an fsync'd
append of every Ready that changes durable state, before any of that Ready's
messages leave), sending to the other peers, and delivering apply messages,
in order, to the service (an actor, told ``Applied`` batches). A Ready is
taken only once the mailbox is empty, or every ``_MAX_DEFERRED`` messages, so
requests that arrive together share one fsync: group commit. The peer is
inline (see ``RaftPeer.inline``): a message told by an actor of its own
process queues, one from the network is served as it is read (a burst of
them queues behind a marker and shares one Ready, ``_BurstRead``). The service
talks to it with ``Start``, ``GetState`` and ``TakeSnapshot`` asks, the lab's
``Start()``, ``GetState()`` and ``Snapshot()``.

A service that keeps requests waiting on Raft (the replicated KV server) also
tells it ``Start`` and ``ReadIndex`` without waiting for an answer, so that
proposals queue up and share one fsync; it learns the outcome from the
``Applied`` stream (which carries confirmed reads too) and from
``RoleChanged``, told whenever this peer's term or leadership changes, so a
waiting request is never left hanging on a leadership that is gone.

Membership: the peer reaches a server by the endpoint the configuration
keeps for it (the context of the change that added it), else by its place in
``PeerConfig.endpoints`` (the servers a cluster started with), and follows
every configuration the core takes, appended or truncated. ``Members`` and
``ChangeMembers`` asks are how an operator's tool sees and changes it
(``apps/raft/admin.py``). A change already made (a retried add, promote or
remove) is answered as accepted, with nothing appended, so that a retry after
a timeout, or a second operator making the same change, succeeds.

A peer whose node cannot accept connections for want of open files (a crowd
of strangers, or a leak) neither leads nor campaigns until :data:`STARVED_FOR`
seconds after the last refused accept: a leader keeps its peers' connections
and so its heartbeats, and would otherwise hold a leadership no new client can
reach.

A peer whose core finds itself removed from the cluster for good
(``RaftCore.removed``) says so in one line and stops its process, which
exits with :data:`REMOVED_EXIT` (the supervisor's "done, do not restart"),
as etcd's removed member does: nobody has to find and kill it.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from actors import EXIT_DONE, Actor, CorruptStateError
from actors.host import Hosted, host
from apps.raft.core import Config, RaftCore, Ready
from apps.raft.messages import (
    AppendEntries,
    AppendEntriesReply,
    ApplyMsg,
    InstallSnapshot,
    InstallSnapshotReply,
    MemberCheck,
    ReadState,
    Removed,
    RequestVote,
    RequestVoteReply,
)
from apps.raft.roster import ChangeMembers, Members, Roster
from apps.raft.storage import RaftStorage
from transport import FaultRule
from transport.message import message

log = logging.getLogger(__name__)

PEER_NAME = "raft"
_MAX_DEFERRED = 256
_PROTOCOL = (RequestVote, RequestVoteReply, AppendEntries, AppendEntriesReply, InstallSnapshot, InstallSnapshotReply, MemberCheck, Removed)


@message
class Start:
    command: Any


@message
class GetState:
    pass


@message
class TakeSnapshot:
    index: int
    data: bytes


@message
class ReadIndex:
    """Start a ReadIndex read; it comes back in ``Applied.reads`` if and when it is confirmed."""

    request_id: Any


@message
class RoleChanged:
    """Told to the service whenever the peer's term, leadership or known leader changes."""

    peer: int
    incarnation: int
    term: int
    is_leader: bool
    leader: int | None
    leader_endpoint: str | None = None
    """Where the leader is reached (None: not known), for the service's "try there" hints."""


@message
class Status:
    pass


@message
class PeerStatus:
    me: int
    term: int
    role: str
    leader: int | None
    commit_index: int
    last_index: int
    raft_state_size: int
    snapshot_size: int
    applied_index: int = 0
    """The last index handed to the service (its state machine is this far)."""
    old_term_messages: int = 0
    """Messages from an older term received since this incarnation started (each turned away)."""
    old_term_entries_refused: int = 0
    """Of those, AppendEntries that carried entries: refused, their entries not appended."""


@message
class Applied:
    peer: int
    incarnation: int
    msgs: tuple[ApplyMsg, ...]
    reads: tuple[ReadState, ...] = ()
    raft_state_size: int = -1
    """Bytes of persisted Raft state (without the snapshot) after this batch was taken."""


@message
class _Tick:
    pass


@message
class _BurstRead:
    """Told to itself while its node reads a burst: what the burst brings queues behind it, and one Ready
    (one fsync) is taken for all of it, not one per message read."""


STARVED_FOR = 5.0
"""Seconds after its node last failed to accept a connection for want of open files that a peer neither
leads nor campaigns (``RaftCore.tick(may_lead=False)``): the clients it could not accept go to another
server. As long as a stranger's unfinished handshake holds a descriptor (``HANDSHAKE_MS``), so a flood
that keeps the table full keeps the peer out, and one that stops lets it back after that long."""


@dataclass(frozen=True)
class PeerConfig:
    me: int
    endpoints: tuple[str, ...]
    """Where server i is reached, by number ("" for one not known); ``endpoints[me]`` is this peer's own. The
    servers a cluster started with are 0..initial-1; those added later are found in the configuration."""
    data_dir: str
    apply_to: str | None = None
    """Address (``endpoint#name``) of the service actor that receives ``Applied``."""
    incarnation: int = 0
    raft: Config = Config()  # noqa: RUF009 -- frozen, so one shared default is safe
    tick: float = 0.01
    """Seconds per core tick."""
    fsync: bool = True
    storage: Any = RaftStorage
    """The storage class (called as ``storage(data_dir, fsync=..., lazy_disk=...)``): a harness's seam for broken variants."""
    lazy_disk: bool = False
    """Test-only: the journal's page-cache model, so a SIGKILL loses what was not fsync'd."""
    damage_expected: bool = False
    """A harness that damages state files on purpose counts each refusal itself and reports them as one line
    per kind: the peer's own refusal line is then INFO, not ERROR (see :func:`refusing_damaged_state`)."""
    initial: int = 0
    """How many servers the cluster started with (0: ``len(endpoints)``). A server added later is given the
    cluster's number, so that its core starts from the configuration the cluster started from, as it is not in."""
    on_removed: Callable[[], None] | None = field(default=None, compare=False)
    """Called once the peer finds itself removed from the cluster for good, before it stops its actor system;
    None: it only goes quiet (the process that hosts it decides; :func:`exiting_when_removed` exits)."""


class RaftPeer(Actor):
    inline = True
    """Served on its node's I/O thread, beside the KV server (also inline): a message from another peer or
    from the service is handled where it was read, and a put crosses no thread between the two actors.
    Its one blocking step is the journal's fsync, which then holds the node's reads for its length
    (they wait in ZeroMQ and come as one burst: the next group commit). Measured (16 clients putting,
    3 servers): +14% puts/s, server CPU per put 148 -> 123 us."""

    def __init__(self, config: PeerConfig) -> None:
        super().__init__()
        self.config = config
        self.storage: RaftStorage = config.storage(config.data_dir, fsync=config.fsync, lazy_disk=config.lazy_disk)
        restored = self.storage.load()  # a damaged state file fails the spawn, loudly
        self.core = RaftCore(config.me, config.initial or len(config.endpoints), config.raft, random.Random(), restored)
        self.peers: dict[int, Any] = {}
        self.roster = Roster(self.core, config.endpoints)
        assert self.actor_system is not None
        self.service = self.actor_system.ref(config.apply_to) if config.apply_to else None
        self._deferred = 0
        self._role: tuple[int, bool, int | None, str | None] | None = None
        self._left = False
        self._node = self.actor_system.node

    def on_start(self) -> None:
        self.schedule_every(self.config.tick, _Tick())
        self._process()

    def on_stop(self) -> None:
        self.storage.close()

    def on_receive(self, message: Any) -> Any:
        result = self._handle(message)
        # Every message ends here, so a Ready deferred while others were
        # queued is taken by whichever message empties the mailbox.
        self._process_when_idle()
        if self.core.removed and not self._left:
            # Here, not in on_start: a server started again after its removal finds out at its first tick,
            # once its host has started the node, not while the host is still setting up.
            self._leave()
        return result

    def _handle(self, message: Any) -> Any:
        if isinstance(message, _BurstRead):
            pass
        elif isinstance(message, _Tick):
            self.core.tick(may_lead=not self._node.starved(STARVED_FOR))
        elif isinstance(message, _PROTOCOL):
            self.core.step(message)
        elif isinstance(message, Start):
            return self.core.propose(message.command)
        elif isinstance(message, ReadIndex):
            return self.core.read_index(message.request_id)
        elif isinstance(message, GetState):
            return self.core.term, self.core.is_leader
        elif isinstance(message, TakeSnapshot):
            self.core.snapshot(message.index, message.data)
        elif isinstance(message, Status):
            c = self.core
            return PeerStatus(c.me, c.term, c.role.value, c.leader_hint, c.commit_index, c.last_index,
                              self.storage.raft_state_size, self.storage.snapshot_size, c.last_applied,
                              c.old_term_messages, c.old_term_entries_refused)
        elif isinstance(message, Members):
            return self.roster.members_info()
        elif isinstance(message, ChangeMembers):
            return self.roster.change(message)
        else:
            log.warning("raft peer %d: ignored a %s", self.config.me, type(message).__name__)
        return None

    def endpoint_of(self, server: int | None) -> str | None:
        """Where ``server`` is reached (see :meth:`Roster.endpoint_of`)."""
        return self.roster.endpoint_of(server)

    def _send(self, msg: Any) -> None:
        peer = self.peers.get(msg.dst)
        if peer is None and (endpoint := self.endpoint_of(msg.dst)) is not None:
            assert self.actor_system is not None
            peer = self.peers[msg.dst] = self.actor_system.ref(endpoint, PEER_NAME)
        if peer is None:  # a server added by a change this peer has not got (it learns of it with the log)
            log.warning("raft peer %d: no endpoint for peer %d, dropped a %s", self.config.me, msg.dst, type(msg).__name__)
            return
        peer.tell(msg)

    def _process_when_idle(self) -> None:
        self._deferred += 1
        if self._deferred >= _MAX_DEFERRED:
            self._process()
        elif self.more_waiting():
            pass  # the message that empties the mailbox takes the Ready
        elif self._node.reading_burst:
            # Served as read, inline, with more read right behind it (AppendEntries that came during a
            # long fsync, the lab harness's Starts): the marker queues them, and the last takes the Ready.
            self.actor_ref.tell(_BurstRead())
        else:
            self._process()

    def _process(self) -> None:
        self._deferred = 0
        core = self.core
        service = self.service

        def deliver(rd: Ready) -> None:
            if service is not None:
                service.tell(Applied(self.config.me, self.config.incarnation, rd.apply, rd.read_states, self.storage.raft_state_size))

        drain_ready(core, self.storage, self._send, deliver)
        # The leader's endpoint is part of it: a lagging follower may hear from a leader its log does not
        # name yet, and learns where it is only when the change that added it arrives.
        role = (core.term, core.is_leader, core.leader_hint, self.endpoint_of(core.leader_hint))
        if role != self._role and self.service is not None:
            self._role = role
            self.service.tell(RoleChanged(self.config.me, self.config.incarnation, *role))

    def _leave(self) -> None:
        """Removed for good: say so once, and stop this process's actor system if the host asked for that."""
        self._left = True
        by = self.core.removed_by
        log.info("raft peer %d: removed from the cluster for good (voters now %s); this server stops",
                 self.core.me, list(by.voters) if by is not None else "?")
        if self.config.on_removed is None:
            return
        self.config.on_removed()
        assert self.actor_system is not None
        # Not from this actor's own thread: stopping the system stops this actor and waits for it.
        threading.Thread(target=self.actor_system.stop, name="zactor-removed", daemon=False).start()


def drain_ready(core: RaftCore, storage: RaftStorage, send: Callable[[Any], None], deliver: Callable[[Ready], None]) -> None:
    """The Ready cycle, until the core has nothing more: send, persist, send what needed the disk, hand applies
    and reads to the service, advance.

    A leader's appends and heartbeats (``rd.messages``) go out before its own
    write, so followers write their copies while the leader writes its own
    (Raft thesis §10.2.1): the core counts the leader's entries toward a
    majority only after ``advance``, and an answer to these messages is
    handled only after this cycle returns, so nothing commits on a leader's
    unwritten entry. Votes and acknowledgements wait for the write.

    Shared by the peer actor and the KV simulation (``apps/kvraft/sim.py``), so
    the order the simulation checks is the order the real peer keeps.
    """
    while core.has_ready():
        rd = core.ready()
        for msg in rd.messages:
            send(msg)
        if rd.must_sync:
            storage.save(rd, core)  # durable before any acknowledgement or vote of this Ready is sent, or an apply
        for msg in rd.messages_after_persist:
            send(msg)
        if rd.apply or rd.read_states:
            deliver(rd)
        core.advance(rd)


DAMAGED_STATE_EXIT = 3
"""Exit code of a peer's process that refused its damaged state (a journal with a flipped bit, a torn snapshot)."""

REMOVED_EXIT = EXIT_DONE
"""Exit code of a peer's process that stopped because the cluster removed it for good: the supervisor's
"done, do not restart" (a removed server started again would only find out and stop once more)."""


@contextmanager
def exiting_when_removed(config: PeerConfig) -> Iterator[PeerConfig]:
    """``config`` made to stop its host when the peer is removed; on leaving the block, the process exits with
    :data:`REMOVED_EXIT` if that is why the host stopped (a child-process target's last step)."""
    removed = threading.Event()
    yield dataclasses.replace(config, on_removed=removed.set)
    if removed.is_set():
        sys.exit(REMOVED_EXIT)


@contextmanager
def refusing_damaged_state(who: str, *, expected: bool = False) -> Iterator[None]:
    """A process that finds its persisted state damaged says so in one line and exits with
    :data:`DAMAGED_STATE_EXIT`: the refusal is the correct outcome, not a crash to print a traceback for
    (a soak that flips bits on purpose would otherwise fill the terminal with them). ``expected``: the
    damage was done on purpose by a harness that reports it, so the line is INFO, not ERROR."""
    try:
        yield
    except CorruptStateError as exc:
        log.log(logging.INFO if expected else logging.ERROR, "%s refuses to start from damaged state: %s", who, exc)
        sys.exit(DAMAGED_STATE_EXIT)


def serve_peer(config: PeerConfig, faults: list[FaultRule] | None = None) -> None:
    """Child-process target: one Raft peer at ``config.endpoints[config.me]`` until stopped."""
    with exiting_when_removed(config) as config, refusing_damaged_state(f"raft peer {config.me}", expected=config.damage_expected):
        host(config.endpoints[config.me], [Hosted(PEER_NAME, RaftPeer, (config,))], faults=faults)
