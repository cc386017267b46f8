"""Hosts as network namespaces on one bridge; their faults as nftables rules.

Layout of one set of hosts (every name starts with the set's prefix, e.g. ``zh3fa91c``)::

    netns zh3fa91c-sw   bridge br0, ports v1..vN   (the "switch": no address, no route)
    netns zh3fa91c-h1   eth0 10.213.0.11/24, lo     (host h1)
    netns zh3fa91c-h2   eth0 10.213.0.12/24, lo     ...

Each host's eth0 is one end of a veth pair whose other end is a port of the
bridge; both ends are created directly inside their namespaces, so the
machine's own network stack never sees them. Hosts have only the on-link
route of the /24: nothing they send can leave the namespaces.

Faults are one nft table per host, in the host's own namespace (table ``inet
PREFIX``), rewritten whole and atomically on every change from the fault state
kept in the state file. Deleting the namespaces deletes the tables with them.

Ownership and cleanup: the state file (``/run/zactor-hosts/PREFIX.json``) is
written before the first object is made and removed after the last one is
gone, and it names the owning process (pid and start time, so a reused pid
does not count). :func:`sweep_stale` removes every set whose owner is dead: a
test killed with SIGKILL leaves hosts behind that the next sweep removes. A set
made by the CLI has no owner and stays until ``zactor hosts down``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transport.keys import Member, resolve_keyring, write_members

log = logging.getLogger(__name__)

STATE_ENV = "ZACTOR_HOSTS_DIR"
DEFAULT_STATE_DIR = "/run/zactor-hosts"
SUBNET = "10.213.0"
"""The hosts' /24 (first three octets). Private to each set's bridge: sets never see each other."""
FIRST_HOST = 11
MAX_HOSTS = 200
PREFIX_RE = re.compile(r"^zh[0-9a-f]{6}$")
HOST_RE = re.compile(r"^h([1-9][0-9]*)$")
CMD_TIMEOUT = 30.0
"""Seconds one ``ip``/``nft`` command may take before the set is declared broken."""


class HostsError(RuntimeError):
    """A host operation failed; the message says which command and why."""


def state_dir() -> Path:
    return Path(os.environ.get(STATE_ENV, DEFAULT_STATE_DIR))


def available() -> str | None:
    """None if this process can make hosts, else the reason it cannot (for a test's skip)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs the `{tool}` command (apt-get install -y {'iproute2' if tool == 'ip' else 'nftables'})"
    probe = f"zhprobe{os.getpid()}"
    try:
        _run(["ip", "netns", "add", probe])
        _run(["ip", "-n", probe, "link", "add", "b0", "type", "bridge"])
        _run(["ip", "netns", "exec", probe, "nft", "add", "table", "inet", "probe"])
    except HostsError as exc:
        return f"cannot make a network namespace with a bridge and an nft table here: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=CMD_TIMEOUT, check=False)
    return None


def _run(argv: Sequence[str], input: str | None = None) -> str:
    try:
        done = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=CMD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise HostsError(f"`{' '.join(argv)}` took longer than {CMD_TIMEOUT} s") from None
    except FileNotFoundError:
        raise HostsError(f"`{argv[0]}` is not installed") from None
    if done.returncode != 0:
        raise HostsError(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), None if no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    now = _start_time(pid)
    return now is not None and (started is None or now == started)


@dataclass
class Instance:
    """One set of hosts as its state file records it: names, owner and the faults in force."""

    prefix: str
    owner: int | None
    """The pid whose death makes the set stale; None for a set the CLI made (kept until `down`)."""
    owner_started: str | None
    hosts: list[str] = field(default_factory=list)
    drops: list[list[str]] = field(default_factory=list)
    """[src, dst] pairs: packets from src to dst are dropped (at dst)."""
    loss: dict[str, int] = field(default_factory=dict)
    """host -> percent of the packets into and out of its link dropped at random."""
    cut: list[str] = field(default_factory=list)
    """Hosts whose link drops everything (isolated, or a flapping link while down)."""
    created: float = 0.0

    @property
    def path(self) -> Path:
        return state_dir() / f"{self.prefix}.json"

    @property
    def stale(self) -> bool:
        return self.owner is not None and not _alive(self.owner, self.owner_started)

    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    def save(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, path: Path) -> Instance:
        try:
            data = json.loads(path.read_text())
            inst = cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise HostsError(f"unreadable hosts state file {path}: {exc}") from None
        if not PREFIX_RE.match(inst.prefix) or path.stem != inst.prefix:
            raise HostsError(f"hosts state file {path} names prefix {inst.prefix!r}, which is not its own")
        return inst


def address(host: str) -> str:
    """The address of host ``hN`` (the same in every set: sets never share a network)."""
    m = HOST_RE.match(host)
    if not m or int(m.group(1)) > MAX_HOSTS:
        raise HostsError(f"{host!r} is not a host name (h1 .. h{MAX_HOSTS})")
    return f"{SUBNET}.{FIRST_HOST - 1 + int(m.group(1))}"


def host_keyring(source: str | os.PathLike[str], directory: str | os.PathLike[str]) -> Path:
    """A copy of keyring ``source`` at ``directory`` whose own key also serves every host address.

    A CURVE client looks a server's key up by the server's host; every test
    host runs with the one key pair of this machine, so one member line names
    it for all the hosts' addresses. Set ``$ZACTOR_KEYS`` to the copy for the
    processes run in the hosts.
    """
    ring = Path(directory)
    shutil.copytree(source, ring)
    public = resolve_keyring(ring).public
    addresses = tuple(address(f"h{i}") for i in range(1, MAX_HOSTS + 1))
    write_members(ring / "members", [Member("zactor-hosts", public, addresses)])
    return ring


def instances() -> list[Instance]:
    """Every set with a state file; unreadable ones are logged and left alone."""
    found = []
    for path in sorted(state_dir().glob("zh*.json")):
        try:
            found.append(Instance.load(path))
        except HostsError as exc:
            log.warning("%s", exc)
    return found


def _namespaces(prefix: str) -> list[str]:
    out = _run(["ip", "netns", "list"])
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(prefix + "-")]


