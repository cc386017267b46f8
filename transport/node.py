"""A node: one bound ZeroMQ endpoint per OS process, and the one thread that owns it.

Usage summary::

    node = Node("ipc:///tmp/a.sock", on_message=handle)   # or tcp://127.0.0.1:0
    node.send("ipc:///tmp/b.sock", envelope)               # any thread
    node.reply(request, body)                              # back over the request's own connection
    node.call_later(0.5, fn)                               # fn runs on the I/O thread
    node.set_faults([FaultRule(...)])                      # or remotely, see CONTROL_NAME
    node.counters.snapshot()
    node.close()

Security (on by default): every socket speaks CurveZMQ with this machine's
key pair from the keyring (:mod:`transport.keys`). The bound ROUTER is a
CURVE server whose ZAP handler, run on the I/O thread, admits only public keys
in the keyring; a peer that fails the handshake (no keys, a key outside the
keyring, a revoked key) never gets a byte to the codec and is counted in
``rejected`` (through the ROUTER's socket monitor). ``secure=False`` turns
CURVE off for loopback and ipc:// only, with a warning once per process.

pyzmq sockets are not thread-safe, so each socket has one user at a time.
The bound ROUTER (requests in, replies out by the requester's connection
identity), the ZAP socket and the monitor belong to the I/O thread alone,
which polls their raw ZMQ_FD descriptors (see ``_build_poller``).
Sending sockets (one DEALER per destination, which also receive the replies
to what was sent on them) are used under the node's send lock: a sending
thread sends on them directly (so an oversized or unpicklable message fails
in the caller, with a clear error); the I/O thread polls each DEALER's raw
ZMQ_FD and reads it under the same lock. ZMQ_FD is edge-triggered (a send
may consume the signal of a reply that has just arrived), so every send
re-checks ZMQ_EVENTS and wakes the I/O thread when input is waiting. At most
``max_peers`` DEALERs stay open: the least recently used one is closed, and
so is one unused for ``peer_idle`` seconds (by the I/O thread, the only one
polling their descriptors). Replies
never open a socket: a frame's claimed ``src`` is only a label for fault
rules and counters, never an address a reply goes to. Every DEALER names
its node once, in its routing id, so frames on a connection leave ``src``
out (the receiver knows the other end; see :mod:`transport.codec`).

``on_message`` runs on the I/O thread for every envelope that arrives for a
name other than the node's control name. It must be quick (hand the message to
a mailbox); a slow handler stalls the whole node.

A frame that does not decode, or that arrives with the wrong number of parts,
is logged and dropped; ZeroMQ itself closes a connection that sends a frame
over the size limit or bytes that are not ZMTP. Either way the node goes on
serving.
"""

from __future__ import annotations

import enum
import errno
import heapq
import itertools
import logging
import os
import select
import socket
import stat
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import zmq
import zmq.utils.monitor
import zmq.utils.z85

from transport.codec import (
    BATCH_MAX_BYTES,
    BATCH_MAX_FRAMES,
    DEFAULT_MAX_FRAME_BYTES,
    HEADER_BYTES,
    MalformedFrame,
    decode,
    encode,
    encode_batch,
    encode_fields,
    is_batch,
    split_batch,
)
from transport.counters import Counters, Tally
from transport.envelope import CONTROL_NAME, KIND_REPLY, Envelope, Failure, Kind, message_type
from transport.faults import DROP, FaultRule, FaultTable
from transport.keys import Keyring, check_dial, check_insecure_bind, hold_explicit, release_explicit, resolve_keyring, security_on

log = logging.getLogger(__name__)

_node_ids = itertools.count(1)

LOCAL = b""
"""Route of an envelope this node sent to itself: its reply is delivered locally too."""

DEFAULT_MAX_PEERS = 256
"""Open sending sockets (one per destination) kept at most; the least recently used is closed."""

DEFAULT_PEER_IDLE = 300.0
"""Seconds without a send after which a sending socket is closed (reopened on the next send)."""

