"""The actor runtime: pykka actors in many OS processes, talking over ZeroMQ.

``ActorSystem`` hosts actors in one process and gives references (local or
remote, the same ``tell``/``ask``) to actors anywhere; ``Supervisor`` runs
and restarts the processes that host them; ``Persister`` and ``Journal``
keep what an actor must not lose across a restart.
"""

# The layer above the system: importing it plugs spawn_process and lookup into every ActorSystem
# (actors.system.plug_process_layer), so whoever imports anything of actors has them.
import actors.spawn  # noqa: F401
from actors.actor import Actor, ReplyTarget
from actors.address import Address
from actors.classref import ClassRef
from actors.errors import (
    ActorDeadError,
    AskTimeout,
    BlockingOnIOThread,
    CorruptStateError,
    Failure,
    MailboxFull,
    RemoteError,
    SystemStopped,
)
from actors.future import ReplyFuture, wait
from actors.journal import Journal
from actors.persister import Persister
from actors.process_ref import ProcessDied, ProcessRef, RestartLimitReached
from actors.ref import ActorRef
from actors.supervisor import EXIT_DONE, ChildSpec, ChildStatus, EventKind, Supervisor, SupervisorEvent
from actors.system import ActorSystem, LocalRef, NodeControl, RemoteRef, RestartLimit

__all__ = [
    "EXIT_DONE",
    "Actor",
    "ActorDeadError",
    "ActorRef",
    "ActorSystem",
    "Address",
    "AskTimeout",
    "BlockingOnIOThread",
    "ChildSpec",
    "ChildStatus",
    "ClassRef",
    "CorruptStateError",
    "EventKind",
    "Failure",
    "Journal",
    "LocalRef",
    "MailboxFull",
    "NodeControl",
    "Persister",
    "ProcessDied",
    "ProcessRef",
    "RemoteError",
    "RemoteRef",
    "ReplyFuture",
    "ReplyTarget",
    "RestartLimit",
    "RestartLimitReached",
    "Supervisor",
    "SupervisorEvent",
    "SystemStopped",
    "wait",
]
