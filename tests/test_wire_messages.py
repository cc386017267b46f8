"""Every class that crosses the wire is declared with ``@message``.

The rule lives in ``transport/message.py``; this test keeps it. It runs the
systems for real (a replicated KV service whose three servers, Raft peers
beside them, live in this process on their own nodes and sockets, so that
their traffic to each other is encoded and decoded here too; a lab-2 KV
server; a MapReduce job with worker processes; a node agent in another
process asked to spawn, list and stop; a node's control operations), records
the class of every object pickled or unpickled by the codec in this process,
nested objects included, and fails on any class of the project that is
neither ``@message`` nor an exception or an enum (those pickle by reference
or through :class:`~transport.envelope.Failure`).
"""

from __future__ import annotations

import dataclasses
import enum
import io
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import transport.codec as codec
from actors import ActorSystem
from actors.testing import Echo, Get, Incr, PersistentCounter
from apps.kvraft.client import Clerk as RaftClerk
from apps.kvraft.server import SERVER_NAME, KVRaftServer, ServerConfig
from apps.kvsrv.client import Clerk as KVClerk
from apps.kvsrv.server import KVServer
from apps.mapreduce.job import run_job
from apps.raft.messages import InstallSnapshot
from apps.raft.peer import PEER_NAME, PeerConfig, RaftPeer, Status
from tests.helpers import wait_until
from transport import disconnected
from transport.message import is_message

PROJECT = ("actors.", "transport.", "apps.", "benchmarks.")

pytestmark = pytest.mark.slow  # real systems for about twenty seconds


class _Census:
    """The classes the codec pickled or unpickled while it was installed."""

    def __init__(self) -> None:
        self.seen: set[type] = set()

    def dumps(self, obj: Any, protocol: int) -> bytes:
        seen = self.seen

        class Recording(pickle.Pickler):
            def reducer_override(self, o: Any) -> Any:
                seen.add(type(o))
                return NotImplemented

        buf = io.BytesIO()
        Recording(buf, protocol).dump(obj)
        return buf.getvalue()

    def loads(self, data: Any) -> Any:
        seen = self.seen

        class Recording(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                found = super().find_class(module, name)
                if isinstance(found, type):
                    seen.add(found)
                return found

        return Recording(io.BytesIO(bytes(data))).load()


@pytest.fixture
def census(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Census]:
    recorded = _Census()
    monkeypatch.setattr(codec, "_dumps", recorded.dumps)
    monkeypatch.setattr(codec, "_loads", recorded.loads)
    yield recorded


def _undeclared(classes: set[type], project: tuple[str, ...] = PROJECT) -> list[str]:
    wrong = []
    for cls in classes:
        if not cls.__module__.startswith(project):
            continue
        if issubclass(cls, BaseException | enum.Enum) or is_message(cls):
            continue
        wrong.append(f"{cls.__module__}.{cls.__qualname__}")
    return sorted(wrong)


def _replicated_kv(tmp_path: Path) -> None:
    """Three KV servers with their Raft peers, one cut off long enough to need a snapshot."""
    endpoints = tuple(f"ipc://{tmp_path}/kv{i}.sock" for i in range(3))
    systems = [ActorSystem(e, ask_timeout=10.0) for e in endpoints]
    peers = []
    try:
        for i, system in enumerate(systems):
            config = ServerConfig(i, endpoints, str(tmp_path / f"kv{i}"), maxraftstate=400)
            system.spawn(KVRaftServer, config, name=SERVER_NAME)
            peer = PeerConfig(i, endpoints, config.data_dir, apply_to=f"{endpoints[i]}#{SERVER_NAME}", raft=config.raft,
                              tick=config.tick, fsync=config.fsync)
            peers.append(system.spawn(RaftPeer, peer, name=PEER_NAME))
        with ActorSystem(ask_timeout=10.0) as client:
            clerk = RaftClerk(list(endpoints), system=client)
            clerk.put("k", "")
            cut = [client.control(e) for e in endpoints]
            cut[2].set_faults([disconnected(endpoints[0]), disconnected(endpoints[1])])
            for other in (0, 1):
                cut[other].set_faults([disconnected(endpoints[2])])
            for j in range(40):  # past maxraftstate: the two connected servers snapshot
                clerk.append("k", f"x {j} y ")
            for c in cut:
                c.set_faults([])
            clerk.append("k", "last")  # server 2 catches up by InstallSnapshot
            assert clerk.get("k").endswith("last")
            # The clerk's answer needs only a majority; wait for the cut-off server itself to catch up.
            committed = max(peers[i].ask(Status()).commit_index for i in (0, 1))
            assert wait_until(lambda: peers[2].ask(Status()).commit_index >= committed, timeout=10.0), \
                "the cut-off server never caught up"
    finally:
        for system in systems:
            system.stop()


def test_every_class_sent_over_the_wire_is_a_message(census: _Census, tmp_path: Path, node: tuple[str, Path]) -> None:
    _replicated_kv(tmp_path)

    kv_endpoint = f"ipc://{tmp_path}/kvsrv.sock"
    with ActorSystem(kv_endpoint, ask_timeout=10.0) as server, ActorSystem(ask_timeout=10.0) as client:
        server.spawn(KVServer, name="kv")
        clerk = KVClerk(kv_endpoint, system=client)
        clerk.put("a", "1")
        clerk.append("a", "2")
        assert clerk.get("a") == "12"

    text = tmp_path / "in.txt"
    text.write_text("the quick brown fox jumps over the lazy dog the end\n" * 50)
    run_job("wc", [text], workers=2, n_reduce=2, outdir=tmp_path / "mr", timeout=120)

    agent, _ = node
    with ActorSystem(ask_timeout=20.0) as system:
        counter = system.spawn_process(PersistentCounter, "counter.state", name="census-counter", node=agent)
        assert counter.ask(Incr(2)) == 2 and counter.ask(Get()) == 2
        counter.stop()

    kinds = {cls.__module__ for cls in census.seen}
    assert {"apps.raft.messages", "apps.kvraft.messages", "apps.kvsrv.messages", "apps.mapreduce.protocol",
            "actors.agent_protocol", "transport.control"} <= kinds, f"the tour missed a system: {sorted(kinds)}"
    assert InstallSnapshot in census.seen, "the cut-off server did not catch up by snapshot"
    assert _undeclared(census.seen) == [], "classes sent over the wire without @message"


@dataclasses.dataclass(frozen=True)
class Plain:
    """A dataclass that is not a ``@message``."""

    n: int


def test_the_census_names_a_plain_dataclass_sent_over_the_wire(census: _Census, tmp_path: Path) -> None:
    """The check can fail: a plain dataclass sent to an echo actor on another node is named."""
    endpoint = f"ipc://{tmp_path}/echo.sock"
    with ActorSystem(endpoint, ask_timeout=10.0) as server, ActorSystem(ask_timeout=10.0) as client:
        server.spawn(Echo, name="echo")
        assert client.ref(endpoint, "echo").ask(Plain(1)) == Plain(1)
    assert _undeclared(census.seen, ("tests.",)) == [f"{__name__}.Plain"]
