"""A replicated KV server: the KV state machine actor beside a Raft peer, one OS process per server.

The ``kv`` actor takes clerks' requests and proposes Puts and Appends to the
``raft`` actor of the same process (a tell: proposals that arrive together
share one fsync), and applies what Raft commits, in log order. A request
waits, keyed by (client, seq), until an entry with that client and seq
applies (whoever proposed it); the reply then comes from the duplicate
table, so a retry after a leader change is answered, never applied twice.

The actor is inline (served on its node's I/O thread: its handlers only
compute and tell, never block), and a clerk's request is an ask whose reply
target the server keeps until Raft has decided (``reply_later``): the answer
goes back on the request's own connection, read there by the clerk's own
thread, with no reply address and no extra thread on either side. A
``Request`` that comes as a tell (another server's query, the simulation) is
answered by a tell to its ``reply_to`` address, as before.

Gets are ReadIndex reads by default (``read="index"``): the server asks its
peer to confirm leadership with one heartbeat round and answers once it has
applied up to the index the peer yields. ``read="log"`` puts each Get in the
log instead, for comparison. A new leader proposes a ``NoOp`` so that an
entry of its term commits and ReadIndex can start.

Every waiting request is answered "not leader" as soon as the peer reports a
new term or a lost leadership, and after ``MAX_WAIT`` seconds in any case (a
leader cut off in a minority keeps its Gets waiting, never answered with
stale data; the clerk has moved on by then). With ``maxraftstate`` > 0 the
server snapshots its state when the persisted Raft state reaches it.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from actors import Actor
from actors.host import Hosted, host
from apps.kvraft.messages import Append, BadRequest, Get, LogGet, NoOp, Put, Reply, Request, StateDigest
from apps.kvraft.state import KVState
from apps.kvsrv.server import _check as check_write
from apps.raft.core import Config
from apps.raft.membership import ConfEntry
from apps.raft.peer import (
    PEER_NAME,
    Applied,
    PeerConfig,
    RaftPeer,
    ReadIndex,
    RoleChanged,
    Start,
    TakeSnapshot,
    exiting_when_removed,
    refusing_damaged_state,
)
from apps.raft.storage import RaftStorage
from transport import FaultRule
from transport.message import message

log = logging.getLogger(__name__)

SERVER_NAME = "kvraft"
MAX_WAIT = 2.0
"""Seconds a request may wait on Raft before it is answered "not leader"."""
_SWEEP_EVERY = 0.25
READ_MODES = ("index", "log")


@dataclass(frozen=True)
class ServerConfig:
    me: int
    endpoints: tuple[str, ...]
    data_dir: str
    maxraftstate: int = -1
    read: str = "index"
    raft: Config = Config()  # noqa: RUF009 -- frozen, so one shared default is safe
    tick: float = 0.01
    fsync: bool = True
    storage: Any = RaftStorage
    """The Raft peer's storage class (see ``PeerConfig.storage``)."""
    lazy_disk: bool = False
    server_class: Any = None
    """The server actor's class, None for :class:`KVRaftServer`: the seam for broken variants (``apps/soak/broken.py``)."""
    apply_log: str = ""
    """A directory (empty: none) where the server appends ``INDEX DIGEST`` to ``server-ME.applied`` for every
    command it applies, so that a checker can compare what every replica applied at each index over a whole
    run (``apps/soak/applied.py``), not only the final states."""
    damage_expected: bool = False
    """See ``PeerConfig.damage_expected``: the soak's disk nemesis flips bits and reports the refusals."""
    initial: int = 0
    """See ``PeerConfig.initial``: a server added to a running cluster is given the cluster's first size."""

    def __post_init__(self) -> None:
        if self.read not in READ_MODES:
            raise ValueError(f"read must be one of {READ_MODES}, not {self.read!r}")
        if self.maxraftstate == 0 or self.maxraftstate < -1:
            raise ValueError(f"maxraftstate must be -1 (never snapshot) or positive bytes, got {self.maxraftstate}")


