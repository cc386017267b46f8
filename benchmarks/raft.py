"""Raft: committed commands per second and one-command latency, zactor against PySyncObj.

Both systems run a 3-peer cluster, one OS process per peer, on this machine.
The load comes from inside the leader's process in both (PySyncObj has no
client protocol, so that is how its own benchmark drives it): for a fixed time
a driver keeps ``window`` commands in flight, issuing a new one each time one
is applied on the leader, then lets the rest drain; then it issues one command
at a time to measure latency (from issue to applied on the leader). Commands
are ``size`` bytes. zactor's peers fsync each append before answering or
counting it; PySyncObj runs with its file journal, which it writes through
mmap and never fsyncs. Throughput counts the commands applied within the
time; latencies are those of every command issued, the drained ones too. A
phase that a leader change cuts short (PySyncObj discards its commands; a
zactor leader that lost its term strands them) is run again on the new
leader, at most ``PHASE_ATTEMPTS`` tries, and the report says how often for
each system. (In zactor, stranded commands that reached the new leader commit
with the re-run's first ones, and the re-run's time includes that.)

    python -m benchmarks.raft [--json] [--seconds S] [--window W] [--sizes 10,1000] [--trials N]
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import queue
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from actors import Actor, ActorSystem, ChildSpec, Supervisor
from actors.host import Hosted, host
from apps.etcd.ports import free_ports
from apps.raft.peer import PEER_NAME, Applied, GetState, PeerConfig, RaftPeer, Start
from benchmarks import bench_parser
from benchmarks.percentiles import p50_p99
from benchmarks.pysyncobj_kv import keep_warnings

PEERS = 3
_LEADER_WAIT = 30.0
PHASE_ATTEMPTS = 3
"""Tries of one phase: a leader change in the middle cuts it short, so it is run again."""


class Load:
    """Keeps ``window`` commands in flight for ``seconds``, then lets the ones in flight drain.

    The same bookkeeping drives both systems, so they are measured alike:
    ``start`` and ``done`` return the commands to issue next.
    """

    def __init__(self, size: int, window: int, seconds: float) -> None:
        if size < 8:
            raise ValueError("commands carry an 8-byte sequence number, so size must be at least 8")
        self.size, self.window, self.seconds = size, window, seconds
        self._pad = b"x" * (size - 8)
        self._sent: dict[int, float] = {}
        # A random first number: a command of an abandoned run that is applied late is never
        # taken for one of the run that replaced it on the same peer.
        self._next = random.getrandbits(48)
        self._deadline = 0.0
        self.latencies: list[float] = []
        """Issue-to-applied time of every command of this run, also those applied while draining."""
        self.in_time = 0
        """Commands applied before the deadline: what the throughput counts."""

    def start(self) -> list[bytes]:
        self._deadline = time.perf_counter() + self.seconds
        return [self._command() for _ in range(self.window)]

    def done(self, command: Any) -> list[bytes]:
        if not isinstance(command, bytes) or len(command) != self.size:
            return []
        sent = self._sent.pop(int.from_bytes(command[:8], "big"), None)
        if sent is None:
            return []  # another run's command, or a duplicate
        now = time.perf_counter()
        self.latencies.append(now - sent)
        if now > self._deadline:
            return []
        self.in_time += 1
        return [self._command()]

    @property
    def finished(self) -> bool:
        return bool(self._deadline) and not self._sent

    def result(self) -> dict[str, float]:
        if not self.latencies:
            return {"ops_per_s": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan")}
        p50, p99 = p50_p99(self.latencies)
        return {
            "ops_per_s": round(self.in_time / self.seconds, 1),
            "p50_ms": round(p50 * 1e3, 3),
            "p99_ms": round(p99 * 1e3, 3),
        }

    def _command(self) -> bytes:
        seq = self._next
        self._next += 1
        self._sent[seq] = time.perf_counter()
        return seq.to_bytes(8, "big") + self._pad


# ---- zactor ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leadership:
    """Asks a driver for its peer's (term, is leader)."""


@dataclass(frozen=True, slots=True)
class Run:
    size: int
    window: int
    seconds: float
    report_to: str
    run_id: int


@dataclass(frozen=True, slots=True)
class Abandon:
    """The run was lost to a leader change: its late applies must issue nothing more."""

    run_id: int


@dataclass(frozen=True, slots=True)
class Progress:
    """Asks a driver how many commands of run ``run_id`` it has seen applied (-1: not running it)."""

    run_id: int


@dataclass(frozen=True, slots=True)
class Finished:
    result: dict[str, float]
    run_id: int


