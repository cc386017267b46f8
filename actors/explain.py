"""An ask that, when its answer is slow to come, finds out whether one can come at all, and says why not.

Why a module: a command that asks one well-known actor (a node agent, a
server) should not make a person wait out a 10 s timeout to learn that
nothing listens at the address, or that the address refuses this machine's
key. After a short first wait, :func:`ask_or_explain` opens a trial
connection (:meth:`ActorSystem.probe`); if it shows the node cannot answer,
the ask fails at once with :class:`~actors.errors.Unreachable`, whose text
names the cause and the fix; otherwise it waits the rest of its timeout as
any ask would. A name the node does not host fails at once anyway (the
node answers :class:`~actors.errors.NoSuchActor`).
"""

from __future__ import annotations

from typing import Any

from actors.address import Address
from actors.errors import AskTimeout, Unreachable
from actors.system import ActorSystem
from transport.probe import LinkState

FIRST_LOOK = 0.3
"""Seconds an ask waits for its answer before it looks at the connection (a healthy round trip takes < 1 ms)."""


def ask_or_explain(system: ActorSystem, address: Address, message: Any, timeout: float, *, hint: str = "") -> Any:
    """``message``'s answer from the actor at ``address`` (within ``timeout`` s); Unreachable as soon as a
    trial connection shows the node cannot answer. ``hint``: what to do when nothing listens there."""
    future = system.ref(address).ask(message, block=False, timeout=timeout)
    try:
        return future.get(timeout=min(FIRST_LOOK, timeout))
    except AskTimeout:
        if timeout <= FIRST_LOOK:
            raise
    report = system.probe(address.endpoint)
    if report.lasting or report.state is LinkState.NOTHING_LISTENING:  # final; a partition may heal
        raise Unreachable(report, hint if report.state is LinkState.NOTHING_LISTENING else "")
    return future.get()  # the rest of its timeout
