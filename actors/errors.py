"""The runtime's named errors; callers catch these, never integer codes."""

from __future__ import annotations

import pykka

from transport.envelope import Failure, RemoteError
from transport.probe import LinkReport, LinkState

ActorDeadError = pykka.ActorDeadError


class NoSuchActor(ActorDeadError):
    """The node answered, but hosts no actor of that name: a wrong endpoint, another service, or one not started (yet).

    An ``ActorDeadError``, so code that waits out a restart still catches it;
    ``hosted`` (what the node does host) lets a client tell "not yet" (nothing
    hosted) from "another service" (other names) and say so.
    """

    def __init__(self, name: str, node: str, hosted: tuple[str, ...] = ()) -> None:
        self.name = name
        self.node = node
        self.hosted = tuple(hosted)
        shown = ", ".join(repr(n) for n in self.hosted[:8]) + (f" and {len(self.hosted) - 8} more" if len(self.hosted) > 8 else "")
        there = f"; it hosts {shown}" if self.hosted else "; it hosts no actor (yet)"
        super().__init__(f"no actor named {name!r} on {node}{there}")

    def __reduce__(self) -> tuple:
        return (type(self), (self.name, self.node, self.hosted))


class NoNodeAgent(ConnectionError):
    """The address answers, but no node agent runs there (``spawn_process(node=...)`` needs one)."""


class Unreachable(ConnectionError):
    """A node did not answer, and a trial connection tells why (``report``: nothing listening, key refused...)."""

    def __init__(self, report: LinkReport, hint: str = "") -> None:
        self.report = report
        super().__init__(report.explanation + (f"; {hint}" if hint else ""))

    @property
    def state(self) -> LinkState:
        return self.report.state


class AskTimeout(pykka.Timeout):
    """No reply arrived in time. Subclasses ``pykka.Timeout`` so one except serves both."""


class SystemStopped(RuntimeError):
    """The actor system was stopped while the operation was pending."""


class MailboxFull(RuntimeError):
    """The actor's mailbox is at its bound: the ask was refused, not queued; try again later."""


class BlockingOnIOThread(RuntimeError):
    """A blocking ask on a node's I/O thread: refused at once, since it would wait for itself."""


class CorruptStateError(RuntimeError):
    """A state file exists but is damaged; it is never read as empty."""


__all__ = ["ActorDeadError", "AskTimeout", "BlockingOnIOThread", "CorruptStateError", "Failure", "MailboxFull", "NoNodeAgent", "NoSuchActor", "RemoteError", "SystemStopped", "Unreachable"]
