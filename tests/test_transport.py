"""The transport: codec, fault rules, counters and robustness, over real processes and sockets."""

from __future__ import annotations

import errno
import itertools
import logging
import os
import pickle
import queue
import select
import socket
import stat
import threading
import time
from pathlib import Path

import pytest
import zmq

import transport.node as node_module
from actors import ActorDeadError, ActorSystem, AskTimeout
from actors.testing import Collector, Count, Echo, Received, Send
from tests.helpers import wait_until
from transport import (
    CONTROL_NAME,
    ControlOp,
    ControlRequest,
    Envelope,
    FaultRule,
    FaultTable,
    FrameTooLarge,
    Kind,
    MalformedFrame,
    Node,
    decode,
    disconnected,
    encode,
    long_reordering,
    unreliable,
)
from transport.ipc import check_ipc_free
from transport.keys import resolve_keyring

# ---- codec ------------------------------------------------------------------


def test_codec_round_trip_keeps_every_field() -> None:
    env = Envelope(Kind.ASK, "echo", "ipc:///tmp/a", 42, {"k": [1, 2.5, "x"]}, "me")
    assert decode(encode(env)) == env


def test_codec_carries_functions_pickle_cannot() -> None:
    double = lambda x: x * 2  # noqa: E731 - the point is an unpicklable function
    env = Envelope(Kind.TELL, "w", "ipc:///tmp/a", 0, double)
    assert decode(encode(env)).body(21) == 42


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"garbage that is not a frame",
        b"ZA1" + b"\x80\x05not a pickle",
        b"ZA1" + pickle.dumps(("not", "six", "fields")),
        b"ZA1" + pickle.dumps((99, "d", "s", 1, "", None)),
        b"ZA1" + pickle.dumps((1, 5, "s", 1, "", None)),
    ],
    ids=["empty", "garbage", "bad-pickle", "wrong-shape", "unknown-kind", "wrong-types"],
)
def test_codec_rejects_malformed_frames(frame: bytes) -> None:
    with pytest.raises(MalformedFrame):
        decode(frame)


def test_codec_refuses_oversized_frames_with_a_clear_error() -> None:
    env = Envelope(Kind.TELL, "big", "ipc:///tmp/a", 0, b"x" * 2000)
    with pytest.raises(FrameTooLarge, match="over the frame limit of 1000 bytes"):
        encode(env, max_bytes=1000)


# ---- fault rules, as pure decisions -----------------------------------------


