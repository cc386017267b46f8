"""A node: one bound ZeroMQ endpoint per OS process, and the one thread that owns it.

Usage summary::

    node = Node("ipc:///tmp/a.sock", on_message=handle)   # or tcp://127.0.0.1:0
    node.send("ipc:///tmp/b.sock", envelope)               # any thread, on the shared connection
    ch = node.channel("ipc:///tmp/b.sock")                 # this thread's own connection (or None)
    ch.request(KIND_ASK, "name", corr, body); ch.receive(timeout)   # ...and its replies, read here
    node.reply(request, body)                              # back over the request's own connection
    node.call_later(0.5, fn)                               # fn runs on the I/O thread
    node.set_faults([FaultRule(...)])                      # or remotely, see CONTROL_NAME
    node.counters.snapshot()
    node.close()

The node is built from rooms, each a module of its own: :mod:`transport.ipc`
(where ipc:// endpoints live), :mod:`transport.auth` (the ZAP handler and the
count of refused handshakes), :mod:`transport.dealers` (opening sending
sockets, and the shared ones kept per destination), :mod:`transport.channel`
(a thread's own connection, read by the thread that waits),
:mod:`transport.batching` (replies held in a burst), :mod:`transport.unread`
(the bytes of replies each connection has not read, and its requests held
back while that is too much), :mod:`transport.control`
(what the control name does) and :mod:`transport.rawzmq` (pyzmq's compiled
calls for the per-message paths). This module keeps what ties them together:
the bound ROUTER, the I/O thread's loop, the way in for every frame
(:meth:`Node.accept`: decode, count, "in" fault rules) and the tasks it
runs; :mod:`transport.timers` holds what is due later.

Security (on by default): every socket speaks CurveZMQ with this machine's
key pair from the keyring (:mod:`transport.keys`). The bound ROUTER is a
CURVE server whose ZAP handler (:mod:`transport.auth`), run on the I/O
thread, admits only public keys in the keyring; a peer that fails the
handshake (no keys, a key outside the keyring, a revoked key) never gets a
byte to the codec and is counted in ``rejected``. Each request's key is
looked up again, frame by frame (:mod:`transport.roles`): a client key's
frames are decoded restricted, a key revoked while connected is refused on
the connection it has. ``secure=False`` turns
CURVE off for loopback and ipc:// only, with a warning once per process.

pyzmq sockets are not thread-safe, so each socket has one user at a time.
The bound ROUTER (requests in, replies out by the requester's connection
identity), the ZAP socket and the monitor belong to the I/O thread alone,
which polls their raw ZMQ_FD descriptors (see ``_build_poller``).
A thread that asks and waits sends on a :class:`~transport.channel.Channel`
of its own and reads the replies off it itself, under the channel's lock, so
the reply wakes that thread and no other. Everything else goes over the
shared sending sockets (one DEALER per destination, which also receive the
replies to what was sent on them), used under the node's send lock: a sending
thread sends on them directly (so an oversized or unpicklable message fails
in the caller, with a clear error); the I/O thread polls each DEALER's raw
ZMQ_FD and reads it under the same lock. ZMQ_FD is edge-triggered (a send
may consume the signal of a reply that has just arrived), so every send
re-checks ZMQ_EVENTS and wakes the I/O thread when input is waiting. At most
``max_peers`` shared DEALERs stay open (see :mod:`transport.dealers`), and
at most ``max_peers`` channels. Replies never open a socket: a frame's
claimed ``src`` is only a label for fault rules and counters, never an
address a reply goes to. Every DEALER names its node once, in its routing
id, so frames on a connection leave ``src`` out (the receiver knows the
other end; see :mod:`transport.codec`).

``on_message`` runs on the I/O thread for every envelope that arrives for a
name other than the node's control name. It must be quick (hand the message to
a mailbox); a slow handler stalls the whole node.

A frame that does not decode, or that arrives in parts of the wrong shape or
summing over ``max_frame_bytes``, is logged and dropped; ZeroMQ itself closes
a connection that sends bytes that are not ZMTP, or one ZMTP frame over 256 KiB
(plus framing), handshake commands included: that per-frame limit is what a
stranger's handshake can make a node hold, so it is small, and a larger
message comes in parts (:mod:`transport.parts`). Either way the node goes on
serving. After :meth:`Node.close` nothing touches the node's descriptors:
a timer comes back cancelled, a task or a reply is dropped, a send fails
with ConnectionError.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import zmq

from transport.auth import Admission
from transport.batching import BATCH_ROOM, ReplyBatch
from transport.channel import Channel, ThreadChannels
from transport.codec import (
    BATCH_MAX_FRAMES,
    DEFAULT_MAX_FRAME_BYTES,
    MalformedFrame,
    RefusedFrame,
    decode,
    encode,
    encode_batch,
    encode_fields,
    is_batch,
    split_batch,
)
from transport.control import perform
from transport.counters import Counters, Tally
from transport.dealers import DEFAULT_MAX_PEERS, DEFAULT_PEER_IDLE, HANDSHAKE_MS, Dealers, open_dealer, watch_liveness
from transport.envelope import CONTROL_NAME, KIND_REPLY, Envelope, Failure, Kind, message_type
from transport.faults import DROP, FaultRule, FaultSpec, FaultTable
from transport.ipc import check_ipc_free, default_endpoint
from transport.keys import Keyring, check_insecure_bind, hold_explicit, release_explicit, resolve_keyring, security_on
from transport.limits import raise_open_files
from transport.once import OncePerCause
from transport.parts import PART_BYTES, Joined, read_rest, send_parts, wire_frame_limit
from transport.probe import PROBE_TIMEOUT, LinkReport, probe
from transport.rawzmq import MORE_NOBLOCK, NOBLOCK, POLLIN, RCVMORE, events, raw_get, raw_recv, raw_send
from transport.roles import Roles, refusal
from transport.timers import Timer, TimerQueue
from transport.unread import DEFAULT_MAX_UNREAD_BYTES, REPLY_HWM, TRACK_FROM, UnreadReplies

log = logging.getLogger(__name__)
_notices = OncePerCause(log)  # what a peer can repeat per message is logged once per cause

LOCAL = b""
"""Route of an envelope this node sent to itself: its reply is delivered locally too."""

DEFAULT_INBOUND_HWM = 10_000
"""Frames ZeroMQ queues per connection before it stops reading that peer (TCP back-pressure)."""

CLOSING_LINGER_MS = 200
"""How long a closing node's last replies may wait in ZeroMQ to be written out; only a reply whose
asker is connected but not reading can make ``close()`` take that long."""

_NONE_SENT = (0, 0)


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
        keys: str | os.PathLike[str] | Keyring | None = None,
        secure: bool | None = None,
        max_peers: int = DEFAULT_MAX_PEERS,
        inbound_hwm: int = DEFAULT_INBOUND_HWM,
        peer_idle: float = DEFAULT_PEER_IDLE,
        max_unread_bytes: int = DEFAULT_MAX_UNREAD_BYTES,
    ) -> None:
        """``keys``: the keyring (default: ``$ZACTOR_KEYS``, else the user's, made on first use).
        ``secure=False`` turns CURVE off (loopback and ipc:// only; warns once per process).
        ``max_unread_bytes``: large replies one connection may leave unread before its requests are
        held back (see :mod:`transport.unread`)."""
        if max_peers < 1 or inbound_hwm < 1 or peer_idle <= 0 or max_unread_bytes < 1:
            raise ValueError("max_peers, inbound_hwm and max_unread_bytes must be at least 1, peer_idle positive")
        self.peer_idle = peer_idle
        self.on_message = on_message
        self.describe: Callable[[], list[dict]] = list  # what the layer above hosts (its actors), for STATS
        """Called on the I/O thread with every envelope for an actor name; replaceable before ``start()``."""
        self.max_frame_bytes = max_frame_bytes
        self.max_peers = max_peers
        self._inbound_hwm = inbound_hwm
        self.counters = Counters()
        self._io_tally = self.counters.tally()  # what the I/O thread counts: written by it alone
        self._faults = FaultTable(seed=fault_seed)
        requested = endpoint or default_endpoint()
        self.secure = security_on(secure)
        self.keyring: Keyring | None = resolve_keyring(keys) if self.secure else None
        self._explicit_keys = self.keyring.directory if self.keyring is not None and keys is not None else None
        if not self.secure:
            check_insecure_bind(requested)
        check_ipc_free(requested)
        raise_open_files()
        self._ctx = zmq.Context(io_threads=1)
        self._admission: Admission | None = None
        self._roles: Roles | None = None  # every request's key checked against the keyring (secure only)
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.RCVHWM, inbound_hwm)
        # Replies queued for one asker: at most REPLY_HWM messages, and large ones bounded in bytes too
        # (transport.unread), whose zero-copy sends must never be copied (a copy's tracker is done at once).
        self._router.setsockopt(zmq.SNDHWM, REPLY_HWM)
        self._router.copy_threshold = 0
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a reply that cannot go is counted, not silently lost
        watch_liveness(self._router)
        # A connection that has not logged in within HANDSHAKE_MS is closed: a stranger's idle
        # connection holds a descriptor (and whatever it sent) for that long, not libzmq's 30 s.
        self._router.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)
        # ZeroMQ refuses (and disconnects) a sender of a larger frame, handshake commands included, so
        # no peer, logged in or not, makes it hold more than that per frame; larger messages come in
        # parts (transport.parts), their sum bounded by max_frame_bytes.
        self._router.setsockopt(zmq.MAXMSGSIZE, wire_frame_limit(max_frame_bytes))
        try:
            if self.keyring is not None:
                # The ZAP handler must exist before the first connection: without
                # one, libzmq lets any CURVE client in.
                self._admission = Admission(self._ctx, self._router, self.keyring, self.counters)
                self._roles = Roles(self.keyring, self.counters)
            self._router.bind(requested)
        except zmq.ZMQError as exc:
            self._ctx.destroy(linger=0)
            raise OSError(f"cannot bind node endpoint {requested}: {exc}") from exc
        if self._explicit_keys is not None:
            hold_explicit(self._explicit_keys)  # the Supervisor hands it to children (released at close)
        self.endpoint: str = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        if requested.startswith("tcp://") and not requested.endswith(":0"):
            self.endpoint = requested  # keep the caller's spelling (host name vs address)
        if self._admission is not None:
            self._admission.label = self.endpoint
        if self._roles is not None:
            self._roles.label = self.endpoint
        if self._admission is not None and self._roles is not None:
            self._admission.bound = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
            self._roles.on_revoked = self._admission.cut  # a revoked key's live connection is closed, not kept deaf
        self._unread = UnreadReplies(max_unread_bytes, self.counters, self.endpoint, self._label_of, self._take, self.call_later)
        # Every DEALER this node opens names it, once per connection, in its
        # routing id ("z|<endpoint>|<random>", unique per socket); frames on it
        # then leave their src out. An endpoint too long for a routing id
        # (255 bytes) is sent in every frame instead.
        prefix = b"z|" + self.endpoint.encode() + b"|"
        self._route_prefix: bytes | None = prefix if len(prefix) + 16 <= 255 else None
        self.frame_src = "" if self._route_prefix is not None else self.endpoint
        """What a frame on one of this node's connections says of its sender: nothing when the routing id does."""
        self._route_peers: dict[bytes, str] = {}
        self._dealers = Dealers(max_peers, peer_idle)
        self._poll_dirty = True  # the I/O thread rebuilds its poller (dealers came or must go)
        self._own_fds: list[int] = []  # the I/O thread's own descriptors (ROUTER, wake pipe, ZAP, monitor)
        self._router_sent = False  # the I/O thread sent on the ROUTER outside _drain_router
        self._batching = False  # in a burst of requests: replies wait in _held (see _drain_router)
        self._held = ReplyBatch(self._send_replies)
        self._input_waiting = False  # a sender saw a reply waiting on a DEALER
        self._send_lock = threading.Lock()
        self._outbox: deque[tuple] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_lock = threading.Lock()  # a write to the pipe never meets its close (-1: closed)
        self._signalled = False
        self._timers = TimerQueue(self.endpoint)
        self._soon: deque[Callable[[], Any]] = deque()
        self._channels: set[Channel] = set()
        self._orphans: deque[Channel] = deque()
        self._local = threading.local()
        self._channel_lock = threading.Lock()
        self._stopping = False
        self._closed = False
        self._destroyed = False
        self._thread = threading.Thread(target=self._run, name=f"zactor-io:{self.endpoint}", daemon=True)
        self._io_ident: int | None = None  # the I/O thread's ident once it runs (a C call to compare, on the hot path)
        self.call_later(min(peer_idle, 30.0), self._close_idle)
        if self._roles is not None:
            self._roles.watch(self.call_later)  # a revocation reaches live connections (transport.roles)
        if start:
            self.start()

    def start(self) -> None:
        """Start handling traffic; what arrived since the bind waits in ZeroMQ until then."""
        if not self._thread.is_alive() and not self._closed:
            self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread.is_alive()

    def on_io_thread(self) -> bool:
        """Whether the calling thread is this node's I/O thread (which must never block)."""
        return threading.get_ident() == self._io_ident

    def run_soon(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the I/O thread at its next turn (any thread; cheaper than a timer).

        What actors served on the I/O thread use to have their mailbox drained
        right after the frames that filled it were read.
        """
        self._soon.append(fn)
        if threading.get_ident() != self._io_ident:
            self._wake()

    def use_shared_connections(self) -> None:
        """From now on the calling thread sends on the shared connections (an asyncio loop's thread,
        whose replies the I/O thread must complete); its channels, if any, are closed."""
        self._local.shared = True
        mine = getattr(self._local, "channels", None)
        if mine is not None:
            self._local.channels = None
            self._orphans.extend(mine.values())
            mine.clear()

    def channel(self, dest: str) -> Channel | None:
        """This thread's own connection to ``dest`` (see :class:`Channel`), made on first use.

        None when the node is closing or already has ``max_peers`` channels
        open (the caller then uses the shared connection), or on the I/O
        thread, which reads its replies through the shared connections.
        """
        if self._closed or threading.get_ident() == self._io_ident:
            return None
        mine: dict[str, Channel] | None = getattr(self._local, "channels", None)
        if mine is None and getattr(self._local, "shared", False):
            return None
        if mine is None:
            mine = self._local.channels = ThreadChannels(self._orphans)
        ch = mine.get(dest)
        if ch is not None and not ch.closed:
            return ch
        with self._channel_lock:
            while self._orphans:
                orphan = self._orphans.popleft()
                self._channels.discard(orphan)
                orphan.close()
            if self._closed or len(self._channels) >= self.max_peers:
                return None
            sock = self._new_dealer(dest)
            if sock is None:
                return None
            ch = mine[dest] = Channel(self, self._faults, dest, sock)
            self._channels.add(ch)
        return ch

    # ---- any thread -------------------------------------------------------

    def probe(self, dest: str, timeout: float = PROBE_TIMEOUT) -> LinkReport:
        """Why ``dest`` might not answer: a trial connection with this node's keys (see :mod:`transport.probe`)."""
        server_key = self.keyring.server_key(dest) if self.keyring is not None else None
        if self._destroyed:
            raise ConnectionError(f"node {self.endpoint} is closed")
        return probe(self._ctx, dest, keyring=self.keyring, server_key=server_key, max_frame_bytes=self.max_frame_bytes, timeout=timeout)

    def send(self, dest_endpoint: str, env: Envelope) -> int:
        """Queue ``env`` for ``dest_endpoint``; returns the encoded size in bytes.

        Raises FrameTooLarge, a pickling error, or KeyringError (no key serves
        that host) in the caller's thread.
        """
        to_self = dest_endpoint == self.endpoint
        frame = encode(env, self.max_frame_bytes, with_src=to_self or bool(self.frame_src))
        item = (dest_endpoint, message_type(env.body), env.is_reply, env.is_control, frame, None)
        if to_self:
            if self._closed:
                raise ConnectionError(f"node {self.endpoint} is closed")
            self._enqueue(item)  # delivered by the I/O thread, like everything received
        else:
            with self._send_lock:
                if self._destroyed:
                    raise ConnectionError(f"node {self.endpoint} is closed")
                ready = self._admit(item)
                if ready is not None:
                    self._transmit(dest_endpoint, frame)
        return len(frame)

    def reply(self, request: Envelope, body: Any, kind: Kind = Kind.REPLY) -> int:
        """Answer ``request`` with ``body`` (``kind`` REPLY, or ERROR with a Failure) over the
        connection it came in on, never to a claimed address; the encoded size in bytes.

        The request says everything else the reply carries (its correlation
        id, the name that answers), so nothing but the body is asked for.
        Encoded in the caller's thread (errors surface there); the I/O thread,
        which owns the ROUTER, sends it.
        """
        route = request.route
        local = not route  # None or LOCAL: the request came from this node itself
        control = request.dest == CONTROL_NAME
        frame = encode_fields(
            kind, "", self.endpoint if local else "", request.dest, request.corr, body, self.max_frame_bytes
        )  # a DEALER knows what it connected to
        if route and not self._faults.rules and threading.get_ident() == self._io_ident:
            # The common case (an inline actor answering, no fault rules): out on the
            # ROUTER, which this thread owns, at once or with the replies to the same
            # connection's next requests in a burst (see _drain_router).
            if self._batching and len(frame) <= BATCH_ROOM:
                self._held.hold(route, frame)
            else:
                self._send_replies(route, [frame])
            if control:
                self.counters.add("control")
            else:  # Tally.count_sent, inline: every inline actor's reply comes this way
                by_type, mtype = self._io_tally.by_type, type(body).__name__
                n, nbytes = by_type.get(mtype, _NONE_SENT)
                by_type[mtype] = (n + 1, nbytes + len(frame))
            return len(frame)
        self._enqueue((request.src, type(body).__name__, True, control, frame, LOCAL if local else route))
        return len(frame)

    def _send_replies(self, route: bytes, frames: list[bytes]) -> None:
        """On the I/O thread: replies out on the ROUTER to one connection, in one message (a batch) if several.

        A large reply goes through the count of what that connection has not read
        (:mod:`transport.unread`), which drops it only past twice the bound.
        """
        self._router_sent = True
        frame = frames[0] if len(frames) == 1 else encode_batch(frames)
        if len(frame) >= TRACK_FROM:
            self._unread.send(self._router, route, frame)
            return
        try:
            raw_send(self._router, route, MORE_NOBLOCK)
            raw_send(self._router, frame, NOBLOCK)
        except zmq.ZMQError:  # the asker has gone, or its queue is full (it is not reading)
            self.counters.add("send_failures", len(frames))

    def call_later(self, delay: float, fn: Callable[[], Any]) -> Timer:
        """Run ``fn`` on the I/O thread after ``delay`` seconds.

        On a closed node nothing will ever run: the timer comes back cancelled.
        """
        if self._closed:
            timer = Timer(fn)
            timer.cancel()
            return timer
        timer = self._timers.add(delay, fn)
        if threading.get_ident() != self._io_ident:
            self._wake()
        return timer

    def set_faults(self, rules: FaultSpec) -> None:
        """Replace the fault rules in force (a rule or nested lists of them); they apply to the next message."""
        with self._send_lock:
            self._faults.replace(rules)

    @property
    def fault_rules(self) -> tuple[FaultRule, ...]:
        return self._faults.rules

    @property
    def open_peers(self) -> int:
        """Sending sockets open now (bounded by ``max_peers``)."""
        return len(self._dealers)

    @property
    def held_back(self) -> int:
        """Requests held back now, for connections that have left ``max_unread_bytes`` unread (:mod:`transport.unread`)."""
        return self._unread.waiting

    @property
    def reading_burst(self) -> bool:
        """Whether the I/O thread is reading a burst off the ROUTER: requests were known to wait behind the
        one being served (the first of a burst is served before that is known). An inline actor whose work
        per state change is costly (the Raft peer's fsync) can leave it to the burst's end. I/O thread only."""
        return self._batching

    def starved(self, within: float) -> bool:
        """Whether the operating system refused this node a connection for want of open files (or memory) in
        the last ``within`` seconds, so new clients cannot reach it: what a Raft leader checks to give up
        leading (any thread). Known with security on, where the ROUTER is monitored."""
        at = self._admission.starved_at if self._admission is not None else None
        return at is not None and time.monotonic() - at < within

    def close(self) -> None:
        """Stop the I/O thread and close every socket; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        with self._channel_lock:
            channels = list(self._channels)
            self._channels.clear()
        for ch in channels:  # each waits for the thread driving it, if any, to let go
            ch.close()
        if self._explicit_keys is not None:
            release_explicit(self._explicit_keys)
        self._wake()
        # The sockets and the wake-up pipe are closed by the thread that polls them, as it
        # ends (see _run), or here when it never ran: never under a running I/O thread,
        # whose next poll or read would meet a closed descriptor, or a file that reuses it.
        if threading.get_ident() != self._io_ident and self._thread.is_alive():
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                log.warning("node %s: the I/O thread has not ended after 5 s; it closes its sockets when it does", self.endpoint)
        elif not self._thread.is_alive():
            self._destroy()
            self._close_wake()

    # ---- internals --------------------------------------------------------

    def _destroy(self) -> None:
        # Under the send lock: a thread inside a send on a DEALER finishes it
        # before its socket goes, and every later send sees ``_destroyed``.
        with self._send_lock:
            self._destroyed = True
            if self._admission is not None:
                self._admission.close()
            self._router.close()  # with its own linger: 0, or CLOSING_LINGER_MS once the I/O thread ended
            self._ctx.destroy(linger=0)

    def _enqueue(self, item: tuple) -> None:
        if threading.get_ident() == self._io_ident:
            with self._send_lock:
                ready = self._admit(item)
            if ready is not None:
                self._deliver_or_send(*ready)
            return
        self._outbox.append(item)
        self._wake()

    def _wake(self) -> None:
        # The flag saves a system call per message while the I/O thread is
        # already awake; the I/O thread clears it after emptying the pipe and
        # before it drains the outbox and looks at _input_waiting, so an item
        # queued after that drain always finds it clear and writes. The lock
        # keeps the write from meeting _close_wake: once closed, the number
        # may name another file of this process.
        if not self._signalled:
            self._signalled = True
            with self._wake_lock:
                if self._wake_w >= 0:
                    try:
                        os.write(self._wake_w, b"x")
                    except OSError:  # full (the thread has wake-ups to read already)
                        pass

    def _close_wake(self) -> None:
        """Close the wake-up pipe (idempotent): by the I/O thread as it ends, or by close() if it never ran."""
        with self._wake_lock:
            fds = (self._wake_r, self._wake_w)
            self._wake_r = self._wake_w = -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def _build_poller(self) -> select.poll:
        """What the I/O thread polls: the descriptors of its sockets, the wake-up pipe, every DEALER's.

        Raw descriptors, never the sockets themselves: libzmq's poll reads
        ZMQ_EVENTS of every socket it is given before and after it sleeps,
        each read a system call or two here, so a node that polled its
        ROUTER, ZAP and monitor sockets that way made three times the system
        calls of a bare blocking recv per request. A socket's ZMQ_FD only
        says "look again" (edge-triggered): each reader reads until ZMQ_EVENTS
        shows nothing more, and a send on the ROUTER (which may consume the
        signal of a request that has just arrived) is followed by a look at
        ZMQ_EVENTS before the thread sleeps (``_router_sent``).
        """
        poller = select.poll()
        for fd in self._own_fds:
            poller.register(fd, select.POLLIN)
        with self._send_lock:
            self._poll_dirty = False
            for dest, sock in self._dealers.over_limit():
                self._dealers.close(sock)
                log.info("node %s: closed the least recently used connection, to %s", self.endpoint, dest)
            fds = list(self._dealers.by_fd)
        for fd in fds:
            poller.register(fd, select.POLLIN)
        return poller

    def _run(self) -> None:
        self._io_ident = threading.get_ident()
        router, wake_r, dealer_fds, admission = self._router, self._wake_r, self._dealers.by_fd, self._admission
        run_due_timers = self._timers.run_due
        router_fd = cast(int, router.get(zmq.FD))
        zap_fd, monitor_fd = admission.descriptors() if admission is not None else (-1, -1)
        self._own_fds = [fd for fd in (router_fd, wake_r, zap_fd, monitor_fd) if fd >= 0]
        poller = self._build_poller()
        # What arrived before this thread ran may have signalled already: look at everything first.
        router_due, zap_due, monitor_due = True, zap_fd >= 0, monitor_fd >= 0
        ready: list[zmq.Socket] = []
        try:
            while not self._stopping:
                if self._outbox:
                    self._drain_outbox()
                if zap_due:
                    zap_due = admission.answer()  # type: ignore[union-attr]  # due only with an admission
                if monitor_due:
                    monitor_due = admission.read_monitor()  # type: ignore[union-attr]
                if router_due:
                    router_due = self._drain_router()
                if self._input_waiting:
                    self._input_waiting = False
                    ready = list(dealer_fds.values())
                if ready:
                    self._drain_dealers(ready)
                    ready = []
                if self._soon:
                    self._run_soon()
                timeout_ms = run_due_timers()
                if self._poll_dirty:
                    poller = self._build_poller()
                if self._router_sent:  # a send since the last look may have eaten a request's signal
                    self._router_sent = False
                    router_due = router_due or bool(events(router) & POLLIN)
                if router_due or zap_due or monitor_due or self._input_waiting or self._soon or self._outbox:
                    timeout_ms = 0
                for fd, _ in poller.poll(timeout_ms):
                    if fd == router_fd:
                        router_due = True
                    elif fd == wake_r:
                        # Empty the pipe first, then clear the flag: cleared first, a
                        # wake-up written in between would be read here too and leave
                        # the flag set over an empty pipe, silencing every later wake-up.
                        try:
                            os.read(wake_r, 4096)
                        except BlockingIOError:
                            pass
                        self._signalled = False
                    elif fd == zap_fd:
                        zap_due = True
                    elif fd == monitor_fd:
                        monitor_due = True
                    else:
                        dealer = dealer_fds.get(fd)
                        if dealer is not None:
                            ready.append(dealer)
            # Closing: what was queued to go before close() still goes (a reply an actor gave as its
            # system stopped), then lingers briefly in the ROUTER so ZeroMQ can write it out.
            if self._outbox:
                self._drain_outbox()
            self._router.setsockopt(zmq.LINGER, CLOSING_LINGER_MS)
        except Exception:
            log.exception("node %s: I/O thread failed", self.endpoint)
        finally:
            self._destroy()
            self._close_wake()
            self._io_ident = None  # a thread made later may be given the same ident: it is not this node's

    def _run_soon(self) -> None:
        soon = self._soon
        for _ in range(10_000):  # bounded: what is left waits for the next turn (a zero-timeout poll)
            if not soon:
                return
            try:
                soon.popleft()()
            except Exception:
                log.exception("node %s: a task on the I/O thread failed", self.endpoint)

    def _drain_outbox(self) -> None:
        outbox = self._outbox
        while outbox:
            with self._send_lock:
                ready = self._admit(outbox.popleft())
            if ready is not None:
                self._deliver_or_send(*ready)

    def _admit(self, item: tuple) -> tuple[str, bytes, bytes | None] | None:
        """Count an outgoing frame and apply the fault rules; what to send now, if anything.

        Callers hold the send lock: counters and the fault RNG are shared by every sending thread.
        """
        dest, mtype, is_reply, exempt, frame, route = item
        if exempt:  # the harness reading counters must not change them
            self.counters.add("control")
        else:
            self.counters.count_sent(mtype, len(frame))
            if not self._faults.rules:
                return dest, frame, route
            hold = self._faults.decide(dest, "out", is_reply, mtype)
            if hold == DROP:
                self.counters.add("dropped_by_faults")
                return None
            if hold > 0:
                self.call_later(hold, lambda: self._deliver_or_send(dest, frame, route))
                return None
        return dest, frame, route

    def _deliver_or_send(self, dest: str, frame: bytes, route: bytes | None = None) -> None:
        """On the I/O thread: receive a frame for this node, reply on the ROUTER, or send under the lock."""
        if route is not None and route != LOCAL:
            self._send_replies(route, [frame])
            return
        if dest == self.endpoint or route == LOCAL:
            self._receive(frame, LOCAL)
            return
        with self._send_lock:
            try:
                self._transmit(dest, frame)
            except Exception as exc:  # a delayed send to a host no key serves
                self.counters.add("send_failures")
                log.error("node %s: cannot send to %s: %s", self.endpoint, dest, exc)

    def _transmit(self, dest: str, frame: bytes) -> None:
        """Hand one frame for another node to ZeroMQ; callers hold the send lock."""
        dealers = self._dealers
        sock = dealers.by_dest.get(dest)
        if sock is None:
            sock = self._connect(dest)
            if sock is None:
                return
        else:
            dealers.by_dest.move_to_end(dest)
        dealers.last_send[dest] = time.monotonic()
        try:
            if len(frame) <= PART_BYTES:
                raw_send(sock, frame, NOBLOCK)
            else:
                send_parts(sock, frame)
        except zmq.Again:
            self.counters.add("send_failures")
            _notices.warn(("queue full", self.endpoint, dest), "node %s: queue to %s is full; message dropped (more: send_failures)", self.endpoint, dest)
        # ZMQ_FD is edge-triggered: this send may have consumed the signal of
        # a reply that just arrived, so the I/O thread must look by itself.
        if events(sock) & POLLIN and not self._input_waiting:
            self._input_waiting = True
            if threading.get_ident() != self._io_ident:
                self._wake()

    def _connect(self, dest: str) -> zmq.Socket | None:
        """A new shared DEALER to ``dest``; callers hold the send lock. KeyringError if no key serves it."""
        if len(self._dealers) >= 2 * self.max_peers:  # the I/O thread has not caught up closing old ones
            self.counters.add("send_failures")
            _notices.warn(("connections", self.endpoint), "node %s: %d connections open; message to %s dropped (more: send_failures)", self.endpoint, len(self._dealers), dest)
            return None
        sock = self._new_dealer(dest)
        if sock is None:
            return None
        self._dealers.add(dest, sock)
        self._poll_dirty = True  # register its descriptor; close the oldest if over max_peers
        if threading.get_ident() != self._io_ident:
            self._wake()
        return sock

    def _new_dealer(self, dest: str) -> zmq.Socket | None:
        """A DEALER connected to ``dest`` with this node's keys. KeyringError if no key serves it."""
        server_key = self.keyring.server_key(dest) if self.keyring is not None else None
        if self._destroyed:
            raise ConnectionError(f"node {self.endpoint} is closed")
        routing_id = self._route_prefix + os.urandom(8).hex().encode() if self._route_prefix is not None else None
        try:
            return open_dealer(
                self._ctx,
                dest,
                keyring=self.keyring,
                server_key=server_key,
                routing_id=routing_id,
                inbound_hwm=self._inbound_hwm,
                max_frame_bytes=self.max_frame_bytes,
            )
        except zmq.ZMQError as exc:
            self.counters.add("send_failures")
            log.error("node %s: cannot connect to %r: %s", self.endpoint, dest, exc)
            return None

    def _close_idle(self) -> None:
        """On the I/O thread (a timer): close sending sockets idle for ``peer_idle`` seconds."""
        with self._send_lock:
            for dest, sock in self._dealers.idle():
                self._dealers.close(sock)
                self._poll_dirty = True
                log.debug("node %s: closed the idle connection to %s", self.endpoint, dest)
        if not self._stopping:
            self.call_later(min(self.peer_idle, 30.0), self._close_idle)

    def _drain_dealers(self, socks: list[zmq.Socket]) -> None:
        """Read the replies waiting on DEALERs (under the send lock), then deliver them."""
        frames: list[tuple[bytes, str]] = []
        with self._send_lock:
            for sock in socks:
                if sock.closed:
                    continue
                peer = self._dealers.peers.get(sock, "")
                for _ in range(1_000):
                    if not events(sock) & POLLIN:
                        break
                    frame = raw_recv(sock, NOBLOCK)
                    if len(frame) == PART_BYTES and raw_get(sock, RCVMORE):  # only such a part begins parts
                        try:
                            frame = read_rest(sock, frame, self.max_frame_bytes)
                        except MalformedFrame as exc:
                            self._drop_parts(peer, exc)
                            continue
                    frames.append((frame, peer))
                else:
                    self._input_waiting = True  # more than a batch: come back after other work
        for frame, peer in frames:
            self._receive(frame, None, replies_only=True, peer=peer)

    def _drain_router(self) -> bool:
        """Read what waits on the ROUTER; whether more is left for the next turn.

        Bounded, so timers and local deliveries get their turn. Each look at
        ZMQ_EVENTS with nothing pending costs a system call or two, as does the
        zmq.Again of a read that finds nothing (plus the exception): after the
        first request, ZMQ_EVENTS says whether this is a lone request (the
        usual round trip: stop) or a burst, which is then read until zmq.Again,
        with no look per request. In a burst, replies are held and sent in
        batches (see :class:`~transport.batching.ReplyBatch`); the last batch goes out after the final
        read. Either way out, a look at the ROUTER's input follows the last
        reply sent (here, or by the I/O loop, which ``_router_sent`` tells to
        look), and that look is what re-arms its descriptor.
        """
        router, roles, unread = self._router, self._roles, self._unread
        unread_queues = unread.queues  # non-empty only while some connection has large replies in flight
        burst = False
        try:
            for _ in range(10_000):
                try:
                    route = raw_recv(router, NOBLOCK)
                except zmq.Again:
                    self._router_sent = False
                    return False
                held = self._held
                if held.route is not None:  # held only while the requests read in a row come from one
                    held.reads += 1  # connection, and for BATCH_MAX_FRAMES of them at most (tells count)
                    if route != held.route or held.reads > BATCH_MAX_FRAMES:
                        held.flush()
                # A ROUTER's identity part is always followed by one more; with security on, read as a
                # zmq.Frame, whose User-Id names the sender's key (see transport.roles).
                frame: Any = raw_recv(router, NOBLOCK, roles is None)
                # A large message in parts (transport.parts), joined, or dropped whole. A zmq.Frame says
                # whether more follows itself (reading RCVMORE costs pyzmq an enum lookup, ~0.6 us).
                if frame.more if roles is not None else raw_get(router, RCVMORE):
                    try:
                        joined = read_rest(router, frame, self.max_frame_bytes)
                    except MalformedFrame as exc:
                        self._drop_parts(self._label_of(route), exc)
                    else:
                        frame = joined if roles is None else Joined(joined, frame)
                        if not unread_queues or not unread.hold(route, frame):
                            self._take(frame, route)
                elif not unread_queues or not unread.hold(route, frame):  # held back: its connection is not reading
                    self._take(frame, route)
                if not burst:
                    if not events(router) & POLLIN:
                        self._router_sent = False
                        return False
                    burst = self._batching = True
            return True
        finally:
            if burst:
                self._batching = False
                self._held.flush()

    def _drop_parts(self, peer: str, exc: MalformedFrame) -> None:
        """Count and log a message whose parts were not ours, or summed over the frame limit (dropped undecoded)."""
        self.counters.add("malformed")
        _notices.warn(("malformed", self.endpoint, peer), "node %s: dropped a malformed frame from %s: %s (more: malformed)", self.endpoint, peer or "?", exc)

    def _take(self, frame: Any, route: bytes) -> None:
        """Serve one request read off the ROUTER (a zmq.Frame with security on, bytes without), now or when
        its connection has drained (:mod:`transport.unread`): its key is looked up then (a revocation meanwhile holds)."""
        roles = self._roles
        if roles is None:
            data, trusted = frame, True
        elif (trust := roles.trust(frame)) is None:
            roles.refuse(frame)
            return
        else:
            data, trusted = frame.bytes, trust
        if self._faults.rules:
            self._receive(data, route, trusted=trusted)
            return
        # The usual request (no fault rules, a well-formed frame): ``_receive`` and ``accept``
        # without their calls. Anything else takes their way, which decodes it again to count,
        # log, refuse or answer it as every frame is.
        peer = (self._route_peers.get(route) or self._peer_of(route)) if route else self.endpoint
        try:
            env = decode(data, route, peer, trusted=trusted)
        except (MalformedFrame, RefusedFrame):
            self._receive(data, route, trusted=trusted)
            return
        self._io_tally.received += 1
        if env.dest == CONTROL_NAME and env.kind < KIND_REPLY:
            self._control(env, client=not trusted)
            return
        try:
            self.on_message(env)
        except Exception:
            log.exception("node %s: handler failed for %s", self.endpoint, type(env.body).__name__)

    # ---- what channels use (transport.channel.ChannelHost) -------------------

    def decide_out(self, dest: str, message_type: str) -> float:
        """The "out" fault rules' verdict on one message: DROP, a delay in seconds, or 0 (any thread)."""
        with self._send_lock:  # the fault RNG is shared by every sending thread
            return self._faults.decide(dest, "out", False, message_type)

    def send_later(self, delay: float, dest: str, frame: bytes) -> None:
        """Send an encoded request to ``dest`` on the shared connection after ``delay`` seconds."""
        self.call_later(delay, lambda: self._deliver_or_send(dest, frame))

    def accept(
        self, frame: bytes, route: bytes | None, replies_only: bool, peer: str, tally: Tally, *, trusted: bool = True
    ) -> Envelope | None:
        """Decode one frame that came in, count it, and pass it through the "in" fault rules.

        The way in for every frame but the usual one (the ROUTER's requests, the
        shared DEALERs' replies and a channel's replies; ``replies_only``: a
        request that comes back on a sending connection is refused). With no
        fault rules, ``_take`` and ``Channel.receive`` decode a well-formed frame
        themselves and send anything else here, which decodes it again to
        count, log, refuse or answer it. None when the
        frame is dropped, or held back (delivered later through ``on_message``).
        Any thread: the fault table is shared, so its decision is taken under
        the send lock (only when there are rules, which is never on the fast path).
        ``tally``: the calling thread's own (the I/O thread's, or the channel's it holds).
        ``trusted=False``: a client-role key's request (see :mod:`transport.roles`).
        """
        try:
            env = decode(frame, route, peer, trusted=trusted)
        except RefusedFrame as exc:  # a client key's frame that would build code: nothing of it ran
            self.counters.add("refused")
            log.warning("node %s: %s", self.endpoint, exc)
            if exc.request.kind == Kind.ASK:
                self.reply(exc.request, refusal(exc), Kind.ERROR)
            return None
        except MalformedFrame as exc:
            self.counters.add("malformed")
            _notices.warn(("malformed", self.endpoint, peer), "node %s: dropped a malformed frame from %s: %s (more: malformed)", self.endpoint, peer or "?", exc)
            return None
        if replies_only and env.kind < KIND_REPLY:
            self.counters.add("malformed")
            _notices.warn(("came back", self.endpoint, peer), "node %s: dropped a %s that came back on a sending connection (more: malformed)", self.endpoint, env.kind.name)
            return None
        tally.received += 1
        if self._faults.rules and not env.is_control:  # no rules (the normal case): no decision at all
            with self._send_lock:
                hold = self._faults.decide(env.src, "in", env.kind >= KIND_REPLY, message_type(env.body))
            if hold == DROP:
                self.counters.add("dropped_by_faults")
                return None
            if hold > 0:
                self.call_later(hold, lambda: self._deliver(env))
                return None
        return env

    def accept_batch(self, frame: bytes, peer: str, tally: Tally) -> list[Envelope]:
        """``accept`` for each reply of a batch that came back on a sending connection."""
        try:
            frames = split_batch(frame)
        except MalformedFrame as exc:
            self.counters.add("malformed")
            _notices.warn(("malformed", self.endpoint, peer), "node %s: dropped a malformed batch from %s: %s (more: malformed)", self.endpoint, peer or "?", exc)
            return []
        accepted = []
        for one in frames:
            env = self.accept(one, None, True, peer, tally)
            if env is not None:
                accepted.append(env)
        return accepted

    def _receive(
        self, frame: bytes, route: bytes | None, replies_only: bool = False, peer: str = "", trusted: bool = True
    ) -> None:
        """On the I/O thread: accept a frame and hand it on (to the node itself, or to ``on_message``)."""
        if replies_only and is_batch(frame):
            for reply in self.accept_batch(frame, peer, self._io_tally):
                self._deliver(reply)
            return
        if route is not None:
            peer = (self._route_peers.get(route) or self._peer_of(route)) if route else self.endpoint
        env = self.accept(frame, route, replies_only, peer, self._io_tally, trusted=trusted)
        if env is None:
            return
        if env.dest == CONTROL_NAME and env.kind < KIND_REPLY:  # a reply never runs a control operation
            self._control(env, client=not trusted)
            return
        self._deliver(env)

    def _label_of(self, route: bytes) -> str:
        """The endpoint a connection's routing id names, "" if none (for logs; any parse is cached)."""
        return self._route_peers.get(route) or self._peer_of(route)

    def _peer_of(self, route: bytes) -> str:
        """The endpoint a connection's routing id names ("" for one that names none: a label only)."""
        head, sep, _ = route.rpartition(b"|")
        peer = head[2:].decode(errors="replace") if sep and head.startswith(b"z|") else ""
        if len(self._route_peers) >= 4096:  # bounded; a miss costs one parse
            self._route_peers.clear()
        self._route_peers[route] = peer
        return peer

    def _deliver(self, env: Envelope) -> None:
        try:
            self.on_message(env)
        except Exception:
            log.exception("node %s: handler failed for %s", self.endpoint, type(env.body).__name__)

    def _control(self, env: Envelope, client: bool = False) -> None:
        """Run a control request (see :mod:`transport.control`) and answer it, if it is an ask."""
        kind, result = Kind.REPLY, cast(Any, None)
        try:
            result = perform(self, env.body, client=client)
        except Exception as exc:  # reported to the caller, never fatal to the node
            kind, result = Kind.ERROR, Failure.from_exception(exc)
        if env.kind == Kind.ASK:
            self.reply(env, result, kind)