class Driver(Actor):
    """The service of a benchmark peer: issues Starts to its own peer and counts what it applies."""

    def __init__(self, endpoint: str) -> None:
        super().__init__()
        assert self.actor_system is not None
        self.peer = self.actor_system.ref(endpoint, PEER_NAME)
        self.load: Load | None = None
        self.run_id = 0
        self.report_to: Any = None

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Applied):
            if self.load is not None:
                for msg in message.msgs:
                    if msg.command_valid:
                        for command in self.load.done(msg.command):
                            self.peer.tell(Start(command))
                if self.load.finished:
                    self.report_to.tell(Finished(self.load.result(), self.run_id))
                    self.load = None
        elif isinstance(message, Progress):
            return len(self.load.latencies) if self.load is not None and message.run_id == self.run_id else -1
        elif isinstance(message, Leadership):
            # Shorter than the benchmark's 1 s wait for the answer, so asks never pile up here.
            return self.peer.ask(GetState(), timeout=0.9)
        elif isinstance(message, Abandon):
            if message.run_id == self.run_id:
                self.load = None
        elif isinstance(message, Run):
            assert self.actor_system is not None
            self.load, self.run_id = Load(message.size, message.window, message.seconds), message.run_id
            self.report_to = self.actor_system.ref(message.report_to)
            for command in self.load.start():
                self.peer.tell(Start(command))
        return None


class _Sink(Actor):
    """In the benchmark's own process: hands what drivers report to the waiting main thread."""

    def __init__(self, inbox: queue.Queue) -> None:
        super().__init__()
        self.inbox = inbox

    def on_receive(self, message: Any) -> None:
        self.inbox.put(message)


def serve_bench_peer(config: PeerConfig) -> None:
    """Child-process target: a Raft peer with a Driver as its service."""
    endpoint = config.endpoints[config.me]
    host(endpoint, [Hosted("driver", Driver, (endpoint,)), Hosted(PEER_NAME, RaftPeer, (config,))])


def _await_leader(is_leader: Any, what: str) -> int:
    """Index of the peer that says it leads; polls, since neither system announces it."""
    deadline = time.monotonic() + _LEADER_WAIT
    while time.monotonic() < deadline:
        for i in range(PEERS):
            try:
                if is_leader(i):
                    return i
            except Exception:  # a peer still starting up
                pass
        time.sleep(0.05)
    raise RuntimeError(f"{what}: no leader within {_LEADER_WAIT} s")


class DriverPeers:
    """The benchmark's side of zactor's bench peers: a phase runs on the leader, and again if a
    leader change strands it.

    The Raft core proposes no entry of its own when a leader is elected, so
    commands in flight across a leader change commit only once a new command
    comes in the new term, and a run whose window is full issues none: it
    would wait out its limit. So once a run has had its seconds, its driver is
    asked every ``check_every`` s how many commands it has seen applied (an
    answer from the driver's own state, which never waits on the Raft peer);
    only when that has not moved are the peers asked who leads, and a run
    whose leader no longer leads in its term is abandoned and started again.
    During the measured seconds nothing is asked at all.
    """

    def __init__(
        self, drivers: list[Any], inbox: queue.Queue, report_to: str, check_every: float = 1.0, drain_limit: float = 60.0
    ) -> None:
        self.drivers, self.inbox, self.report_to = drivers, inbox, report_to
        self.check_every, self.drain_limit = check_every, drain_limit
        self._ids = itertools.count(1)
        self.rerun = 0
        """Phases run again because a leader change stranded them."""

    def _ask(self, i: int, message: Any) -> Any:
        try:
            return self.drivers[i].ask(message, timeout=1.0)
        except Exception:  # a slow or restarting peer tells nothing either way
            return None

    def _states(self) -> dict[int, tuple[int, bool]]:
        """(term, leads) of every peer that answers."""
        return {i: state for i in range(len(self.drivers)) if (state := self._ask(i, Leadership())) is not None}

    def leader(self) -> tuple[int, int]:
        """(peer, term) of the peer leading in the latest term any peer knows; polls until there is one.

        The latest term, since a leader cut off from the others still says it leads, in its old term.
        """
        deadline = time.monotonic() + _LEADER_WAIT
        while time.monotonic() < deadline:
            states = self._states()
            latest = max((term for term, _ in states.values()), default=None)
            for i, (term, leads) in states.items():
                if leads and term == latest:
                    return i, term
            time.sleep(0.05)
        raise RuntimeError(f"zactor: no leader within {_LEADER_WAIT} s")

    def superseded(self, leader: int, term: int) -> bool:
        """Whether ``leader`` no longer leads in ``term``: it says so, or another peer leads in a later term."""
        states = self._states()
        if leader in states and states[leader] != (term, True):
            return True
        return any(leads and now > term for i, (now, leads) in states.items() if i != leader)

    def _take(self, run_id: int, timeout: float) -> dict[str, float] | None:
        """The result of run ``run_id`` if it comes within ``timeout`` s; reports of other runs are dropped."""
        until = time.monotonic() + timeout
        while True:
            try:
                finished = self.inbox.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                return None
            if finished.run_id == run_id:
                return finished.result

    def run_phase(self, size: int, window: int, seconds: float) -> dict[str, float]:
        for _ in range(PHASE_ATTEMPTS):
            leader, term = self.leader()
            run_id = next(self._ids)
            self.drivers[leader].tell(Run(size, window, seconds, self.report_to, run_id))
            deadline = time.monotonic() + seconds + self.drain_limit
            result = self._take(run_id, seconds + self.check_every)
            applied = None
            while result is None:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"zactor: a {size}-byte run did not finish within {seconds + self.drain_limit:.0f} s")
                now = self._ask(leader, Progress(run_id))
                if (now is None or now == applied) and self.superseded(leader, term):
                    result = self._take(run_id, 0.0)  # it may have finished while the peers were asked
                    break
                applied = now
                result = self._take(run_id, min(self.check_every, max(0.0, deadline - time.monotonic())))
            if result is not None:
                return result
            self.drivers[leader].tell(Abandon(run_id))
            self.rerun += 1
        raise RuntimeError(f"zactor: a {size}-byte run was cut short by a leader change {PHASE_ATTEMPTS} times")


