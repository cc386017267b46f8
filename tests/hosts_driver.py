"""A client that runs inside a test host and does what the test tells it, one JSON line at a time.

The test process lives in the machine's own network namespace, which cannot
reach the hosts (nothing is routed in or out), so whatever must talk to the
servers from a host (a Raft-KV clerk, a caller of ``spawn_process(node=...)``)
runs here: ``python -m tests.hosts_driver ADDRESS`` started with ``Hosts.popen``. Each
request line is ``{"op": NAME, ...}``; each answer one line, ``{"ok": VALUE}``
or ``{"error": "ExceptionName: text"}``, so an exception is an observation the
test asserts on, never a crash of the driver.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from actors import ActorSystem
from actors.testing import Get, Incr, PersistentCounter


class Driver:
    def __init__(self, address: str) -> None:
        # Bound on the host's own address: an ipc:// endpoint would reach the
        # servers through the file system, around every network fault.
        self.system = ActorSystem(f"tcp://{address}:0", ask_timeout=10.0)
        self.refs: dict[str, Any] = {}
        self.clerks: dict[tuple[str, ...], Any] = {}

    def clerk(self, servers: list[str], give_up_after: float) -> Any:
        from apps.kvraft import Clerk

        key = tuple(servers)
        if key not in self.clerks:
            self.clerks[key] = Clerk(list(servers), system=self.system, give_up_after=give_up_after)
        clerk = self.clerks[key]
        clerk.give_up_after = give_up_after
        return clerk

    def op_leader(self, servers: list[str], timeout: float = 20.0, exclude: int | None = None) -> dict:
        """The leader of the highest term among the servers that answer (waits up to ``timeout`` for one)."""
        from apps.raft.watch import take_view

        deadline = time.monotonic() + timeout
        while True:
            view = take_view(self.system, servers, timeout=0.5)
            top = view.leader
            if top is not None and top.me != exclude:
                return {"me": top.me, "term": top.term, "up": [s.me for s in view.up]}
            if time.monotonic() > deadline:
                raise TimeoutError(f"no leader (other than {exclude}) within {timeout} s; up: {[s.me for s in view.up]}")
            time.sleep(0.05)

    def op_status(self, server: str, timeout: float = 2.0) -> dict:
        """One Raft peer's status (term, role, commit and last index)."""
        from dataclasses import asdict

        from apps.raft.peer import PEER_NAME, Status

        return asdict(self.system.ref(server, PEER_NAME).ask(Status(), timeout=timeout))

    def op_put(self, servers: list[str], key: str, value: str, timeout: float = 30.0) -> float:
        """Seconds until the put was acknowledged."""
        started = time.monotonic()
        self.clerk(servers, timeout).put(key, value)
        return time.monotonic() - started

    def op_append(self, servers: list[str], key: str, value: str, timeout: float = 30.0) -> str:
        return self.clerk(servers, timeout).append(key, value)

    def op_get(self, servers: list[str], key: str, timeout: float = 30.0) -> str:
        return self.clerk(servers, timeout).get(key)

    def op_spawn_counter(self, node: str, name: str, path: str) -> str:
        self.refs[name] = self.system.spawn_process(PersistentCounter, path, name=name, node=node, timeout=20.0)
        return repr(self.refs[name])

    def op_incr(self, name: str, timeout: float = 5.0) -> int:
        return self.refs[name].ask(Incr(1), timeout=timeout)

    def op_tell_incr(self, name: str) -> None:
        self.refs[name].tell(Incr(1))

    def op_count(self, name: str, timeout: float = 5.0) -> int:
        return self.refs[name].ask(Get(), timeout=timeout)

    def op_count_when_back(self, name: str, limit: float = 60.0) -> dict:
        """Ask for the count again and again (1 s each) until one answers; the value and the seconds it took."""
        from actors import AskTimeout

        started = time.monotonic()
        tries = 0
        while True:
            tries += 1
            try:
                value = self.refs[name].ask(Get(), timeout=1.0)
                return {"value": value, "seconds": time.monotonic() - started, "tries": tries}
            except AskTimeout:
                if time.monotonic() - started > limit:
                    raise


def main() -> int:
    driver = Driver(sys.argv[1])
    print(json.dumps({"ok": "ready"}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        op = request.pop("op")
        try:
            answer: dict = {"ok": getattr(driver, f"op_{op}")(**request)}
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
    driver.system.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
