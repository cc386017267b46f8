"""The trust boundary, on real sockets and real processes.

A stranger is anyone whose public key is not in the keyring: one with no
keys at all (a plain DEALER), one with a fresh key pair of its own. Neither
gets a byte to the codec, so the ``os.system`` pickle they send never runs.
Inside the cluster, replies go back over the connection a request came in
on, sending sockets stay bounded, and a flood of tells is bounded too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import pickle
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from actors import Actor, ActorSystem, AskTimeout, ChildSpec, MailboxFull, Supervisor
from actors.testing import Echo
from apps.kvsrv import Clerk
from apps.kvsrv.server import serve as serve_kv
from apps.raft.peer import PEER_NAME, PeerConfig, Status, serve_peer
from tests.helpers import Evil, free_port, rss_bytes, wait_until
from tests.users import User, as_user
from transport import CONTROL_NAME, ControlRequest, Envelope, FaultRule, InsecureBindError, Kind, encode
from transport.codec import is_batch, split_batch
from transport.keys import KEYS_ENV, Keyring, Member, init_keyring, resolve_keyring, write_members
from transport.message import message


def stranger_frames(marker: Path, dest: str) -> list[bytes]:
    """The old format's pickle, and a well-formed frame of the current format with the pickle as body."""
    evil = Evil(marker)
    return [
        b"ZA1" + pickle.dumps(evil),
        encode(Envelope(Kind.TELL, dest, "tcp://127.0.0.1:1", 0, evil)),
        encode(Envelope(Kind.ASK, dest, "tcp://127.0.0.1:1", 7, evil)),
    ]


def send_as_stranger(endpoint: str, frames: list[bytes], keyed: bool, server_key: bytes) -> None:
    """Connect as a stranger (no keys, or a key pair not in the keyring), send, and leave."""
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if keyed:
            public, secret = zmq.curve_keypair()
            sock.curve_serverkey = server_key  # a public key is public: the stranger may well know it
            sock.curve_publickey = public
            sock.curve_secretkey = secret
        sock.connect(endpoint)
        for frame in frames:
            sock.send(frame)
        # Give the stranger's connection time to try (and fail) its handshake a few times.
        sock.poll(300)
    finally:
        ctx.destroy(linger=0)


def rejected(system: ActorSystem, endpoint: str) -> int:
    return system.control(endpoint, timeout=10).counters()["rejected"]


@pytest.fixture
def kv(supervisor: Supervisor, system: ActorSystem) -> str:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    supervisor.start_child(ChildSpec("kv", serve_kv, (endpoint,)))
    assert wait_until(lambda: _pings(system, endpoint), 20)
    return endpoint


def _pings(system: ActorSystem, endpoint: str) -> bool:
    try:
        system.control(endpoint, timeout=0.5).ping()
        return True
    except AskTimeout:
        return False


@pytest.mark.parametrize("keyed", [False, True], ids=["no-keys", "unknown-key"])
def test_stranger_cannot_run_code_in_a_kv_server(system: ActorSystem, kv: str, tmp_path: Path, keyed: bool) -> None:
    marker = tmp_path / "MARKER"
    Clerk(kv, system=system).put("k", "v")
    before = rejected(system, kv)
    send_as_stranger(kv, stranger_frames(marker, "kv"), keyed, resolve_keyring().public)
    assert wait_until(lambda: rejected(system, kv) > before, 10), "the refused handshake was not counted"
    assert Clerk(kv, system=system).append("k", "w") == "v"  # a proper clerk is served right after
    assert system.control(kv).counters()["malformed"] == 0  # nothing of the stranger reached the codec
    assert not marker.exists()


@pytest.mark.parametrize("keyed", [False, True], ids=["no-keys", "unknown-key"])
def test_stranger_cannot_run_code_in_a_raft_peer(
    supervisor: Supervisor, system: ActorSystem, tmp_path: Path, keyed: bool
) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    supervisor.start_child(ChildSpec("peer", serve_peer, (PeerConfig(0, (endpoint,), str(tmp_path / "raft")),)))
    peer = system.ref(endpoint, PEER_NAME)
    assert wait_until(lambda: _status(peer) is not None, 20)
    marker = tmp_path / "MARKER"
    before = rejected(system, endpoint)
    send_as_stranger(endpoint, stranger_frames(marker, PEER_NAME), keyed, resolve_keyring().public)
    assert wait_until(lambda: rejected(system, endpoint) > before, 10)
    assert wait_until(lambda: (s := _status(peer)) is not None and s.role == "leader", 10)
    assert not marker.exists()


