"""A connection whose peer stops answering is dropped and redialled (ZMTP heartbeats).

The peer is a real process holding a ROUTER; SIGSTOP freezes it while its
kernel still acknowledges TCP, which is what a cut network looks like to the
sender for as long as TCP's own timers run (minutes). Only the heartbeat can
tell; without it no disconnect is ever reported.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from tests.helpers import free_port
from transport.dealers import HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS, open_dealer

pytestmark = pytest.mark.slow  # waits out a heartbeat timeout (10 s)

_PEER = textwrap.dedent("""
    import sys, zmq
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(sys.argv[1])
    print("bound", flush=True)
    while True:
        router.recv_multipart()
""")


@pytest.fixture
def peer() -> Iterator[tuple[str, subprocess.Popen]]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-c", _PEER, endpoint], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "bound"
        yield endpoint, proc
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _next_event(monitor: zmq.Socket, wanted: int, limit: float) -> float:
    """Seconds until ``wanted`` is reported on ``monitor``; fails the test after ``limit``."""
    start = time.monotonic()
    while (left := limit - (time.monotonic() - start)) > 0:
        if monitor.poll(int(left * 1000)) and recv_monitor_message(monitor)["event"] == wanted:
            return time.monotonic() - start
    pytest.fail(f"no {zmq.Event(wanted).name} within {limit} s")


def test_a_frozen_peer_is_disconnected_by_heartbeat_and_redialled_when_it_wakes(
        peer: tuple[str, subprocess.Popen]) -> None:
    endpoint, proc = peer
    ctx = zmq.Context()
    try:
        dealer = open_dealer(ctx, endpoint, keyring=None, server_key=None, routing_id=None,
                             inbound_hwm=1000, max_frame_bytes=1 << 20)
        monitor = dealer.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        _next_event(monitor, zmq.EVENT_HANDSHAKE_SUCCEEDED, limit=10.0)

        os.kill(proc.pid, signal.SIGSTOP)
        # The peer's kernel still answers TCP: only an unanswered ping can end the connection.
        took = _next_event(monitor, zmq.EVENT_DISCONNECTED, limit=HEARTBEAT_TIMEOUT_MS / 1000 + 10.0)
        assert took >= HEARTBEAT_TIMEOUT_MS / 1000 - HEARTBEAT_IVL_MS / 1000, "dropped before the heartbeat could time out"

        os.kill(proc.pid, signal.SIGCONT)
        _next_event(monitor, zmq.EVENT_HANDSHAKE_SUCCEEDED, limit=10.0)
        dealer.disable_monitor()
        monitor.close(linger=0)
        dealer.close(linger=0)
    finally:
        ctx.destroy(linger=0)