def run_zactor(phases: list[tuple[int, int, float]], tmp: str) -> tuple[list[dict[str, float]], int]:
    """Results per phase, and how many phases were run again."""
    endpoints = tuple(f"ipc://{tmp}/zactor-{i}.sock" for i in range(PEERS))
    inbox: queue.Queue = queue.Queue()
    with ActorSystem(f"ipc://{tmp}/bench.sock") as system, Supervisor() as sup:
        system.spawn(_Sink, inbox, name="sink")
        for i in range(PEERS):
            config = PeerConfig(i, endpoints, f"{tmp}/zactor-data-{i}", apply_to=f"{endpoints[i]}#driver", fsync=True)
            sup.start_child(ChildSpec(f"peer-{i}", serve_bench_peer, (config,)))
        peers = DriverPeers([system.ref(ep, "driver") for ep in endpoints], inbox, f"{system.endpoint}#sink")
        results = [peers.run_phase(*phase) for phase in phases]
    return results, peers.rerun


# ---- PySyncObj -------------------------------------------------------------------------------


def _pysyncobj_peer(me: int, addresses: list[str], journal: str, requests: Any, replies: Any) -> None:
    """Child-process target: one PySyncObj peer; answers requests from the benchmark over queues."""
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class Applier(SyncObj):
        @replicated
        def apply(self, command: bytes) -> bytes:
            return command

    logged = keep_warnings(f"peer {me}")

    conf = SyncObjConf(journalFile=journal)
    obj = Applier(addresses[me], [a for i, a in enumerate(addresses) if i != me], conf)
    try:
        while (item := requests.get()) is not None:
            rid, request = item
            if request == "leader?":
                replies.put((rid, obj._isLeader()))
            elif request == "logged?":
                replies.put((rid, list(logged)))
            else:
                replies.put((rid, _pysyncobj_load(obj, *request)))
    finally:
        obj.destroy()


class PhaseFailed(RuntimeError):
    """A PySyncObj run lost commands (a leader change under load discards them) or did not drain in time."""


def _pysyncobj_load(obj: Any, size: int, window: int, seconds: float) -> dict[str, float] | PhaseFailed:
    """One run of a Load through ``obj.apply`` on the leader (the same bookkeeping zactor's Driver does)."""
    from pysyncobj import FAIL_REASON

    load, lock, finished = Load(size, window, seconds), threading.Lock(), threading.Event()
    failures: list[Any] = []
    ended = False

    def applied(result: Any, error: Any) -> None:
        with lock:
            if ended:  # a late callback of a run that failed or timed out issues nothing more
                return
            if error != FAIL_REASON.SUCCESS:
                failures.append(error)
                finished.set()
                return
            for command in load.done(result):
                obj.apply(command, callback=applied)
            if load.finished:
                finished.set()

    with lock:
        for command in load.start():
            obj.apply(command, callback=applied)
    drained = finished.wait(seconds + 60)
    with lock:
        ended = True
    if failures:
        names = {code: name for name, code in vars(FAIL_REASON).items() if isinstance(code, int)}
        return PhaseFailed("PySyncObj run failed: " + ", ".join(names.get(f, str(f)) for f in failures[:3]))
    if not drained:
        return PhaseFailed(f"PySyncObj run failed: not drained {seconds + 60:.0f} s after it began")
    return load.result()


