"""The keyring's files, as an attacker on the same machine would try them (OpenSSH's StrictModes).

``members`` decides who may run code in a node, so whoever can write it, or
swap the directory that holds it, owns every node using the keyring. Each
attack below is carried out for real: a second unix user (made for the test)
plants its key, then connects to a real server with it and sends a pickle
that would create a marker file. The keyring must be refused before that,
naming the file, what is wrong and the command that fixes it.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from actors import ActorSystem
from actors.testing import Echo
from tests.helpers import Evil, wait_until
from tests.users import User, as_user
from transport import Envelope, Kind, encode
from transport.keys import Keyring, KeyringError, Member, init_keyring, write_members


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory the other user can reach (pytest's own are 0700 root), removed after."""
    base = Path(tempfile.mkdtemp(prefix="zactor-keyring-test-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---- the attacker's steps (run as the other user, in a forked child) --------------


def plant_member(ring: Path) -> tuple[bytes, bytes]:
    """Write a members file naming the attacker's own fresh key; its key pair."""
    public, secret = zmq.curve_keypair()
    planted = ring / ".planted"
    planted.write_text(f"mallory {public.decode()}\n")
    os.replace(planted, ring / "members")
    return public, secret


def swap_keyring(ring: Path) -> tuple[bytes, bytes]:
    """Move the owner's keyring aside and put one of the attacker's in its place whose
    key files are links to the owner's (a stat that follows links sees the owner's files)."""
    aside = ring.with_name(ring.name + ".old")
    os.rename(ring, aside)
    ring.mkdir()
    for name in ("secret.key", "public.key"):
        os.symlink(aside / name, ring / name)
    return plant_member(ring)


def plant_in_new_directory(ring: Path) -> tuple[bytes, bytes]:
    """Make the directory the owner will later `zactor keys init`, with a members file in it."""
    ring.mkdir(mode=0o777)
    ring.chmod(0o777)
    return plant_member(ring)


def try_rename(path: Path) -> str:
    try:
        os.rename(path, path.with_name(path.name + ".stolen"))
    except PermissionError:
        return "denied"
    return "renamed"


def connect_and_send(endpoint: str, server_key: bytes, public: bytes, secret: bytes, frame: bytes) -> str:
    """Connect with the attacker's key, send ``frame`` then an ask; "served" if answered, "refused" if the handshake was."""
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_serverkey = server_key
        sock.curve_publickey = public
        sock.curve_secretkey = secret
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        sock.connect(endpoint)
        if not monitor.poll(10_000):
            return "no handshake"
        event = recv_monitor_message(monitor)["event"]
        if event != zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return "refused"
        sock.send(frame)
        sock.send(encode(Envelope(Kind.ASK, "echo", "tcp://127.0.0.1:1", 1, "hello")))
        return "served" if sock.poll(10_000) else "no reply"
    finally:
        ctx.destroy(linger=0)


def serve_and_attack(ring: Path, user: User, keys: tuple[bytes, bytes], marker: Path) -> tuple[str | None, str]:
    """Start a server on ``ring`` and let the attacker send a code-running pickle with its key.

    Returns (the refusal if the server would not start, the attacker's outcome)."""
    try:
        server = ActorSystem("tcp://127.0.0.1:0", keys=ring)
    except KeyringError as exc:
        return str(exc), "no server"
    with server:
        server.spawn(Echo, name="echo")
        frame = encode(Envelope(Kind.TELL, "echo", "tcp://127.0.0.1:1", 0, Evil(marker)))
        assert server.node.keyring is not None
        return None, as_user(user, connect_and_send, server.endpoint, server.node.keyring.public, *keys, frame)


# ---- attacks by another local user ------------------------------------------------


def test_another_user_cannot_add_a_member_to_a_keyring_others_can_write(other_user: User, shared: Path) -> None:
    ring = init_keyring(shared / "keys")
    marker = shared / "MARKER"
    with ActorSystem("tcp://127.0.0.1:0", keys=ring) as server:
        server.spawn(Echo, name="echo")
        ring.chmod(0o777)  # a shared deploy directory, opened up by mistake while the node runs
        keys = as_user(other_user, plant_member, ring)
        before = server.node.counters.rejected
        frame = encode(Envelope(Kind.TELL, "echo", "tcp://127.0.0.1:1", 0, Evil(marker)))
        assert server.node.keyring is not None
        outcome = as_user(other_user, connect_and_send, server.endpoint, server.node.keyring.public, *keys, frame)
        assert not marker.exists(), "the planted member ran code"
        assert outcome == "refused", f"the planted member was let in ({outcome})"
        assert wait_until(lambda: server.node.counters.rejected > before, 10)
    refusal, _ = serve_and_attack(ring, other_user, keys, marker)
    assert refusal is not None
    assert f"refusing keyring {ring}" in refusal and "writable by other users" in refusal
    assert f"chmod 700 {ring}" in refusal
    assert not marker.exists()


def test_another_user_cannot_swap_a_keyring_under_a_parent_others_can_write(other_user: User, shared: Path) -> None:
    deploy = shared / "deploy"
    deploy.mkdir()
    deploy.chmod(0o777)  # writable by all, not sticky
    ring = deploy / "keys"
    os.rename(init_keyring(shared / "made"), ring)
    marker = shared / "MARKER"
    keys = as_user(other_user, swap_keyring, ring)
    assert (ring / "secret.key").is_symlink()
    refusal, outcome = serve_and_attack(ring, other_user, keys, marker)
    assert not marker.exists(), f"the attacker ran code ({outcome})"
    assert refusal is not None
    assert f"parent directory {deploy} is writable by other users" in refusal and f"chmod go-w {deploy}" in refusal


def test_a_sticky_parent_is_safe_when_the_keyring_below_it_is_ours(other_user: User, shared: Path) -> None:
    drop = shared / "drop"
    drop.mkdir()
    drop.chmod(0o1777)  # as /tmp is
    ring = init_keyring(drop / "keys")
    assert as_user(other_user, try_rename, ring) == "denied"  # so the path cannot be swapped
    Keyring(ring)  # and the keyring is accepted


def test_keys_init_refuses_a_directory_someone_else_filled(other_user: User, shared: Path) -> None:
    drop = shared / "drop"
    drop.mkdir()
    drop.chmod(0o1777)
    ring = drop / "keys"
    keys = as_user(other_user, plant_in_new_directory, ring)
    out = subprocess.run([sys.executable, "-m", "apps.cli", "keys", "init", str(ring)], capture_output=True, text=True, timeout=60)
    marker = shared / "MARKER"
    refusal, outcome = serve_and_attack(ring, other_user, keys, marker)
    assert not marker.exists(), f"the attacker ran code ({outcome})"
    assert out.returncode == 1, out.stderr
    assert f"{ring} belongs to {other_user.name}" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (ring / "secret.key").exists()
    assert refusal is not None and "no keyring at" in refusal
    # The same directory of one's own (files copied in by hand, say): still not a keyring to fill in.
    mine = shared / "mine"
    mine.mkdir()
    (mine / "members").write_text("")
    out = subprocess.run([sys.executable, "-m", "apps.cli", "keys", "init", str(mine)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and f"refusing to make a keyring in {mine}" in out.stderr and "(members)" in out.stderr, out.stderr
    assert not (mine / "secret.key").exists()


def test_files_of_another_user_are_refused(other_user: User, tmp_path: Path) -> None:
    ring = init_keyring(tmp_path / "keys")
    os.chown(ring / "members", other_user.uid, other_user.gid)
    with pytest.raises(KeyringError, match=rf"{ring / 'members'}: it belongs to {other_user.name} .* `chown root {ring / 'members'}`"):
        Keyring(ring)
    os.chown(ring / "members", 0, 0)
    os.chown(ring, other_user.uid, other_user.gid)
    with pytest.raises(KeyringError, match=rf"the directory belongs to {other_user.name}.*`chown -R root {ring}`"):
        Keyring(ring)


# ---- mistakes of the owner that would open the door, and rough edges -------------


@pytest.mark.parametrize(
    ("name", "mode", "fix"),
    [
        ("members", 0o664, "chmod go-w"),
        ("members", 0o646, "chmod go-w"),
        ("public.key", 0o666, "chmod go-w"),
        ("secret.key", 0o640, "chmod 600"),
        (".", 0o770, "chmod 700"),
    ],
)
def test_a_keyring_file_others_can_write_is_refused_with_the_fix(tmp_path: Path, name: str, mode: int, fix: str) -> None:
    ring = init_keyring(tmp_path / "keys")
    (ring / name).chmod(mode)
    with pytest.raises(KeyringError) as caught:
        Keyring(ring)
    target = ring if name == "." else ring / name
    assert f"{fix} {target}" in str(caught.value)
    out = subprocess.run([sys.executable, "-m", "apps.cli", "keys", "list", "--keys", str(ring)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and f"{fix} {target}" in out.stderr and "Traceback" not in out.stderr, out.stderr


@pytest.mark.parametrize("name", ["secret.key", "members"])
def test_a_keyring_file_that_is_a_symlink_is_refused(tmp_path: Path, name: str) -> None:
    ring = init_keyring(tmp_path / "keys")
    elsewhere = tmp_path / "elsewhere"
    os.rename(ring / name, elsewhere)
    os.symlink(elsewhere, ring / name)
    with pytest.raises(KeyringError, match=rf"{ring / name}: it is a symbolic link.*replace it with the file itself"):
        Keyring(ring)


def test_members_that_is_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    ring = init_keyring(tmp_path / "keys")
    (ring / "members").unlink()
    (ring / "members").mkdir()
    with pytest.raises(KeyringError, match="it is a directory, not a file"):
        Keyring(ring)
    for argv in (["keys", "list", "--keys", str(ring)], ["kv", "get", "--server", "tcp://127.0.0.1:9", "--keys", str(ring), "--timeout", "1", "k"]):
        out = subprocess.run([sys.executable, "-m", "apps.cli", *argv], capture_output=True, text=True, timeout=60)
        assert out.returncode == 1, out.stderr
        assert f"{ring / 'members'}: it is a directory, not a file" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_a_secret_that_does_not_match_its_public_key_is_refused_at_load(tmp_path: Path) -> None:
    ring = init_keyring(tmp_path / "keys")
    secret = ring / "secret.key"
    other_secret = zmq.curve_keypair()[1].decode()
    lines = [f"secret {other_secret}" if line.startswith("secret ") else line for line in secret.read_text().splitlines()]
    secret.write_text("\n".join(lines) + "\n")
    with pytest.raises(KeyringError, match=r"secret key does not belong to the public key"):
        ActorSystem(keys=ring)
    out = subprocess.run([sys.executable, "-m", "apps.cli", "keys", "show", "--keys", str(ring)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "does not belong to the public key" in out.stderr, out.stderr


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_keyring_files_are_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        ring = init_keyring(tmp_path / "keys")
        write_members(ring / "members", [Member("b", zmq.curve_keypair()[0], ("127.0.0.2",))])
    finally:
        os.umask(old)
    assert stat.S_IMODE(ring.stat().st_mode) == 0o700
    for name in ("secret.key", "public.key", "members"):
        assert stat.S_IMODE((ring / name).stat().st_mode) == 0o600, name
    assert [m.name for m in Keyring(ring).members()] == ["b"]