def remove(inst: Instance) -> None:
    """Kill every process in the set's namespaces, delete the namespaces (and with them links and nft tables), then the state file."""
    if not PREFIX_RE.match(inst.prefix):
        raise HostsError(f"refusing to remove {inst.prefix!r}: not a hosts prefix")
    for ns in _namespaces(inst.prefix):
        deadline = time.monotonic() + 10.0
        while True:
            pids = [int(p) for p in _run(["ip", "netns", "pids", ns]).split()]
            if not pids:
                break
            if time.monotonic() > deadline:
                raise HostsError(f"processes {pids} in {ns} survive SIGKILL")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        _run(["ip", "netns", "del", ns])
    inst.path.unlink(missing_ok=True)


def sweep_stale() -> list[str]:
    """Remove every set whose owner process is dead; the prefixes removed."""
    removed = []
    for inst in instances():
        if inst.stale:
            log.warning("removing hosts %s left behind by dead process %s", inst.prefix, inst.owner)
            remove(inst)
            removed.append(inst.prefix)
    return removed


def ruleset(inst: Instance, host: str) -> str:
    """The nft script that makes ``host``'s table say exactly what the fault state says."""
    table = f"inet {inst.prefix}"
    into, out = [], []
    if host in inst.cut:
        into.append('iifname "eth0" drop')
        out.append('oifname "eth0" drop')
    senders = sorted({src for src, dst in inst.drops if dst == host})
    if senders:
        into.append(f"ip saddr {{ {', '.join(address(s) for s in senders)} }} drop")
    pct = inst.loss.get(host, 0)
    if pct:
        into.append(f'iifname "eth0" numgen random mod 100 < {pct} drop')
        out.append(f'oifname "eth0" numgen random mod 100 < {pct} drop')
    body = [f"table {table} {{}}", f"delete table {table}", f"table {table} {{"]
    for chain, hook, rules in (("input", "input", into), ("output", "output", out)):
        body.append(f"  chain {chain} {{ type filter hook {hook} priority 0; policy accept;")
        body.extend(f"    {r}" for r in rules)
        body.append("  }")
    body.append("}")
    return "\n".join(body) + "\n"


