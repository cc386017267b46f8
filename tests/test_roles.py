"""Key roles enforced on live connections, with real server processes and real CURVE sockets.

Three keyrings stand for three parties on one machine: the server's (S, whose
own key is a member), a clerk's (C, listed in S as role client) and another
member's (M). A client key's frames are decoded by the restricted unpickler,
so its code-running pickles never run while its requests are served; a key
revoked while connected is refused on the connection it already has.
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from actors import ActorSystem, AskTimeout
from apps.kvraft import Clerk as RaftClerk
from apps.kvsrv.messages import Append, Get, Put
from apps.raft.membership import Membership
from apps.raft.messages import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    InstallSnapshot,
    InstallSnapshotReply,
    MemberCheck,
    Removed,
    RequestVote,
    RequestVoteReply,
)
from apps.raft.roster import ChangeMembers, Members
from tests.helpers import Evil, free_port, wait_until
from tests.processes import running, zactor
from transport import ControlRequest, Envelope, Failure, Kind, decode, encode
from transport.codec import RefusedFrame
from transport.control import ControlOp
from transport.faults import FaultRule
from transport.keys import Keyring, Member, init_keyring, write_members
from transport.roles import CHECK_EVERY

KV_NAME = "kv"


@dataclass
class Rings:
    server: Keyring
    clerk: Keyring
    member: Keyring


@pytest.fixture
def rings(tmp_path: Path) -> Rings:
    s, c, m = (Keyring(init_keyring(tmp_path / name)) for name in ("s", "c", "m"))
    write_members(s.members_path, [Member("clerk", c.public, ("127.0.0.5",), "client"), Member("m", m.public, (), "member")])
    for other in (c, m):  # both know the server's key for 127.0.0.1
        write_members(other.members_path, [Member("server", s.public, ("127.0.0.1",), "member")])
    return Rings(s, c, m)


@pytest.fixture
def kv_server(rings: Rings) -> Iterator[str]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with running("kv", "serve", "--endpoint", endpoint, "--keys", str(rings.server.directory)) as lines:
        lines.wait_for("KV server listening on", 30)
        yield endpoint


class Dealer:
    """One open CURVE connection to the server with a given keyring's key pair: frames as a peer sends them."""

    def __init__(self, ring: Keyring, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        ring.secure_client(self.sock, endpoint)
        self.sock.connect(endpoint)
        self.corr = 0

    def send(self, kind: Kind, dest: str, body: Any) -> int:
        self.corr += 1
        self.sock.send(encode(Envelope(kind, dest, "", self.corr, body)))
        return self.corr

    def reply(self, timeout: float) -> Envelope | None:
        """The next reply, decoded as a client would decode it (restricted), or None after ``timeout``."""
        if not self.sock.poll(int(timeout * 1000)):
            return None
        return decode(self.sock.recv(), trusted=False)

    def ask(self, dest: str, body: Any, timeout: float = 10.0) -> Envelope | None:
        corr = self.send(Kind.ASK, dest, body)
        env = self.reply(timeout)
        assert env is None or env.corr == corr, env
        return env

    def close(self) -> None:
        self.ctx.destroy(linger=0)


def counters(rings: Rings, endpoint: str) -> dict:
    with ActorSystem(keys=rings.server.directory) as own:  # the server's own key: a member
        return own.control(endpoint, timeout=10).counters()


def test_a_client_key_runs_no_code_and_its_requests_are_served(rings: Rings, kv_server: str, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    clerk = Dealer(rings.clerk, kv_server)
    try:
        # What the README shows a clerk doing, on the wire; every reply decodes restricted.
        put = clerk.ask(KV_NAME, Put("k", "v", 1, 1))
        assert put is not None and put.kind == Kind.REPLY, put
        old = clerk.ask(KV_NAME, Append("k", "w", 1, 2))
        assert old is not None and old.body == "v", old
        got = clerk.ask(KV_NAME, Get("k"))
        assert got is not None and got.body == "vw", got
        # Code from a client key: an ask is answered with the reason, a tell dropped; nothing runs.
        for body in (Evil(marker), [1, {"hidden": Evil(marker)}], lambda: os.system(f"touch {marker}")):
            refused = clerk.ask(KV_NAME, body)
            assert refused is not None and refused.kind == Kind.ERROR, refused
            assert isinstance(refused.body, Failure) and refused.body.type_name == "PermissionError", refused.body
            assert "neither a registered message class nor plain data" in refused.body.message
        clerk.send(Kind.TELL, KV_NAME, Evil(marker))
        # A client key may look at a node, never change its fault rules.
        ping = clerk.ask("$node", ControlRequest(ControlOp.PING))
        assert ping is not None and ping.kind == Kind.REPLY and ping.body["endpoint"] == kv_server, ping
        faults = clerk.ask("$node", ControlRequest(ControlOp.SET_FAULTS, [FaultRule(drop=1.0)]))
        assert faults is not None and faults.kind == Kind.ERROR and "needs a member key" in faults.body.message, faults
        assert wait_until(lambda: counters(rings, kv_server)["refused"] == 4, 10), counters(rings, kv_server)
        # The server goes on, for this clerk's open connection and for a new one from the command line.
        again = clerk.ask(KV_NAME, Get("k"))
        assert again is not None and again.body == "vw", again
    finally:
        clerk.close()
    out = zactor("kv", "append", "--server", kv_server, "--keys", str(rings.clerk.directory), "k", "x")
    assert out.returncode == 0 and out.stdout.strip() == "vw", out
    out = zactor("kv", "get", "--server", kv_server, "--keys", str(rings.clerk.directory), "k")
    assert out.returncode == 0 and out.stdout.strip() == "vwx", out
    assert counters(rings, kv_server)["malformed"] == 0
    assert not marker.exists(), "a client key's pickle ran code in the server"


def test_the_same_pickle_from_a_member_key_runs(rings: Rings, kv_server: str, tmp_path: Path) -> None:
    """The control for the test above: what stops the client's pickle is its key's role, nothing else."""
    marker = tmp_path / "MEMBER-MARKER"
    member = Dealer(rings.member, kv_server)
    try:
        member.send(Kind.TELL, KV_NAME, Evil(marker))
        assert wait_until(marker.exists, 10), "a member's frame was not decoded in full"
    finally:
        member.close()
    assert counters(rings, kv_server)["refused"] == 0


def test_revocation_closes_a_live_session_within_a_second(rings: Rings, kv_server: str, tmp_path: Path) -> None:
    """The revoked member's open connection is closed by the server within 1 s and its key cannot log in
    again, so nothing it sends afterwards reaches the server; a client connected meanwhile logs in again."""
    marker = tmp_path / "MARKER"
    member, clerk = Dealer(rings.member, kv_server), Dealer(rings.clerk, kv_server)
    watched = zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    member_events, clerk_events = member.sock.get_monitor_socket(watched), clerk.sock.get_monitor_socket(watched)
    try:
        answered = member.ask(KV_NAME, Put("k", "before", 2, 1))
        assert answered is not None and answered.kind == Kind.REPLY, answered
        assert clerk.ask(KV_NAME, Get("k")) is not None
        _events(member_events, 0.1), _events(clerk_events, 0.1)  # the log-ins so far
        out = zactor("keys", "revoke", "m", "--keys", str(rings.server.directory))
        assert out.returncode == 0, out.stderr
        revoked_at = time.monotonic()
        assert _next_event(member_events, zmq.EVENT_DISCONNECTED, 5.0), "the revoked key's connection stayed open"
        assert time.monotonic() - revoked_at < 1.0, "closed later than 1 s after the revocation"
        # It reconnects on its own, as every ZeroMQ socket does, and the server refuses its key at the handshake.
        assert _next_event(member_events, zmq.EVENT_HANDSHAKE_FAILED_AUTH, 10.0), "the revoked key logged in again"
        with contextlib.suppress(zmq.Again):  # queued for a connection it can no longer make, or refused at once
            member.sock.send(encode(Envelope(Kind.TELL, KV_NAME, "", 0, Evil(marker))), zmq.NOBLOCK)
        # The client key was connected too: its connection was closed with the rest, and it logs in again.
        assert _next_event(clerk_events, zmq.EVENT_HANDSHAKE_SUCCEEDED, 10.0), "the client did not log in again"
        got = clerk.ask(KV_NAME, Get("k"))
        assert got is not None and got.body == "before", got
        now = counters(rings, kv_server)
        assert now["closed"] >= 2 and now["rejected"] >= 1, now
    finally:
        member_events.close(), clerk_events.close()
        member.close(), clerk.close()
    assert not marker.exists(), "a revoked key's pickle ran code in the server"


def _events(monitor: zmq.Socket, timeout: float) -> list[int]:
    """The monitor's events that arrive within ``timeout`` seconds (all of them: a drain)."""
    seen = []
    while monitor.poll(int(timeout * 1000)):
        seen.append(recv_monitor_message(monitor)["event"])
    return seen


def _next_event(monitor: zmq.Socket, wanted: int, timeout: float) -> bool:
    """Whether an event ``wanted`` arrives within ``timeout`` seconds (others before it are passed over)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0 and monitor.poll(int(left * 1000) + 1):
        if recv_monitor_message(monitor)["event"] == wanted:
            return True
    return False


def test_a_member_made_client_loses_code_on_its_live_session(rings: Rings, kv_server: str, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    member = Dealer(rings.member, kv_server)
    try:
        assert member.ask(KV_NAME, Get("k")) is not None
        # The members file rewritten in place (the CLI revokes first, which would refuse it meanwhile).
        demoted = [Member("m", rings.member.public, (), "client") if m.name == "m" else m for m in rings.server.members()]
        write_members(rings.server.members_path, demoted)

        def refused() -> bool:  # a class outside the allow-list, harmless when a member sends it
            reply = member.ask(KV_NAME, collections.Counter("ab"))
            return reply is not None and reply.kind == Kind.ERROR

        assert wait_until(refused, 1.0 + 4 * CHECK_EVERY, interval=0.0)
        member.send(Kind.TELL, KV_NAME, Evil(marker))
        got = member.ask(KV_NAME, Get("k"))
        assert got is not None and got.kind == Kind.REPLY, got
        assert wait_until(lambda: counters(rings, kv_server)["refused"] == 2, 10)
    finally:
        member.close()
    assert not marker.exists(), "a demoted member's pickle ran code in the server"


@pytest.mark.slow
def test_a_client_key_uses_a_replicated_kv_cluster(rings: Rings, tmp_path: Path) -> None:
    """The kvraft clerk from Python with a client key (its node on 127.0.0.5, the address the servers'
    keyring gives that key): it reads and writes, and may list the members but not change them."""
    ports = [free_port() for _ in range(3)]
    endpoints = ",".join(f"tcp://127.0.0.1:{p}" for p in ports)
    with running("kv", "cluster", "--servers", "3", "--endpoints", endpoints, "--data-dir", str(tmp_path / "data"),
                 "--keys", str(rings.server.directory), "--for", "120") as lines:
        lines.wait_for("leader: server", 30)
        with ActorSystem("tcp://127.0.0.5:0", keys=rings.clerk.directory) as system:
            clerk = RaftClerk(endpoints.split(","), system=system, give_up_after=30)
            clerk.put("greeting", "hello")
            assert clerk.append("greeting", ", world") == "hello"
            assert clerk.get("greeting") == "hello, world"
            # It may see who the members are (a clerk follows a cluster whose servers change), never change them.
            raft = system.ref(endpoints.split(",")[0], "raft")
            assert raft.ask(Members(), timeout=10).voters == (0, 1, 2)
            with pytest.raises(PermissionError, match="client-role key may send only registered"):
                raft.ask(ChangeMembers("remove", 0), timeout=10)
            with pytest.raises(PermissionError, match="client-role key may send only registered"):  # nor speak Raft
                raft.ask(AppendEntries(10**6, 0, 0, 0, 0, (), 0), timeout=10)
        # The cluster's own tools (same keyring, a member) read what the client wrote.
        out = zactor("kv", "get", "--servers", endpoints, "--keys", str(rings.server.directory), "greeting")
        assert out.returncode == 0 and out.stdout.strip() == "hello, world", out


def test_a_revoked_member_cannot_even_ask_through_an_actor_system(rings: Rings, kv_server: str) -> None:
    """The whole runtime's path (a channel per thread), not a hand-made socket."""
    with ActorSystem(keys=rings.member.directory) as system:
        ref = system.ref(kv_server, KV_NAME)
        ref.ask(Put("j", "1", 3, 1), timeout=10)
        assert ref.ask(Get("j"), timeout=10) == "1"
        assert zactor("keys", "revoke", "m", "--keys", str(rings.server.directory)).returncode == 0
        revoked_at = time.monotonic()

        def refused() -> bool:
            try:
                ref.ask(Get("j"), timeout=2 * CHECK_EVERY)
            except AskTimeout:
                return True
            return False

        assert wait_until(refused, 1.0 + 2 * CHECK_EVERY, interval=0.0)
        assert time.monotonic() - revoked_at < 1.0 + 4 * CHECK_EVERY


def test_what_clerks_send_and_are_sent_decodes_restricted() -> None:
    """The sharded clerk's wire traffic (its requests, the controller's and groups' replies, an error),
    decoded as a client key's frames are: a clerk of lab 5 needs no code either."""
    from apps.kvraft.messages import Reply, Request
    from apps.shardctrler.messages import Join, Leave, Move, Query, ShardConfig
    from apps.shardkv.messages import WrongGroup

    try:
        raise KeyError("k")
    except KeyError as exc:
        failure = Failure.from_exception(exc)
    config = ShardConfig(3, (100,) * 10, {100: ("tcp://127.0.0.1:7211",)})
    bodies: list[Any] = [
        Request(Get("k"), "tcp://127.0.0.5:9#box", 1), Request(Put("k", "v", 7, 1), "x#box", 2),
        Request(Append("k", "w", 7, 2), "x#box", 3), Reply(1, True, "v"), Reply(2, False, None, "tcp://127.0.0.1:7212"),
        Reply(3, True, WrongGroup()), Query(-1), Reply(4, True, config), Join({101: ("tcp://127.0.0.1:7221",)}, 7, 3),
        Leave((101,), 7, 4), Move(3, 100, 7, 5), failure,
    ]
    for body in bodies:
        frame = encode(Envelope(Kind.TELL, "kvraft", "", 1, body))
        back = decode(frame, trusted=False).body
        assert back == body or isinstance(body, Failure), (body, back)
    assert isinstance(decode(encode(Envelope(Kind.ERROR, "", "", 1, failure)), trusted=False).body.to_exception(), KeyError)


@pytest.mark.parametrize("body", [
    RequestVote(9, 0, 1, 0, 0), RequestVoteReply(9, 0, 1, True), AppendEntries(9, 0, 1, 0, 0, (Entry(9, 1, "x"),), 1),
    AppendEntriesReply(9, 0, 1, True, 1, 0, 0), InstallSnapshot(9, 0, 1, 5, 9, b"state"), InstallSnapshotReply(9, 0, 1, 5),
    MemberCheck(9, 0, 1), Removed(9, 0, 1, Membership.of(3)),
], ids=lambda body: type(body).__name__)
def test_a_client_key_cannot_speak_raft(body: Any) -> None:
    """Raft's messages decode only from members: a client key's AppendEntries of a high term would depose the
    leader and write its entries into the followers' logs."""
    frame = encode(Envelope(Kind.TELL, "raft", "", 1, body))
    assert decode(frame).body == body  # a member's frame
    with pytest.raises(RefusedFrame, match=f"{type(body).__name__} is neither a registered message class nor plain data"):
        decode(frame, trusted=False)


def test_a_client_key_cannot_poll_the_controller_for_someone_else() -> None:
    """A group's configuration poll is answered by every controller server with a tell to the address it
    names: from a client key that would be a way to have the controller send to anyone, so it is refused
    before anything in it is built."""
    from apps.shardctrler.messages import NextConfig

    body = NextConfig(4, "tcp://127.0.0.9:9#kvraft")
    frame = encode(Envelope(Kind.TELL, "shardctrler", "", 1, body))
    assert decode(frame).body == body  # a member's (a group server's) poll
    with pytest.raises(RefusedFrame, match="NextConfig is neither a registered message class nor plain data"):
        decode(frame, trusted=False)
