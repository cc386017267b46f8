"""``zactor soak --hosts netns``: every server on a host of its own, faults as packet filters.

The default soak runs every server on this machine's loopback and makes its
``partition`` and ``net`` faults with the transport's fault rules: the node
drops what its rules name, so a cut link fails fast and cleanly. On real
hosts (:mod:`apps.hosts`: a network namespace per server, one more for the
clerks, all on one bridge) the same faults are nftables rules: TCP
connections stay open and go silent, ZeroMQ queues toward a peer it cannot
reach and delivers late, heartbeats go missing. That is what a partition on
a real network does, and what this mode soaks.

How the run is laid out: the soak process makes the hosts while still in
the machine's own network namespace, then moves its main thread into the
clerks' host before it starts anything else, so every thread and process it
starts later (the ZeroMQ I/O threads, the workload's clerks, the
supervisor's fork server) lives there. Each server process moves into its
own host as the first thing it does (:func:`run_in_namespace`), before it
opens a socket. At the end the main thread moves back and the hosts are
removed with everything in them, also after Ctrl-C or a failure; a soak
killed with SIGKILL leaves a set that the next run (or any ``sweep_stale``)
removes.

Faults on hosts:

- ``partition``: the links between servers in different groups drop every
  packet (a bridge server keeps both sides); the clerks' host still reaches
  every server, as with the transport's rules.
- ``net/unreliable``: every server's link drops :data:`LOSS` percent of its
  packets both ways, at random (TCP retransmits: calls slow down, none is
  lost by the network alone).
- mr (MapReduce: worker i on host h(i+1), the coordinator in the soak
  process on the clerks' host, everything over TCP on the hosts' addresses):
  ``partition`` cuts one worker's host off from the coordinator and the
  other workers for the fault's duration; ``net`` is the same loss or
  flapping on every worker's link as for the servers above.
- etcd (which takes ``partition`` but not ``net``): the links between members
  in different groups drop every packet, in place of the TCP proxy in front
  of each member's peer port; members listen on their hosts' addresses.
- ``net/long-reordering``: every server's link flaps, down and up with
  periods of its own; ``tc netem`` is not available here, so delay and
  reordering come from retransmissions after each outage instead.

``kill``, ``pause`` and ``disk`` are the same as without hosts.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from actors import ChildSpec
from apps.hosts import Hosts, HostsError, available, host_keyring, sweep_stale
from apps.kvraft.testing import KVCluster
from apps.raft.testing import Cluster
from apps.soak.etcd import MEMBERS, EtcdMembers, member_args
from transport import FaultRule
from transport.keys import KEYS_ENV, resolve_keyring

HOSTS_KINDS = ("local", "netns")
"""``--hosts``: ``local`` (every server on this machine, faults as transport rules) or ``netns``."""
SYSTEMS = ("kvraft", "raft", "etcd", "mr")
"""The systems that run on namespace hosts so far."""
SERVER_PORT = 7001
LOSS = 10
"""Percent of packets a server's link drops under ``net/unreliable`` (the lab's unreliable network drops 10% of messages)."""
FLAP_DOWN = (0.2, 0.5)
FLAP_UP = (0.6, 1.5)
"""Seconds a flapping link stays down and up (drawn per link, so the links do not flap in step)."""
CLONE_NEWNET = 0x40000000
NETNS_DIRS = (Path("/run/netns"), Path("/var/run/netns"))

_active: Hosts | None = None
_applied: Counter[str] = Counter()
"""Packet-filter changes made in this run, by kind (the summary's ``packet_faults``: proof they were made there)."""


def describe(config: Any) -> dict[str, Any]:
    """What the summary and the report say about where the servers ran and how the network faults were made."""
    if getattr(config, "hosts", "local") != "netns":
        return {"hosts": "transport rules"}
    n = config.servers
    servers, clerks = ("worker", "the coordinator") if config.system == "mr" else ("server", "clerks")
    return {
        "hosts": "netns",
        "host_set": _active.prefix if _active is not None else None,
        "packet_faults": dict(_applied),
        "host_layout": f"{servers} i on host h(i+1) (10.213.0.11-{10 + n}, one network namespace each), {clerks} on h{n + 1}, "
                       "one bridge; partition and net faults are nftables rules in the hosts",
    }


def unavailable(config: Any) -> str | None:
    """Why ``--hosts netns`` cannot run here (None if it can): the system, root, ``ip``, ``nft``, kernel support."""
    if config.system not in SYSTEMS:
        return f"--hosts netns is not built for {config.system} yet (it is for {', '.join(SYSTEMS)})"
    return available()


def _netns_file(name: str) -> Path:
    for base in NETNS_DIRS:
        if (base / name).exists():
            return base / name
    raise HostsError(f"no network namespace {name!r} in {' or '.join(map(str, NETNS_DIRS))}")


def _setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd`` (threads it starts later follow it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into a network namespace: {os.strerror(err)}")


def _enter(name: str) -> None:
    fd = os.open(_netns_file(name), os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)


def run_in_namespace(namespace: str, target: Callable[..., Any], *args: Any) -> None:
    """A server process's first step: into its host's network namespace, before it opens any socket."""
    _enter(namespace)
    target(*args)


@contextlib.contextmanager
def soak_hosts(config: Any) -> Iterator[Hosts | None]:
    """The hosts of a run (None with ``--hosts local``), this thread inside the clerks' host; all removed at the end."""
    global _active
    if getattr(config, "hosts", "local") != "netns":
        yield None
        return
    why = unavailable(config)
    if why:
        raise HostsError(why)
    sweep_stale()  # sets left by soaks that were SIGKILLed
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    keys_before = os.environ.get(KEYS_ENV)
    scratch = Path(tempfile.mkdtemp(prefix="zactor-soak-hosts-"))
    hosts = Hosts()
    try:
        hosts.up(config.servers + 1)
        ring = host_keyring(resolve_keyring().directory, scratch / "keys")
        os.environ[KEYS_ENV] = str(ring)
        _enter(hosts.namespace(f"h{config.servers + 1}"))
        _active = hosts
        _applied.clear()
        yield hosts
    finally:
        _active = None
        try:
            _setns(home)
        finally:
            os.close(home)
            if keys_before is None:
                os.environ.pop(KEYS_ENV, None)
            else:
                os.environ[KEYS_ENV] = keys_before
            try:
                hosts.down()
            finally:
                shutil.rmtree(scratch, ignore_errors=True)


class PacketNetwork:
    """The soak's network faults as packet filters on the hosts: server i on h(i+1), the clerks on h(n+1)."""

    def __init__(self, hosts: Hosts, n: int, seed: int | None) -> None:
        self.hosts = hosts
        self.n = n
        self.rng = random.Random(f"zactor-soak-flaps-{seed}")

    def host(self, i: int) -> str:
        return f"h{i + 1}"

    def endpoints(self) -> tuple[str, ...]:
        return tuple(self.hosts.endpoint(self.host(i), SERVER_PORT) for i in range(self.n))

    def harness_endpoint(self) -> str:
        return f"tcp://{self.hosts.address(self.host(self.n))}:0"

    def worker_endpoint(self, i: int) -> str:
        """Server i's address with a port the kernel picks: a restarted MapReduce worker serves on a new endpoint,
        so nothing mistakes it for the one that died with its map output."""
        return f"tcp://{self.hosts.address(self.host(i))}:0"

    def child_spec(self, i: int, spec: ChildSpec) -> ChildSpec:
        """``spec`` run in server i's host."""
        return dataclasses.replace(spec, target=run_in_namespace, args=(self.hosts.namespace(self.host(i)), spec.target, *spec.args))

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        sets = [set(g) for g in groups]
        pairs = [(self.host(a), self.host(b)) for a in range(self.n) for b in range(self.n)
                 if a != b and not any(a in g and b in g for g in sets)]
        self.hosts.drop_links(pairs)
        _applied["partition"] += 1

    def cut_off(self, i: int) -> None:
        """Server i's host and every other host, the clerks' included, stop hearing each other (mr: a worker
        cut off from its coordinator as well as from the reducers that fetch from it)."""
        me = self.host(i)
        others = [self.host(j) for j in range(self.n + 1) if j != i]
        self.hosts.drop_links([(me, o) for o in others] + [(o, me) for o in others])
        _applied["partition"] += 1

    def heal(self) -> None:
        if self.hosts.faults()["drops"]:
            _applied["heal"] += 1
        self.hosts.drop_links([])

    def unreliable(self, on: bool) -> None:
        for i in range(self.n):
            self.hosts.loss(self.host(i), LOSS if on else 0)
        if on:
            _applied["loss"] += 1

    def flapping(self, on: bool) -> None:
        if not on:
            self.hosts.heal()  # every link up, whatever a flap was doing when it stopped (no other fault overlaps)
            return
        _applied["flap"] += 1
        already = set(self.hosts.faults()["flapping"])
        for i in range(self.n):
            if self.host(i) not in already:
                self.hosts.flap(self.host(i), down_for=self.rng.uniform(*FLAP_DOWN), up_for=self.rng.uniform(*FLAP_UP))


def _network(n: int, seed: int | None) -> PacketNetwork:
    if _active is None:
        raise HostsError("no hosts: a --hosts netns cluster is made inside soak_hosts()")
    return PacketNetwork(_active, n, seed)


class NetnsCluster(Cluster):
    """The bare Raft harness with each peer on a host of its own and the network faults as packet filters.

    Also the first base of :class:`NetnsKVCluster`, where ``super()`` is the Raft-KV harness: the same
    overrides put either harness on hosts.
    """

    def __init__(self, n: int, *args: Any, **kwargs: Any) -> None:
        self.net = _network(n, kwargs.get("seed"))
        self.harness_endpoint = self.net.harness_endpoint()
        super().__init__(n, *args, **kwargs)
        self.endpoints = self.net.endpoints()

    def _child_spec(self, i: int) -> ChildSpec:
        return self.net.child_spec(i, super()._child_spec(i))

    def _rules_for(self, i: int) -> list[FaultRule]:
        return []

    def _apply_rules(self) -> None:
        """No transport rules on hosts: the packet filters are the network."""

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        super().partition(groups)
        self.net.partition(self.groups or [])

    def heal(self) -> None:
        super().heal()
        self.net.heal()

    def set_unreliable(self, unreliable: bool) -> None:
        super().set_unreliable(unreliable)
        self.net.unreliable(unreliable)

    def set_long_reordering(self, on: bool) -> None:
        super().set_long_reordering(on)
        self.net.flapping(on)


class NetnsKVCluster(NetnsCluster, KVCluster):
    """The Raft-KV harness with each server on a host of its own and the network faults as packet filters."""

    def _clerk_rules(self) -> list[FaultRule]:
        return []


def kv_cluster(config: Any, n: int, **kwargs: Any) -> KVCluster:
    """The Raft-KV harness a run asks for: on this machine, or on hosts (``--hosts netns``)."""
    if getattr(config, "hosts", "local") == "netns":
        return NetnsKVCluster(n, **kwargs)
    return KVCluster(n, **kwargs)


def raft_cluster(config: Any, n: int, **kwargs: Any) -> Cluster:
    """The Raft harness a run asks for: on this machine, or on hosts (``--hosts netns``)."""
    if getattr(config, "hosts", "local") == "netns":
        return NetnsCluster(n, **kwargs)
    return Cluster(n, **kwargs)


def mr_network(config: Any, seed: int | None) -> PacketNetwork | None:
    """Where a MapReduce soak's jobs run: None (all local) or the hosts, which also place each job's processes
    (a :class:`apps.mapreduce.job.Placement`: the coordinator here on the clerks' host, worker i on h(i+1))."""
    if getattr(config, "hosts", "local") == "netns":
        return _network(config.servers, seed)
    return None


ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380


class NetnsEtcdMembers(EtcdMembers):
    """Three etcd members, member i on host h(i+1) with no proxy in between; partitions as packet filters."""

    def __init__(self, directory: Path, logs: Path | None = None) -> None:
        super().__init__(directory, logs)
        for proxy in self.proxies:  # the proxies the loopback layout made: the hosts' links take their place
            proxy.stop()
        self.proxies = []
        self.net = _network(MEMBERS, None)
        self.client_hosts = [self.net.hosts.address(self.net.host(i)) for i in range(MEMBERS)]
        self.client_ports = [ETCD_CLIENT_PORT] * MEMBERS
        self.peer_ports = self.proxy_ports = [ETCD_PEER_PORT] * MEMBERS

    def _args(self, i: int) -> list[str]:
        peer = [f"http://{h}:{ETCD_PEER_PORT}" for h in self.client_hosts]
        cluster = ",".join(f"m{j}={peer[j]}" for j in range(MEMBERS))
        argv = member_args(self.binary, i, str(self.directory / f"member-{i}"), f"http://{self.client_hosts[i]}:{ETCD_CLIENT_PORT}",
                           peer[i], peer[i], cluster, self.token)
        return self.net.hosts.command(self.net.host(i), argv)  # `ip netns exec` execs etcd: the pid is etcd's

    def partition(self, groups: list[list[int]]) -> None:
        self.net.partition(groups)

    def heal(self) -> None:
        self.net.heal()


def etcd_members(config: Any, directory: Path, logs: Path | None = None) -> EtcdMembers:
    """The etcd members a run asks for: on loopback behind proxies, or on hosts (``--hosts netns``)."""
    if getattr(config, "hosts", "local") == "netns":
        return NetnsEtcdMembers(directory, logs)
    return EtcdMembers(directory, logs)
