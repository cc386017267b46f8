"""The peer shell in one process: proposals that arrive together share one journal append (group commit)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from actors import ActorSystem, CorruptStateError
from actors.testing import Collector
from apps.raft.core import RaftCore, Ready
from apps.raft.peer import PEER_NAME, GetState, PeerConfig, RaftPeer, Start, Status
from apps.raft.storage import RaftStorage
from tests.helpers import OnStop, wait_until


def test_proposals_queued_during_an_fsync_share_the_next_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saves: list[int] = []  # entries written by each save that wrote entries
    release = threading.Event()
    save = RaftStorage.save

    def held_save(self: RaftStorage, rd: Ready, core: RaftCore) -> None:
        save(self, rd, core)
        if rd.entries:
            saves.append(len(rd.entries))
            release.wait(10)  # a slow disk: the proposals below queue up meanwhile

    monkeypatch.setattr(RaftStorage, "save", held_save)
    endpoint = f"ipc://{tmp_path}/peer.sock"
    with ActorSystem(endpoint, ask_timeout=10.0) as system:
        system.spawn(RaftPeer, PeerConfig(0, (endpoint,), str(tmp_path / "data")), name=PEER_NAME)
        peer = system.ref(endpoint, PEER_NAME)
        assert wait_until(lambda: peer.ask(GetState())[1], 10), "a one-peer cluster elects itself"
        for k in range(100):
            peer.tell(Start(k))
        release.set()
        assert wait_until(lambda: peer.ask(Status()).commit_index == 100, 10)
    assert sum(saves) == 100
    # The first save holds what had arrived when the peer first found its mailbox
    # empty; everything told while it was held went out in one more.
    assert len(saves) <= 2, saves


def test_every_proposal_is_in_the_journal_after_the_peer_stops(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/peer.sock"
    commands: list[Any] = [f"command {k}" for k in range(300)]
    with ActorSystem(endpoint, ask_timeout=10.0) as system:
        system.spawn(RaftPeer, PeerConfig(0, (endpoint,), str(tmp_path / "data")), name=PEER_NAME)
        peer = system.ref(endpoint, PEER_NAME)
        assert wait_until(lambda: peer.ask(GetState())[1], 10)
        for command in commands:
            peer.tell(Start(command))
        assert wait_until(lambda: peer.ask(Status()).commit_index == len(commands), 10)
    restored = RaftStorage(tmp_path / "data").load()
    assert restored is not None
    assert [e.command for e in restored.entries] == commands


def test_a_data_directory_of_the_older_format_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "raft-state").write_bytes(b"ZST\x01 whatever an older release wrote")
    with pytest.raises(CorruptStateError, match="raft-state file of an older zactor release"):
        RaftStorage(tmp_path).load()


def test_a_peer_whose_service_stopped_first_takes_its_last_readys_without_failing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server removed for good stops its whole process, and the system may stop its service before the
    peer has taken its last Ready (seen in `zactor bench membership`: 'Unhandled exception in RaftPeer ...
    no actor named kvraft'). What the service would have been told then no longer matters: the peer
    applies the entry and logs no error."""
    endpoint = f"ipc://{tmp_path}/peer.sock"
    applied: list[bool] = []

    def propose_while_the_service_is_stopped(system: ActorSystem) -> None:
        peer = system.ref(endpoint, PEER_NAME)
        peer.tell(Start("while the process stops"))
        applied.append(wait_until(lambda: peer.ask(Status()).applied_index == 1, 10))

    system = ActorSystem(endpoint, ask_timeout=10.0)
    try:
        system.spawn(Collector, name="svc")  # the service: takes what the peer tells it
        system.spawn(OnStop, propose_while_the_service_is_stopped, name="gate")  # stopped after it, before the peer
        system.spawn(RaftPeer, PeerConfig(0, (endpoint,), str(tmp_path / "data"), apply_to=f"{endpoint}#svc"), name=PEER_NAME)
        peer = system.ref(endpoint, PEER_NAME)
        assert wait_until(lambda: peer.ask(GetState())[1], 10)
    finally:
        with caplog.at_level(logging.ERROR):
            system.stop()
    assert applied == [True]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


class _WhereServed(RaftPeer):
    """Notes, for every message, whether its node's I/O thread handled it."""

    def __init__(self, config: PeerConfig, on_io: list[bool]) -> None:
        super().__init__(config)
        self.on_io = on_io

    def on_receive(self, message: Any) -> Any:
        assert self.actor_system is not None
        self.on_io.append(self.actor_system.node.on_io_thread())
        return super().on_receive(message)


def test_the_peer_is_served_on_its_nodes_io_thread_as_the_kv_server_is(tmp_path: Path) -> None:
    """A put went I/O thread (the KV server) -> peer thread (Start) -> I/O thread (Applied): two
    crossings per put on the leader, one per message on every server. Inline, a message is handled
    where it was read (measured: +14% puts/s at 16 clients; ARCHITECTURE, issue 29)."""
    endpoint = f"ipc://{tmp_path}/peer.sock"
    on_io: list[bool] = []
    with ActorSystem(endpoint, ask_timeout=10.0) as system:
        system.spawn(_WhereServed, PeerConfig(0, (endpoint,), str(tmp_path / "data")), on_io, name=PEER_NAME)
        peer = system.ref(endpoint, PEER_NAME)
        assert wait_until(lambda: peer.ask(GetState())[1], 10)
        peer.tell(Start("x"))
        assert wait_until(lambda: peer.ask(Status()).commit_index == 1, 10)
    assert len(on_io) >= 3 and all(on_io), on_io


class _SlowDisk:
    """The peer's storage seam: counts its saves, and can hold one as a long fsync would (``hold``)."""

    def __init__(self) -> None:
        self.saves = 0
        self.hold = threading.Event()
        self.held = threading.Event()
        self.release = threading.Event()

    def storage(self, data_dir: str, **options: Any) -> RaftStorage:
        disk = self

        class Counted(RaftStorage):
            def save(self, rd: Ready, core: RaftCore) -> None:
                disk.saves += 1
                if disk.hold.is_set():
                    disk.hold.clear()
                    disk.held.set()
                    disk.release.wait(10)
                super().save(rd, core)

        return Counted(data_dir, **options)


def test_a_burst_of_starts_read_off_the_network_shares_a_sync(tmp_path: Path) -> None:
    """Inline, a message read off the network is served at once, and each took a Ready of its own: 200
    Starts that waited in ZeroMQ through one long fsync then cost 200 more (the lab harness's Starts;
    AppendEntries that reach a follower during its fsync). Now the first of a burst takes one, and the
    rest queue behind a marker and share the next."""
    endpoint = f"ipc://{tmp_path}/peer.sock"
    disk = _SlowDisk()
    config = PeerConfig(0, (endpoint,), str(tmp_path / "data"), storage=disk.storage)
    with ActorSystem(endpoint, ask_timeout=10.0) as system, ActorSystem(f"ipc://{tmp_path}/client.sock") as client:
        system.spawn(RaftPeer, config, name=PEER_NAME)
        peer = client.ref(endpoint, PEER_NAME)
        assert wait_until(lambda: peer.ask(GetState())[1], 10)
        disk.hold.set()
        peer.tell(Start("first"))
        assert disk.held.wait(10)  # the node's I/O thread is in that save: what comes now waits in ZeroMQ
        before = disk.saves
        for i in range(200):
            peer.tell(Start(i))
        disk.release.set()
        assert wait_until(lambda: peer.ask(Status()).commit_index == 201, 20)
        saves = disk.saves - before
    assert saves <= 10, f"{saves} saves for a burst of 200 Starts"