def _status(peer: Any) -> Any:
    try:
        return peer.ask(Status(), timeout=1.0)
    except AskTimeout:
        return None


@pytest.mark.parametrize("keyed", [False, True], ids=["no-keys", "unknown-key"])
def test_stranger_cannot_run_code_in_a_mapreduce_coordinator(system: ActorSystem, tmp_path: Path, keyed: bool) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    text = tmp_path / "in.txt"
    text.write_text("a b c\n")
    cmd = [sys.executable, "-m", "apps.cli", "mr", "coordinator", "--endpoint", endpoint, "--out", str(tmp_path / "out"), str(text)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: _pings(system, endpoint), 30), "coordinator did not come up"
        marker = tmp_path / "MARKER"
        before = rejected(system, endpoint)
        send_as_stranger(endpoint, stranger_frames(marker, "coordinator"), keyed, resolve_keyring().public)
        assert wait_until(lambda: rejected(system, endpoint) > before, 10)
        assert system.control(endpoint).ping()["pid"] == proc.pid  # still serving
        assert proc.poll() is None
        assert not marker.exists()
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_stranger_control_request_changes_nothing(system: ActorSystem, kv: str) -> None:
    cut = ControlRequest("set_faults", [FaultRule("*", "both", connected=False)])
    frame = encode(Envelope(Kind.ASK, CONTROL_NAME, "tcp://127.0.0.1:1", 1, cut))
    for keyed in (False, True):
        send_as_stranger(kv, [frame], keyed, resolve_keyring().public)
    clerk = Clerk(kv, system=system, give_up_after=10)
    clerk.put("after", "stranger")  # dropped by every rule if the stranger had cut the node off
    assert clerk.get("after") == "stranger"
    assert system.control(kv).counters()["dropped_by_faults"] == 0


# ---- inside the cluster: replies by connection, bounded sockets and queues ----------


def _recv(sock: zmq.Socket, timeout_ms: int = 10_000) -> bytes:
    assert sock.poll(timeout_ms), "no reply on the requesting connection"
    return sock.recv()


def _replies(sock: zmq.Socket) -> int:
    """How many replies the next message holds (a burst's replies may come as one batch)."""
    message = _recv(sock)
    return len(split_batch(message)) if is_batch(message) else 1


def test_reply_goes_back_on_the_request_connection(system: ActorSystem, remote: str, member_socket: Any) -> None:
    from transport import decode

    sock = member_socket(remote)
    claimed = "tcp://127.0.0.1:9"  # nobody listens there
    sock.send(encode(Envelope(Kind.ASK, "echo", claimed, 42, "hello")))
    reply = decode(_recv(sock))
    assert (reply.kind, reply.corr, reply.body) == (Kind.REPLY, 42, "hello")
    counters = system.control(remote).counters()
    assert counters["open_peers"] == 0, "the reply opened a socket to the claimed address"


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_ten_thousand_made_up_sources_leave_open_files_bounded(system: ActorSystem, remote: str, member_socket: Any) -> None:
    pid = system.control(remote).ping()["pid"]
    sock = member_socket(remote)
    sock.send(encode(Envelope(Kind.ASK, "echo", "ipc:///made/up/0", 0, "warm")))
    _recv(sock)
    before = _open_fds(pid)
    n = 10_000
    got = 0
    for i in range(n):
        sock.send(encode(Envelope(Kind.ASK, "echo", f"tcp://10.{i // 65536}.{i // 256 % 256}.{i % 256}:{1000 + i}", i, i)))
        while i + 1 - got > 500 or sock.poll(0):  # at most 500 unanswered, within every queue's bound
            got += _replies(sock)
    while got < n:
        got += _replies(sock)
    assert got == n
    assert _open_fds(pid) <= before + 5
    assert system.control(remote).counters()["open_peers"] == 0


class Slow(Actor):
    """Holds its first message until ``release`` is set (a minute at most), then takes a
    millisecond per message: a flood fills its mailbox, which stays full while the test needs it."""

    def __init__(self, release: Any) -> None:
        super().__init__()
        self.release = release

    def on_receive(self, message: Any) -> Any:
        if self.release is not None:
            self.release.wait(60)
            self.release = None
        time.sleep(0.001)
        return None


