"""The runtime's named errors; callers catch these, never integer codes."""

from __future__ import annotations

import pykka

from transport.envelope import Failure, RemoteError

ActorDeadError = pykka.ActorDeadError


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


__all__ = ["ActorDeadError", "AskTimeout", "BlockingOnIOThread", "CorruptStateError", "Failure", "MailboxFull", "RemoteError", "SystemStopped"]