class QueuePeers:
    """The benchmark's side of the queues to PySyncObj's peer processes.

    Requests and replies carry an id: an answer that comes after its asker
    gave up (a slow peer under load) is skipped, never taken for the next one's.
    """

    def __init__(self, requests: list[Any], replies: list[Any]) -> None:
        self.requests, self.replies = requests, replies
        self._ids = itertools.count()
        self.rerun = 0
        """Phases run again because a leader change discarded their commands."""

    def ask(self, i: int, request: Any, timeout: float) -> Any:
        rid = next(self._ids)
        self.requests[i].put((rid, request))
        deadline = time.monotonic() + timeout
        while True:  # raises queue.Empty at the deadline
            got, value = self.replies[i].get(timeout=max(0.0, deadline - time.monotonic()))
            if got == rid:
                return value

    def run_phase(self, size: int, window: int, seconds: float) -> dict[str, float]:
        for _ in range(PHASE_ATTEMPTS):
            leader = _await_leader(lambda i: bool(self.ask(i, "leader?", 5.0)), "PySyncObj")
            reply = self.ask(leader, (size, window, seconds), seconds + 90)
            if not isinstance(reply, PhaseFailed):
                return reply
            self.rerun += 1
        raise RuntimeError(f"{reply} ({PHASE_ATTEMPTS} tries)")


def run_pysyncobj(phases: list[tuple[int, int, float]], tmp: str) -> tuple[list[dict[str, float]], list[str], int]:
    """Results per phase, the warnings PySyncObj's peers logged meanwhile, and how many phases were run again."""
    ctx = multiprocessing.get_context("forkserver")
    addresses = [f"127.0.0.1:{port}" for port in free_ports(PEERS)]
    requests = [ctx.Queue() for _ in range(PEERS)]
    replies = [ctx.Queue() for _ in range(PEERS)]
    procs = [
        ctx.Process(target=_pysyncobj_peer, args=(i, addresses, f"{tmp}/pysyncobj-{i}.journal", requests[i], replies[i]), daemon=True)
        for i in range(PEERS)
    ]
    for p in procs:
        p.start()
    peers = QueuePeers(requests, replies)
    try:
        results = [peers.run_phase(*phase) for phase in phases]
        logged = []
        for i in range(PEERS):
            logged += peers.ask(i, "logged?", 5.0)
        return results, logged, peers.rerun
    finally:
        for q in requests:
            q.put(None)
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)


# ---- the benchmark ---------------------------------------------------------------------------


