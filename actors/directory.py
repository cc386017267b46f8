"""Names that outlive addresses: find an actor by name here, in a spawned process, or on a known node.

A system knows the node agents given as ``ActorSystem(nodes=[...])``, those
added by ``system.join(node)``, and every node it spawned on. ``lookup``
asks this system first, then the processes it spawned, then each node's
agent in turn (a node that does not answer is skipped, and named in the
error if nothing is found), so application code holds names, not socket
paths. A ref found on a node is watched like one spawned there: asks in
flight when its process dies fail at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.address import Address
from actors.agent import AGENT_NAME, Lookup
from actors.errors import ActorDeadError
from actors.spawn import ProcessRef, spawner_of

if TYPE_CHECKING:
    from actors.system import ActorSystem


def join(system: ActorSystem, node: str) -> None:
    """Remember ``node`` so ``lookup`` searches it."""
    Address(node, AGENT_NAME)  # validates the endpoint
    if node not in system.nodes:
        system.nodes.append(node)


def lookup(system: ActorSystem, name: str, timeout: float = 5.0) -> Any:
    """A ref to the actor ``name``: this system's own, then its spawned processes, then each known node's.

    Raises ``LookupError`` naming where it looked.
    """
    try:
        system._pykka_ref(name)
        return system.ref(system.endpoint, name)
    except ActorDeadError:
        pass
    spawner = spawner_of(system)
    local = spawner.local_ref(name)
    if local is not None:
        return local
    unreachable = []
    for node in list(system.nodes):
        try:
            found = system.ref(Address(node, AGENT_NAME)).ask(Lookup(name, spawner.watcher()), timeout=timeout)
        except Exception as exc:  # a node down must not hide the others
            unreachable.append(f"{node} ({type(exc).__name__})")
            continue
        if found is not None:
            return spawner.remember_remote(ProcessRef(system, Address(found.endpoint, name), node=node, via=found.via))
    where = ", ".join(system.nodes) or "no nodes"
    down = f"; unreachable: {', '.join(unreachable)}" if unreachable else ""
    raise LookupError(f"no actor named {name!r} on {system.endpoint} or its nodes ({where}){down}")
