"""The keyring: this machine's CURVE key pair and the members a node lets in.

A keyring is a directory a person can read::

    DIR/                 0700
      secret.key         0600   "public KEY" and "secret KEY" lines (Z85)
      public.key                this machine's public key, one line to copy
      members                   one key per line: NAME PUBLIC-KEY [HOST,HOST...] [role=client|member]

Trust boundary: a key outside the keyring never completes a handshake, so
nothing it sends is ever decoded. A key of role ``member`` (this machine's,
system nodes, agents) is trusted with code execution, since frames are
pickles and spawn ships classes by value; a key of role ``client`` (a clerk,
a MapReduce worker, a dashboard) is meant to have its frames decoded by the
restricted unpickler (:func:`transport.codec.restricted_loads`): requests,
never code. A line without a role is a member (the keyrings made before
roles existed trusted every key so).

A CURVE client must know the server's public key before it connects, so a
member line also says which hosts that member serves: connecting to
``tcp://HOST:PORT`` uses the key of the member that claims HOST. ``ipc://``
endpoints and loopback hosts use this machine's own key unless a member
claims that host (so a test can stand a "second machine" on 127.0.0.2).

Where the keyring is: ``keys=DIR`` given explicitly, else ``$ZACTOR_KEYS``,
else ``$XDG_CONFIG_HOME/zactor/keys`` (``~/.config/zactor/keys``), created on
first use. Creation is atomic (built in a temporary directory, then renamed),
so processes that start together agree on one key pair.

Integrity (as OpenSSH's StrictModes): the files decide who may run code here,
so a keyring is refused unless the directory and its files belong to this
user and no one else can write them, the files are regular files reached
without following a symlink (``O_NOFOLLOW``, checked on the open descriptor),
and every directory above it, up to ``/``, belongs to this user or root and
is not writable by others. A world-writable parent is accepted only if it is
sticky (as ``/tmp`` is) and the entry below it belongs to this user or root:
in a sticky directory no one else can rename or remove that entry, so the
path cannot be swapped. Each refusal names the file, what is wrong, and the
command that fixes it.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import pwd
import shutil
import stat
import tempfile
import threading
import warnings
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.utils.z85

from transport.private_files import open_private, owner_name

log = logging.getLogger(__name__)

KEYS_ENV = "ZACTOR_KEYS"
INSECURE_ENV = "ZACTOR_INSECURE"
SECRET_FILE = "secret.key"
PUBLIC_FILE = "public.key"
MEMBERS_FILE = "members"
_MEMBERS_HEADER = (
    "# zactor keyring members: NAME PUBLIC-KEY [HOST,HOST...] [role=client|member]\n"
    "# A member key is trusted with code execution in every node using this keyring; a client key sends\n"
    "# requests (registered message classes and plain data) only. A line without a role is a member.\n"
)
ROLES = ("client", "member")


class SecurityError(OSError):
    """Base of the security errors (an OSError, so every command's error path reports it plainly)."""


class KeyringError(SecurityError):
    """A keyring that cannot be used, or an endpoint no key in it serves; the text says how to fix it."""


class InsecureBindError(SecurityError):
    """Binding an address outside loopback and ipc:// with security turned off."""


class InsecureConnectError(SecurityError):
    """Connecting to an address outside loopback and ipc:// with security turned off."""


class SecurityWarning(UserWarning):
    """Security is turned off in this process."""


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    public: bytes
    hosts: tuple[str, ...] = ()
    role: str = "member"
    """"member" (trusted with code) or "client" (requests only)."""


def curve_available() -> None:
    """Raise KeyringError unless the installed libzmq supports CURVE."""
    if not zmq.has("curve"):
        raise KeyringError(
            f"the installed libzmq {zmq.zmq_version()} was built without CURVE security; "
            "install a pyzmq wheel (which bundles libsodium) or run with --insecure on loopback only"
        )


def default_keyring_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "zactor" / "keys"


def valid_key(text: str) -> bytes:
    """``text`` as a CURVE public key (40 Z85 characters), or KeyringError saying what is wrong with it."""
    key = text.strip().encode("ascii", "replace")
    if len(key) != 40:
        raise KeyringError(f"not a CURVE public key (40 Z85 characters): {text.strip()!r}")
    try:
        if len(zmq.utils.z85.decode(key)) != 32:
            raise ValueError
    except Exception as exc:
        raise KeyringError(f"not a CURVE public key (bad Z85): {text.strip()!r}") from exc
    return key


def _write_keypair(directory: Path) -> bool:
    """Add a key pair to ``directory``; False if another process added one first (its pair stays).

    The secret file appears whole or not at all (written aside, then linked
    into place, which fails if the name exists), so a racing reader never
    sees it half written.
    """
    public, secret = zmq.curve_keypair()
    fd, aside = tempfile.mkstemp(prefix=".secret-", dir=directory)  # 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write("# this machine's CURVE key pair; never copy this file to another user\n")
            f.write(f"public {public.decode()}\nsecret {secret.decode()}\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(aside, directory / SECRET_FILE)
        except FileExistsError:
            return False
    finally:
        os.unlink(aside)
    _write_new(directory / PUBLIC_FILE, public.decode() + "\n")
    if not os.path.lexists(directory / MEMBERS_FILE):
        _write_new(directory / MEMBERS_FILE, _MEMBERS_HEADER)
    return True


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` (0600 whatever the umask, never through a symlink) holding ``text``."""
    fd = open_private(path, os.O_WRONLY | os.O_EXCL | os.O_NOFOLLOW)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def init_keyring(directory: str | os.PathLike[str] | None = None) -> Path:
    """Create a keyring at ``directory`` (default location if None); return its path.

    Safe against concurrent creators: the key pair is made in a temporary
    directory next to the target and renamed into place; a loser of the race
    keeps the winner's keyring. An existing keyring is left as it is. A
    directory that holds files but no key pair is refused: those files were
    not made here (a ``members`` planted by someone else would decide who may
    run code), so a person must look at them first.
    """
    curve_available()
    target = Path(directory) if directory is not None else default_keyring_dir()
    target = target.expanduser().absolute()
    if os.path.lexists(target / SECRET_FILE):
        return target
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    check_parents(target)
    if target.exists() and not any(target.iterdir()):
        try:
            target.rmdir()  # an empty directory made by hand: fill it the atomic way
        except OSError:  # another creator filled it meanwhile
            pass
    if os.path.lexists(target / SECRET_FILE):
        return target
    if os.path.lexists(target):
        if not target.is_dir() or target.is_symlink():
            raise KeyringError(f"cannot make a keyring at {target}: it exists and is not a directory; choose another path")
        found = ", ".join(sorted(p.name for p in target.iterdir())[:5])
        raise KeyringError(
            f"refusing to make a keyring in {target}: it already holds files ({found}) but no key pair, "
            "and `zactor keys init` uses only a new or empty directory (files it did not make, such as a "
            f"members file, could let others in); look at them, then remove them (`rm -r {target}`) "
            "or choose another directory"
        )
    tmp = Path(tempfile.mkdtemp(prefix=".keys-", dir=target.parent))  # mkdtemp makes it 0700
    try:
        _write_keypair(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not os.path.lexists(target / SECRET_FILE):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---- integrity: who owns and who may write the keyring and the path to it ----


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def check_parents(path: Path) -> None:
    """Refuse ``path`` if a directory above it could let another user swap it (see the module docstring)."""
    me = os.getuid()
    real = Path(os.path.realpath(path))
    below = real
    for parent in real.parents:
        try:
            st = os.stat(parent)
        except OSError as exc:
            raise KeyringError(f"cannot check keyring path {path}: {parent}: {exc.strerror}") from None
        if st.st_uid not in (me, 0):
            raise KeyringError(
                f"refusing keyring {path}: its parent directory {parent} belongs to {owner_name(st.st_uid)}, who could "
                f"replace the keyring; keep the keyring under directories owned by you or root "
                f"(`chown {_user()} {parent}`, or move it, e.g. to the default {default_keyring_dir()})"
            )
        if st.st_mode & 0o022:
            owner = _entryowner_name(below)
            if st.st_mode & stat.S_ISVTX and owner not in (me, 0):
                raise KeyringError(
                    f"refusing keyring {path}: {below} belongs to {owner_name(owner)}, in {parent}, which others can "
                    f"write, so that user controls what is under it; use a directory of your own (remove this "
                    f"one with `rm -r {below}` if it is not needed, or choose another path)"
                )
            if not st.st_mode & stat.S_ISVTX:
                raise KeyringError(
                    f"refusing keyring {path}: its parent directory {parent} is writable by other users "
                    f"(mode {stat.filemode(st.st_mode)}), who could swap the keyring for their own; "
                    f"fix it with `chmod go-w {parent}`, or move the keyring under a directory only you can write"
                )
        below = parent


def _entryowner_name(path: Path) -> int:
    """Who owns ``path``; a path not made yet counts as ours (we are about to make it)."""
    try:
        return os.lstat(path).st_uid
    except FileNotFoundError:
        return os.getuid()


def check_directory(directory: Path) -> None:
    """Refuse a keyring directory that is not ours, or that others may write, or whose parents are unsafe."""
    check_parents(directory)
    st = os.stat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise KeyringError(f"refusing keyring {directory}: it is not a directory")
    if st.st_uid != os.getuid():
        raise KeyringError(
            f"refusing keyring {directory}: the directory belongs to {owner_name(st.st_uid)}, not to you; "
            f"fix it with `chown -R {_user()} {directory}` if it is yours"
        )
    if st.st_mode & 0o022:
        raise KeyringError(
            f"refusing keyring {directory}: the directory is writable by other users (mode "
            f"{stat.filemode(st.st_mode)}), who could add their key to its members; fix it with `chmod 700 {directory}`"
        )


def read_checked(path: Path, *, secret: bool = False) -> str | None:
    """The text of one keyring file, read without following a symlink and refused unless it is
    a regular file of ours that no one else can write (nor read, if ``secret``). None if missing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KeyringError(
                f"refusing keyring file {path}: it is a symbolic link, and keyring files are read only directly "
                f"(a link could point anywhere); replace it with the file itself (`cp --remove-destination "
                f"\"$(readlink -f {path})\" {path}`)"
            ) from None
        raise KeyringError(f"cannot read keyring file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise KeyringError(f"refusing keyring file {path}: it is a directory, not a file; remove it (`rm -r {path}`)")
        if not stat.S_ISREG(st.st_mode):
            raise KeyringError(f"refusing keyring file {path}: it is not a regular file; remove it (`rm {path}`)")
        if st.st_uid != os.getuid():
            raise KeyringError(
                f"refusing keyring file {path}: it belongs to {owner_name(st.st_uid)}, not to you; "
                f"fix it with `chown {_user()} {path}` if it is yours"
            )
        if secret and st.st_mode & 0o077:
            raise KeyringError(
                f"refusing keyring {path.parent}: {path} is readable by other users "
                f"(mode {stat.filemode(st.st_mode)}), so they could impersonate this machine; "
                f"fix it with `chmod 600 {path}`"
            )
        if st.st_mode & 0o022:
            raise KeyringError(
                f"refusing keyring file {path}: it is writable by other users (mode {stat.filemode(st.st_mode)}), "
                f"who could add their key; fix it with `chmod go-w {path}`"
            )
        with os.fdopen(os.dup(fd), encoding="utf-8", errors="replace") as f:
            return f.read()
    finally:
        os.close(fd)


class Keyring:
    """A loaded keyring: this machine's key pair, and the members (re-read when the file changes)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser().absolute()
        secret_path = self.directory / SECRET_FILE
        if not os.path.lexists(secret_path):
            raise KeyringError(f"no keyring at {self.directory}: create one with `zactor keys init {self.directory}`")
        check_directory(self.directory)
        text = read_checked(secret_path, secret=True)
        fields = dict(_pairs(text or ""))
        try:
            self.public = valid_key(fields["public"])
            self.secret = fields["secret"].strip().encode("ascii", "replace")
        except KeyError as exc:
            raise KeyringError(f"{secret_path} lacks its {exc.args[0]} key line") from None
        if len(self.secret) != 40:
            raise KeyringError(f"{secret_path}: the secret key is not 40 Z85 characters")
        try:
            derived = zmq.curve_public(self.secret)
        except Exception:
            derived = b""
        if derived != self.public:
            raise KeyringError(
                f"refusing keyring {self.directory}: in {secret_path} the secret key does not belong to the public "
                "key on the public line, so every connection would fail its handshake; restore the file from "
                f"a backup, or make a new keyring with `zactor keys init` in an empty directory"
            )
        published = read_checked(self.directory / PUBLIC_FILE)
        if published is not None and published.strip() and published.strip().encode() != self.public:
            raise KeyringError(
                f"refusing keyring {self.directory}: {self.directory / PUBLIC_FILE} does not hold the public key of "
                f"{secret_path}; fix it with `zactor keys show --keys {self.directory} > {self.directory / PUBLIC_FILE}`"
            )
        self._lock = threading.Lock()
        self._members_mtime: tuple[int, int, int] | None = None
        self._members: tuple[Member, ...] = ()
        self.members()  # a bad members file is refused now, not at the first handshake

    def __repr__(self) -> str:
        return f"<Keyring {self.directory}>"

    @property
    def members_path(self) -> Path:
        return self.directory / MEMBERS_FILE

    def members(self) -> tuple[Member, ...]:
        """The members, re-read whenever the file changed (so a revocation takes effect at once).

        Every re-read checks the file (and the directory) again: a members file
        someone else could have written raises KeyringError, and a node refuses
        every connection it cannot check."""
        try:  # the inode too: a file replaced twice within the clock's tick keeps its mtime
            st = os.lstat(self.members_path)
            mtime: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            mtime = None
        with self._lock:
            if mtime != self._members_mtime:
                check_directory(self.directory)
                self._members = read_members(self.members_path) if mtime is not None else ()
                self._members_mtime = mtime
            return self._members

    def role_of(self, public: bytes) -> str | None:
        """"member" or "client" for a key in the keyring (this machine's own is a member), else None."""
        if public == self.public:
            return "member"
        for m in self.members():
            if m.public == public:
                return m.role
        return None

    def client_keys(self) -> frozenset[str]:
        """The Z85 keys of role client, as a frame's ``User-Id`` property spells them (str): a node
        decodes a frame whose sender is in this set with ``trusted=False``. Re-read with the members."""
        return frozenset(m.public.decode() for m in self.members() if m.role == "client")

    def has_clients(self) -> bool:
        """Whether any key is of role client (a node need not look up senders' roles otherwise)."""
        return bool(self.client_keys())

    def allows(self, public: bytes) -> bool:
        """Whether a client with this public key (Z85) may connect."""
        return public == self.public or any(m.public == public for m in self.members())

    def server_key(self, endpoint: str) -> bytes:
        """The public key of the node at ``endpoint``; KeyringError names the fix if unknown."""
        host = endpoint_host(endpoint)
        if host is not None:
            for m in self.members():
                if host in m.hosts:
                    return m.public
        if host is None or is_loopback(host):
            return self.public
        raise KeyringError(
            f"no key in {self.directory} serves host {host!r} (endpoint {endpoint}); "
            f"add that machine's public key with `zactor keys add NAME PUBKEY --host {host}`"
        )

    def secure_client(self, sock: zmq.Socket, endpoint: str) -> None:
        """Make ``sock`` a CURVE client of the node at ``endpoint`` with this machine's keys (before connect)."""
        sock.curve_serverkey = self.server_key(endpoint)
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret

    def secure_server(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server with this machine's keys (before bind; pair it with a ZAP handler)."""
        sock.curve_server = True
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public


def _pairs(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and " " in line:
            k, v = line.split(None, 1)
            out.append((k, v))
    return out


def read_members(path: Path) -> tuple[Member, ...]:
    """The members listed in ``path`` (a missing file lists none); KeyringError names a bad line or an unsafe file."""
    members = []
    for n, line in enumerate((read_checked(path) or "").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        roles = [p for p in parts[2:] if p.startswith("role=")]
        parts = [p for p in parts if not p.startswith("role=")]
        if len(parts) not in (2, 3) or len(roles) > 1:
            raise KeyringError(f"{path}:{n}: expected NAME PUBLIC-KEY [HOST,...] [role=client|member], got {line!r}")
        role = roles[0].removeprefix("role=") if roles else "member"
        if role not in ROLES:
            raise KeyringError(f"{path}:{n}: unknown role {role!r} (client or member)")
        try:
            key = valid_key(parts[1])
        except KeyringError as exc:
            raise KeyringError(f"{path}:{n}: {exc}") from None
        hosts = tuple(h for h in parts[2].split(",") if h) if len(parts) == 3 else ()
        members.append(Member(parts[0], key, hosts, role))
    return tuple(members)


def write_members(path: Path, members: list[Member]) -> None:
    """Replace the members file atomically (a running node re-reads it on the next handshake)."""
    lines = [_MEMBERS_HEADER]
    for m in members:
        hosts = f" {','.join(m.hosts)}" if m.hosts else ""
        lines.append(f"{m.name} {m.public.decode()}{hosts} role={m.role}\n")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with suppress(FileNotFoundError):
        os.unlink(tmp)  # left by a crashed writer of this pid
    _write_new(tmp, "".join(lines))
    os.replace(tmp, path)


def endpoint_host(endpoint: str) -> str | None:
    """The host of a tcp:// endpoint (brackets stripped), None for ipc:// and inproc://."""
    if not endpoint.startswith("tcp://"):
        return None
    rest = endpoint[len("tcp://") :]
    if ";" in rest:  # tcp://source;dest: the destination counts
        rest = rest.split(";", 1)[1]
    host = rest.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---- which keyring, and whether security is on, for this process ----------

_explicit: list[Path] = []  # keyrings given explicitly to nodes still open, most recent last
_explicit_lock = threading.Lock()
_warned = False


def resolve_keyring(keys: str | os.PathLike[str] | Keyring | None = None) -> Keyring:
    """The keyring to use: ``keys``, else ``$ZACTOR_KEYS``, else the default one (created if missing)."""
    if isinstance(keys, Keyring):
        ring = keys
    elif keys is not None:
        ring = Keyring(keys)
    else:
        env = os.environ.get(KEYS_ENV)
        ring = Keyring(env) if env else Keyring(init_keyring(None))
    curve_available()
    return ring


def hold_explicit(directory: Path) -> None:
    """A node of this process was given this keyring explicitly: children started now inherit it."""
    with _explicit_lock:
        _explicit.append(directory)


def release_explicit(directory: Path) -> None:
    with _explicit_lock:
        if directory in _explicit:
            _explicit.reverse()
            _explicit.remove(directory)
            _explicit.reverse()


def process_keyring_dir() -> Path | None:
    """The keyring a child of this process should use: that of the most recent node still open
    that was given one explicitly, else ``$ZACTOR_KEYS``, else the default (if it exists)."""
    with _explicit_lock:
        if _explicit:
            return _explicit[-1]
    env = os.environ.get(KEYS_ENV)
    if env:
        return Path(env)
    default = default_keyring_dir()
    return default if (default / SECRET_FILE).exists() else None


def security_on(secure: bool | None) -> bool:
    """``secure`` if given, else on unless ``$ZACTOR_INSECURE`` is 1; warns once per process when off."""
    on = secure if secure is not None else not env_insecure()
    if not on:
        warn_insecure()
    return on


def env_insecure() -> bool:
    """Whether the environment turns security off (``ZACTOR_INSECURE=1``, set by ``--insecure``)."""
    return os.environ.get(INSECURE_ENV, "") in ("1", "true", "yes")


def warn_insecure() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            "zactor security is OFF (--insecure / secure=False): any process that can reach this "
            "node's endpoint can run code in it; only loopback and ipc:// endpoints are allowed",
            SecurityWarning,
            stacklevel=2,
        )


INSECURE_ALLOWED = "tcp:// on a loopback address (127.0.0.0/8, ::1, localhost) and ipc://"
"""What ``--insecure`` may bind and connect to: only what other machines cannot reach."""


def insecure_endpoint_allowed(endpoint: str) -> bool:
    """Whether ``endpoint`` is on the insecure mode's allow-list (every other transport, tipc:// and
    pgm:// included, and every non-loopback tcp:// address, is refused)."""
    if endpoint.startswith("ipc://"):
        return True
    host = endpoint_host(endpoint)
    if host is None:
        return False
    if endpoint.startswith("tcp://") and ";" in endpoint:  # tcp://SOURCE;DEST: the source must be loopback too
        source = endpoint[len("tcp://") :].split(";", 1)[0].rsplit(":", 1)[0].strip("[]")
        if not is_loopback(source):
            return False
    return is_loopback(host)


def check_insecure_bind(endpoint: str) -> None:
    """Refuse a bind outside the insecure mode's allow-list; the message names the flag to drop."""
    if not insecure_endpoint_allowed(endpoint):
        raise InsecureBindError(
            f"refusing to bind {endpoint} with security off: anyone who can reach it could run code in "
            f"this process, and --insecure allows only {INSECURE_ALLOWED}. Remove --insecure (or "
            "secure=False) to turn CURVE security back on, or bind a loopback address such as tcp://127.0.0.1:PORT"
        )


def check_dial(endpoint: str, secure: bool) -> None:
    """With security off, refuse to connect outside the insecure mode's allow-list (a node calls this
    before it dials): with no CURVE, whoever answers there would have its replies unpickled."""
    if not secure and not insecure_endpoint_allowed(endpoint):
        raise InsecureConnectError(
            f"refusing to connect to {endpoint} with security off: whoever answers there could run code "
            f"in this process through its replies, and --insecure allows only {INSECURE_ALLOWED}. "
            "Remove --insecure (or secure=False) to connect with CURVE security"
        )
