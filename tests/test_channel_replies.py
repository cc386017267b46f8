"""What a thread's own channel does with each kind of frame that comes back on it.

The usual reply is decoded on the channel itself (no fault rules, a
well-formed reply); everything else takes the node's general way in. These
pin that both ways count, drop and deliver the same: a reply is delivered and
counted received, garbage and a request that comes back are dropped and
counted malformed, and an "in" fault rule still drops a reply.
"""

from __future__ import annotations

import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

import transport.channel as channel_module
from actors import ActorSystem
from transport import FaultRule, Node
from transport.codec import encode_fields
from transport.envelope import KIND_ASK, KIND_REPLY
from transport.keys import SecurityWarning


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Node, zmq.Socket]]:
    """A node (insecure, ipc) and a raw ROUTER it sends to, read and answered by the test itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        node = Node(f"ipc://{tmp_path}/node.sock", on_message=lambda env: None, secure=False)
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.RCVTIMEO, 5000)
    router.bind(f"ipc://{tmp_path}/peer.sock")
    try:
        yield node, router
    finally:
        node.close()
        ctx.destroy(linger=0)


def _route_of_one_request(node: Node, router: zmq.Socket, dest: str) -> bytes:
    ch = node.channel(dest)
    assert ch is not None
    ch.request(KIND_ASK, "echo", 7, "hello")
    route, _frame = router.recv_multipart()
    return route


def _receive_one(node: Node, dest: str) -> list:
    ch = node.channel(dest)
    assert ch is not None
    with ch.lock:
        return ch.receive(5.0)


def test_each_kind_of_frame_on_a_channel_is_counted_and_delivered_or_dropped(pair: tuple[Node, zmq.Socket]) -> None:
    node, router = pair
    dest = router.getsockopt_string(zmq.LAST_ENDPOINT)
    route = _route_of_one_request(node, router, dest)
    malformed, received = node.counters.malformed, node.counters.received

    router.send_multipart([route, b"not a frame at all"])
    assert _receive_one(node, dest) == []
    router.send_multipart([route, encode_fields(KIND_ASK, "x", "", "", 8, "a request")])  # came back the wrong way
    assert _receive_one(node, dest) == []
    assert node.counters.malformed == malformed + 2
    assert node.counters.received == received

    router.send_multipart([route, encode_fields(KIND_REPLY, "", "", "echo", 7, "hello")])
    [env] = _receive_one(node, dest)
    assert (env.kind, env.corr, env.body, env.sender, env.src) == (KIND_REPLY, 7, "hello", "echo", dest)
    assert node.counters.received == received + 1
    assert node.counters.malformed == malformed + 2


def test_an_in_rule_still_drops_a_reply_on_a_channel(pair: tuple[Node, zmq.Socket]) -> None:
    node, router = pair
    dest = router.getsockopt_string(zmq.LAST_ENDPOINT)
    route = _route_of_one_request(node, router, dest)
    node.set_faults(FaultRule(dest, "in", "replies", drop=1.0))
    dropped = node.counters.dropped_by_faults
    router.send_multipart([route, encode_fields(KIND_REPLY, "", "", "echo", 7, "hello")])
    assert _receive_one(node, dest) == []
    assert node.counters.dropped_by_faults == dropped + 1
    node.set_faults([])
    router.send_multipart([route, encode_fields(KIND_REPLY, "", "", "echo", 7, "again")])
    [env] = _receive_one(node, dest)
    assert env.body == "again"


def test_a_sequential_ask_costs_one_send_and_one_receive_on_its_channel(
    system: ActorSystem, remote: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The protocol bound of the ask path: per ask, one call into ZeroMQ to send and one read that
    returns the reply (a blocking read with a timeout, no poll first), no socket option read or set.
    A read that times out (a reply slower than one wait slice, on a loaded machine) is not counted."""
    calls: Counter[str] = Counter()
    me = threading.get_ident()
    for name in ("raw_send", "raw_recv", "raw_get", "raw_set"):
        real = getattr(channel_module, name)

        def counted(*args: Any, _name: str = name, _real: Any = real) -> Any:
            result = _real(*args)  # zmq.Again (a slice with no reply) propagates uncounted
            if threading.get_ident() == me:
                calls[_name] += 1
            return result

        monkeypatch.setattr(channel_module, name, counted)
    echo = system.ref(remote, "echo")
    echo.ask("warm", timeout=10.0)  # the connection made and its receive timeout set
    calls.clear()
    for i in range(20):
        assert echo.ask(i, timeout=10.0) == i
    assert calls == Counter(raw_send=20, raw_recv=20)
