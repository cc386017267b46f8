"""Helpers the test modules share: one copy of each, imported by the tests that need it.

Tests import from here (or get fixtures from ``conftest.py``), never from
another test module, so a test file can be read, run or deleted on its own.
"""

from __future__ import annotations

import os
import random
import select
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from actors import Actor, ActorDeadError, AskTimeout
from apps.kvraft.testing import KVCluster
from apps.raft.core import Config, RaftCore, Ready, Restored
from apps.raft.messages import RequestVoteReply

# --- waiting and ports --------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; for state in another process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]



def rss_bytes(pid: int) -> int:
    """The resident set of process ``pid`` now, in bytes (Linux's /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")

# --- actors ------------------------------------------------------------


def answer_after_kill(ref: Any, message: Any, limit: float) -> tuple[Any, float]:
    """Ask until an answer comes (bounded by ``limit`` s); the answer and the seconds it took."""
    t0 = time.monotonic()
    deadline = t0 + limit
    while True:
        try:
            return ref.ask(message, timeout=max(0.01, min(0.2, deadline - time.monotonic()))), time.monotonic() - t0
        except (AskTimeout, ActorDeadError):
            if time.monotonic() >= deadline:
                raise


class Held(Actor):
    """A local actor that answers once its gate opens (or after 10 s)."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate

    def on_receive(self, message: Any) -> Any:
        self.gate.wait(10)
        return message


class OnStop(Actor):
    """Runs ``then(system)`` in its ``on_stop``. A system stops its actors in the order they were spawned,
    so one hosted between others acts while those before it have stopped and those after it still run."""

    def __init__(self, then: Callable[[Any], None]) -> None:
        super().__init__()
        self.then = then

    def on_stop(self) -> None:
        self.then(self.actor_system)


class Evil:
    """Unpickling this runs a shell command: what a stranger would send."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


# --- the Raft core alone ----------------------------------------------

CFG = Config(election_ticks_min=10, election_ticks_max=10, heartbeat_ticks=2)


def core(me: int = 0, n: int = 3, restored: Restored | None = None, config: Config = CFG) -> RaftCore:
    return RaftCore(me, n, config, random.Random(me), restored)


def drain(c: RaftCore) -> list[Ready]:
    out = []
    while c.has_ready():
        rd = c.ready()
        out.append(rd)
        c.advance(rd)
    return out


def sent(readies: list[Ready], kind: type, after: bool | None = None) -> list:
    msgs = []
    for rd in readies:
        if after in (None, False):
            msgs += [m for m in rd.messages if isinstance(m, kind)]
        if after in (None, True):
            msgs += [m for m in rd.messages_after_persist if isinstance(m, kind)]
    return msgs


def elect(c: RaftCore) -> None:
    for _ in range(c.config.election_ticks_max):
        c.tick()
    drain(c)
    for peer in range(c.n):
        if peer != c.me:
            c.step(RequestVoteReply(c.term, peer, c.me, True))
    assert c.is_leader
    drain(c)


# --- lab 4's rounds of clerks -----------------------------------------

ROUND_SECONDS = 5.0
ELECTION_TIMEOUT = 1.0
MAXRAFTSTATE = 1000


def element(client: int, j: int) -> str:
    return f"x {client} {j} y"


def assert_appends_once_in_order(value: str, client: int, count: int) -> None:
    last = -1
    for j in range(count):
        e = element(client, j)
        assert value.count(e) == 1, f"client {client}'s append {j} appears {value.count(e)} times"
        at = value.find(e)
        assert at > last, f"client {client}'s append {j} is out of order"
        last = at


def generic(
    tmp_path: Path,
    nclients: int,
    nservers: int,
    *,
    unreliable: bool = False,
    crash: bool = False,
    partitions: bool = False,
    maxraftstate: int = -1,
    randomkeys: bool = False,
    read: str = "index",
    rounds: int = 3,
) -> None:
    with KVCluster(nservers, maxraftstate=maxraftstate, unreliable=unreliable, read=read) as cluster:
        for rnd in range(rounds):
            stop = threading.Event()
            errors: list[str] = []
            counts = [0] * nclients

            def client(cid: int) -> None:
                rng = random.Random(rnd * 1000 + cid)
                ck = cluster.make_clerk()
                key = str(cid)
                expected = ""
                if not randomkeys:
                    ck.put(key, "")
                j = 0
                while not stop.is_set():
                    if randomkeys:
                        key = str(rng.randrange(nclients))
                    if rng.random() < 0.5:
                        nv = element(cid, j)
                        ck.append(key, nv)
                        if not randomkeys:
                            expected += nv
                        j += 1
                    elif randomkeys and rng.random() < 0.1:
                        ck.put(key, element(cid, j))
                        j += 1
                    else:
                        value = ck.get(key)
                        if not randomkeys and value != expected:
                            errors.append(f"client {cid}: get {key!r} = {value!r}, expected {expected!r}")
                counts[cid] = j

            def partitioner() -> None:
                prng = random.Random(rnd)
                if stop.wait(1.0):
                    return
                while not stop.is_set():  # as the lab's partitioner: each server to one of two groups by a coin
                    side = [prng.randrange(2) for _ in range(nservers)]
                    cluster.partition([[i for i in range(nservers) if side[i] == g] for g in (0, 1)])
                    stop.wait(1.0 + prng.uniform(0.0, 0.2))

            threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(nclients)]
            if partitions:
                threads.append(threading.Thread(target=partitioner, daemon=True))
            for t in threads:
                t.start()
            time.sleep(ROUND_SECONDS)  # the lab's round length: clients run for 5 s
            stop.set()
            if partitions:
                threads[-1].join(timeout=10)
                cluster.heal()
                time.sleep(ELECTION_TIMEOUT)  # the lab waits one election timeout for a leader to settle
            if crash:
                cluster.crash_all()
                time.sleep(1.0)  # the lab's pause with every server down
                cluster.restart_all()
            for t in threads:
                t.join(timeout=60)
                assert not t.is_alive(), "a client did not finish its last operation"
            assert not errors, errors[:3]
            if not randomkeys:  # every client's key, read by clerks side by side
                with ThreadPoolExecutor(nclients) as pool:
                    values = list(pool.map(lambda cid: cluster.make_clerk().get(str(cid)), range(nclients)))
                for cid in range(nclients):
                    assert_appends_once_in_order(values[cid], cid, counts[cid])
            if maxraftstate > 0:
                size = cluster.max_log_size()
                assert size <= 8 * maxraftstate, f"persisted raft state {size} > 8 x maxraftstate"
            else:
                assert cluster.max_snapshot_size() == 0, "a snapshot exists although maxraftstate is -1"
        cluster.check_linearizable()


def readable(source: Any, timeout: float) -> bool:
    """Whether ``source`` (a descriptor or a file object) has input within ``timeout`` seconds.

    poll, not select: select refuses descriptors above 1023, and a test that opened many sockets (with the
    open-file limit raised) can leave this process's next pipes numbered above that."""
    waiter = select.poll()
    waiter.register(source, select.POLLIN)
    return bool(waiter.poll(max(0.0, timeout) * 1000))