def serve_slow(endpoint: str, mailbox_limit: int, release: Any) -> None:
    with ActorSystem(endpoint, start=False, mailbox_limit=mailbox_limit) as system:
        system.spawn(Slow, release, name="slow")
        system.start()
        system.run_until_stopped()


FLOOD_RSS_BOUND = 64 * 1024 * 1024
"""Growth allowed under the flood: mailbox bound (2,000 x ~1.2 KB) plus ZeroMQ's queues
(10,000 frames per connection x 1 KB, both sides) plus allocator slack. Unbounded, the
200,000 tells below would hold over 200 MB."""


def test_flood_of_tells_keeps_memory_bounded_and_the_node_answering(
    supervisor: Supervisor, system: ActorSystem, tmp_path: Path, member_socket: Any
) -> None:
    endpoint = f"ipc://{tmp_path}/slow.sock"
    release = multiprocessing.get_context("forkserver").Event()  # the supervisor's children are forkserver's
    supervisor.start_child(ChildSpec("slow", serve_slow, (endpoint, 2_000, release)))
    assert wait_until(lambda: _pings(system, endpoint), 20)
    pid = system.control(endpoint).ping()["pid"]
    base = rss_bytes(pid)
    flood = encode(Envelope(Kind.TELL, "slow", "ipc:///flooder", 0, b"x" * 1024))
    sock = member_socket(endpoint)
    sock.setsockopt(zmq.SNDHWM, 0)
    stop = threading.Event()
    worst: list[float] = []

    def pinger() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            system.control(endpoint, timeout=5).ping()
            worst.append(time.monotonic() - t0)
            stop.wait(0.05)

    thread = threading.Thread(target=pinger)
    thread.start()
    peak = base
    try:
        for i in range(200_000):
            sock.send(flood)
            if i % 5_000 == 0:
                peak = max(peak, rss_bytes(pid))
        assert wait_until(lambda: system.control(endpoint).counters()["dropped_full"] > 0, 20)
        peak = max(peak, rss_bytes(pid))
        stop.set()
        thread.join(timeout=10)
        assert peak - base < FLOOD_RSS_BOUND, f"RSS grew {(peak - base) / 2**20:.1f} MiB under the flood"
        assert worst and max(worst) < 1.0, f"a ping took {max(worst):.3f} s during the flood"
        # The actor still holds its first message, so its mailbox is at its bound:
        # an ask is refused at once, not queued behind the flood.
        with pytest.raises(MailboxFull, match="busy"):
            system.ref(endpoint, "slow").ask("ask while full", timeout=5)
        assert system.control(endpoint).counters()["busy"] >= 1
    finally:
        release.set()
        stop.set()
        thread.join(timeout=10)


# ---- refusing the unsafe ------------------------------------------------------------


