"""A bound on the Python work of one remote ask, counted, not timed.

Under load the CPU of a synchronous ask is mostly Python frames run with
cold caches, not system calls (those match raw pyzmq's), so what the ask
path costs is best watched by counting the Python functions it calls: on
the asking thread (RemoteRef.ask down to the channel and back) and on the
serving node's I/O thread (the ROUTER read down to an inline actor's
handler and its reply). ``sys.setprofile`` counts them exactly.

The bounds are today's counts (asking thread 15, serving thread 24 with a
little room for a loop turn that finds nothing): a change that adds a layer
to every ask fails here and should say in its commit what it buys.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any

from actors import ActorSystem
from actors.testing import Echo

ASKS = 200


def _counter(into: Counter[str]) -> Callable[[FrameType, str, Any], None]:
    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            into[frame.f_code.co_name] += 1

    return profile


def _on_io_thread(system: ActorSystem, fn: Callable[[], Any]) -> None:
    done = threading.Event()

    def run() -> None:
        fn()
        done.set()

    system._node.run_soon(run)
    assert done.wait(10)


def test_a_remote_ask_calls_a_bounded_number_of_python_functions_on_each_side() -> None:
    with ActorSystem() as server, ActorSystem() as client:
        server.spawn(Echo, name="echo")
        echo = client.ref(server.endpoint, "echo")
        for i in range(20):  # connections made, caches warm
            assert echo.ask(i, timeout=10.0) == i
        asking: Counter[str] = Counter()
        serving: Counter[str] = Counter()
        _on_io_thread(server, lambda: sys.setprofile(_counter(serving)))
        try:
            assert echo.ask("start", timeout=10.0) == "start"
            serving.clear()
            sys.setprofile(_counter(asking))
            try:
                for i in range(ASKS):
                    assert echo.ask(i, timeout=10.0) == i
            finally:
                sys.setprofile(None)
        finally:
            _on_io_thread(server, lambda: sys.setprofile(None))
        per_ask = sum(asking.values()) / ASKS
        per_request = sum(serving.values()) / ASKS
        assert per_ask <= 15.5, f"{per_ask:.2f} Python calls per ask on the asking thread: {asking.most_common()}"
        assert per_request <= 26, f"{per_request:.2f} Python calls per request on the serving thread: {serving.most_common()}"