DEFAULT_INBOUND_HWM = 10_000
"""Frames ZeroMQ queues per connection before it stops reading that peer (TCP back-pressure)."""

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


# Plain ints: pyzmq's constants are enum flags, and ``&`` on an enum runs
# Python code (microseconds each) on what is the hottest path of the runtime.
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)
_RCVTIMEO = int(zmq.RCVTIMEO)
_MORE_NOBLOCK = int(zmq.SNDMORE) | _NOBLOCK
_BATCH_ROOM = BATCH_MAX_BYTES - HEADER_BYTES
"""Bytes of replies one batch holds (a larger reply goes alone)."""

# pyzmq's compiled socket methods, called without its pure-Python layer
# (argument checks, enum wrapping, multipart loops): a few microseconds a
# message. Reading ZMQ_EVENTS costs about 4 us here (libzmq processes the
# socket's pending commands), so the hot paths read it only where no poll
# has just said what it would.
_raw_send = zmq.backend.Socket.send
_raw_recv = zmq.backend.Socket.recv
_raw_get = zmq.backend.Socket.get
_raw_set = zmq.backend.Socket.set


def _events(sock: zmq.Socket) -> int:
    """The socket's ZMQ_EVENTS bits."""
    return cast(int, _raw_get(sock, _EVENTS))


def ipc_directory_path() -> str:
    """Where :func:`ipc_directory` is, without making it (for a default shown in ``--help``)."""
    return os.path.join(tempfile.gettempdir(), f"zactor-{os.getuid()}")


def ipc_directory() -> str:
    """This user's directory for ipc:// sockets (mode 0700), made on first use.

    Another user cannot even reach a socket file inside it, whatever its mode.
    """
    directory = ipc_directory_path()
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise OSError(f"{directory} is not a directory of this user; remove it or set TMPDIR elsewhere")
    if st.st_mode & 0o077:
        os.chmod(directory, 0o700)
    return directory


def check_ipc_free(endpoint: str) -> None:
    """Raise OSError (EADDRINUSE) if a process listens on the socket file of ``endpoint`` (ipc:// only).

    libzmq removes an existing file when it binds an ipc endpoint, so a second
    node on the same path would silently take the endpoint over from a live
    one. A file nobody listens on (its process killed) is left for the bind to
    replace, as before. Checked just before the bind: two binds racing within
    that moment are not caught. A live zactor node counts the probe as one
    refused connection (it never authenticates).
    """
    if not endpoint.startswith("ipc://"):
        return
    path = endpoint[len("ipc://") :]
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except OSError:
        return  # no such file (or one we cannot see): the bind says what is wrong
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
        how = "already listens there"
    except (ConnectionRefusedError, FileNotFoundError):
        return  # stale: nothing listens (or the file just went)
    except OSError as exc:  # a full backlog (EAGAIN), a timeout: alive but busy, or not ours to take
        how = f"holds it ({exc.strerror or type(exc).__name__} on connect)"
    finally:
        probe.close()
    in_use = OSError(f"cannot bind node endpoint {endpoint}: a node (or another program) {how}; stop it or choose another endpoint")
    in_use.errno = errno.EADDRINUSE
    raise in_use


def default_endpoint() -> str:
    """A fresh ipc:// endpoint in this user's 0700 socket directory, unique to this process."""
    return f"ipc://{ipc_directory()}/{os.getpid()}-{next(_node_ids)}-{os.urandom(3).hex()}.sock"


class ControlOp(enum.StrEnum):
    """What a node's control name does (a StrEnum: equal to the plain strings older callers send)."""

    PING = "ping"
    SET_FAULTS = "set_faults"
    COUNTERS = "counters"
    RESET_COUNTERS = "reset_counters"


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """A request to a node itself: one of :class:`ControlOp`, with its argument."""

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


class _ThreadChannels(dict):
    """One thread's channels; when the thread ends its channels are handed back to the node to close."""

    def __init__(self, orphans: deque) -> None:
        super().__init__()
        self._orphans = orphans

    def __del__(self) -> None:
        self._orphans.extend(self.values())  # closed by the next channel() call or by close(), never here


