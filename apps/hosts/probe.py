"""Count the packets that get from one host to another: the measure of what a fault really drops.

UDP, so nothing retransmits: ``delivered(hosts, "h1", "h2", 200)`` is how many
of 200 numbered datagrams sent by h1 reached h2. The receiver runs in the
destination host, the sender in the source, each a short process
(``python -m apps.hosts.probe recv|send``).
"""

from __future__ import annotations

import argparse
import selectors
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apps.hosts.netns import Hosts

PORT = 47999
QUIET = 0.2
"""Seconds the receiver still listens once the sender is done (a veth delivers in microseconds)."""


def delivered(hosts: Hosts, src: str, dst: str, count: int = 200, port: int = PORT) -> int:
    """How many of ``count`` datagrams from ``src`` arrive at ``dst`` (each sent once, 1 ms apart)."""
    recv = hosts.popen(
        dst,
        [sys.executable, "-m", "apps.hosts.probe", "recv", hosts.address(dst), str(port), str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert recv.stdout is not None
        ready = recv.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(f"probe receiver in {dst} did not start (said {ready!r})")
        sent = hosts.exec(src, [sys.executable, "-m", "apps.hosts.probe", "send", hosts.address(dst), str(port), str(count)], timeout=30)
        if sent.returncode != 0:
            raise RuntimeError(f"probe sender in {src} failed: {sent.stderr.strip()}")
        out, _ = recv.communicate(timeout=30)  # closes its stdin: the sender is done
        return int(out.split()[-1])
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait(timeout=10)


def _recv(addr: str, port: int, count: int) -> int:
    """Count distinct datagrams until all came, or QUIET seconds after stdin closes (the sender is done)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((addr, port))
        print("ready", flush=True)
        seen: set[int] = set()
        # A selector, not select(): select refuses descriptors above 1023.
        with selectors.DefaultSelector() as sel:
            sel.register(s, selectors.EVENT_READ)
            sel.register(sys.stdin, selectors.EVENT_READ)
            sender_done = False
            deadline = time.monotonic() + 60.0
            while len(seen) < count and time.monotonic() < deadline:
                ready = {key.fileobj for key, _ in sel.select(QUIET if sender_done else 1.0)}
                if not ready and sender_done:
                    break
                if sys.stdin in ready and not sys.stdin.readline():
                    sel.unregister(sys.stdin)
                    sender_done = True
                if s in ready:
                    seen.add(int(s.recv(64)))
        return len(seen)


def _send(addr: str, port: int, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(count):
            try:
                s.sendto(str(i).encode(), (addr, port))
            except OSError:  # no neighbour (the link is cut): the datagram is lost, as on a wire
                pass
            time.sleep(0.001)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apps.hosts.probe", description="UDP delivery probe (run inside hosts)")
    parser.add_argument("role", choices=["recv", "send"])
    parser.add_argument("addr")
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    args = parser.parse_args(argv)
    if args.role == "recv":
        print(_recv(args.addr, args.port, args.count), flush=True)
    else:
        _send(args.addr, args.port, args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
