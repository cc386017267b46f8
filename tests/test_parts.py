"""Messages larger than a wire part (256 KiB): sent as ZeroMQ parts, joined on receipt, bounded as a whole.

A node's sockets refuse any ZMTP frame over about 256 KiB (what a stranger's
handshake command can make it hold), so a larger message crosses in parts
(:mod:`transport.parts`). What must hold: such messages cross intact, both
ways and on every path (a thread's channel, the shared connections the I/O
thread reads, a reply on the ROUTER), up to exactly ``max_frame_bytes``; one
byte more is refused on send; and a message in parts that is over the
receiver's limit or not of our shape is dropped undecoded and counted, while
the node goes on serving. Real sockets throughout; the large round trips
cross into a child process.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from actors import Actor, ActorSystem, AskTimeout
from actors.testing import Collector, Count, Echo, Received, Send
from apps.kvsrv.messages import Get, Put
from tests.helpers import Evil, free_port, wait_until
from tests.processes import running
from transport import Envelope, Failure, FrameTooLarge, Kind, MalformedFrame, decode, encode
from transport.codec import DEFAULT_MAX_FRAME_BYTES
from transport.keys import Keyring, Member, SecurityWarning, init_keyring, write_members
from transport.parts import PART_BYTES, read_rest

MiB = 1024 * 1024


def _body_encoding_to(size: int, dest: str = "echo") -> bytes:
    """Random bytes whose ask to ``dest`` encodes to exactly ``size`` bytes (random: a wrong join shows)."""
    overhead = len(encode(Envelope(Kind.ASK, dest, "", 1, bytes(4 * MiB)))) - 4 * MiB
    return os.urandom(size - overhead)


def _parts(frame: bytes) -> list[bytes]:
    """``frame`` cut as a node cuts it."""
    return [frame[at : at + PART_BYTES] for at in range(0, len(frame), PART_BYTES)]


# ---- across processes, every path ---------------------------------------------------


@pytest.mark.parametrize(
    "size", [PART_BYTES - 1, PART_BYTES, PART_BYTES + 1, 2 * PART_BYTES, 10 * MiB], ids=["under", "one-part", "over", "two", "10MiB"]
)
def test_an_ask_and_its_reply_cross_in_parts_between_processes(system: ActorSystem, remote: str, size: int) -> None:
    """Asks that encode to ``size`` bytes, and replies of the same size: around the edge of one part, and large."""
    payload = _body_encoding_to(size)
    assert system.ref(remote, "echo").ask(payload, timeout=30) == payload  # a thread's channel, both ways


def test_a_message_of_exactly_max_frame_bytes_crosses_and_one_byte_more_is_refused_on_send(
    system: ActorSystem, remote: str
) -> None:
    body = _body_encoding_to(DEFAULT_MAX_FRAME_BYTES)
    echo = system.ref(remote, "echo")
    assert echo.ask(body, timeout=60) == body  # the reply names "echo" as its sender: exactly the limit too
    with pytest.raises(FrameTooLarge, match=f"over the frame limit of {DEFAULT_MAX_FRAME_BYTES} bytes"):
        echo.ask(body + b"!", timeout=60)
    assert echo.ask("still there?", timeout=10) == "still there?"


def test_large_messages_cross_on_the_shared_connections_both_ways(system: ActorSystem, remote: str) -> None:
    """The paths an I/O thread drives: an asyncio ask (sent and read on the shared DEALER), and a tell from
    the child's inline actor back to this process (the child's shared DEALER, this node's ROUTER)."""
    payload = os.urandom(10 * MiB)
    echo = system.ref(remote, "echo")
    assert asyncio.run(echo.ask_async(payload, timeout=30)) == payload
    inbox = system.spawn(Collector, name="inbox")
    echo.tell(Send(str(inbox.address), payload))
    assert wait_until(lambda: inbox.ask(Count(), timeout=10) >= 1, 30)
    assert inbox.ask(Received(), timeout=10) == [payload]


def test_large_messages_cross_in_parts_without_security_too() -> None:
    """With CURVE off the ROUTER reads plain bytes, not frames with a User-Id: the join is the same."""
    payload = os.urandom(5 * MiB)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        with ActorSystem("tcp://127.0.0.1:0", secure=False) as server, ActorSystem(secure=False) as client:
            server.spawn(Echo, name="echo")
            echo = client.ref(server.endpoint, "echo")
            assert echo.ask(payload, timeout=30) == payload
            assert asyncio.run(echo.ask_async(payload, timeout=30)) == payload
            assert server.node.counters.malformed == client.node.counters.malformed == 0


def test_a_client_keys_request_in_parts_is_decoded_restricted(tmp_path: Path) -> None:
    """A request in parts keeps its sender's key (its first part's User-Id): a client key's large request is
    served, and its large code-running pickle refused, by a real ``zactor kv serve``."""
    server_ring, clerk_ring = (Keyring(init_keyring(tmp_path / name)) for name in ("s", "c"))
    write_members(server_ring.members_path, [Member("clerk", clerk_ring.public, ("127.0.0.5",), "client")])
    write_members(clerk_ring.members_path, [Member("server", server_ring.public, ("127.0.0.1",), "member")])
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    marker = tmp_path / "MARKER"
    value = "v" * (2 * MiB)
    with running("kv", "serve", "--endpoint", endpoint, "--keys", str(server_ring.directory)) as lines:
        lines.wait_for("KV server listening on", 30)
        ctx = zmq.Context()
        try:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, 20_000)
            clerk_ring.secure_client(sock, endpoint)
            sock.connect(endpoint)

            def ask(corr: int, body: object) -> Envelope:
                sock.send_multipart(_parts(encode(Envelope(Kind.ASK, "kv", "", corr, body))))
                reply = decode(b"".join(sock.recv_multipart()), trusted=False)
                assert reply.corr == corr, reply
                return reply

            assert ask(1, Put("big", value, 1, 1)).kind == Kind.REPLY
            refused = ask(2, [os.urandom(2 * MiB), Evil(marker)])
            assert refused.kind == Kind.ERROR and isinstance(refused.body, Failure), refused
            assert refused.body.type_name == "PermissionError", refused.body
            assert ask(3, Get("big")).body == value
        finally:
            ctx.destroy(linger=0)
    assert not marker.exists(), "a client key's pickle in parts ran code in the server"