class Hosts:
    """A set of hosts owned by this process (or attached to one the CLI made).

    Usage::

        with Hosts().up(3) as hosts:
            server = hosts.popen("h1", [...])
            hosts.partition([["h1"], ["h2", "h3"]])
            hosts.heal()

    Leaving the ``with`` block, ``down()``, the end of the process (atexit) or
    the object's collection removes everything; a SIGKILLed owner leaves a
    stale set that :func:`sweep_stale` removes.
    """

    def __init__(self, instance: Instance | None = None) -> None:
        self._inst = instance
        self._lock = threading.RLock()
        """Held over every read-modify-write of the fault state: links flapping in threads of their own
        change it at once, and a change computed from a stale copy undid another's (a host left cut off)."""
        self._flappers: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self._finalizer: weakref.finalize | None = None

    # ---- life cycle ---------------------------------------------------------

    @classmethod
    def attach(cls, prefix: str) -> Hosts:
        """The set named ``prefix`` (for the CLI, which makes and changes a set over several commands)."""
        path = state_dir() / f"{prefix}.json"
        if not path.exists():
            raise HostsError(f"no hosts named {prefix!r} (see `zactor hosts list`)")
        return cls(Instance.load(path))

    def up(self, n: int, *, owned: bool = True) -> Hosts:
        """Make ``n`` hosts h1..hN on a bridge. ``owned=False``: they outlive this process (the CLI)."""
        if self._inst is not None:
            raise HostsError(f"this Hosts already holds {self._inst.prefix}")
        if not 1 <= n <= MAX_HOSTS:
            raise HostsError(f"number of hosts must be 1..{MAX_HOSTS}, not {n}")
        while True:
            prefix = "zh" + secrets.token_hex(3)
            if not _namespaces(prefix) and not (state_dir() / f"{prefix}.json").exists():
                break
        pid = os.getpid()
        inst = Instance(prefix, pid if owned else None, _start_time(pid) if owned else None, created=time.time())
        inst.save()  # before the first object: whatever exists is recorded
        self._inst = inst
        if owned:
            self._finalizer = weakref.finalize(self, _remove_quietly, inst)  # runs at exit too
        try:
            sw = inst.switch
            _run(["ip", "netns", "add", sw])
            _run(["ip", "-n", sw, "link", "set", "lo", "up"])
            _run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"])
            _run(["ip", "-n", sw, "link", "set", "br0", "up"])
            for i in range(1, n + 1):
                host = f"h{i}"
                ns = inst.namespace(host)
                _run(["ip", "netns", "add", ns])
                inst.hosts.append(host)
                inst.save()
                _run(["ip", "-n", sw, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0", "netns", ns])
                _run(["ip", "-n", sw, "link", "set", f"v{i}", "master", "br0", "up"])
                _run(["ip", "-n", ns, "addr", "add", f"{address(host)}/24", "dev", "eth0"])
                _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
                self._apply(host)
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Remove everything this set made: processes in it, namespaces, links, nft tables, state file."""
        inst = self._inst
        if inst is None:
            return
        self.stop_flapping()
        remove(inst)
        if self._finalizer is not None:
            self._finalizer.detach()
        self._inst = None

    def __enter__(self) -> Hosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    @property
    def instance(self) -> Instance:
        if self._inst is None:
            raise HostsError("no hosts: call up(n) first (or they were taken down)")
        return self._inst

    @property
    def prefix(self) -> str:
        return self.instance.prefix

    @property
    def names(self) -> list[str]:
        return list(self.instance.hosts)

    def address(self, host: str) -> str:
        self._check(host)
        return address(host)

    def endpoint(self, host: str, port: int) -> str:
        return f"tcp://{self.address(host)}:{port}"

    def namespace(self, host: str) -> str:
        self._check(host)
        return self.instance.namespace(host)

    # ---- processes ------------------------------------------------------------

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside ``host`` (the environment is inherited)."""
        return ["ip", "netns", "exec", self.namespace(host), *argv]

    def exec(self, host: str, argv: Sequence[str], *, timeout: float = 60.0, input: str | None = None) -> subprocess.CompletedProcess:
        """Run ``argv`` in ``host`` to completion (output captured as text); TimeoutExpired past ``timeout``."""
        return subprocess.run(self.command(host, argv), input=input, capture_output=True, text=True, timeout=timeout, check=False)

    def popen(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` in ``host``; ``down()`` kills it if it still runs."""
        return subprocess.Popen(self.command(host, argv), **kwargs)

    # ---- faults ---------------------------------------------------------------

    def partition(self, groups: Sequence[Iterable[str]]) -> None:
        """Hosts in different groups stop hearing each other; unnamed hosts form one more group. Replaces earlier drops."""
        sets = [set(g) for g in groups]
        named = set().union(*sets) if sets else set()
        for h in named:
            self._check(h)
        if sum(len(s) for s in sets) != len(named):
            raise HostsError("a host is named in two groups")
        rest = set(self.names) - named
        if rest:
            sets.append(rest)
        side = {h: i for i, s in enumerate(sets) for h in s}
        drops = [[a, b] for a in self.names for b in self.names if a != b and side[a] != side[b]]
        self._change(drops=drops)

    def drop_links(self, pairs: Iterable[Sequence[str]]) -> None:
        """Exactly these ``[src, dst]`` links drop their packets (at dst); replaces earlier drops.

        For faults that are not a partition of all the hosts into groups: a
        partition among some hosts that leaves the others (a client's host)
        talking to everyone, or groups that overlap in a bridge.
        """
        drops = []
        for src, dst in pairs:
            self._check(src)
            self._check(dst)
            if src == dst:
                raise HostsError(f"a link from {src} to itself cannot be cut")
            if [src, dst] not in drops:
                drops.append([src, dst])
        self._change(drops=drops)

    def one_way(self, src: str, dst: str) -> None:
        """Packets from ``src`` to ``dst`` are dropped; the other direction still flows. Adds to earlier drops."""
        self._check(src)
        self._check(dst)
        if src == dst:
            raise HostsError("one_way needs two different hosts")
        with self._lock:
            drops = [d for d in self.instance.drops if d != [src, dst]] + [[src, dst]]
            self._change(drops=drops)

    def loss(self, host: str, pct: int) -> None:
        """Drop ``pct`` percent of the packets into and out of ``host``'s link, at random (0 ends it)."""
        self._check(host)
        if not 0 <= pct <= 100:
            raise HostsError(f"loss must be 0..100 percent, not {pct}")
        with self._lock:
            loss = dict(self.instance.loss)
            if pct:
                loss[host] = int(pct)
            else:
                loss.pop(host, None)
            self._change(loss=loss)

    def isolate(self, host: str) -> None:
        """Cut ``host`` off completely: nothing in or out of its link."""
        self._check(host)
        with self._lock:
            self._change(cut=sorted({*self.instance.cut, host}))

    def reconnect(self, host: str) -> None:
        """Undo ``isolate(host)`` (other faults stay)."""
        self._check(host)
        with self._lock:
            self._change(cut=[h for h in self.instance.cut if h != host])

    def flap(self, host: str, down_for: float = 0.5, up_for: float = 0.5) -> None:
        """Take ``host``'s link down and up again and again (a thread of this process) until ``heal()``."""
        self._check(host)
        if down_for <= 0 or up_for <= 0:
            raise HostsError("flap needs positive down and up times")
        if host in self._flappers:
            raise HostsError(f"{host} already flaps")
        stop = threading.Event()

        def run() -> None:
            while not stop.is_set():
                self.isolate(host)
                if stop.wait(down_for):
                    break
                self.reconnect(host)
                stop.wait(up_for)
            with contextlib.suppress(HostsError):
                self.reconnect(host)

        thread = threading.Thread(target=run, name=f"flap-{host}", daemon=True)
        self._flappers[host] = (thread, stop)
        thread.start()

    def heal(self) -> None:
        """End every fault: partitions, one-way drops, loss, cut and flapping links."""
        self.stop_flapping()
        self._change(drops=[], loss={}, cut=[])

    def faults(self) -> dict[str, Any]:
        """The faults in force, as the state file records them."""
        inst = self.instance
        return {"drops": [list(d) for d in inst.drops], "loss": dict(inst.loss), "cut": list(inst.cut), "flapping": sorted(self._flappers)}

    def rules(self, host: str) -> str:
        """The nft table in force in ``host`` as nft lists it (for reports and debugging)."""
        return _run(["ip", "netns", "exec", self.namespace(host), "nft", "list", "table", "inet", self.prefix])

    # ---- internals ------------------------------------------------------------

    def _check(self, host: str) -> None:
        if host not in self.instance.hosts:
            raise HostsError(f"no host {host!r} in {self.instance.prefix} (hosts: {', '.join(self.instance.hosts)})")

    def _change(self, **state: Any) -> None:
        with self._lock:
            inst = self.instance
            before = {h: ruleset(inst, h) for h in inst.hosts}
            for key, value in state.items():
                setattr(inst, key, value)
            inst.save()
            for h in inst.hosts:
                if ruleset(inst, h) != before[h]:
                    self._apply(h)

    def _apply(self, host: str) -> None:
        inst = self.instance
        _run(["ip", "netns", "exec", inst.namespace(host), "nft", "-f", "-"], input=ruleset(inst, host))

    def stop_flapping(self) -> None:
        """End every flapping link (each left up); other faults stay."""
        flappers, self._flappers = self._flappers, {}
        for _, stop in flappers.values():
            stop.set()
        for thread, _ in flappers.values():
            thread.join(timeout=10.0)


def _remove_quietly(inst: Instance) -> None:
    """At exit or collection: remove a set the owner forgot (logged, never raised)."""
    try:
        if inst.path.exists():
            remove(inst)
    except HostsError as exc:
        log.error("could not remove hosts %s: %s", inst.prefix, exc)
