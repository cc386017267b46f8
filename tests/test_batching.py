"""Replies to a burst go back in batches: what a batch holds, how long a reply waits, bad batches."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from actors import ActorSystem
from tests.helpers import wait_until
from transport import (
    CONTROL_NAME,
    ControlOp,
    ControlRequest,
    Envelope,
    FaultRule,
    Kind,
    MalformedFrame,
    Node,
    decode,
    encode,
)
from transport.codec import encode_batch, is_batch, split_batch
from transport.keys import resolve_keyring


def _reply(corr: int, body: object = "r") -> bytes:
    return encode(Envelope(Kind.REPLY, "", "", corr, body, "echo"))


def test_batch_round_trip_keeps_every_reply_whole() -> None:
    frames = [_reply(i, "x" * i) for i in range(5)]
    batch = encode_batch(frames)
    assert is_batch(batch) and not is_batch(frames[0])
    assert split_batch(batch) == frames
    assert [decode(f).body for f in split_batch(batch)] == ["x" * i for i in range(5)]


def _recount(batch: bytes, count: int) -> bytes:
    return batch[:4] + count.to_bytes(8, "big") + batch[12:]


@pytest.mark.parametrize(
    "batch",
    [
        encode_batch([_reply(1), _reply(2)])[:-1],
        encode_batch([_reply(1), _reply(2)]) + b"x",
        _recount(encode_batch([_reply(1), _reply(2)]), 3),
        _recount(encode_batch([_reply(1), _reply(2)]), 1),
        encode_batch([_reply(1), encode(Envelope(Kind.ASK, "echo", "", 2, "a request"))]),
        encode_batch([_reply(1), encode_batch([_reply(2), _reply(3)])]),
        encode_batch([_reply(1), b"ZA9" + _reply(2)[3:]]),
        encode_batch([_reply(i, "x" * 1500) for i in range(3)]),
        encode_batch([_reply(i) for i in range(65)]),
    ],
    ids=[
        "truncated", "trailing-bytes", "count-too-high", "count-too-low", "holds-a-request", "nested", "bad-magic-inside",
        "over-4096-bytes", "over-64-replies",
    ],
)
def test_a_batch_that_does_not_tile_exactly_into_replies_is_malformed(batch: bytes) -> None:
    with pytest.raises(MalformedFrame):
        split_batch(batch)


def test_a_batch_is_never_decoded_as_one_envelope() -> None:
    """Batches are for replies on a sending connection only: anywhere else (a ROUTER's request) the kind is refused."""
    with pytest.raises(MalformedFrame, match="unknown envelope kind 5"):
        decode(encode_batch([_reply(1)]))


def test_a_burst_of_asks_on_one_connection_is_answered_in_batches(tmp_path, member_socket) -> None:
    """Replies to a run of requests from one connection leave in batches (fewer messages than
    replies, each within the size every node accepts), and every ask gets its own answer once."""
    gate = threading.Event()

    def answer(env: Envelope) -> None:  # on b's I/O thread, as an inline actor answers
        if env.body == "gate":
            gate.wait(10)  # the burst queues up behind it
        b.reply(env, env.body)

    b = Node(f"ipc://{tmp_path}/b.sock", on_message=answer)
    sock = member_socket(b.endpoint)
    try:
        n = 200
        sock.send(encode(Envelope(Kind.ASK, "echo", "", n, "gate")))
        for i in range(n):
            sock.send(encode(Envelope(Kind.ASK, "echo", "", i, i)))
        gate.set()
        answers: list[tuple[int, object]] = []
        messages = 0
        while len(answers) < n + 1:
            assert sock.poll(10_000), f"{len(answers)} of {n + 1} replies came"
            message = sock.recv()
            messages += 1
            assert len(message) <= 4096 or not is_batch(message)
            for frame in split_batch(message) if is_batch(message) else [message]:
                env = decode(frame)
                answers.append((env.corr, env.body))
        assert sorted(answers, key=lambda a: a[0]) == [*((i, i) for i in range(n)), (n, "gate")]
        assert messages <= n // 2  # batched: without batches, one message per reply
        assert sock.poll(100) == 0  # and nothing more
        assert b.counters.sent["int"] == n
    finally:
        gate.set()
        b.close()


def _gated_node(tmp_path, answer_tell=None) -> tuple[Node, threading.Event]:
    """A node whose first request (body "gate") holds its I/O thread until the event is set, so what a
    test sends meanwhile queues up and is read as one burst; asks are answered with their body."""
    gate = threading.Event()

    def answer(env: Envelope) -> None:  # on the node's I/O thread, as an inline actor answers
        if env.kind == Kind.TELL:
            if answer_tell is not None:
                answer_tell(env)
            return
        if env.body == "gate":
            gate.wait(10)
        node.reply(env, env.body)

    node = Node(f"ipc://{tmp_path}/gated.sock", on_message=answer)
    return node, gate


def _read_replies(sock: zmq.Socket, want: int, timeout_ms: int = 10_000) -> tuple[list[Envelope], list[int]]:
    """``want`` replies off a raw DEALER, and the size of every message they came in."""
    replies: list[Envelope] = []
    sizes: list[int] = []
    while len(replies) < want:
        assert sock.poll(timeout_ms), f"{len(replies)} of {want} replies came"
        message = sock.recv()
        sizes.append(len(message))
        replies.extend(decode(f) for f in (split_batch(message) if is_batch(message) else [message]))
    return replies, sizes


def test_interleaved_bursts_from_two_connections_each_get_their_own_replies_once(tmp_path, member_socket) -> None:
    """Held replies go when the next request is from another connection; replies too large to hold go
    alone; every batch stays within the 4,096 bytes every node accepts."""
    node, gate = _gated_node(tmp_path)
    a, b = member_socket(node.endpoint), member_socket(node.endpoint)
    try:
        a.send(encode(Envelope(Kind.ASK, "echo", "", 999, "gate")))
        for i in range(100):
            for sock, tag in ((a, "a"), (b, "b")):  # bodies of 1000 bytes, every tenth of 5000: too large to hold
                sock.send(encode(Envelope(Kind.ASK, "echo", "", i, tag * (5000 if i % 10 == 0 else 1000))))
        gate.set()
        for sock, tag, want in ((a, "a", 101), (b, "b", 100)):
            replies, sizes = _read_replies(sock, want)
            expected = [(i, tag * (5000 if i % 10 == 0 else 1000)) for i in range(100)] + ([(999, "gate")] if tag == "a" else [])
            assert sorted((r.corr, r.body) for r in replies) == sorted(expected)
            assert all(size <= 4096 or size > 5000 for size in sizes)  # a batch, or one large reply alone
            assert sock.poll(100) == 0
    finally:
        gate.set()
        node.close()


def test_a_held_reply_waits_for_at_most_64_later_requests_of_its_connection(tmp_path, member_socket) -> None:
    """Tells after an ask do not keep its reply held to the end of the burst: the 100th tell blocks the
    node until the reply has reached the asker, which it cannot if the reply waits for every tell."""
    released = threading.Event()
    told: list[int] = []

    def tell(env: Envelope) -> None:
        told.append(env.body)
        if len(told) == 100:
            released.wait(10)

    node, gate = _gated_node(tmp_path, tell)
    sock = member_socket(node.endpoint)
    try:
        sock.send(encode(Envelope(Kind.ASK, "echo", "", 0, "gate")))
        sock.send(encode(Envelope(Kind.ASK, "echo", "", 1, "the ask")))
        for i in range(200):
            sock.send(encode(Envelope(Kind.TELL, "echo", "", 0, i)))
        gate.set()
        replies, _ = _read_replies(sock, 2, timeout_ms=5_000)  # the node's 100th tell waits 10 s for this
        assert sorted((r.corr, r.body) for r in replies) == [(0, "gate"), (1, "the ask")]
        assert len(told) < 200
    finally:
        released.set()
        gate.set()
        node.close()


class _BatchingServer:
    """A raw ROUTER with this machine's key that answers asks with batches the test composes."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        resolve_keyring().secure_server(self.sock)
        self.sock.bind(endpoint)
        self.endpoint = endpoint

    def next_ask(self) -> tuple[bytes, Envelope]:
        assert self.sock.poll(10_000), "no ask came"
        route, frame = self.sock.recv_multipart()
        return route, decode(frame)

    def close(self) -> None:
        self.ctx.destroy(linger=0)


@pytest.fixture
def fake_peer(tmp_path) -> Iterator[tuple[_BatchingServer, ActorSystem, Any]]:
    """A _BatchingServer, an ActorSystem and its ref to "echo" on that server; all closed after the test."""
    server = _BatchingServer(f"ipc://{tmp_path}/fake.sock")
    try:
        with ActorSystem() as system:
            yield server, system, system.ref(server.endpoint, "echo")
    finally:
        server.close()


@pytest.mark.parametrize("way", ["own-channel", "shared-connection"])
def test_replies_in_a_bad_batch_are_dropped_whole_and_a_good_batch_completes_its_asks(fake_peer, way: str) -> None:
    """Both ways a reply comes back (a thread's own channel, the I/O thread's shared connection)
    split batches the same way: a batch with a request inside is refused before anything in it is
    decoded or delivered, and counted; the next good batch answers both asks."""
    server, system, ref = fake_peer

    async def two_asks_async() -> list[object]:
        return list(await asyncio.gather(ref.ask_async("a", timeout=10), ref.ask_async("b", timeout=10)))

    result: queue.Queue[object] = queue.Queue()
    if way == "own-channel":
        futures = [ref.ask("a", block=False, timeout=10), ref.ask("b", block=False, timeout=10)]
        threading.Thread(target=lambda: result.put([f.get() for f in futures]), daemon=True).start()
    else:
        threading.Thread(target=lambda: result.put(asyncio.run(two_asks_async())), daemon=True).start()
    (route, first), (_, second) = server.next_ask(), server.next_ask()
    smuggled = encode(Envelope(Kind.ASK, "echo", "", 99, "a request where replies belong"))
    server.sock.send_multipart([route, encode_batch([_reply(first.corr, "wrong"), smuggled])])
    assert wait_until(lambda: system.node.counters.malformed == 1, 10)
    server.sock.send_multipart([route, encode_batch([_reply(second.corr, "B"), _reply(first.corr, "A")])])
    assert result.get(timeout=10) == ["A", "B"]
    assert system.node.counters.malformed == 1


def test_a_raising_done_callback_does_not_strand_the_rest_of_its_batch(fake_peer) -> None:
    """The waiting thread completes every reply of a batch it reads; a done-callback that raises is logged."""
    server, _, ref = fake_peer
    first, second = ref.ask("a", block=False, timeout=10), ref.ask("b", block=False, timeout=10)

    def bad_callback() -> None:
        raise RuntimeError("a user's callback fails")

    first.add_done_callback(bad_callback)
    (route, a), (_, b) = server.next_ask(), server.next_ask()
    server.sock.send_multipart([route, encode_batch([_reply(a.corr, "A"), _reply(b.corr, "B")])])
    assert first.get() == "A"
    assert second.get(timeout=5) == "B"


def test_a_reply_addressed_to_the_control_name_runs_no_control_operation(fake_peer) -> None:
    """Replies only complete futures: one that names the control name (from a peer a node asked) is not obeyed."""
    server, system, ref = fake_peer
    done: queue.Queue[object] = queue.Queue()
    threading.Thread(target=lambda: done.put(asyncio.run(ref.ask_async("a", timeout=10))), daemon=True).start()
    route, ask = server.next_ask()
    cut = ControlRequest(ControlOp.SET_FAULTS, [FaultRule("*", "both", connected=False)])
    server.sock.send_multipart([route, encode(Envelope(Kind.REPLY, CONTROL_NAME, "", ask.corr, cut))])
    assert isinstance(done.get(timeout=10), ControlRequest)  # it completed the ask, as any reply does
    assert system.node.fault_rules == ()
