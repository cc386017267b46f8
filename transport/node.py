"""A node: one bound ZeroMQ endpoint per OS process, and the one thread that owns it.

Usage summary::

    node = Node("ipc:///tmp/a.sock", on_message=handle)   # or tcp://127.0.0.1:0
    node.send("ipc:///tmp/b.sock", envelope)               # any thread
    node.call_later(0.5, fn)                               # fn runs on the I/O thread
    node.set_faults([FaultRule(...)])                      # or remotely, see CONTROL_NAME
    node.counters.snapshot()
    node.close()

pyzmq sockets are not thread-safe, so each socket has one owner at a time.
The bound ROUTER, where everything arrives, belongs to the node's I/O thread
alone: it polls it, decodes, applies the incoming fault rules and hands each
envelope to ``on_message``. Sending sockets (one DEALER per destination, never
read) are owned by whichever thread holds the node's send lock: the thread
that calls ``send`` encodes its envelope (so an oversized or unpicklable
message fails in the caller, with a clear error), applies the outgoing fault
rules and hands the frame to ZeroMQ itself. Handing every send to the I/O
thread instead would cost a thread wake-up (about 30 us here) on each side of
every ask; see ARCHITECTURE.md. Frames for this node itself, delayed frames and
timers go through the I/O thread.

``on_message`` runs on the I/O thread for every envelope that arrives for a
name other than the node's control name. It must be quick (hand the message to
a mailbox); a slow handler stalls the whole node.

A frame that does not decode, or that arrives with the wrong number of parts,
is logged and dropped; ZeroMQ itself closes a connection that sends a frame
over the size limit or bytes that are not ZMTP. Either way the node goes on
serving.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from transport.codec import DEFAULT_MAX_FRAME_BYTES, MalformedFrame, decode, encode
from transport.counters import Counters
from transport.envelope import CONTROL_NAME, Envelope, Failure, Kind, message_type
from transport.faults import DROP, FaultRule, FaultTable

log = logging.getLogger(__name__)

_node_ids = itertools.count(1)


def default_endpoint() -> str:
    """A fresh ipc:// endpoint in the temporary directory, unique to this process."""
    directory = tempfile.gettempdir()
    return f"ipc://{directory}/zactor-{os.getpid()}-{next(_node_ids)}-{os.urandom(3).hex()}.sock"


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """A request to a node itself: ``ping``, ``set_faults``, ``counters``, ``reset_counters``."""

    op: str
    arg: Any = None