# ---- what a receiver drops ----------------------------------------------------------


class Big(Actor):
    """Answers an int with that many bytes."""

    inline = True

    def on_receive(self, message: object) -> object:
        assert isinstance(message, int)
        return b"b" * message


def test_a_member_message_in_parts_over_the_limit_or_of_the_wrong_shape_is_dropped_and_counted(
    member_socket: Callable[[str], zmq.Socket],
) -> None:
    limit = 3 * MiB
    with ActorSystem("tcp://127.0.0.1:0", max_frame_bytes=limit) as server:
        server.spawn(Echo, name="echo")
        sock = member_socket(server.endpoint)
        sock.setsockopt(zmq.RCVTIMEO, 20_000)
        # Under the limit: answered, and the reply comes back in parts of our shape.
        fits = os.urandom(limit - 4096)
        sock.send_multipart(_parts(encode(Envelope(Kind.ASK, "echo", "", 1, fits))))
        parts = sock.recv_multipart()
        assert [len(p) for p in parts[:-1]] == [PART_BYTES] * (len(parts) - 1) and 0 < len(parts[-1]) <= PART_BYTES
        reply = decode(b"".join(parts))
        assert (reply.kind, reply.corr, reply.body) == (Kind.REPLY, 1, fits)
        before = server.node.counters.malformed
        # Over the limit as a whole (each part within what libzmq takes), and parts of the wrong shape.
        over = encode(Envelope(Kind.ASK, "echo", "", 2, bytes(limit)), max_bytes=1 << 30)
        sock.send_multipart(_parts(over))
        whole = _parts(encode(Envelope(Kind.ASK, "echo", "", 3, bytes(2 * MiB))))
        sock.send_multipart([whole[0], whole[1][:100], whole[1][100:], *whole[2:]])  # a short part inside
        sock.send_multipart([*whole, b""])  # an empty last part
        sock.send(encode(Envelope(Kind.ASK, "echo", "", 4, "answered")))
        reply = decode(sock.recv())
        assert (reply.kind, reply.corr, reply.body) == (Kind.REPLY, 4, "answered")
        assert server.node.counters.malformed == before + 3
        assert sock.poll(200) == 0  # none of the dropped ones got a reply of any kind
        assert server.ref(server.endpoint, "echo").ask("serving", timeout=10) == "serving"


def test_a_reply_in_parts_over_the_askers_limit_is_dropped_and_counted_on_every_path() -> None:
    with (
        ActorSystem("tcp://127.0.0.1:0") as server,
        ActorSystem("tcp://127.0.0.1:0", max_frame_bytes=2 * MiB) as client,
    ):
        server.spawn(Big, name="big")
        big = client.ref(server.endpoint, "big")
        assert big.ask(MiB + 10, timeout=10) == b"b" * (MiB + 10)  # in parts, within the limit
        before = client.node.counters.malformed
        with pytest.raises(AskTimeout):
            big.ask(3 * MiB, timeout=2)  # a thread's channel
        with pytest.raises(AskTimeout):
            asyncio.run(big.ask_async(3 * MiB, timeout=2))  # the shared connection, read by the I/O thread
        # Both connections go on (a late reply over the limit is read, and dropped, before the next one).
        assert big.ask(10, timeout=10) == b"b" * 10
        assert asyncio.run(big.ask_async(MiB + 10, timeout=10)) == b"b" * (MiB + 10)
        assert wait_until(lambda: client.node.counters.malformed >= before + 2, 10)
        assert client.node.counters.malformed == before + 2


# ---- the shape, part by part ---------------------------------------------------------


@pytest.fixture
def pair() -> tuple[zmq.Socket, zmq.Socket]:
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://parts")
    b.connect("inproc://parts")
    yield a, b  # type: ignore[misc]
    ctx.destroy(linger=0)


@pytest.mark.parametrize(
    ("sizes", "fault"),
    [
        ([PART_BYTES, 100, PART_BYTES], "part 2 has 100 bytes"),
        ([100, 100], "part 1 has 100 bytes"),
        ([PART_BYTES, 0], "an empty last part"),
        ([PART_BYTES] * 4, f"over the frame limit of {3 * PART_BYTES} bytes"),
    ],
    ids=["short-inside", "short-first", "empty-last", "over-limit"],
)
def test_parts_not_of_our_shape_are_read_to_their_end_and_refused(
    pair: tuple[zmq.Socket, zmq.Socket], sizes: list[int], fault: str
) -> None:
    a, b = pair
    a.send_multipart([bytes(n) for n in sizes])
    a.send(b"next")
    first = b.recv()
    with pytest.raises(MalformedFrame, match=fault):
        read_rest(b, first, 3 * PART_BYTES)
    assert b.recv() == b"next" and not b.getsockopt(zmq.RCVMORE)  # the next message starts where it should


def test_parts_of_our_shape_join_into_the_message(pair: tuple[zmq.Socket, zmq.Socket]) -> None:
    a, b = pair
    message = os.urandom(3 * PART_BYTES - 10)
    a.send_multipart(_parts(message))
    first = b.recv(copy=False)
    assert read_rest(b, first, 3 * PART_BYTES) == message