@dataclass
class _Waiting:
    since: float
    who: list[tuple[Any, int]] = field(default_factory=list)
    """(reply_to, corr) of every copy of the request that waits: an address, or an ask's reply target."""


@message
class _Sweep:
    pass


@message
class ServerStatus:
    """Asked of a server: what it has applied and what waits on Raft (for harnesses and operators)."""


@message
class ServerState:
    me: int
    term: int
    leading: bool
    applied: int
    snapshot_index: int
    waiting_writes: int
    waiting_reads: int


class KVRaftServer(Actor):
    """``raft`` and ``answer`` default to the peer beside it and replies over the actor runtime;
    the KV simulation (``apps/kvraft/sim.py``) passes its own, and runs this very class."""

    inline = True  # only computes and tells: served on the I/O thread, as its peer is (whose fsync runs there)

    state_class: Any = KVState
    """The replicated state: ``restore(blob)`` and ``snapshot()``; a subclass serves another."""
    write_types: tuple[type, ...] = (Put, Append)
    """Log entries that are clients' writes, keyed by (client, seq) while they wait."""

    def __init__(self, config: ServerConfig, raft: Any = None, answer: Any = None) -> None:
        super().__init__()
        self.config = config
        self.state = self.state_class()
        self.applied = 0
        self.snapshot_index = 0
        self.term = 0
        self.leading = False
        self.leader: int | None = None
        self.leader_endpoint: str | None = None
        self.members_index = 0
        """Index of the latest membership change applied here (told to clerks in every Reply)."""
        if raft is None:
            assert self.actor_system is not None
            raft = self.actor_system.ref(config.endpoints[config.me], PEER_NAME)
        self.raft = raft
        self._send_reply = answer
        self._writes: dict[tuple[int, int], _Waiting] = {}
        self._reads: dict[Any, tuple[float, Any, Any, int]] = {}  # read id -> (since, op, reply_to, corr)
        self._ready_reads: list[tuple[int, Any]] = []  # (read index, read id), confirmed, waiting for apply
        self._read_ids = itertools.count(1)
        self._nonce = int.from_bytes(os.urandom(4), "big")  # read ids of log Gets never clash across restarts
        self._apply_log = -1
        if config.apply_log:
            path = os.path.join(config.apply_log, f"server-{config.me}.applied")
            self._apply_log = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def on_start(self) -> None:
        self.schedule_every(_SWEEP_EVERY, _Sweep())

    def on_stop(self) -> None:
        if self._apply_log >= 0:
            os.close(self._apply_log)
            self._apply_log = -1

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        # Rebuilding this actor alone would give it an empty state while its
        # peer goes on from where it was: stop the whole process instead, so
        # that it starts again (under a supervisor) from snapshot and log.
        log.critical("kvraft server %d failed (%r); stopping its process", self.config.me, exception_value)
        os.kill(os.getpid(), signal.SIGTERM)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Request):
            self._request(message)
        elif isinstance(message, Applied):
            self._applied(message)
        elif isinstance(message, RoleChanged):
            self._role_changed(message)
        elif isinstance(message, _Sweep):
            self._sweep()
        elif isinstance(message, ServerStatus):
            return ServerState(self.config.me, self.term, self.leading, self.applied, self.snapshot_index,
                               len(self._writes), len(self._reads))
        elif isinstance(message, StateDigest):
            return self.applied, self.state.digest()
        else:
            return self._other(message)
        return None

    # ---- requests ---------------------------------------------------------------------------

    def _answer(self, reply_to: Any, corr: int, ok: bool, value: Any = None) -> None:
        """Answer one waiting copy of a request: ``reply_to`` is an address, or the reply target of an ask."""
        try:
            reply = Reply(corr, ok, value, None if ok else self.leader_endpoint, self.members_index)
            if type(reply_to) is not str:
                reply_to.set(reply)
                return
            if self._send_reply is not None:
                self._send_reply(reply_to, reply)
                return
            self.actor_system.ref(reply_to).tell(reply)  # type: ignore[union-attr]
        except Exception as exc:  # a malformed reply address must not stop the server
            log.warning("kvraft server %d: cannot answer %r: %s", self.config.me, reply_to, exc)

    def _request(self, req: Request) -> None:
        if type(req.reply_to) is not str or type(req.corr) is not int:
            log.warning("kvraft server %d: dropped a request with no usable reply address", self.config.me)
            return
        asked = self.reply_later()
        reply_to: Any = req.reply_to if asked is None else asked
        op: Any = req.op
        kind, problem = self._classify(op)
        if problem is not None:
            self._answer(reply_to, req.corr, True, BadRequest(problem))
            return
        if kind == "write":
            seen, reply = self._duplicate(op)
            if seen:  # applied already: any server can say so, leader or not
                self._answer(reply_to, req.corr, True, reply)
                return
        if not self.leading:
            self._answer(reply_to, req.corr, False)
            return
        refusal = self._refuse(op)
        if refusal is not None:
            self._answer(reply_to, req.corr, True, refusal)
            return
        now = time.monotonic()
        if kind == "read":
            self._start_read(op, reply_to, req.corr, now)
            return
        waiting = self._writes.get((op.client, op.seq))
        if waiting is None:
            waiting = self._writes[(op.client, op.seq)] = _Waiting(now)
            self.raft.tell(Start(op))
        waiting.who.append((reply_to, req.corr))

    def _start_read(self, op: Any, reply_to: Any, corr: int, now: float) -> None:
        """Confirm leadership (ReadIndex) or order the read through the log; answered once applied."""
        rid = (self.config.me, self._nonce, next(self._read_ids))
        self._reads[rid] = (now, op, reply_to, corr)
        if self.config.read == "index":
            self.raft.tell(ReadIndex(rid))
        else:
            self.raft.tell(Start(LogGet(op.key, rid)))

    # ---- what a service on this server decides (a subclass serves other operations) ------------

    def _classify(self, op: Any) -> tuple[str, str | None]:
        """("read" or "write", None) for an operation this server takes, or (kind, why not)."""
        if isinstance(op, Get):
            if type(op.key) is not str:
                return "read", f"key must be a string, not {type(op.key).__name__}"
            return "read", None
        if isinstance(op, (Put, Append)):
            return "write", check_write(op) or None
        return "bad", f"not a KV request: {type(op).__name__}"

    def _duplicate(self, op: Any) -> tuple[bool, Any]:
        return self.state.duplicate(op.client, op.seq)

    def _refuse(self, op: Any) -> Any:
        """A reply that answers ``op`` at once without Raft (None: take it); the leader asks."""
        return None

    def _read(self, op: Any) -> Any:
        """The answer to a confirmed read, from the state applied so far."""
        return self.state.get(op.key)

    def _apply_write(self, cmd: Any) -> Any:
        """Apply a committed write (once); its reply."""
        return self.state.apply(cmd)

    def _other(self, message: Any) -> Any:
        log.warning("kvraft server %d: ignored a %s", self.config.me, type(message).__name__)
        return None

    # ---- what Raft decided ------------------------------------------------------------------

    def _applied(self, batch: Applied) -> None:
        record: list[str] = []
        for msg in batch.msgs:
            if msg.snapshot_valid:
                if msg.snapshot_index > self.applied:
                    self.state = self.state_class.restore(msg.snapshot)
                    self.applied = self.snapshot_index = msg.snapshot_index
                continue
            if not msg.command_valid or msg.command_index <= self.applied:
                continue
            if msg.command_index != self.applied + 1:
                raise RuntimeError(f"kvraft server {self.config.me}: apply {msg.command_index} after {self.applied}")
            self.applied = msg.command_index
            self._apply(msg.command)
            if self._apply_log >= 0:
                record.append(f"{msg.command_index} {command_digest(msg.command)}\n")
        if record:
            # One write per batch, of whole lines: a SIGKILL never leaves half a line for the next process to extend.
            os.write(self._apply_log, "".join(record).encode())
        for rs in batch.reads:
            if rs.request_id in self._reads:
                self._ready_reads.append((rs.index, rs.request_id))
        if self._ready_reads:
            self._answer_reads()
        limit = self.config.maxraftstate
        if limit > 0 and batch.raft_state_size >= limit * 0.9 and self.applied > self.snapshot_index:
            self.snapshot_index = self.applied
            self.raft.tell(TakeSnapshot(self.applied, self.state.snapshot()))

    def _apply(self, cmd: Any) -> None:
        if isinstance(cmd, self.write_types):
            reply = self._apply_write(cmd)
            waiting = self._writes.pop((cmd.client, cmd.seq), None)  # type: ignore[attr-defined]
            if waiting is not None:
                for reply_to, corr in waiting.who:
                    self._answer(reply_to, corr, True, reply)
        elif isinstance(cmd, LogGet):
            read = self._reads.pop(cmd.read_id, None)
            if read is not None:
                self._answer(read[2], read[3], True, self._read(read[1]))
        elif isinstance(cmd, ConfEntry):  # the Raft peer's business; clerks are told it happened
            self.members_index = self.applied
        elif not isinstance(cmd, NoOp):
            log.warning("kvraft server %d: skipped a log entry of unknown kind %s", self.config.me, type(cmd).__name__)

    def _answer_reads(self) -> None:
        still = []
        for index, rid in self._ready_reads:
            if index > self.applied:
                still.append((index, rid))
                continue
            read = self._reads.pop(rid, None)
            if read is not None:
                self._answer(read[2], read[3], True, self._read(read[1]))
        self._ready_reads = still

    def _role_changed(self, rc: RoleChanged) -> None:
        lost = rc.term != self.term or (self.leading and not rc.is_leader)
        self.term, self.leader = rc.term, rc.leader
        self.leader_endpoint = rc.leader_endpoint
        became = rc.is_leader and (lost or not self.leading)
        self.leading = rc.is_leader
        if lost:
            self._fail_waiting(lambda since: True)
        if became:
            self.raft.tell(Start(NoOp(rc.term)))

    def _fail_waiting(self, expired: Any) -> None:
        for key, waiting in list(self._writes.items()):
            if expired(waiting.since):
                del self._writes[key]
                for reply_to, corr in waiting.who:
                    self._answer(reply_to, corr, False)
        for rid, (since, _key, reply_to, corr) in list(self._reads.items()):
            if expired(since):
                del self._reads[rid]
                self._answer(reply_to, corr, False)
        self._ready_reads = [(i, rid) for i, rid in self._ready_reads if rid in self._reads]

    def _sweep(self) -> None:
        cutoff = time.monotonic() - MAX_WAIT
        self._fail_waiting(lambda since: since < cutoff)


def command_digest(command: Any) -> str:
    """A short digest of a log command, the same in every process (a message's repr names its fields)."""
    return hashlib.blake2b(repr(command).encode(), digest_size=8).hexdigest()


def serve(config: ServerConfig, faults: list[FaultRule] | None = None) -> None:
    """Child-process target: the KV server ``config.me`` (or ``config.server_class``), its Raft peer beside it."""
    endpoint = config.endpoints[config.me]
    peer = PeerConfig(
        me=config.me,
        endpoints=config.endpoints,
        data_dir=config.data_dir,
        apply_to=f"{endpoint}#{SERVER_NAME}",
        raft=config.raft,
        tick=config.tick,
        fsync=config.fsync,
        storage=config.storage,
        lazy_disk=config.lazy_disk,
        damage_expected=config.damage_expected,
        initial=config.initial,
    )
    hosted = Hosted(SERVER_NAME, config.server_class or KVRaftServer, (config,))
    with exiting_when_removed(peer) as peer, refusing_damaged_state(f"kv server {config.me}", expected=config.damage_expected):
        host(endpoint, [hosted, Hosted(PEER_NAME, RaftPeer, (peer,))], faults=faults)
