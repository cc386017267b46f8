"""Small actors and child-process targets shipped with the runtime for tests, benchmarks and examples.

They live in the package (not under tests/) so the supervisor's fork server
has them preloaded, and so users can check their own deployment with them.
"""

from __future__ import annotations

import struct
from typing import Any

from actors.actor import Actor
from actors.host import Hosted, host
from actors.persister import Persister
from transport.message import message


@message
class Incr:
    by: int = 1


@message
class Get:
    pass


@message
class Fail:
    """Makes the receiving actor raise (to exercise rebuilds and error replies)."""

    why: str = "asked to fail"


@message
class Send:
    """Asks the receiving Echo to tell ``payload`` to the actor at ``address``."""

    address: str
    payload: Any


@message
class Count:
    pass


@message
class Received:
    pass


class Echo(Actor):
    """Answers every ask with the message itself; relays ``Send``; raises on ``Fail``."""

    inline = True  # never blocks: served on its node's I/O thread

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Fail):
            raise RuntimeError(message.why)
        if isinstance(message, Send):
            assert self.actor_system is not None
            self.actor_system.ref(message.address).tell(message.payload)
            return None
        return message


class Collector(Actor):
    """Keeps every message told to it, in arrival order; ``Count`` and ``Received`` read them."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Count):
            return len(self.messages)
        if isinstance(message, Received):
            return list(self.messages)
        self.messages.append(message)
        return None


class PersistentCounter(Actor):
    """A counter that persists every increment before answering, and reloads on start."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.persister = Persister(path)
        # Loaded here, in the spawning thread, so a damaged file fails the
        # spawn (and the hosting process) loudly instead of leaving a dead actor.
        data = self.persister.load()
        self.value = struct.unpack(">q", data)[0] if data is not None else 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Incr):
            self.value += message.by
            self.persister.save(struct.pack(">q", self.value))
            return self.value
        if isinstance(message, Get):
            return self.value
        if isinstance(message, Fail):
            raise RuntimeError(message.why)
        raise TypeError(f"PersistentCounter does not understand {type(message).__name__}")


def serve_counter(endpoint: str, path: str) -> None:
    """Child-process target: a PersistentCounter named ``counter`` at ``endpoint``."""
    host(endpoint, [Hosted("counter", PersistentCounter, (path,))])


def serve_echo(endpoint: str) -> None:
    """Child-process target: an Echo named ``echo`` and a Collector named ``collector`` at ``endpoint``."""
    host(endpoint, [Hosted("echo", Echo), Hosted("collector", Collector)])


def crash_at_once(code: int = 3) -> None:
    """Child-process target that exits immediately with ``code`` (for restart-limit tests)."""
    raise SystemExit(code)