def test_fault_rules_validate_their_numbers() -> None:
    with pytest.raises(ValueError, match="probability"):
        FaultRule(drop=1.5)
    with pytest.raises(ValueError, match="direction"):
        FaultRule(direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delay"):
        FaultRule(delay=(0.2, 0.1))


def test_fault_table_matches_peer_direction_and_kind() -> None:
    table = FaultTable([FaultRule("ipc://b", "out", "replies", connected=False)], seed=1)
    assert table.decide("ipc://b", "out", is_reply=True) < 0
    assert table.decide("ipc://b", "out", is_reply=False) == 0
    assert table.decide("ipc://c", "out", is_reply=True) == 0
    assert table.decide("ipc://b", "in", is_reply=True) == 0


def test_fault_rule_can_select_message_types() -> None:
    table = FaultTable([FaultRule(connected=False, types=("AppendEntriesReply",))], seed=1)
    assert table.decide("p", "out", False, "AppendEntriesReply") < 0
    assert table.decide("p", "out", False, "AppendEntries") == 0


def test_lab_profiles_have_the_lab_numbers() -> None:
    requests, replies = unreliable()
    assert (requests.drop, requests.delay, requests.applies_to) == (0.1, (0.0, 0.026), "requests")
    assert (replies.drop, replies.applies_to) == (0.1, "replies")
    (reorder,) = long_reordering()
    assert reorder.reorder == pytest.approx(2 / 3) and reorder.applies_to == "replies"
    table = FaultTable(long_reordering(), seed=7)
    holds = [table.decide("p", "out", True) for _ in range(3000)]
    held = [h for h in holds if h > 0]
    assert 0.62 < len(held) / len(holds) < 0.71
    assert min(held) >= 0.2 and max(held) <= 2.2


# ---- across real processes ----------------------------------------------------


def test_remote_tell_and_ask_across_processes(system: ActorSystem, remote: str) -> None:
    echo = system.ref(remote, "echo")
    assert echo.ask(("hello", 1), timeout=5) == ("hello", 1)
    collector = system.ref(remote, "collector")
    for i in range(20):
        collector.tell(i)
    assert collector.ask(Received(), timeout=5) == list(range(20))  # one link keeps order


def test_pipelined_asks_all_answered(system: ActorSystem, remote: str) -> None:
    echo = system.ref(remote, "echo")
    futures = [echo.ask(i, block=False, timeout=10) for i in range(500)]
    assert [f.get() for f in futures] == list(range(500))


def test_ask_timeout_raises_promptly(system: ActorSystem, remote: str) -> None:
    system.control().set_faults(disconnected(remote))
    started = time.monotonic()
    with pytest.raises(AskTimeout, match="no reply"):
        system.ref(remote, "echo").ask("anyone?", timeout=0.3)
    assert time.monotonic() - started < 2.0


def test_ask_to_a_node_nobody_runs_times_out(system: ActorSystem, tmp_path) -> None:
    with pytest.raises(AskTimeout):
        system.ref(f"ipc://{tmp_path}/nobody.sock", "x").ask(1, timeout=0.2)


def test_ask_to_unknown_actor_fails_fast(system: ActorSystem, remote: str) -> None:
    started = time.monotonic()
    with pytest.raises(ActorDeadError, match="no actor named 'ghost'"):
        system.ref(remote, "ghost").ask(1, timeout=5)
    assert time.monotonic() - started < 2.0
    assert system.control(remote).counters()["unknown_actor"] == 1


def test_disconnected_pair_exchanges_nothing_either_way(system: ActorSystem, remote: str) -> None:
    inbox = system.spawn(Collector, name="inbox")
    far_collector = system.ref(remote, "collector")
    far_echo = system.ref(remote, "echo")
    far = system.control(remote)
    far.set_faults(disconnected(system.endpoint))
    for i in range(10):
        far_collector.tell(("to-remote", i))
    assert wait_until(lambda: far.counters()["dropped_by_faults"] == 10, 5)
    # The other direction: the remote relays to us; its node drops that too.
    system.control().set_faults([])
    for i in range(10):
        system.node.send(remote, Envelope(Kind.TELL, "echo", system.endpoint, 0, Send(str(inbox.address), ("to-local", i))))
    assert wait_until(lambda: far.counters()["dropped_by_faults"] == 20, 5)
    assert inbox.ask(Count()) == 0
    far.set_faults([])
    assert far_collector.ask(Count(), timeout=5) == 0  # nothing leaked through while cut
    far_echo.tell(Send(str(inbox.address), "after-reconnect"))
    assert wait_until(lambda: inbox.ask(Count()) == 1, 5)
    far_collector.tell("after-reconnect")
    assert far_collector.ask(Received(), timeout=5) == ["after-reconnect"]


def test_drops_happen_at_the_configured_rate(system: ActorSystem, remote: str) -> None:
    n, p = 2000, 0.3
    collector = system.ref(remote, "collector")
    system.node.set_faults([FaultRule(remote, "out", drop=p)])
    for i in range(n):
        collector.tell(i)
    system.node.set_faults([])
    assert wait_until(lambda: system.node.fault_rules == (), 2)
    arrived = collector.ask(Count(), timeout=10)  # after the tells on the same link
    sigma = (n * p * (1 - p)) ** 0.5
    assert abs((n - arrived) - n * p) < 5 * sigma, f"dropped {n - arrived} of {n}, expected about {n * p:.0f}"
    assert system.node.counters.dropped_by_faults == n - arrived


def test_delay_rule_delays_within_its_bounds(system: ActorSystem, remote: str) -> None:
    echo = system.ref(remote, "echo")
    system.node.set_faults([FaultRule(remote, "out", "requests", delay=(0.05, 0.08))])
    times = []
    for i in range(10):
        started = time.monotonic()
        echo.ask(i, timeout=5)
        times.append(time.monotonic() - started)
    assert min(times) >= 0.05
    assert max(times) < 0.5


def test_long_delays_reorder_messages(system: ActorSystem, remote: str) -> None:
    collector = system.ref(remote, "collector")
    system.node.set_faults([FaultRule(remote, "out", reorder=0.5)])
    for i in range(100):
        collector.tell(i)
    assert wait_until(lambda: collector.ask(Count(), timeout=5) == 100, 10, interval=0.1)
    order = collector.ask(Received(), timeout=5)
    assert sorted(order) == list(range(100))
    inversions = sum(1 for a, b in itertools.pairwise(order) if a > b)
    assert inversions >= 5, f"only {inversions} inversions: not reordered"


def test_counters_are_exact(system: ActorSystem, remote: str) -> None:
    collector = system.ref(remote, "collector")
    echo = system.ref(remote, "echo")
    system.control().reset_counters()
    payloads = [("tell", i, "x" * i) for i in range(7)]
    for p in payloads:
        collector.tell(p)
    for i in range(3):
        echo.ask(("ask", i), timeout=5)
    counts = system.control().counters()
    assert counts["sent"] == {"tuple": 10}
    expected_tell_bytes = sum(
        len(encode(Envelope(Kind.TELL, "collector", system.endpoint, 0, p), with_src=False)) for p in payloads
    )
    ask_bytes = counts["sent_bytes"]["tuple"] - expected_tell_bytes
    assert ask_bytes == 3 * len(encode(Envelope(Kind.ASK, "echo", system.endpoint, 0, ("ask", 0)), with_src=False))
    far = system.control(remote).counters()
    assert far["sent"]["tuple"] == 3  # the three replies


def test_an_endpoint_crosses_once_per_connection_and_every_envelope_still_names_its_node() -> None:
    """Frames on a connection leave ``src`` out; the receiver fills it in from the connection
    (a ROUTER from the DEALER's routing id, a DEALER from what it connected to), and fault
    rules that select on it still match."""
    a_got: queue.Queue[Envelope] = queue.Queue()
    b_got: queue.Queue[Envelope] = queue.Queue()
    a = Node("tcp://127.0.0.1:0", on_message=a_got.put)
    b = Node("tcp://127.0.0.1:0", on_message=b_got.put)
    try:
        ask = Envelope(Kind.ASK, "x", a.endpoint, 7, "hi")
        assert a.send(b.endpoint, ask) == len(encode(ask)) - len(a.endpoint.encode())
        request = b_got.get(timeout=10)
        assert (request.src, request.body, request.corr) == (a.endpoint, "hi", 7)
        reply = Envelope(Kind.REPLY, "", b.endpoint, 7, "ho", "x")  # what b's reply to the request is
        assert b.reply(request, "ho") == len(encode(reply)) - len(b.endpoint.encode())
        answer = a_got.get(timeout=10)
        assert (answer.src, answer.body, answer.sender) == (b.endpoint, "ho", "x")
        assert a.counters.sent_bytes["str"] == len(encode(ask, with_src=False))

        b.set_faults([FaultRule(a.endpoint, "in", drop=1.0)])  # selects on the src the connection named
        a.send(b.endpoint, Envelope(Kind.TELL, "x", a.endpoint, 0, "dropped"))
        assert wait_until(lambda: b.counters.dropped_by_faults == 1, 10, interval=0.02)
        b.set_faults([])
        a.send(b.endpoint, Envelope(Kind.TELL, "x", a.endpoint, 0, "through"))
        assert b_got.get(timeout=10).body == "through"
        assert b_got.empty()
    finally:
        a.close()
        b.close()


def test_a_reply_given_just_before_close_still_reaches_its_asker() -> None:
    """A threaded actor answering as its system stops hands the reply to the I/O thread, and close()
    follows at once: the I/O thread used to end without sending what was queued (and the ROUTER,
    closed without linger, dropped what it had not written), so the asker waited out its timeout.
    Twenty nodes in turn, as one try could go the right way by luck (the old node lost a reply within them)."""
    answers: queue.Queue[Envelope] = queue.Queue()
    client = Node("tcp://127.0.0.1:0", on_message=answers.put)
    try:
        for corr in range(1, 21):
            requests: queue.Queue[Envelope] = queue.Queue()
            server = Node("tcp://127.0.0.1:0", on_message=requests.put)
            try:
                client.send(server.endpoint, Envelope(Kind.ASK, "x", client.endpoint, corr, "last question"))
                request = requests.get(timeout=10)
                server.reply(request, f"last words {corr}")  # from this thread, not the I/O thread
            finally:
                server.close()
            answer = answers.get(timeout=10)
            assert (answer.corr, answer.body) == (corr, f"last words {corr}")
    finally:
        client.close()


def test_a_reply_that_eats_a_request_signal_does_not_strand_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """ZMQ_FD is edge-triggered and a send may process the socket's commands, eating the
    signal of a request that has just arrived. A reply the I/O thread sends outside its read
    of the ROUTER (here: from a task it runs, as an inline actor's queued drain does) must be
    followed by a look at the ROUTER before the thread sleeps, or that request is never read.

    The send is made to process commands every time (libzmq throttles it, so in real runs
    this is rare, not impossible)."""
    requests: queue.Queue[Envelope] = queue.Queue()
    server = Node("tcp://127.0.0.1:0", on_message=requests.put)
    client = Node("tcp://127.0.0.1:0", on_message=lambda env: None)
    real_send = node_module.raw_send

    def eager_send(sock: zmq.Socket, data: bytes, flags: int = 0) -> None:
        real_send(sock, data, flags)
        if sock is server._router:
            node_module.events(sock)  # what a send does when libzmq's throttle lets it: process commands

    monkeypatch.setattr(node_module, "raw_send", eager_send)
    try:
        client.send(server.endpoint, Envelope(Kind.ASK, "x", client.endpoint, 1, "first"))
        first = requests.get(timeout=10)
        second_signalled = threading.Event()

        def reply_while_the_second_waits() -> None:  # on the server's I/O thread
            client.send(server.endpoint, Envelope(Kind.ASK, "x", client.endpoint, 2, "second"))
            router_fd = server._router.get(zmq.FD)
            poller = select.poll()  # not select(): a test process may hold descriptors past FD_SETSIZE
            poller.register(router_fd, select.POLLIN)
            if poller.poll(10_000):  # its signal is pending (not consumed by looking)
                second_signalled.set()
            server.reply(first, "answer")

        server.run_soon(reply_while_the_second_waits)
        second = requests.get(timeout=10)
        assert second_signalled.is_set()
        assert (second.corr, second.body) == (2, "second")
    finally:
        client.close()
        server.close()


def test_control_is_immune_to_faults(system: ActorSystem, remote: str) -> None:
    far = system.control(remote)
    far.set_faults([FaultRule("*", "both", connected=False)])
    assert far.ping()["endpoint"] == remote
    far.set_faults([])


def test_set_faults_takes_a_rule_or_nested_lists_of_rules(system: ActorSystem, remote: str) -> None:
    far = system.control(remote)
    far.set_faults([unreliable(), disconnected("ipc://elsewhere")])  # the profiles return lists: nesting reads right
    assert far.ping()["endpoint"] == remote
    far.set_faults(FaultRule("ipc://elsewhere", "out", connected=False))
    with pytest.raises(TypeError, match="not str"):
        far.set_faults(["not a rule"])  # type: ignore[list-item]
    far.set_faults([])
    table = FaultTable()
    table.replace([unreliable(), [disconnected("p")]])
    assert [r.peer for r in table.rules] == ["*", "*", "p"]


def test_unknown_control_op_is_a_clear_error(system: ActorSystem, remote: str) -> None:
    with pytest.raises(ValueError, match="unknown control op"):
        system.control(remote)._call("explode")


# ---- bad input at the endpoint --------------------------------------------------


def test_garbage_frames_leave_the_node_serving(system: ActorSystem, remote: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    resolve_keyring().secure_client(sock, remote)  # a member of the cluster, sending garbage
    sock.connect(remote)
    try:
        for frame in (b"", b"\x00" * 100, b"ZA1garbage", b"ZA1" + pickle.dumps(("x",)), pickle.dumps(1)):
            sock.send(frame)
        sock.send_multipart([b"ZA1" + pickle.dumps((1, "echo", "ipc:///x", 0, "", None)), b"more garbage"])
        assert wait_until(lambda: system.control(remote).counters()["malformed"] >= 6, 5)
        assert system.ref(remote, "echo").ask("still there?", timeout=5) == "still there?"
    finally:
        ctx.destroy(linger=0)


def test_a_message_of_many_parts_is_dropped_whole_and_the_connection_stays_in_step(system: ActorSystem, remote: str) -> None:
    """The ROUTER reads a message part by part: extra parts must be read and dropped with it, so the
    next message's first part is never taken for a connection identity (its reply would go astray)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    resolve_keyring().secure_client(sock, remote)
    sock.connect(remote)
    try:
        before = system.control(remote).counters()["malformed"]
        first = encode(Envelope(Kind.ASK, "echo", "ipc:///x", 11, "dropped"))
        sock.send_multipart([first, first, first])
        sock.send(encode(Envelope(Kind.ASK, "echo", "ipc:///x", 12, "answered")))
        reply = decode(sock.recv())
        assert (reply.kind, reply.corr, reply.body) == (Kind.REPLY, 12, "answered")
        assert system.control(remote).counters()["malformed"] == before + 1
        assert sock.poll(200) == 0  # the three-part message got no reply of any kind
    finally:
        ctx.destroy(linger=0)


def test_a_node_on_a_live_ipc_endpoint_is_refused_and_the_first_keeps_it(system: ActorSystem, remote: str) -> None:
    """libzmq replaces an ipc socket file when it binds: a second node there would take the endpoint over."""
    with pytest.raises(OSError, match="already listens there") as refused:
        ActorSystem(remote)
    assert refused.value.errno == errno.EADDRINUSE
    assert system.ref(remote, "echo").ask("still here", timeout=10) == "still here"


def test_a_stale_ipc_socket_file_is_taken_over(system: ActorSystem, tmp_path) -> None:
    """A socket file left by a killed process has no listener: the next node binds there as before."""
    path = tmp_path / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(path))  # a socket file, and nobody listening on it
    leftover.close()
    assert stat.S_ISSOCK(path.stat().st_mode)
    with ActorSystem(f"ipc://{path}") as server:
        server.spawn(Echo, name="echo")
        assert system.ref(server.endpoint, "echo").ask("mine now", timeout=10) == "mine now"


def test_a_live_listener_too_busy_to_accept_is_not_taken_for_a_stale_file(tmp_path) -> None:
    """A paused node's full accept queue refuses a connect at once (EAGAIN): still in use, never free."""
    path = tmp_path / "busy.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    pending: list[socket.socket] = []
    try:
        for _ in range(8):  # fill the accept queue; nobody accepts
            peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            peer.setblocking(False)
            pending.append(peer)
            try:
                peer.connect(str(path))
            except BlockingIOError:
                break
        else:
            pytest.fail("the accept queue never filled")
        with pytest.raises(OSError, match="holds it") as refused:
            check_ipc_free(f"ipc://{path}")
        assert refused.value.errno == errno.EADDRINUSE
    finally:
        for peer in pending:
            peer.close()
        listener.close()


def test_raw_bytes_and_oversized_frames_leave_the_node_serving() -> None:
    with ActorSystem("tcp://127.0.0.1:0", max_frame_bytes=64 * 1024) as server, ActorSystem() as client:
        server.spawn(Collector, name="c")
        host, port = server.endpoint.removeprefix("tcp://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 8)
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        resolve_keyring().secure_client(sock, server.endpoint)
        sock.connect(server.endpoint)
        try:
            big = Envelope(Kind.TELL, "c", "ipc:///x", 0, b"y" * (200 * 1024))
            sock.send(encode(big, max_bytes=1 << 30))  # ZeroMQ drops this sender's connection
            collector = client.ref(server.endpoint, "c")
            small = encode(Envelope(Kind.TELL, "c", "ipc:///x", 0, "small"))
            # The dropped connection is re-made by ZeroMQ; a small frame on the
            # same socket then gets through, and the big one never did.
            assert wait_until(lambda: sock.send(small) or collector.ask(Count(), timeout=5) >= 1, 5, interval=0.05)
            assert set(collector.ask(Received(), timeout=5)) == {"small"}
            with pytest.raises(FrameTooLarge, match="over the frame limit"):
                server.ref(client.endpoint, "anyone").tell(b"z" * (200 * 1024))
        finally:
            ctx.destroy(linger=0)



# ---- a closed node and its descriptors --------------------------------------


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_a_closed_node_writes_nothing_into_files_that_reuse_its_descriptors(tmp_path: Path) -> None:
    """Once closed, a node's wake-up pipe is gone and the next files opened get its descriptor
    numbers. Calls that would wake its I/O thread must then leave those files alone:
    ``call_later`` and ``run_soon`` do nothing (the timer comes back cancelled), ``reply``
    is dropped, and a send to itself (a control request) fails with ConnectionError."""
    before = _open_fds()
    node = Node(on_message=lambda env: None)
    mine = _open_fds() - before
    ping = Envelope(Kind.ASK, CONTROL_NAME, node.endpoint, 1, ControlRequest(ControlOp.PING))
    node.close()
    files: list[tuple[int, Path]] = []
    try:
        for i in range(len(mine) + 64):  # the lowest free number first: these take every one the node let go
            if not (mine - _open_fds()):
                break
            path = tmp_path / f"reuse-{i}"
            files.append((os.open(path, os.O_RDWR | os.O_CREAT), path))
        assert not (mine - _open_fds()), "the node's descriptors were not all reused"
        timer = node.call_later(0, lambda: None)
        node.run_soon(lambda: None)
        node.reply(ping._replace(route=b"someone"), "late answer")
        with pytest.raises(ConnectionError, match="closed"):
            try:
                node.send(node.endpoint, ping)
            finally:
                assert [path.name for _, path in files if path.stat().st_size] == []
        assert timer.cancelled
    finally:
        for fd, _ in files:
            os.close(fd)


def test_a_node_closed_on_its_own_io_thread_ends_it_cleanly_and_frees_its_descriptors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``close()`` from a task on the I/O thread cannot join that thread: the thread itself lets
    go of the sockets and the wake-up pipe as it ends, never polling or reading a closed descriptor."""
    before = _open_fds()
    node = Node(on_message=lambda env: None)
    mine = _open_fds() - before
    closed = threading.Event()
    node.run_soon(lambda: (node.close(), closed.set()))
    assert closed.wait(10)
    assert wait_until(lambda: not node.started, 10), "the I/O thread did not end"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert wait_until(lambda: not (mine & _open_fds()), 10), f"still open: {sorted(mine & _open_fds())}"
