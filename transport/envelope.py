"""The unit of traffic between nodes, and the kinds of traffic there are.

An envelope is addressed to an actor *name* on a node and says which node
(endpoint) it came from, so a fault rule or a counter can refer to the other
side without any knowledge of actors. A reply goes back over the connection
its request came in on (``route``), never to the endpoint a frame claims.
"""

from __future__ import annotations

import enum
import pickle
import traceback
from typing import Any, NamedTuple

from transport.message import message


class Kind(enum.IntEnum):
    """What an envelope is for; fault rules select on requests vs replies."""

    TELL = 1
    ASK = 2
    REPLY = 3
    ERROR = 4

    @property
    def is_reply(self) -> bool:
        return self >= Kind.REPLY


# The kinds as plain ints, for the hot paths: fetching a member from an enum
# class runs Python, comparing an int with a member does not.
KIND_TELL = int(Kind.TELL)
KIND_ASK = int(Kind.ASK)
KIND_REPLY = int(Kind.REPLY)

CONTROL_NAME = "$node"
"""Reserved destination name: the node itself (fault rules, counters, ping).

Traffic to or from it is never subject to fault injection, so a test can
always reach a node whose actors it has cut off.
"""


class Envelope(NamedTuple):
    """A NamedTuple rather than a dataclass: several are built per message, and tuples build fastest."""

    kind: Kind
    dest: str
    """Actor name on the destination node ("" for a reply to a future)."""
    src: str
    """Endpoint of the sending node, as the receiver knows it (from the connection's routing id,
    else the frame): a label for fault rules and counters, never where a reply goes (``route`` is)."""
    corr: int
    """Correlation id of an ask; its reply carries the same number."""
    body: Any
    sender: str = ""
    """Actor name of the sender, when it has one (informational)."""
    route: bytes | None = None
    """Set by the receiving node: the connection the envelope came in on, where its reply goes.
    Never on the wire; ``src`` is only a label (fault rules, counters), never a reply address."""

    @property
    def is_control(self) -> bool:
        return self.dest == CONTROL_NAME or self.sender == CONTROL_NAME

    @property
    def is_reply(self) -> bool:
        return self.kind >= Kind.REPLY


def message_type(body: Any) -> str:
    """The name counters file a message under: its class name."""
    return type(body).__name__


class RemoteError(RuntimeError):
    """An exception raised on another node that could not travel back as itself."""


@message
class Failure:
    """An exception on the wire: the original if it survives pickling, and always its text.

    The exception travels inline, inside the frame's one pickle, so a
    receiver unpickles it once, with the frame (never a second pickle nested
    in the first).
    """

    type_name: str
    message: str
    remote_traceback: str
    exception: BaseException | None

    @classmethod
    def from_exception(cls, exc: BaseException) -> Failure:
        try:
            # Some exceptions pickle but do not unpickle; checked here, on the
            # sender's own bytes, so the receiver's one decode cannot fail on it.
            pickle.loads(pickle.dumps(exc))
            travelling: BaseException | None = exc
        except Exception:
            travelling = None
        text = "".join(traceback.format_exception(exc))
        return cls(type(exc).__qualname__, str(exc), text, travelling)

    def to_exception(self) -> BaseException:
        if isinstance(self.exception, BaseException):
            exc = self.exception
            exc.add_note(f"raised remotely:\n{self.remote_traceback}")
            return exc
        return RemoteError(f"{self.type_name}: {self.message}\n--- remote traceback ---\n{self.remote_traceback}")