def test_insecure_bind_of_a_non_loopback_address_fails_at_once() -> None:
    with pytest.raises(InsecureBindError, match="Remove --insecure"):
        ActorSystem("tcp://0.0.0.0:0", secure=False)
    port = free_port()
    out = subprocess.run(
        [sys.executable, "-m", "apps.cli", "kv", "serve", "--endpoint", f"tcp://0.0.0.0:{port}", "--insecure"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert "refusing to bind" in out.stderr and "Remove --insecure" in out.stderr, out.stderr


def test_insecure_warns_once_per_process_and_serves_on_loopback() -> None:
    code = (
        "from actors import ActorSystem\n"
        "from actors.testing import Echo\n"
        "with ActorSystem('tcp://127.0.0.1:0', secure=False) as s, ActorSystem(secure=False) as c:\n"
        "    s.spawn(Echo, name='echo')\n"
        "    print(c.ref(s.endpoint, 'echo').ask('plain', timeout=10))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "plain"
    assert out.stderr.count("security is OFF") == 1, out.stderr


# ---- the keyring ----------------------------------------------------------------


def _ring_pair(tmp_path: Path) -> tuple[Keyring, Keyring]:
    """Two "machines": A serves 127.0.0.1, B connects from it; each knows the other."""
    a, b = Keyring(init_keyring(tmp_path / "a")), Keyring(init_keyring(tmp_path / "b"))
    write_members(a.members_path, [Member("b", b.public, ())])
    write_members(b.members_path, [Member("a", a.public, ("127.0.0.1",))])
    return a, b


def test_revoked_key_can_no_longer_connect(tmp_path: Path) -> None:
    a, b = _ring_pair(tmp_path)
    with ActorSystem("tcp://127.0.0.1:0", keys=a.directory) as server:
        server.spawn(Echo, name="echo")
        with ActorSystem(keys=b.directory) as client:
            assert client.ref(server.endpoint, "echo").ask("member", timeout=10) == "member"
        out = subprocess.run(
            [sys.executable, "-m", "apps.cli", "keys", "revoke", "b", "--keys", str(a.directory)],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        before = server.node.counters.rejected
        with ActorSystem(keys=b.directory) as client:
            with pytest.raises(AskTimeout):
                client.ref(server.endpoint, "echo").ask("revoked", timeout=1.5)
        assert server.node.counters.rejected > before


def test_unknown_host_is_a_clear_error_naming_the_fix(tmp_path: Path) -> None:
    ring = init_keyring(tmp_path / "k")
    with ActorSystem(keys=ring) as system:
        with pytest.raises(OSError, match=re.escape("zactor keys add NAME PUBKEY --host 192.0.2.7")):
            system.ref("tcp://192.0.2.7:5555#x").tell("hi")


def test_keyring_readable_by_others_is_refused(tmp_path: Path) -> None:
    ring = init_keyring(tmp_path / "k")
    assert (ring.stat().st_mode & 0o777) == 0o700
    secret = ring / "secret.key"
    assert (secret.stat().st_mode & 0o777) == 0o600
    secret.chmod(0o644)
    with pytest.raises(OSError, match=r"readable by other users.*chmod 600"):
        ActorSystem(keys=ring)


def test_default_keyring_is_made_once_even_by_racing_processes(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env.pop(KEYS_ENV)
    code = "from transport.keys import resolve_keyring; print(resolve_keyring().public.decode())"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    keys = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(keys) == 1
    ring = tmp_path / "config" / "zactor" / "keys"
    assert (ring / "public.key").read_text().strip() == keys.pop()
    assert (ring.stat().st_mode & 0o777) == 0o700


def serve_echo_default(endpoint: str) -> None:
    """A child with no keyring code at all: it must use the parent's."""
    with ActorSystem(endpoint, start=False) as system:
        system.spawn(Echo, name="echo")
        system.start()
        system.run_until_stopped()


def test_supervised_child_inherits_an_explicit_keyring(tmp_path: Path) -> None:
    ring = init_keyring(tmp_path / "explicit")
    assert str(ring) != os.environ[KEYS_ENV]
    endpoint = f"ipc://{tmp_path}/child.sock"
    with ActorSystem(keys=ring) as parent, Supervisor() as sup:
        sup.start_child(ChildSpec("child", serve_echo_default, (endpoint,)))
        # The parent's keyring differs from the environment's: an answer proves the child used it.
        assert wait_until(lambda: _asks(parent, endpoint), 20)


def _asks(system: ActorSystem, endpoint: str) -> bool:
    try:
        return system.ref(endpoint, "echo").ask("hi", timeout=0.5) == "hi"
    except AskTimeout:
        return False


def test_ipc_default_endpoints_live_in_a_private_directory() -> None:
    with ActorSystem() as system:
        path = Path(system.endpoint.removeprefix("ipc://"))
        assert (path.parent.stat().st_mode & 0o777) == 0o700
        assert path.parent.stat().st_uid == os.getuid()


def test_keys_cli_manages_a_keyring(tmp_path: Path) -> None:
    ring = tmp_path / "ring"

    def keys(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "apps.cli", "keys", *args], capture_output=True, text=True, timeout=60)

    init = keys("init", str(ring))
    assert init.returncode == 0, init.stderr
    mine = init.stdout.strip()
    assert keys("show", "--keys", str(ring)).stdout.strip() == mine == (ring / "public.key").read_text().strip()
    other = zmq.curve_keypair()[0].decode()
    assert keys("add", "b", other, "--host", "127.0.0.2", "--keys", str(ring)).returncode == 0
    listed = keys("list", "--keys", str(ring)).stdout
    assert f"b {other} client 127.0.0.2" in listed and f"self {mine} member" in listed
    assert Keyring(ring).server_key("tcp://127.0.0.2:7000") == other.encode()
    assert Keyring(ring).server_key("tcp://127.0.0.1:7000") == mine.encode()  # loopback: this machine's key
    bad = keys("add", "c", "not-a-key", "--keys", str(ring))
    assert bad.returncode == 1 and "not a CURVE public key" in bad.stderr
    assert keys("revoke", "b", "--keys", str(ring)).returncode == 0
    assert not Keyring(ring).allows(other.encode())
    missing = keys("revoke", "b", "--keys", str(ring))
    assert missing.returncode == 1 and "no member named 'b'" in missing.stderr


def test_keys_cli_takes_a_key_that_begins_with_a_dash(tmp_path: Path) -> None:
    """One Z85 key in 85 begins with "-": pasted as PUBKEY it must still be a key, not an option."""
    ring = init_keyring(tmp_path / "ring")
    dashed = next(k for k in (zmq.curve_keypair()[0].decode() for _ in range(100_000)) if k.startswith("-"))
    added = subprocess.run(
        [sys.executable, "-m", "apps.cli", "keys", "add", "b", dashed, "--host", "127.0.0.2", "--keys", str(ring)],
        capture_output=True, text=True, timeout=60,
    )
    assert added.returncode == 0, added.stderr
    assert Keyring(ring).server_key("tcp://127.0.0.2:7000") == dashed.encode()


def test_header_is_checked_before_the_body_is_unpickled(tmp_path: Path) -> None:
    from transport import MalformedFrame, decode

    marker = tmp_path / "MARKER"
    good = encode(Envelope(Kind.TELL, "kv", "ipc:///x", 0, Evil(marker)))
    for bad in (
        good[:-1],  # lengths no longer add up
        good + b"\x00",
        b"ZA1" + good[3:],  # the old magic
        good[:3] + bytes([9]) + good[4:],  # an unknown kind
    ):
        with pytest.raises(MalformedFrame):
            decode(bad)
    assert not marker.exists()


def test_a_failure_travels_as_one_pickle() -> None:
    from transport import Failure, decode

    try:
        raise KeyError("missing")
    except KeyError as exc:
        failure = Failure.from_exception(exc)
    assert not any(isinstance(getattr(failure, f), bytes) for f in ("type_name", "message", "remote_traceback", "exception"))
    back = decode(encode(Envelope(Kind.ERROR, "", "ipc:///x", 3, failure))).body
    assert isinstance(back.to_exception(), KeyError) and "missing" in str(back.to_exception())


@pytest.mark.parametrize("placement", ["command", "global"])
def test_cli_keys_option_selects_the_keyring(tmp_path: Path, placement: str) -> None:
    ring = init_keyring(tmp_path / "k")
    write_members(ring / "members", [Member("far", zmq.curve_keypair()[0], ("192.0.2.1",))])
    keys = ["--keys", str(ring)]
    get = ["kv", "get", "--server", "tcp://192.0.2.9:5555", "--timeout", "1", "k"]
    argv = [*get, *keys] if placement == "command" else [*keys, *get]
    out = subprocess.run([sys.executable, "-m", "apps.cli", *argv], capture_output=True, text=True, timeout=60)
    # No key serves 192.0.2.9 in that keyring (only 192.0.2.1): refused before any connection, with the fix named.
    assert out.returncode == 1
    assert f"no key in {ring} serves host '192.0.2.9'" in out.stderr and "zactor keys add" in out.stderr, out.stderr


def test_idle_sending_sockets_are_closed_and_reopened(remote: str) -> None:
    from transport import Node

    got: list[Envelope] = []
    node = Node(on_message=got.append, peer_idle=0.2)
    try:
        node.send(remote, Envelope(Kind.ASK, "echo", node.endpoint, 1, "first"))
        assert wait_until(lambda: len(got) == 1, 10)
        assert wait_until(lambda: node.open_peers == 0, 5), "the idle socket stayed open"
        node.send(remote, Envelope(Kind.ASK, "echo", node.endpoint, 2, "again"))
        assert wait_until(lambda: len(got) == 2, 10)
        assert [e.body for e in got] == ["first", "again"]
    finally:
        node.close()


# ---- data at rest: 0700 directories and 0600 files whatever the umask ------------


def _not_private(root: Path) -> list[str]:
    """Every directory under ``root`` (itself included) not 0700 and every regular file not 0600."""
    wrong = []
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600 if stat.S_ISREG(st.st_mode) else None
        if want is not None and stat.S_IMODE(st.st_mode) != want:
            wrong.append(f"{path} {stat.filemode(st.st_mode)}")
    return wrong


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask022", "umask000"])
def test_persister_and_journal_state_is_private(tmp_path: Path, umask: int) -> None:
    from actors import Journal, Persister
    from apps.raft.storage import RaftStorage

    with _umask(umask):
        Persister(tmp_path / "state" / "a" / "actor.state").save(b"secret state")
        journal = Journal(tmp_path / "state" / "b" / "log")
        journal.append([b"record"])
        journal.close()
        storage = RaftStorage(tmp_path / "state" / "raft")
        storage.journal.append([b"x"])
        storage.journal.close()
    assert len([p for p in (tmp_path / "state").rglob("*") if p.is_file()]) == 3
    assert _not_private(tmp_path / "state") == []


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask022", "umask000"])
def test_a_raft_cluster_data_dir_is_private(tmp_path: Path, umask: int) -> None:
    data = tmp_path / "deploy" / "raft"
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.cli", "raft", "cluster", "--peers", "1", "--data-dir", str(data), "--for", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, umask=umask,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # bounded by --for 60
            if " leader 0 " in line:
                break
        else:
            raise AssertionError(f"no leader: {proc.stderr.read() if proc.stderr else ''}")
        assert wait_until(lambda: any(p.is_file() for p in data.rglob("*")), 10)  # the leader's vote, on disk
        assert _not_private(tmp_path / "deploy") == []
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask022", "umask000"])
def test_mapreduce_output_and_work_directories_are_private(tmp_path: Path, umask: int) -> None:
    text = tmp_path / "in.txt"
    text.write_text("a b c a\n")
    out = tmp_path / "job" / "out"
    done = subprocess.run(
        [sys.executable, "-m", "apps.cli", "mr", "run", "--app", "wc", "--workers", "2", "--reduce-tasks", "2",
         "--shared-dir", "--quiet", "--out", str(out), str(text)],
        capture_output=True, text=True, timeout=120, umask=umask,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.glob("mr-out-*")) == ["mr-out-0", "mr-out-1"]
    assert _not_private(tmp_path / "job") == []


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask022", "umask000"])
def test_fetched_map_output_is_private(tmp_path: Path, umask: int) -> None:
    from apps.mapreduce.shuffle import fetch_to_file

    class Server:
        def ask(self, message: Any, timeout: float) -> bytes:
            return b"k\tv\n" if message.offset == 0 else b""

    (tmp_path / "fetched").mkdir(mode=0o700)
    with _umask(umask):
        fetch_to_file(Server(), "mr-0-0", tmp_path / "fetched" / "mr-0-0", timeout=5)
    assert (tmp_path / "fetched" / "mr-0-0").read_bytes() == b"k\tv\n"
    assert _not_private(tmp_path / "fetched") == []


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask022", "umask000"])
def test_a_node_agent_directory_is_private(tmp_path: Path, umask: int) -> None:
    directory = tmp_path / "nodes" / "a"
    endpoint = f"ipc://{tmp_path}/agent.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.cli", "node", "--endpoint", endpoint, "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, umask=umask,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the announcement comes once the directory is made and the endpoint bound
            if "node agent listening" in line:
                break
        else:
            raise AssertionError("the agent did not start")
        assert _not_private(tmp_path / "nodes") == []
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- the insecure mode's allow-list, on bind and on connect --------------------------

SQUATTER = r"""
import json, os, subprocess, sys, time
import zmq
from transport import Envelope, Kind, decode, encode
from transport.codec import is_batch, split_batch

class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[1],))

# Only in this network namespace (made by the test, no route out): lo up, and a
# "remote" address on it, where the squatter listens with no security at all.
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["ip", "addr", "add", "10.9.9.9/32", "dev", "lo"], check=True)
ctx = zmq.Context()
router = ctx.socket(zmq.ROUTER)
router.setsockopt(zmq.LINGER, 0)
router.bind("tcp://10.9.9.9:5555")
client = subprocess.Popen(
    [sys.executable, "-m", "apps.cli", "kv", "get", "--insecure", "--server", "tcp://10.9.9.9:5555", "--timeout", "3", "k"],
    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
)
asks = 0
deadline = time.monotonic() + 60
while client.poll() is None and time.monotonic() < deadline:
    if router.poll(100):
        peer, frame = router.recv_multipart()
        for one in split_batch(frame) if is_batch(frame) else [frame]:
            env = decode(one)
            asks += 1
            router.send_multipart([peer, encode(Envelope(Kind.REPLY, "", "tcp://10.9.9.9:5555", env.corr, Evil()))])
if client.poll() is None:
    client.kill()
out, err = client.communicate()
ctx.destroy(linger=0)
print(json.dumps({"rc": client.returncode, "stderr": err, "asks": asks}))
"""


def test_insecure_client_refuses_to_dial_beyond_loopback(tmp_path: Path) -> None:
    """A client with --insecure told to use a non-loopback server (one a squatter answers, in a
    network namespace this test makes) must not dial it: it would unpickle the squatter's reply."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace of its own (unshare -n)")
    marker = tmp_path / "MARKER"
    done = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", SQUATTER, str(marker)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not marker.exists(), "the squatter's reply ran code in the client"
    assert result["asks"] == 0, "the client dialled the squatter"
    assert result["rc"] == 1, result["stderr"]
    assert "refusing to connect to tcp://10.9.9.9:5555 with security off" in result["stderr"]
    assert "Remove --insecure" in result["stderr"] and "Traceback" not in result["stderr"], result["stderr"]


@pytest.mark.parametrize("endpoint", ["tipc://{5555,1,0}", "pgm://127.0.0.1;239.192.1.1:5555", "tcp://*:0", "tcp://0.0.0.0:0"])
def test_insecure_bind_outside_the_allow_list_is_refused(endpoint: str) -> None:
    with pytest.raises(InsecureBindError, match=r"with security off.*--insecure allows only tcp:// on a loopback address"):
        ActorSystem(endpoint, secure=False)


@pytest.mark.parametrize("dest", ["tipc://{5555,1,0}", "pgm://127.0.0.1;239.192.1.1:5555", "udp://127.0.0.1:5555"])
def test_insecure_connect_outside_the_allow_list_is_refused(dest: str) -> None:
    from transport import InsecureConnectError, Node

    node = Node(on_message=lambda env: None, secure=False)
    try:
        with pytest.raises(InsecureConnectError, match=r"refusing to connect to .* with security off.*Remove --insecure"):
            node.send(dest, Envelope(Kind.TELL, "x", node.endpoint, 0, "hi"))
        assert node.open_peers == 0
    finally:
        node.close()


def test_insecure_mode_still_reaches_loopback_tcp_and_ipc(tmp_path: Path) -> None:
    for endpoint in ("tcp://127.0.0.1:0", "tcp://127.0.0.3:0", f"ipc://{tmp_path}/s.sock"):
        with ActorSystem(endpoint, secure=False) as server, ActorSystem(secure=False) as client:
            server.spawn(Echo, name="echo")
            assert client.ref(server.endpoint, "echo").ask("plain", timeout=10) == "plain"


def squat(path: Path) -> None:
    path.mkdir(mode=0o755)


def test_a_squatted_socket_directory_names_the_owner_and_the_way_out(other_user: User) -> None:
    from transport.private_files import socket_directory

    shared = Path(tempfile.mkdtemp(prefix="zactor-tmp-", dir="/tmp"))
    try:
        shared.chmod(0o1777)  # as /tmp is
        mine = shared / f"zactor-{os.getuid()}"
        as_user(other_user, squat, mine)
        with pytest.raises(PermissionError) as caught:
            socket_directory(str(mine))
        text = str(caught.value)
        assert f"cannot use {mine}" in text and f"belongs to {other_user.name}" in text and "export TMPDIR=" in text
        assert (mine.stat().st_uid, stat.S_IMODE(mine.stat().st_mode)) == (other_user.uid, 0o755)  # left alone
        # The same refusal reaches a user of a default command, at once (no hang, no traceback).
        text_file = shared / "in.txt"
        text_file.write_text("a b c\n")
        run = subprocess.run(
            [sys.executable, "-m", "apps.cli", "mr", "coordinator", str(text_file), "--out", str(shared / "out")],
            env={**os.environ, "TMPDIR": str(shared)}, capture_output=True, text=True, timeout=60,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert run.returncode == 1 and f"cannot use {mine}" in run.stderr and "Traceback" not in run.stderr, run.stderr
        fresh = shared / "fresh"
        fresh.mkdir(mode=0o777)
        fresh.chmod(0o777)
        assert socket_directory(str(fresh)) == str(fresh) and stat.S_IMODE(fresh.stat().st_mode) == 0o700
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# ---- key roles: a client key sends requests, never code -----------------------------


@dataclasses.dataclass(frozen=True)
class Unregistered:
    """A plain dataclass: fine between members, not from a client until registered."""

    value: int


@message
class UsersOwn:
    """A user's own message class: registered by ``@message``, so a client may send it."""

    text: str


def test_a_client_key_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    from transport import MalformedFrame, decode

    marker = tmp_path / "MARKER"
    bodies = [
        Evil(marker),  # os.system
        lambda: os.system(f"touch {marker}"),  # a function, shipped by value (cloudpickle)
        [1, {"nested": Evil(marker)}],  # hidden inside plain data
        Unregistered(1),  # data, but not a registered class
    ]
    for body in bodies:
        frame = encode(Envelope(Kind.TELL, "kv", "tcp://127.0.0.1:1", 0, body))
        with pytest.raises(MalformedFrame, match="neither a registered message class nor plain data"):
            decode(frame, trusted=False)
    assert not marker.exists()


def test_a_client_key_still_sends_requests_and_plain_data() -> None:
    import datetime
    import decimal
    import uuid

    from apps.kvsrv.messages import Append, Get, MemoryUsage, Put
    from apps.mapreduce.protocol import RequestTask
    from transport import Failure, decode, register_message

    try:
        raise KeyError("missing")
    except KeyError as exc:
        failure = Failure.from_exception(exc)
    bodies: list[Any] = [
        Get("k"), Put("k", "v", 1, 2), Append("k", "w", 1, 3), MemoryUsage(), RequestTask("w1"), UsersOwn("mine"),
        {"a": [1, 2.5, (3, "x")], "b": {4, 5}, "c": frozenset({b"6"}), "d": None, "e": True, "f": bytearray(b"7")},
        decimal.Decimal("1.5"), datetime.datetime(2026, 12, 4, 14, 0), uuid.UUID(int=7), range(3), complex(1, 2),
        failure,
    ]
    for body in bodies:
        frame = encode(Envelope(Kind.ASK, "kv", "tcp://127.0.0.1:1", 9, body))
        assert decode(frame, trusted=False).body == decode(frame).body or isinstance(body, Failure)
    back = decode(encode(Envelope(Kind.ERROR, "", "tcp://127.0.0.1:1", 9, failure)), trusted=False).body
    assert isinstance(back.to_exception(), KeyError)
    register_message(Unregistered)  # the user's own plain dataclass, registered by hand
    assert decode(encode(Envelope(Kind.TELL, "kv", "x", 0, Unregistered(3))), trusted=False).body == Unregistered(3)


def test_keys_add_takes_a_role_client_by_default(tmp_path: Path) -> None:
    ring = init_keyring(tmp_path / "ring")
    clerk, node = zmq.curve_keypair()[0].decode(), zmq.curve_keypair()[0].decode()

    def keys(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "apps.cli", "keys", *args, "--keys", str(ring)], capture_output=True, text=True, timeout=60)

    assert keys("add", "clerk", clerk).returncode == 0
    assert keys("add", "b", node, "--host", "127.0.0.2", "--role", "member").returncode == 0
    bad = keys("add", "c", zmq.curve_keypair()[0].decode(), "--role", "root")
    assert bad.returncode == 2 and "invalid choice: 'root'" in bad.stderr
    listed = keys("list").stdout
    assert f"clerk {clerk} client (no hosts" in listed and f"b {node} member 127.0.0.2" in listed, listed
    lines = (ring / "members").read_text()
    assert f"clerk {clerk} role=client" in lines and f"b {node} 127.0.0.2 role=member" in lines
    loaded = Keyring(ring)
    assert (loaded.role_of(clerk.encode()), loaded.role_of(node.encode()), loaded.role_of(loaded.public)) == ("client", "member", "member")
    assert loaded.has_clients() and loaded.client_keys() == {clerk}
    assert loaded.role_of(zmq.curve_keypair()[0]) is None
    # A line written before roles existed: its key was trusted with code then, and stays a member.
    legacy = zmq.curve_keypair()[0].decode()
    with open(ring / "members", "a") as f:
        f.write(f"old {legacy} 127.0.0.9\n")
    assert Keyring(ring).role_of(legacy.encode()) == "member"
