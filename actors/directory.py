"""Names that outlive addresses: which known node agent hosts an actor of a given name.

A system knows the node agents given as ``ActorSystem(nodes=[...])``, those
added by ``system.join(node)``, and every node it spawned on.
``system.lookup(name)`` looks in this system first, then among the
processes it spawned, and then asks each node's agent in turn
(:func:`find_on_nodes`); a node that does not answer is skipped, and named
in the error if nothing is found. So application code holds names, not
socket paths. A ref found on a node is watched like one spawned there: asks
in flight when its process dies fail at once.
"""

from __future__ import annotations

from actors.address import Address
from actors.agent_protocol import AGENT_NAME, Lookup, Spawned
from actors.system import ActorSystem


def find_on_nodes(system: ActorSystem, name: str, watcher: str, timeout: float = 5.0) -> tuple[str, Spawned]:
    """The first known node whose agent hosts ``name``, and where: ``(node, Spawned)``.

    ``watcher`` (``endpoint#name``) is told of that actor's deaths from then on.
    Raises ``LookupError`` naming where it looked.
    """
    unreachable = []
    nodes = list(system.nodes)
    for node in nodes:
        try:
            found = system.ref(Address(node, AGENT_NAME)).ask(Lookup(name, watcher), timeout=timeout)
        except Exception as exc:  # a node down must not hide the others
            unreachable.append(f"{node} ({type(exc).__name__})")
            continue
        if found is not None:
            return node, found
    where = ", ".join(nodes) or "no nodes"
    down = f"; unreachable: {', '.join(unreachable)}" if unreachable else ""
    raise LookupError(f"no actor named {name!r} on {system.endpoint} or its nodes ({where}){down}")