class Timer:
    """Handle of a scheduled call; ``cancel()`` makes it a no-op."""

    __slots__ = ("cancelled", "fn")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Node:
    """One process's presence on the network; see the module docstring."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        on_message: Callable[[Envelope], None],
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        fault_seed: int | None = None,
        start: bool = True,
    ) -> None:
        self._on_message = on_message
        self.max_frame_bytes = max_frame_bytes
        self.counters = Counters()
        self._faults = FaultTable(seed=fault_seed)
        self._ctx = zmq.Context(io_threads=1)
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.RCVHWM, 0)
        # ZeroMQ refuses (and disconnects) a sender of a larger message, so no
        # stranger can make this process allocate more than that.
        self._router.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes + 4096)
        requested = endpoint or default_endpoint()
        try:
            self._router.bind(requested)
        except zmq.ZMQError as exc:
            self._ctx.destroy(linger=0)
            raise OSError(f"cannot bind node endpoint {requested}: {exc}") from exc
        self.endpoint: str = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        if requested.startswith("tcp://") and not requested.endswith(":0"):
            self.endpoint = requested  # keep the caller's spelling (host name vs address)
        self._dealers: dict[str, zmq.Socket] = {}
        self._send_lock = threading.Lock()
        self._outbox: deque[tuple] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._signalled = False
        self._timers: list[tuple[float, int, Timer]] = []
        self._timer_seq = itertools.count()
        self._timer_lock = threading.Lock()
        self._stopping = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"zactor-io:{self.endpoint}", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        """Start handling traffic; what arrived since the bind waits in ZeroMQ until then."""
        if not self._thread.is_alive() and not self._closed:
            self._thread.start()

    # ---- any thread -------------------------------------------------------

    def send(self, dest_endpoint: str, env: Envelope) -> int:
        """Queue ``env`` for ``dest_endpoint``; returns the encoded size in bytes.

        Raises FrameTooLarge, or a pickling error, in the caller's thread.
        """
        frame = encode(env, self.max_frame_bytes)
        item = (dest_endpoint, message_type(env.body), env.is_reply, env.is_control, frame)
        if dest_endpoint == self.endpoint:
            self._enqueue(item)  # delivered by the I/O thread, like everything received
        else:
            with self._send_lock:
                ready = self._admit(item)
                if ready is not None:
                    self._transmit(dest_endpoint, frame)
        return len(frame)

    def call_later(self, delay: float, fn: Callable[[], Any]) -> Timer:
        """Run ``fn`` on the I/O thread after ``delay`` seconds."""
        timer = Timer(fn)
        with self._timer_lock:
            heapq.heappush(self._timers, (time.monotonic() + max(0.0, delay), next(self._timer_seq), timer))
        if threading.current_thread() is not self._thread:
            self._wake()
        return timer

    def set_faults(self, rules: Sequence[FaultRule]) -> None:
        """Replace the fault rules in force; they apply to the next message sent or received."""
        with self._send_lock:
            self._faults.replace(list(rules))

    @property
    def fault_rules(self) -> tuple[FaultRule, ...]:
        return self._faults.rules

    def close(self) -> None:
        """Stop the I/O thread and close every socket; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._wake()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout=5.0)
        elif not self._thread.is_alive():
            self._ctx.destroy(linger=0)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    # ---- internals --------------------------------------------------------

    def _enqueue(self, item: tuple) -> None:
        if threading.current_thread() is self._thread:
            with self._send_lock:
                ready = self._admit(item)
            if ready is not None:
                self._deliver_or_send(*ready)
            return
        self._outbox.append(item)
        self._wake()

    def _wake(self) -> None:
        # The flag saves a system call per message while the I/O thread is
        # already awake; it is cleared *before* the outbox is drained, so an
        # item appended after the drain always finds it clear and writes.
        if not self._signalled:
            self._signalled = True
            try:
                os.write(self._wake_w, b"x")
            except (BlockingIOError, OSError):
                pass

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while not self._stopping:
                timeout_ms = self._run_due_timers()
                events = dict(poller.poll(timeout_ms))
                if self._wake_r in events:
                    self._signalled = False
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                self._drain_outbox()
                if self._router in events:
                    self._drain_router()
        except Exception:
            log.exception("node %s: I/O thread failed", self.endpoint)
        finally:
            self._ctx.destroy(linger=0)

    def _drain_outbox(self) -> None:
        outbox = self._outbox
        while outbox:
            with self._send_lock:
                ready = self._admit(outbox.popleft())
            if ready is not None:
                self._deliver_or_send(*ready)

    def _run_due_timers(self) -> int | None:
        """Run every due timer; return the poll timeout in ms until the next one."""
        while True:
            with self._timer_lock:
                if not self._timers:
                    return None
                when, _, timer = self._timers[0]
                wait = when - time.monotonic()
                if wait > 0:
                    return max(1, int(wait * 1000) + 1)
                heapq.heappop(self._timers)
            if not timer.cancelled:
                try:
                    timer.fn()
                except Exception:
                    log.exception("node %s: timer callback failed", self.endpoint)

    def _admit(self, item: tuple) -> tuple[str, bytes] | None:
        """Count an outgoing frame and apply the fault rules; what to send now, if anything.

        Callers hold the send lock: counters and the fault RNG are shared by every sending thread.
        """
        dest, mtype, is_reply, exempt, frame = item
        if exempt:  # the harness reading counters must not change them
            self.counters.control += 1
        else:
            self.counters.count_sent(mtype, len(frame))
            hold = self._faults.decide(dest, "out", is_reply, mtype)
            if hold == DROP:
                self.counters.dropped_by_faults += 1
                return None
            if hold > 0:
                self.call_later(hold, lambda: self._deliver_or_send(dest, frame))
                return None
        return dest, frame

    def _deliver_or_send(self, dest: str, frame: bytes) -> None:
        """On the I/O thread: receive a frame for this node, or send it under the lock."""
        if dest == self.endpoint:
            self._receive(frame)
            return
        with self._send_lock:
            self._transmit(dest, frame)

    def _transmit(self, dest: str, frame: bytes) -> None:
        """Hand one frame for another node to ZeroMQ; callers hold the send lock."""
        sock = self._dealers.get(dest)
        if sock is None:
            sock = self._connect(dest)
            if sock is None:
                return
        try:
            sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            self.counters.send_failures += 1
            log.warning("node %s: queue to %s is full; message dropped", self.endpoint, dest)

    def _connect(self, dest: str) -> zmq.Socket | None:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        # A restarted peer should be reachable again within milliseconds.
        sock.setsockopt(zmq.RECONNECT_IVL, 10)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
        try:
            sock.connect(dest)
        except zmq.ZMQError as exc:
            sock.close()
            self.counters.send_failures += 1
            log.error("node %s: cannot connect to %r: %s", self.endpoint, dest, exc)
            return None
        self._dealers[dest] = sock
        return sock

    def _drain_router(self) -> None:
        router = self._router
        # Bounded, so timers and local deliveries get their turn; the EVENTS
        # check ends the loop without the cost of a raised zmq.Again.
        for _ in range(10_000):
            if not router.get(zmq.EVENTS) & zmq.POLLIN:
                return
            parts = router.recv_multipart(zmq.NOBLOCK)
            if len(parts) < 2:
                self.counters.malformed += 1
                log.warning("node %s: dropped a message with no frames", self.endpoint)
                continue
            for part in parts[1:]:
                self._receive(part)

    def _receive(self, frame: bytes | memoryview) -> None:
        try:
            env = decode(frame)
        except MalformedFrame as exc:
            self.counters.malformed += 1
            log.warning("node %s: dropped a malformed frame: %s", self.endpoint, exc)
            return
        self.counters.received += 1
        if env.dest == CONTROL_NAME:
            self._control(env)
            return
        if not env.is_control:
            hold = self._faults.decide(env.src, "in", env.is_reply, message_type(env.body))
            if hold == DROP:
                self.counters.dropped_by_faults += 1
                return
            if hold > 0:
                self.call_later(hold, lambda: self._deliver(env))
                return
        self._deliver(env)

    def _deliver(self, env: Envelope) -> None:
        try:
            self._on_message(env)
        except Exception:
            log.exception("node %s: handler failed for %s", self.endpoint, type(env.body).__name__)

    def _control(self, env: Envelope) -> None:
        req = env.body
        kind, result = Kind.REPLY, None
        try:
            if not isinstance(req, ControlRequest):
                raise ValueError(f"not a control request: {type(req).__name__}")
            if req.op == "ping":
                result = {"endpoint": self.endpoint, "pid": os.getpid()}
            elif req.op == "set_faults":
                rules = list(req.arg or ())
                self.set_faults(rules)
                result = len(rules)
            elif req.op == "counters":
                result = self.counters.snapshot()
            elif req.op == "reset_counters":
                self.counters.reset()
            else:
                raise ValueError(f"unknown control op {req.op!r}")
        except Exception as exc:  # reported to the caller, never fatal to the node
            kind, result = Kind.ERROR, Failure.from_exception(exc)
        if env.kind == Kind.ASK:
            reply = Envelope(kind, "", self.endpoint, env.corr, result, CONTROL_NAME)
            self._enqueue((env.src, message_type(result), True, True, encode(reply, self.max_frame_bytes)))
