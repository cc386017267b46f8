"""The lab's Raft test harness, for real peers in real processes.

    with Cluster(3, reliable=True, snapshot=False) as cfg:
        leader = cfg.check_one_leader()
        index = cfg.one(101, 3, retry=False)
        cfg.disconnect(leader); cfg.crash(1); cfg.start(1); cfg.connect(1)

Each peer runs in its own OS process (started from the supervisor's fork
server, never restarted behind the harness's back). The network is the
transport with fault rules: the link between peers i and j works only while
both are connected; ``set_unreliable`` and ``set_long_reordering`` give the
lab's numbers, with Raft's reply messages treated as replies. ``crash(i)``
is SIGKILL of the peer's process; ``start(i)`` starts a new process that
reads what the old one persisted.

Every apply message of every peer comes to the harness's applier and is
checked as the lab checks it: the same command at the same index on every
peer, in order, nothing skipped; in snapshot mode the applier also asks the
peer to snapshot every tenth index (``snapshot_every``) and rebuilds its view
of a peer from an installed snapshot.

A snapshot holds the index and a running digest of the commands up to it,
not the commands themselves (the lab's holds them all): making one costs the
same at index 10 as at index 500,000, so a long soak can snapshot as often
as a short test. An installed snapshot is checked against the digest of the
commands the harness saw committed up to its index, and the peer's view up
to there is taken from those.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self

from actors import Actor, ActorSystem, AskTimeout, ChildSpec, Supervisor
from actors.errors import ActorDeadError
from apps.raft.admin import change_membership, find_leader, plan_join
from apps.raft.core import Config
from apps.raft.membership import ADD_LEARNER, PROMOTE, REMOVE
from apps.raft.messages import REPLY_TYPES, REQUEST_TYPES
from apps.raft.peer import (
    PEER_NAME,
    REMOVED_EXIT,
    Applied,
    GetState,
    PeerConfig,
    PeerStatus,
    Start,
    Status,
    TakeSnapshot,
    serve_peer,
)
from apps.raft.roster import MembersInfo
from transport import FaultRule

log = logging.getLogger(__name__)

SNAPSHOT_INTERVAL = 10

_EMPTY_DIGEST = b""


def _chain(digest: bytes, command: Any) -> bytes:
    """The running digest after one more command (``repr``: the lab's commands are ints and strings)."""
    return hashlib.blake2b(digest + repr(command).encode(), digest_size=16).digest()


class HarnessFailure(AssertionError):
    """What the lab's tester would report with t.Fatalf."""


def _protocol_bytes(counts: dict) -> int:
    return sum(counts["sent_bytes"].get(t, 0) for t in (*REQUEST_TYPES, *REPLY_TYPES))


class _Applier(Actor):
    """Receives every peer's apply messages and checks them."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__()
        self.cluster = cluster

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Applied):
            self.cluster._applied(message)
        return None


class PeerHandle:
    """``start`` and ``get_state`` of one peer, as the lab's tests call them on a Raft object."""

    def __init__(self, cluster: Cluster, i: int) -> None:
        self._ref = cluster._system.ref(cluster.endpoints[i], PEER_NAME)

    def start(self, command: Any) -> tuple[int, int, bool]:
        try:
            return self._ref.ask(Start(command), timeout=2.0)
        except (AskTimeout, ActorDeadError):
            return -1, -1, False

    def get_state(self) -> tuple[int, bool]:
        return self._ref.ask(GetState(), timeout=2.0)

    def status(self) -> PeerStatus:
        return self._ref.ask(Status(), timeout=2.0)


class Cluster:
    harness_endpoint: str | None = None
    """Where the harness's own node binds (None: a fresh ipc:// endpoint); a subclass whose peers live
    on other hosts binds a TCP address they can reach."""

    def __init__(
        self,
        n: int,
        reliable: bool = True,
        snapshot: bool = False,
        *,
        snapshot_every: int = SNAPSHOT_INTERVAL,
        config: Config | None = None,
        tick: float = 0.01,
        seed: int | None = None,
        lazy_disk: bool = False,
        damage_expected: bool = False,
    ) -> None:
        self.n = n
        self.initial = n
        """How many servers the cluster started with (``n`` grows as :meth:`add_server` adds them)."""
        self.removed: set[int] = set()
        """Servers :meth:`remove_server` took out: never started again."""
        self.lazy_disk = lazy_disk
        """Test-only: every peer on the journal's page-cache model (a kill loses what was not fsync'd)."""
        self.damage_expected = damage_expected
        """A soak's disk nemesis damages journals on purpose: a peer's refusal to start is then not an ERROR."""
        self.snapshot_mode = snapshot
        self.snapshot_every = snapshot_every
        self.config = config or Config()
        self.tick = tick
        self.rng = random.Random(seed)
        self._dir = Path(tempfile.mkdtemp(prefix="zactor-raft-"))
        self.endpoints = tuple(f"ipc://{self._dir}/peer-{i}.sock" for i in range(n))
        self.connected = [False] * n
        self.groups: list[set[int]] | None = None
        self.running = [False] * n
        self.incarnation = [0] * n
        self.reliable = reliable
        self.long_reordering = False
        self.extra_rules: dict[int, list[FaultRule]] = {}
        """More fault rules on one peer (``set_peer_rules``), kept through partitions, heals and restarts."""
        self.logs: list[dict[int, Any]] = [{} for _ in range(n)]
        self.last_applied = [0] * n
        self.digests = [_EMPTY_DIGEST] * n
        """Snapshot mode: each peer's running digest of its applied commands."""
        self.snapshots_installed = 0
        """Snapshot mode: snapshots the peers handed to their service (restarts and InstallSnapshot)."""
        self.committed: dict[int, tuple[Any, bytes]] = {}
        """Snapshot mode: index -> the command first applied there and the running digest after it."""
        self.max_index = 0
        self.errors: list[str] = []
        self._lock = threading.Condition()
        self._dead_counts = {"rpcs": 0, "bytes": 0}
        self._sup = Supervisor(max_restarts=1000, within=1.0)
        self._system = ActorSystem(self.harness_endpoint, ask_timeout=5.0)
        self._applier = self._system.spawn(_Applier, self, name="applier")
        self.started_at = time.monotonic()

    def __enter__(self) -> Self:
        try:
            for i in range(self.n):
                self.start(i)
            for i in range(self.n):
                self.connect(i)
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        self._sup.stop(grace=1.0)
        self._system.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    # ---- peers and the network ---------------------------------------------------------

    def peer(self, i: int) -> PeerHandle:
        return PeerHandle(self, i)

    def _rules_for(self, i: int) -> list[FaultRule]:
        rules: list[FaultRule] = []
        for j in range(self.n):
            if j == i:
                continue
            peer = self.endpoints[j]
            if not (self.connected[i] and self.connected[j] and self._same_group(i, j)):
                rules.append(FaultRule(peer, "both", connected=False))
                continue
            if not self.reliable:
                rules.append(FaultRule(peer, "out", types=REQUEST_TYPES, drop=0.1, delay=(0.0, 0.026)))
                rules.append(FaultRule(peer, "out", types=REPLY_TYPES, drop=0.1))
            if self.long_reordering:
                rules.append(FaultRule(peer, "out", types=REPLY_TYPES, reorder=600 / 900))
        rules.extend(self.extra_rules.get(i, ()))
        return rules

    def _apply_rules(self) -> None:
        for i in range(self.n):
            if self.running[i]:
                try:
                    self._system.control(self.endpoints[i], timeout=2.0).set_faults(self._rules_for(i))
                except AskTimeout:
                    log.warning("harness: peer %d did not take its fault rules", i)

    def _same_group(self, i: int, j: int) -> bool:
        return self.groups is None or any(i in g and j in g for g in self.groups)

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Every peer connected, but talking only within its group (a bridge is a peer in two groups)."""
        self.groups = [set(g) for g in groups]
        for i in range(self.n):
            self.connected[i] = True
        self._apply_rules()

    def heal(self) -> None:
        """No more groups, and every running peer connected."""
        self.groups = None
        for i in range(self.n):
            if self.running[i]:
                self.connected[i] = True
        self._apply_rules()

    def connect(self, i: int) -> None:
        self.connected[i] = True
        self._apply_rules()

    def disconnect(self, i: int) -> None:
        self.connected[i] = False
        self._apply_rules()

    def set_unreliable(self, unreliable: bool) -> None:
        self.reliable = not unreliable
        self._apply_rules()

    def set_peer_rules(self, i: int, rules: list[FaultRule]) -> None:
        """Fault rules of the caller's own on peer i, beside the harness's (an empty list removes them):
        a soak's targeted nemesis holds back one peer's AppendEntries, or delays everything it sends."""
        if rules:
            self.extra_rules[i] = list(rules)
        else:
            self.extra_rules.pop(i, None)
        if self.running[i]:
            try:
                self._system.control(self.endpoints[i], timeout=2.0).set_faults(self._rules_for(i))
            except AskTimeout:
                log.warning("harness: peer %d did not take its fault rules", i)

    def set_long_reordering(self, on: bool) -> None:
        self.long_reordering = on
        self._apply_rules()

    def crash(self, i: int) -> None:
        """Cut peer i off and kill its process (SIGKILL): only what it persisted survives."""
        self.connected[i] = False
        if self.running[i]:
            if self._sup.status(f"peer-{i}") == "running":  # not one that stopped itself (removed from the cluster)
                self._remember_counters(i)
                self._sup.kill(f"peer-{i}")
            self._await_exit(i)
            self.running[i] = False
        self._apply_rules()

    def _await_exit(self, i: int) -> None:
        """Until peer i's killed process has exited: its socket file is free only then (a new
        process would be refused the endpoint while the old one still listens)."""
        if not self._sup.wait_for(lambda: self._sup.status(f"peer-{i}") == "exited", 30.0):
            raise HarnessFailure(f"peer {i} did not exit within 30 s of SIGKILL")

    def start(self, i: int) -> None:
        """A new process for peer i, from its persisted state (crashing the old one first)."""
        self.crash(i)
        self._launch(i)
        self._await_up(i)

    # ---- membership -------------------------------------------------------------------------

    def members_info(self, timeout: float = 10.0) -> MembersInfo:
        """The leader's view of the configuration (voters, learners, where each is)."""
        return find_leader(self._system, self.member_endpoints(), timeout=timeout)[0]

    def member_endpoints(self) -> list[str]:
        """Endpoints of every server not removed by :meth:`remove_server`."""
        return [self.endpoints[i] for i in range(self.n) if i not in self.removed]

    def add_server(self, timeout: float = 30.0) -> int:
        """A new, empty server's process, added to the configuration as a learner; its number.

        It catches up by InstallSnapshot and the log; :meth:`promote` makes it a voter.
        """
        plan = plan_join(self.members_info(timeout), f"ipc://{self._dir}/peer-{self.n}.sock")
        if plan.me != self.n:
            raise HarnessFailure(f"the cluster's next server number is {plan.me}, the harness's {self.n}: "
                                 "was a server added behind the harness's back?")
        with self._lock:
            self.n += 1
            self.endpoints = (*self.endpoints, plan.endpoints[plan.me])
            self.connected.append(False)
            self.running.append(False)
            self.incarnation.append(0)
            self.last_applied.append(0)
            self.digests.append(_EMPTY_DIGEST)
            self.logs.append({})
        self.start(plan.me)
        self.connect(plan.me)
        self.add_learner(plan.me, timeout)
        return plan.me

    def add_learner(self, i: int, timeout: float = 30.0) -> None:
        """Tell the cluster about server i, whose process :meth:`add_server` started (again, after that step
        failed: a soak's nemesis finishes a replacement a partition cut short)."""
        change_membership(self._system, self.member_endpoints(), ADD_LEARNER, i, self.endpoints[i], timeout=timeout)

    def promote(self, i: int, timeout: float = 30.0) -> None:
        """Learner i becomes a voter (once it has caught up)."""
        change_membership(self._system, self.member_endpoints(), PROMOTE, i, timeout=timeout)

    def remove_server(self, i: int, timeout: float = 30.0) -> None:
        """Take server i out of the configuration, then make sure its process is gone (it stops itself once it
        learns of its removal; one that has not yet is killed)."""
        change_membership(self._system, self.member_endpoints(), REMOVE, i, timeout=timeout)
        self.removed.add(i)
        self.crash(i)

    def replace(self, i: int, timeout: float = 30.0) -> int:
        """Server i replaced by a new, empty one (added, caught up and promoted, then i removed); its number."""
        new = self.add_server(timeout)
        self.promote(new, timeout)
        self.remove_server(i, timeout)
        return new

    def crash_all(self) -> None:
        """Every peer cut off and SIGKILLed at once (not one by one, which would take turns)."""
        for i in range(self.n):
            self.connected[i] = False
            if self.running[i]:
                self._remember_counters(i)
                self._sup.kill(f"peer-{i}")
        for i in range(self.n):
            if self.running[i]:
                self._await_exit(i)
                self.running[i] = False

    def start_all(self, connect: bool = True) -> None:
        """A new process for every crashed peer, all launched before waiting for any."""
        down = [i for i in range(self.n) if not self.running[i] and i not in self.removed]
        if connect:
            for i in range(self.n):
                self.connected[i] = True
        for i in down:
            self._launch(i)
        for i in down:
            self._await_up(i)
        self._apply_rules()

    def _launch(self, i: int) -> None:
        with self._lock:
            self.incarnation[i] += 1
            self.last_applied[i] = 0
            self.digests[i] = _EMPTY_DIGEST
        self._sup.start_child(self._child_spec(i))
        self.running[i] = True

    def _await_up(self, i: int) -> None:
        deadline = time.monotonic() + 10.0
        while True:  # the process is up when its actor answers
            try:
                self.peer(i).get_state()
                break
            except (AskTimeout, ActorDeadError):
                if self._sup.status(f"peer-{i}") != "running" and self._sup.exit_code(f"peer-{i}") == REMOVED_EXIT:
                    # Started again after the cluster removed it (a change that timed out before the harness saw
                    # it commit): it found out and stopped, as it should. The harness starts it no more.
                    log.info("harness: peer %d stopped at once: the cluster had removed it", i)
                    self.removed.add(i)
                    self.running[i] = self.connected[i] = False
                    return
                if time.monotonic() > deadline or self._sup.status(f"peer-{i}") != "running":
                    raise HarnessFailure(f"peer {i} did not start") from None

    def _child_spec(self, i: int) -> ChildSpec:
        """What runs in peer i's process: a Raft peer whose applies come to the harness (a subclass may host more)."""
        config = PeerConfig(
            me=i,
            endpoints=self.endpoints,
            data_dir=str(self.data_dir(i)),
            apply_to=str(self._applier.address),
            incarnation=self.incarnation[i],
            raft=self.config,
            tick=self.tick,
            lazy_disk=self.lazy_disk,
            damage_expected=self.damage_expected,
            initial=self.initial,
        )
        return ChildSpec(f"peer-{i}", serve_peer, (config, self._rules_for(i)), restart="temporary")

    def pid(self, i: int) -> int | None:
        """The OS process id of peer i's current process (for SIGSTOP/SIGCONT by the soak tool), None if down."""
        return self._sup.pid(f"peer-{i}") if self.running[i] else None

    def restart(self, i: int) -> None:
        """A new process for peer i from what it persisted, connected to the network."""
        self.start(i)
        self.connect(i)

    def restart_all(self) -> None:
        """Every crashed peer back, from what it persisted, connected to the network."""
        self.start_all(connect=True)

    def leader(self) -> int | None:
        """The running, connected peer that leads in the highest term, if any."""
        best: tuple[int, int] | None = None
        for i in range(self.n):
            if self.running[i] and self.connected[i]:
                state = self._state(i)
                if state is not None and state[1] and (best is None or state[0] > best[0]):
                    best = (state[0], i)
        return best[1] if best else None

    def wait_for_leader(self, timeout: float = 10.0) -> int:
        """The peer :meth:`leader` names, once one does; HarnessFailure after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            who = self.leader()
            if who is not None:
                return who
            time.sleep(0.05)
        raise HarnessFailure(f"no leader within {timeout} s")

    def data_dir(self, i: int) -> Path:
        """Where peer i keeps its journal (for tests that damage it between a crash and a start)."""
        return self._dir / f"data-{i}"

    def exit_code(self, i: int) -> int | None:
        """The exit code of peer i's last process to exit (-9 after a crash), None if none has."""
        return self._sup.exit_code(f"peer-{i}")

    def wait_for_exit(self, i: int, timeout: float) -> int | None:
        """Peer i's exit code once its process has ended by itself (a removed server stops), None if it still
        runs after ``timeout`` seconds (woken by the supervisor's events, not polled)."""
        name = f"peer-{i}"
        if not self._sup.wait_for(lambda: self._sup.status(name) != "running", timeout):
            return None
        self.running[i] = self.connected[i] = False
        return self._sup.exit_code(name)

    def _remember_counters(self, i: int) -> None:
        try:
            counts = self._system.control(self.endpoints[i], timeout=1.0).counters()
        except AskTimeout:
            return
        self._dead_counts["rpcs"] += sum(counts["sent"].get(t, 0) for t in REQUEST_TYPES)
        self._dead_counts["bytes"] += _protocol_bytes(counts)

    def _counters(self) -> list[dict]:
        out = []
        for i in range(self.n):
            if self.running[i]:
                try:
                    out.append(self._system.control(self.endpoints[i], timeout=2.0).counters())
                except AskTimeout:
                    pass
        return out

    def rpc_total(self) -> int:
        """Requests (RequestVote, AppendEntries, InstallSnapshot) sent by all peers so far."""
        return self._dead_counts["rpcs"] + sum(sum(c["sent"].get(t, 0) for t in REQUEST_TYPES) for c in self._counters())

    def bytes_total(self) -> int:
        """Bytes of every Raft request and reply sent by all peers so far (not the harness's own traffic)."""
        return self._dead_counts["bytes"] + sum(_protocol_bytes(c) for c in self._counters())

    def max_log_size(self) -> int:
        """The largest persisted raft state (without the snapshot) over the running peers."""
        return max((self.peer(i).status().raft_state_size for i in range(self.n) if self.running[i]), default=0)

    # ---- the applier's checks ------------------------------------------------------------------

    def _applied(self, batch: Applied) -> None:
        i = batch.peer
        with self._lock:
            if batch.incarnation != self.incarnation[i]:
                return  # from a process that has since been killed
            for m in batch.msgs:
                if m.snapshot_valid:
                    self._ingest_snapshot(i, m.snapshot, m.snapshot_index)
                elif m.command_valid:
                    self._check_apply(i, m.command_index, m.command)
            self._lock.notify_all()

    def _check_apply(self, i: int, index: int, command: Any) -> None:
        if self.snapshot_mode and index != self.last_applied[i] + 1:
            self.errors.append(f"server {i} apply out of order, expected index {self.last_applied[i] + 1}, got {index}")
            return
        for j in range(self.n):
            old = self.logs[j].get(index)
            if index in self.logs[j] and old != command:
                self.errors.append(f"commit index={index} server={i} {command!r} != server={j} {old!r}")
        if not self.snapshot_mode and index > 1 and (index - 1) not in self.logs[i]:
            self.errors.append(f"server {i} apply out of order {index}")
        self.logs[i][index] = command
        self.last_applied[i] = index
        self.max_index = max(self.max_index, index)
        if self.snapshot_mode:
            self.digests[i] = _chain(self.digests[i], command)
            first = self.committed.setdefault(index, (command, self.digests[i]))
            if first[1] != self.digests[i] and first[0] == command:
                self.errors.append(f"server {i} applied index {index} after a history that differs from another server's")
            if (index + 1) % self.snapshot_every == 0:
                payload = pickle.dumps((index, self.digests[i]))
                self._system.ref(self.endpoints[i], PEER_NAME).tell(TakeSnapshot(index, payload))

    def _ingest_snapshot(self, i: int, data: bytes, index: int) -> None:
        try:
            last, digest = pickle.loads(data)
        except Exception as exc:  # a snapshot the harness did not write
            self.errors.append(f"server {i}: undecodable snapshot: {exc!r}")
            return
        if last != index:
            self.errors.append(f"server {i} snapshot index {index} does not match its content ({last})")
            return
        first = self.committed.get(index)
        if first is None or first[1] != digest:
            self.errors.append(f"server {i} installed a snapshot at index {index} whose commands differ from those committed")
            return
        self.logs[i] = {k: self.committed[k][0] for k in range(1, index + 1)}
        self.last_applied[i] = index
        self.digests[i] = digest
        self.snapshots_installed += 1

    # ---- the lab's helpers ----------------------------------------------------------------------

    def _fail(self, message: str) -> None:
        raise HarnessFailure(message)

    def check_no_errors(self) -> None:
        with self._lock:
            if self.errors:
                self._fail("apply error: " + self.errors[0])

    def _state(self, i: int) -> tuple[int, bool] | None:
        try:
            return self.peer(i).get_state()
        except (AskTimeout, ActorDeadError):
            return None

    def check_one_leader(self) -> int:
        for _ in range(10):
            time.sleep(self.rng.uniform(0.45, 0.55))
            leaders: dict[int, list[int]] = {}
            for i in range(self.n):
                if self.connected[i] and self.running[i]:
                    state = self._state(i)
                    if state is not None and state[1]:
                        leaders.setdefault(state[0], []).append(i)
            for term, who in leaders.items():
                if len(who) > 1:
                    self._fail(f"term {term} has {len(who)} (>1) leaders: {who}")
            if leaders:
                return leaders[max(leaders)][0]
        self._fail("expected one leader, got none")
        return -1

    def check_terms(self) -> int:
        term = -1
        for i in range(self.n):
            if self.connected[i] and self.running[i]:
                state = self._state(i)
                if state is None:
                    continue
                if term == -1:
                    term = state[0]
                elif term != state[0]:
                    self._fail("servers disagree on term")
        return term

    def check_no_leader(self) -> None:
        for i in range(self.n):
            if self.connected[i] and self.running[i]:
                state = self._state(i)
                if state is not None and state[1]:
                    self._fail(f"expected no leader among connected servers, but {i} claims to be leader")

    def n_committed(self, index: int) -> tuple[int, Any]:
        with self._lock:
            if self.errors:
                self._fail("apply error: " + self.errors[0])
            count, command = 0, None
            for i in range(self.n):
                if index in self.logs[i]:
                    cmd = self.logs[i][index]
                    if count > 0 and cmd != command:
                        self._fail(f"committed values do not match: index {index}, {command!r}, {cmd!r}")
                    count, command = count + 1, cmd
            return count, command

    def _wait_applied(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until the applier's view satisfies ``predicate`` (woken by every apply)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    def wait(self, index: int, n: int, start_term: int) -> Any:
        delay = 0.01
        for _ in range(30):
            count, _ = self.n_committed(index)
            if count >= n:
                break
            self._wait_applied(lambda: self.n_committed(index)[0] >= n, delay)
            if delay < 1.0:
                delay *= 2
            if start_term > -1:
                for i in range(self.n):
                    if self.running[i]:
                        state = self._state(i)
                        if state is not None and state[0] > start_term:
                            return -1  # someone moved on: the caller should retry
        count, command = self.n_committed(index)
        if count < n:
            self._fail(f"only {count} decided for index {index}; wanted {n}")
        return command

    def one(self, command: Any, expected_servers: int, retry: bool = False) -> int:
        return self.one_from(1, command, expected_servers, retry)[0]

    def one_from(self, first: int, command: Any, expected_servers: int, retry: bool = False) -> tuple[int, int]:
        """The lab's ``one``, offering the command to servers from ``first`` on; returns (index, the server that took it).

        The lab's ``one`` starts at server 1 on every call, so while that
        server is paused every call waits out an ask timeout on it first. A
        soak's client passes the server that took its last command, as a
        clerk remembers its leader, and pays that wait once per leader change.
        """
        t0 = time.monotonic()
        starts = (first - 1) % self.n
        while time.monotonic() - t0 < 10.0:
            index = -1
            for _ in range(self.n):
                starts = (starts + 1) % self.n
                if self.connected[starts] and self.running[starts]:
                    index1, _, ok = self.peer(starts).start(command)
                    if ok:
                        index = index1
                        break
            if index != -1:

                def agreed() -> bool:
                    count, cmd = self.n_committed(index)
                    return count > 0 and count >= expected_servers and cmd == command

                if self._wait_applied(agreed, 2.0):
                    return index, starts
                if not retry:
                    self._fail(f"one({command!r}) failed to reach agreement")
            else:
                time.sleep(0.05)
        self._fail(f"one({command!r}) failed to reach agreement")
        return -1, -1