class _HeldReplies:
    """Replies to one connection that wait for the end of its run of requests in a burst (I/O thread only)."""

    __slots__ = ("frames", "reads", "route", "size")

    def __init__(self) -> None:
        self.route: bytes | None = None
        self.frames: list[bytes] = []
        self.size = 0
        self.reads = 0
        """Requests read since the first reply was held (tells, and asks answered elsewhere, count too)."""


class Channel:
    """A sending connection owned by whichever thread holds its lock: no I/O thread in between.

    A thread that asks and waits sends its request on its own DEALER and
    polls that DEALER for the reply itself, so the reply wakes exactly the
    thread that waits for it (as with raw pyzmq), never the node's I/O thread
    first. One channel per (thread, destination), made by :meth:`Node.channel`;
    any thread may drive it (read its replies) while holding ``lock``, which is
    how a future handed to another thread still completes.
    """

    __slots__ = ("_node", "_sock", "_tally", "_timeout_ms", "closed", "dest", "lock")

    def __init__(self, node: Node, dest: str, sock: zmq.Socket) -> None:
        self._node = node
        self.dest = dest
        self._sock = sock
        self._timeout_ms = -1  # the socket's receive timeout now (-1: ZeroMQ's default, wait forever)
        self._tally = node.counters.tally()  # written only under ``lock``
        self.lock = threading.Lock()
        self.closed = False

    def request(self, kind: int, name: str, corr: int, body: Any) -> int:
        """Send a tell or an ask to actor ``name`` on this channel (any thread; encoding errors raise here).

        From the fields, not an Envelope: this is every remote ask's way out.
        """
        node = self._node
        frame = encode_fields(kind, name, node._frame_src, "", corr, body, node.max_frame_bytes)
        size = len(frame)
        counted = True
        if name == CONTROL_NAME:  # never subject to faults, and kept out of ``sent``
            node.counters.add("control")
        elif node._faults.rules:
            with node._send_lock:  # the fault RNG is shared by every sending thread
                hold = node._faults.decide(self.dest, "out", False, type(body).__name__)
            node.counters.count_sent(type(body).__name__, size)
            if hold == DROP:
                node.counters.add("dropped_by_faults")
                return size
            if hold > 0:  # rare (fault tests): the shared connection carries it later
                node.call_later(hold, lambda: node._deliver_or_send(self.dest, frame))
                return size
        else:
            counted = False  # the usual case: into this channel's tally, under its lock
        with self.lock:
            if self.closed:
                raise ConnectionError(f"node {node.endpoint} is closed")
            if not counted:
                self._tally.count_sent(type(body).__name__, size)
            try:
                _raw_send(self._sock, frame, _NOBLOCK)
            except zmq.Again:
                node.counters.add("send_failures")
                log.warning("node %s: queue to %s is full; message dropped", node.endpoint, self.dest)
        return size

    def receive(self, timeout: float) -> list[Envelope]:
        """Wait up to ``timeout`` s for one message on this channel: its replies; callers hold ``lock``.

        A blocking receive with a timeout (the GIL released while it waits),
        rather than a poll and then a read: one call into ZeroMQ per message,
        which holds one reply or a batch of them. Empty when nothing came, or
        what came did not decode or was not a reply (counted and dropped).
        """
        if self.closed:
            return []
        sock = self._sock
        ms = max(0, int(timeout * 1000))
        if ms != self._timeout_ms:
            _raw_set(sock, _RCVTIMEO, ms)
            self._timeout_ms = ms
        try:
            frame = _raw_recv(sock, 0)
        except zmq.Again:
            return []
        node = self._node
        if is_batch(frame):
            return node._accept_batch(frame, self.dest, self._tally)
        env = node._accept(frame, None, True, self.dest, self._tally)
        return [env] if env is not None else []

    @property
    def socket(self) -> zmq.Socket:
        """The DEALER itself, read-only: a thread that holds ``lock`` may poll it beside other
        sockets (``actors.future.wait`` waits on many channels in one ``zmq_poll``), then ``receive``."""
        return self._sock

    def close(self) -> None:
        """Close the socket once no thread drives it (waits for the lock)."""
        with self.lock:
            if not self.closed:
                self.closed = True
                self._sock.close(linger=0)
                self._node.counters.retire(self._tally)


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
    ) -> None:
        """``keys``: the keyring (default: ``$ZACTOR_KEYS``, else the user's, made on first use).
        ``secure=False`` turns CURVE off (loopback and ipc:// only; warns once per process)."""
        if max_peers < 1 or inbound_hwm < 1 or peer_idle <= 0:
            raise ValueError("max_peers and inbound_hwm must be at least 1, peer_idle positive")
        self.peer_idle = peer_idle
        self.on_message = on_message
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
        self._ctx = zmq.Context(io_threads=1)
        self._zap: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.RCVHWM, inbound_hwm)
        self._router.setsockopt(zmq.SNDHWM, 100_000)  # replies queued for one asker, as for a DEALER
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a reply that cannot go is counted, not silently lost
        # ZeroMQ refuses (and disconnects) a sender of a larger message, so no
        # peer can make this process allocate more than that.
        self._router.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes + 4096)
        try:
            if self.keyring is not None:
                # The ZAP handler must exist before the first connection: without
                # one, libzmq lets any CURVE client in.
                self._zap = self._ctx.socket(zmq.REP)
                self._zap.setsockopt(zmq.LINGER, 0)
                self._zap.bind(ZAP_ENDPOINT)
                self.keyring.secure_server(self._router)
                self._router.zap_domain = b"zactor"
                self._monitor = self._router.get_monitor_socket(_HANDSHAKE_FAILURES)
            self._router.bind(requested)
        except zmq.ZMQError as exc:
            self._ctx.destroy(linger=0)
            raise OSError(f"cannot bind node endpoint {requested}: {exc}") from exc
        if self._explicit_keys is not None:
            hold_explicit(self._explicit_keys)  # the Supervisor hands it to children (released at close)
        self.endpoint: str = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        if requested.startswith("tcp://") and not requested.endswith(":0"):
            self.endpoint = requested  # keep the caller's spelling (host name vs address)
        # Every DEALER this node opens names it, once per connection, in its
        # routing id ("z|<endpoint>|<random>", unique per socket); frames on it
        # then leave their src out. An endpoint too long for a routing id
        # (255 bytes) is sent in every frame instead.
        prefix = b"z|" + self.endpoint.encode() + b"|"
        self._route_prefix: bytes | None = prefix if len(prefix) + 16 <= 255 else None
        self._frame_src = "" if self._route_prefix is not None else self.endpoint
        """What a frame on one of this node's connections says of its sender: nothing when the routing id does."""
        self._route_peers: dict[bytes, str] = {}
        self._dealers: OrderedDict[str, zmq.Socket] = OrderedDict()
        self._dealer_fds: dict[int, zmq.Socket] = {}
        self._dealer_peers: dict[zmq.Socket, str] = {}  # each shared DEALER's destination, for the replies read off it
        self._last_send: dict[str, float] = {}
        self._poll_dirty = True  # the I/O thread rebuilds its poller (dealers came or must go)
        self._own_fds: list[int] = []  # the I/O thread's own descriptors (ROUTER, wake pipe, ZAP, monitor)
        self._router_sent = False  # the I/O thread sent on the ROUTER outside _drain_router
        self._batching = False  # in a burst of requests: replies wait in _held (see _drain_router)
        self._held = _HeldReplies()
        self._input_waiting = False  # a sender saw a reply waiting on a DEALER
        self._send_lock = threading.Lock()
        self._outbox: deque[tuple] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._signalled = False
        self._timers: list[tuple[float, int, Timer]] = []
        self._timer_seq = itertools.count()
        self._timer_lock = threading.Lock()
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
            mine = self._local.channels = _ThreadChannels(self._orphans)
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
            ch = mine[dest] = Channel(self, dest, sock)
            self._channels.add(ch)
        return ch

    # ---- any thread -------------------------------------------------------

    def send(self, dest_endpoint: str, env: Envelope) -> int:
        """Queue ``env`` for ``dest_endpoint``; returns the encoded size in bytes.

        Raises FrameTooLarge, a pickling error, or KeyringError (no key serves
        that host) in the caller's thread.
        """
        to_self = dest_endpoint == self.endpoint
        frame = encode(env, self.max_frame_bytes, with_src=to_self or bool(self._frame_src))
        item = (dest_endpoint, message_type(env.body), env.is_reply, env.is_control, frame, None)
        if to_self:
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
            if self._batching and len(frame) <= _BATCH_ROOM:
                self._hold_reply(route, frame)
            else:
                self._send_replies(route, [frame])
            if control:
                self.counters.add("control")
            else:
                self._io_tally.count_sent(type(body).__name__, len(frame))
            return len(frame)
        self._enqueue((request.src, type(body).__name__, True, control, frame, LOCAL if local else route))
        return len(frame)

    def _send_replies(self, route: bytes, frames: list[bytes]) -> None:
        """On the I/O thread: replies out on the ROUTER to one connection, in one message (a batch) if several."""
        self._router_sent = True
        try:
            _raw_send(self._router, route, _MORE_NOBLOCK)
            _raw_send(self._router, frames[0] if len(frames) == 1 else encode_batch(frames), _NOBLOCK)
        except zmq.ZMQError:  # the asker has gone, or its queue is full (it is not reading)
            self.counters.add("send_failures", len(frames))

    def _hold_reply(self, route: bytes, frame: bytes) -> None:
        """Keep a reply for the batch of its connection; a reply to another connection, or a full batch, sends it."""
        held = self._held
        if held.route != route or len(held.frames) >= BATCH_MAX_FRAMES or held.size + len(frame) > _BATCH_ROOM:
            self._flush_replies()
            held.route = route
        held.frames.append(frame)
        held.size += len(frame)

    def _flush_replies(self) -> None:
        """Send what is held (one message), if anything."""
        held = self._held
        if held.route is not None:
            route, frames = held.route, held.frames
            held.route, held.frames, held.size, held.reads = None, [], 0, 0
            self._send_replies(route, frames)

    def call_later(self, delay: float, fn: Callable[[], Any]) -> Timer:
        """Run ``fn`` on the I/O thread after ``delay`` seconds."""
        timer = Timer(fn)
        with self._timer_lock:
            heapq.heappush(self._timers, (time.monotonic() + max(0.0, delay), next(self._timer_seq), timer))
        if threading.get_ident() != self._io_ident:
            self._wake()
        return timer

    def set_faults(self, rules: Sequence[FaultRule]) -> None:
        """Replace the fault rules in force; they apply to the next message sent or received."""
        with self._send_lock:
            self._faults.replace(list(rules))

    @property
    def fault_rules(self) -> tuple[FaultRule, ...]:
        return self._faults.rules

    @property
    def open_peers(self) -> int:
        """Sending sockets open now (bounded by ``max_peers``)."""
        return len(self._dealers)

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
        if threading.get_ident() != self._io_ident and self._thread.is_alive():
            self._thread.join(timeout=5.0)
        elif not self._thread.is_alive():
            self._destroy()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    # ---- internals --------------------------------------------------------

    def _destroy(self) -> None:
        # Under the send lock: a thread inside a send on a DEALER finishes it
        # before its socket goes, and every later send sees ``_destroyed``.
        with self._send_lock:
            self._destroyed = True
            if self._monitor is not None:
                try:
                    self._router.disable_monitor()
                except zmq.ZMQError:
                    pass
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
        # queued after that drain always finds it clear and writes.
        if not self._signalled:
            self._signalled = True
            try:
                os.write(self._wake_w, b"x")
            except (BlockingIOError, OSError):
                pass

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
            while len(self._dealers) > self.max_peers:
                dest, sock = self._dealers.popitem(last=False)
                self._last_send.pop(dest, None)
                self._close_dealer(sock)
                log.info("node %s: closed the least recently used connection, to %s", self.endpoint, dest)
            fds = list(self._dealer_fds)
        for fd in fds:
            poller.register(fd, select.POLLIN)
        return poller

    def _run(self) -> None:
        self._io_ident = threading.get_ident()
        router, wake_r = self._router, self._wake_r
        router_fd = cast(int, router.get(zmq.FD))
        zap_fd = cast(int, self._zap.get(zmq.FD)) if self._zap is not None else -1
        monitor_fd = cast(int, self._monitor.get(zmq.FD)) if self._monitor is not None else -1
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
                    zap_due = self._answer_zap()
                if monitor_due:
                    monitor_due = self._read_monitor()
                if router_due:
                    router_due = self._drain_router()
                if self._input_waiting:
                    self._input_waiting = False
                    ready = list(self._dealer_fds.values())
                if ready:
                    self._drain_dealers(ready)
                    ready = []
                if self._soon:
                    self._run_soon()
                timeout_ms = self._run_due_timers()
                if self._poll_dirty:
                    poller = self._build_poller()
                if self._router_sent:  # a send since the last look may have eaten a request's signal
                    self._router_sent = False
                    router_due = router_due or bool(_events(router) & _POLLIN)
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
                        dealer = self._dealer_fds.get(fd)
                        if dealer is not None:
                            ready.append(dealer)
        except Exception:
            log.exception("node %s: I/O thread failed", self.endpoint)
        finally:
            self._destroy()
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
            self._router_sent = True
            try:
                router = self._router
                _raw_send(router, route, _MORE_NOBLOCK)
                _raw_send(router, frame, _NOBLOCK)
            except zmq.ZMQError:  # the asker has gone, or its queue is full (it is not reading)
                self.counters.add("send_failures")
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
        sock = self._dealers.get(dest)
        if sock is None:
            sock = self._connect(dest)
            if sock is None:
                return
        else:
            self._dealers.move_to_end(dest)
        self._last_send[dest] = time.monotonic()
        try:
            sock.send(frame, _NOBLOCK)
        except zmq.Again:
            self.counters.add("send_failures")
            log.warning("node %s: queue to %s is full; message dropped", self.endpoint, dest)
        # ZMQ_FD is edge-triggered: this send may have consumed the signal of
        # a reply that just arrived, so the I/O thread must look by itself.
        if _events(sock) & _POLLIN and not self._input_waiting:
            self._input_waiting = True
            if threading.get_ident() != self._io_ident:
                self._wake()

    def _connect(self, dest: str) -> zmq.Socket | None:
        """A new shared DEALER to ``dest``; callers hold the send lock. KeyringError if no key serves it."""
        if len(self._dealers) >= 2 * self.max_peers:  # the I/O thread has not caught up closing old ones
            self.counters.add("send_failures")
            log.warning("node %s: %d connections open; message to %s dropped", self.endpoint, len(self._dealers), dest)
            return None
        sock = self._new_dealer(dest)
        if sock is None:
            return None
        self._dealers[dest] = sock
        self._dealer_fds[cast(int, sock.get(zmq.FD))] = sock
        self._dealer_peers[sock] = dest
        self._poll_dirty = True  # register its descriptor; close the oldest if over max_peers
        if threading.get_ident() != self._io_ident:
            self._wake()
        return sock

    def _new_dealer(self, dest: str) -> zmq.Socket | None:
        """A DEALER connected to ``dest`` with this node's keys. KeyringError if no key serves it."""
        server_key = self.keyring.server_key(dest) if self.keyring is not None else None
        check_dial(dest, self.secure)
        if self._destroyed:
            raise ConnectionError(f"node {self.endpoint} is closed")
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, self._inbound_hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_frame_bytes + 4096)
        # A restarted peer should be reachable again within milliseconds.
        sock.setsockopt(zmq.RECONNECT_IVL, 10)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
        if self._route_prefix is not None:
            sock.setsockopt(zmq.ROUTING_ID, self._route_prefix + os.urandom(8).hex().encode())
        if self.keyring is not None:
            sock.curve_serverkey = server_key  # looked up before the socket exists: an unknown host leaks nothing
            sock.curve_publickey = self.keyring.public
            sock.curve_secretkey = self.keyring.secret
        try:
            sock.connect(dest)
        except zmq.ZMQError as exc:
            sock.close()
            self.counters.add("send_failures")
            log.error("node %s: cannot connect to %r: %s", self.endpoint, dest, exc)
            return None
        return sock

    def _close_idle(self) -> None:
        """On the I/O thread (a timer): close sending sockets idle for ``peer_idle`` seconds."""
        cutoff = time.monotonic() - self.peer_idle
        with self._send_lock:
            for dest in [d for d, t in self._last_send.items() if t < cutoff]:
                del self._last_send[dest]
                sock = self._dealers.pop(dest, None)
                if sock is not None:
                    self._close_dealer(sock)
                    self._poll_dirty = True
                    log.debug("node %s: closed the idle connection to %s", self.endpoint, dest)
        if not self._stopping:
            self.call_later(min(self.peer_idle, 30.0), self._close_idle)

    def _close_dealer(self, sock: zmq.Socket) -> None:
        """Only on the I/O thread, under the send lock: nobody polls its descriptor now."""
        self._dealer_fds = {fd: s for fd, s in self._dealer_fds.items() if s is not sock}
        self._dealer_peers.pop(sock, None)
        sock.close(linger=0)

    def _drain_dealers(self, socks: list[zmq.Socket]) -> None:
        """Read the replies waiting on DEALERs (under the send lock), then deliver them."""
        frames: list[tuple[bytes, str]] = []
        with self._send_lock:
            for sock in socks:
                if sock.closed:
                    continue
                peer = self._dealer_peers.get(sock, "")
                for _ in range(1_000):
                    if not _events(sock) & _POLLIN:
                        break
                    frames.extend((part, peer) for part in sock.recv_multipart(_NOBLOCK, copy=True))
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
        batches (see ``_hold_reply``); the last batch goes out after the final
        read. Either way out, a look at the ROUTER's input follows the last
        reply sent (here, or by the I/O loop, which ``_router_sent`` tells to
        look), and that look is what re-arms its descriptor.
        """
        router = self._router
        burst = False
        try:
            for _ in range(10_000):
                try:
                    route = _raw_recv(router, _NOBLOCK)
                except zmq.Again:
                    self._router_sent = False
                    return False
                held = self._held
                if held.route is not None:  # held only while the requests read in a row come from one
                    held.reads += 1  # connection, and for BATCH_MAX_FRAMES of them at most (tells count)
                    if route != held.route or held.reads > BATCH_MAX_FRAMES:
                        self._flush_replies()
                frame = _raw_recv(router, _NOBLOCK)  # a ROUTER's identity part is always followed by one more
                if _raw_get(router, _RCVMORE):
                    extra = 1
                    while _raw_get(router, _RCVMORE):
                        _raw_recv(router, _NOBLOCK)
                        extra += 1
                    self.counters.add("malformed")
                    log.warning("node %s: dropped a message of %d parts (want 1)", self.endpoint, extra + 1)
                else:
                    self._receive(frame, route)
                if not burst:
                    if not _events(router) & _POLLIN:
                        self._router_sent = False
                        return False
                    burst = self._batching = True
            return True
        finally:
            if burst:
                self._batching = False
                self._flush_replies()

    def _answer_zap(self) -> bool:
        """The ZAP handler: admit a CURVE client only if its public key is in the keyring.

        Whether requests are left for the next turn (it reads until none are, or a bound).
        """
        assert self._zap is not None
        for _ in range(1_000):
            try:
                request = self._zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return False
            ok = False
            try:
                version, request_id, _domain, address, _identity, mechanism = request[:6]
                client = zmq.utils.z85.encode(request[6]) if mechanism == b"CURVE" and len(request) > 6 else b""
                ok = bool(client) and self.keyring is not None and self.keyring.allows(client)
            except Exception as exc:  # a bad request or a keyring file that no longer parses: refuse
                version, request_id, address = b"1.0", request[1] if len(request) > 1 else b"", b"?"
                log.error("node %s: refusing a connection, cannot check it: %s", self.endpoint, exc)
            if not ok:
                log.warning("node %s: refused a connection from %s: key not in the keyring", self.endpoint, address.decode(errors="replace"))
            self._zap.send_multipart([version, request_id, b"200" if ok else b"400", b"OK" if ok else b"not in keyring", b"", b""])
        return True

    def _read_monitor(self) -> bool:
        """Count failed handshakes; whether events are left for the next turn."""
        assert self._monitor is not None
        for _ in range(1_000):
            try:
                event = zmq.utils.monitor.recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return False
            if event["event"] & _HANDSHAKE_FAILURES:
                self.counters.add("rejected")
        return True

    def _accept(
        self, frame: bytes, route: bytes | None, replies_only: bool, peer: str, tally: Tally
    ) -> Envelope | None:
        """Decode one frame that came in, count it, and pass it through the "in" fault rules.

        The one way in for every frame: the ROUTER's requests, the shared
        DEALERs' replies and a channel's replies (``replies_only``: a request
        that comes back on a sending connection is refused). None when the
        frame is dropped, or held back (delivered later through ``on_message``).
        Any thread: the fault table is shared, so its decision is taken under
        the send lock (only when there are rules, which is never on the fast path).
        ``tally``: the calling thread's own (the I/O thread's, or the channel's it holds).
        """
        try:
            env = decode(frame, route, peer)
        except MalformedFrame as exc:
            self.counters.add("malformed")
            log.warning("node %s: dropped a malformed frame: %s", self.endpoint, exc)
            return None
        if replies_only and env.kind < KIND_REPLY:
            self.counters.add("malformed")
            log.warning("node %s: dropped a %s that came back on a sending connection", self.endpoint, env.kind.name)
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

    def _accept_batch(self, frame: bytes, peer: str, tally: Tally) -> list[Envelope]:
        """``_accept`` for each reply of a batch that came back on a sending connection."""
        try:
            frames = split_batch(frame)
        except MalformedFrame as exc:
            self.counters.add("malformed")
            log.warning("node %s: dropped a malformed batch: %s", self.endpoint, exc)
            return []
        accepted = []
        for one in frames:
            env = self._accept(one, None, True, peer, tally)
            if env is not None:
                accepted.append(env)
        return accepted

    def _receive(self, frame: bytes, route: bytes | None, replies_only: bool = False, peer: str = "") -> None:
        """On the I/O thread: accept a frame and hand it on (to the node itself, or to ``on_message``)."""
        if replies_only and is_batch(frame):
            for reply in self._accept_batch(frame, peer, self._io_tally):
                self._deliver(reply)
            return
        if route is not None:
            peer = (self._route_peers.get(route) or self._peer_of(route)) if route else self.endpoint
        env = self._accept(frame, route, replies_only, peer, self._io_tally)
        if env is None:
            return
        if env.dest == CONTROL_NAME and env.kind < KIND_REPLY:  # a reply never runs a control operation
            self._control(env)
            return
        self._deliver(env)

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

    def _control(self, env: Envelope) -> None:
        req = env.body
        kind, result = Kind.REPLY, cast(Any, None)
        try:
            if not isinstance(req, ControlRequest):
                raise ValueError(f"not a control request: {type(req).__name__}")
            if req.op == ControlOp.PING:
                result = {"endpoint": self.endpoint, "pid": os.getpid()}
            elif req.op == ControlOp.SET_FAULTS:
                rules = list(req.arg or ())
                self.set_faults(rules)
                result = len(rules)
            elif req.op == ControlOp.COUNTERS:
                result = self.counters.snapshot()
                result["open_peers"] = len(self._dealers)
            elif req.op == ControlOp.RESET_COUNTERS:
                self.counters.reset()
            else:
                raise ValueError(f"unknown control op {req.op!r}")
        except Exception as exc:  # reported to the caller, never fatal to the node
            kind, result = Kind.ERROR, Failure.from_exception(exc)
        if env.kind == Kind.ASK:
            self.reply(env, result, kind)
