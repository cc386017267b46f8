"""The one child host: what every process that hosts actors runs.

Usage summary::

    host("ipc:///tmp/kv.sock", [Hosted("kv", KVServer, (state_dir,))])   # until SIGTERM/SIGINT

:func:`host` builds an ``ActorSystem(start=False)``, spawns its actors, and
only then starts the node, so a message that waited for a restarted process
never finds it empty. The project's servers (KV server, Raft peer, the test
actors), ``spawn_process``'s children and the node agent all use it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actors.classref import ClassRef
from actors.system import ActorSystem
from transport.private_files import private_dirs

if TYPE_CHECKING:
    from transport import FaultRule


@dataclass(frozen=True)
class Hosted:
    """One actor a hosting process runs: its name, class (or ClassRef) and arguments."""

    name: str
    cls: type | ClassRef
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


def host(
    endpoint: str,
    actors: Sequence[Hosted],
    *,
    faults: list[FaultRule] | None = None,
    workdir: str | None = None,
    announce: str | None = None,
    **system_options: Any,
) -> None:
    """Child-process target: host ``actors`` at ``endpoint`` until SIGTERM, SIGINT or ``stop()``.

    ``workdir`` (made if missing) becomes the process's working directory
    first, so an actor's relative state paths land there. ``announce`` is
    printed to stderr once the endpoint is bound, ``{endpoint}`` filled in.
    ``system_options`` go to the ``ActorSystem`` (``secure``, ``keys``, ``mailbox_limit``...).
    """
    if workdir is not None:
        private_dirs(workdir)
        os.chdir(workdir)
    with ActorSystem(endpoint, start=False, **system_options) as system:
        system.catch_stop_signals()  # before any actor starts: a stop signal from then on stops them
        if faults:
            system.node.set_faults(faults)
        for actor in actors:
            cls = actor.cls.load()[0] if isinstance(actor.cls, ClassRef) else actor.cls
            system.spawn(cls, *actor.args, name=actor.name, kwargs=actor.kwargs)
        system.start()
        if announce:
            print(announce.format(endpoint=system.endpoint), file=sys.stderr, flush=True)
        system.run_until_stopped()


def host_one(endpoint: str, name: str, cls: type | ClassRef, args: tuple, kwargs: dict, workdir: str | None) -> None:
    """Child-process target of ``spawn_process``: one actor."""
    host(endpoint, [Hosted(name, cls, args, kwargs)], workdir=workdir)