def run(
    sizes: tuple[int, ...] = (10, 1000), seconds: float = 3.0, window: int = 10000, trials: int = 1, progress: bool = False
) -> dict[str, Any]:
    """Each trial runs zactor's cluster, then PySyncObj's; every figure reported is the median over trials."""
    try:
        import pysyncobj  # noqa: F401 -- only to fail early with a clear message
    except ImportError as exc:
        raise SystemExit("the raft benchmark compares against PySyncObj: pip install -e '.[bench]'") from exc
    latency_seconds = max(seconds / 2, 0.2)
    phases = []
    for size in sizes:
        phases += [(size, window, seconds), (size, 1, latency_seconds)]
    zactor: list[list[dict[str, float]]] = []
    pysyncobj_runs: list[list[dict[str, float]]] = []
    logged: list[str] = []
    rerun = {"zactor": 0, "pysyncobj": 0}
    with tempfile.TemporaryDirectory(prefix="zactor-bench-raft-") as tmp:
        for trial in range(trials):
            trial_dir = os.path.join(tmp, str(trial))
            os.mkdir(trial_dir)
            results, trial_rerun = run_zactor(phases, trial_dir)
            zactor.append(results)
            rerun["zactor"] += trial_rerun
            results, trial_logged, trial_rerun = run_pysyncobj(phases, trial_dir)
            pysyncobj_runs.append(results)
            rerun["pysyncobj"] += trial_rerun
            logged += trial_logged
            if progress:
                print(f"  trial {trial + 1}/{trials} done", file=sys.stderr, flush=True)

    def median(measured: list[list[dict[str, float]]], phase: int, field: str) -> float:
        return round(statistics.median(trial[phase][field] for trial in measured), 3)

    runs = []
    for k, size in enumerate(sizes):
        tp, lat = 2 * k, 2 * k + 1
        z_ops, p_ops = median(zactor, tp, "ops_per_s"), median(pysyncobj_runs, tp, "ops_per_s")
        runs.append(
            {
                "size_bytes": size,
                "zactor_ops_per_s": z_ops,
                "pysyncobj_ops_per_s": p_ops,
                "ratio": round(z_ops / p_ops, 2) if p_ops else None,
                "trial_ratios": [
                    round(z[tp]["ops_per_s"] / p[tp]["ops_per_s"], 2) if p[tp]["ops_per_s"] else None
                    for z, p in zip(zactor, pysyncobj_runs, strict=True)
                ],
                "zactor_p50_ms": median(zactor, lat, "p50_ms"),
                "zactor_p99_ms": median(zactor, lat, "p99_ms"),
                "pysyncobj_p50_ms": median(pysyncobj_runs, lat, "p50_ms"),
                "pysyncobj_p99_ms": median(pysyncobj_runs, lat, "p99_ms"),
                "zactor_window_p50_ms": median(zactor, tp, "p50_ms"),
                "pysyncobj_window_p50_ms": median(pysyncobj_runs, tp, "p50_ms"),
            }
        )
    return {
        "peers": PEERS,
        "seconds": seconds,
        "window": window,
        "trials": trials,
        "zactor_fsync": True,
        "pysyncobj_fsync": False,
        "cpus": os.cpu_count(),
        "runs": runs,
        "zactor_phases_rerun": rerun["zactor"],
        "pysyncobj_phases_rerun": rerun["pysyncobj"],
        "pysyncobj_warnings": len(logged),
        "pysyncobj_warning_samples": logged[:5],
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"raft: {result['peers']} peers in separate processes, {result['window']} commands in flight for "
        f"{result['seconds']} s, then one at a time; zactor fsyncs, PySyncObj does not; "
        f"median of {result['trials']} trial(s)",
        f"  {'bytes':>6}{'zactor ops/s':>14}{'pysyncobj ops/s':>17}{'ratio':>7}"
        f"{'zactor p50 ms':>15}{'p99':>8}{'pysyncobj p50 ms':>18}{'p99':>8}",
    ]
    for r in result["runs"]:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        lines.append(
            f"  {r['size_bytes']:>6}{r['zactor_ops_per_s']:>14.0f}{r['pysyncobj_ops_per_s']:>17.0f}{ratio:>7}"
            f"{r['zactor_p50_ms']:>15.2f}{r['zactor_p99_ms']:>8.2f}{r['pysyncobj_p50_ms']:>18.2f}{r['pysyncobj_p99_ms']:>8.2f}"
        )
    for system, name in (("zactor", "zactor"), ("pysyncobj", "PySyncObj")):
        if result[f"{system}_phases_rerun"]:
            lines.append(f"  {name} lost a run to a leader change {result[f'{system}_phases_rerun']} time(s); each was run again")
    if result["pysyncobj_warnings"]:
        lines.append(f"  PySyncObj logged {result['pysyncobj_warnings']} warnings, for example:")
        lines += [f"    {text[:150]}" for text in result["pysyncobj_warning_samples"][:3]]
    if result["trials"] > 1:
        for r in result["runs"]:
            lines.append(f"  {r['size_bytes']}-byte ratio in each trial: {', '.join(str(x) for x in r['trial_ratios'])}")
    lines.append("  target: ratio >= 2.0 at 10 B and >= 1.5 at 1000 B")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("raft", __doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each throughput run (default 3)")
    parser.add_argument("--window", type=int, default=10000, help="commands in flight during throughput runs (default 10000)")
    parser.add_argument("--trials", type=int, default=1, help="run both systems this many times and report medians (default 1)")
    parser.add_argument("--sizes", default="10,1000", help="comma-separated command sizes in bytes, each >= 8 (default 10,1000)")
    args = parser.parse_args(argv)
    try:
        sizes = tuple(int(s) for s in args.sizes.split(","))
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, not {args.sizes!r}")
    if not sizes or min(sizes) < 8:
        parser.error("every command size must be at least 8 bytes (they carry a sequence number)")
    if args.seconds <= 0 or args.window < 1 or args.trials < 1:
        parser.error("--seconds, --window and --trials must be positive")
    result = run(sizes, args.seconds, args.window, args.trials, progress=not args.json)
    print(json.dumps(result) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
