"""The node agent: a supervisor on another machine that hosts what authenticated peers ask for.

Usage summary::

    zactor node --endpoint tcp://10.0.0.2:7070 --dir /srv/zactor     # on the other machine
    system.spawn_process(Counter, name="c", node="tcp://10.0.0.2:7070") # from anywhere in the cluster
    zactor node list --node tcp://10.0.0.2:7070                       # what it hosts

The agent is an actor named ``zactor.agent`` in an ``ActorSystem`` bound to
the given endpoint. Only peers whose key is in the agent's keyring can
reach it at all: the transport refuses a stranger's connection before any
frame is decoded (see :mod:`transport.keys`), so a spawn request, which is
a pickle and so code, only ever comes from a member of the cluster.

Each spawned actor runs in a child of the agent's ``Supervisor`` (the one
child host, :func:`actors.host.host`) at ``tcp://HOST:PORT`` on the agent's
host, with the port chosen once: the address outlives restarts. The child's
working directory is ``persist_dir`` under the agent's directory (default:
the actor's name), so its relative state paths survive it. The agent tells
each spawner's watcher (``zactor.spawn-watch``) of every death of what it
spawned, so asks in flight fail at once on the caller's side.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.actor import Actor
from actors.address import Address
from actors.agent_protocol import AGENT_NAME, ChildDied, ChildInfo, ListChildren, Lookup, Spawned, SpawnRequest, StopChild
from actors.classref import ClassRef
from actors.host import Hosted, host, host_one
from actors.supervisor import ChildSpec, RestartKind, Supervisor, SupervisorEvent, not_restarted
from transport.keys import endpoint_host
from transport.private_files import private_dirs

log = logging.getLogger(__name__)


# ---- the agent -----------------------------------------------------------------------


@dataclass
class _Entry:
    endpoint: str
    cls: str
    via: str
    limit: int
    within: float
    restart: RestartKind
    watchers: set[str]


def _free_port(host: str) -> int:
    """A port free on ``host`` now; the child binds it at each start, so its address is stable."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class NodeAgent(Actor):
    """Hosts actors in supervised children on request; see the module docstring."""

    def __init__(self, workdir: str, max_children: int = 256) -> None:
        super().__init__()
        self.workdir = Path(workdir).absolute()
        self.max_children = max_children
        self.sup = Supervisor()
        self.sup.add_listener(self._on_event)
        self.entries: dict[str, _Entry] = {}

    def on_stop(self) -> None:
        self.sup.stop()

    def _node(self) -> str:
        assert self.actor_system is not None
        return self.actor_system.endpoint

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, SpawnRequest):
            return self._spawn(message)
        if isinstance(message, ListChildren):
            return self._list()
        if isinstance(message, StopChild):
            if message.name not in self.entries:
                raise LookupError(f"node {self._node()} hosts no actor named {message.name!r}")
            self.sup.stop_child(message.name)
            del self.entries[message.name]
            return None
        if isinstance(message, Lookup):
            entry = self.entries.get(message.name)
            if entry is None:
                return None
            if message.watcher:
                entry.watchers.add(message.watcher)
            return Spawned(message.name, entry.endpoint, entry.via)
        raise TypeError(f"the node agent does not understand {type(message).__name__}")

    def _spawn(self, req: SpawnRequest) -> Spawned:
        if not isinstance(req.cls, ClassRef) or not isinstance(req.args, tuple) or not isinstance(req.kwargs, dict):
            raise TypeError("a SpawnRequest needs a ClassRef, a tuple of args and a dict of kwargs")
        Address("ipc://x", req.name)  # validates the name
        if req.name in self.entries:
            raise ValueError(f"node {self._node()} already hosts an actor named {req.name!r}")
        if len(self.entries) >= self.max_children:
            raise RuntimeError(f"node {self._node()} hosts {self.max_children} actors, its limit")
        cls, via = req.cls.load()  # here first: a class this node cannot load is the caller's error, at once
        workdir = (self.workdir / (req.persist_dir or req.name)).resolve()
        if not workdir.is_relative_to(self.workdir):
            raise ValueError(f"persist_dir {req.persist_dir!r} leaves the node's directory {self.workdir}")
        host = endpoint_host(self._node())
        if host is None:  # an ipc:// agent: its children live beside it
            endpoint = f"ipc://{self.workdir}/{req.name}.sock"
        else:
            endpoint = f"tcp://{host}:{_free_port(host)}"
        cls_ref = ClassRef(req.cls.path, None) if via == "import" else ClassRef(None, req.cls.blob)
        watchers = {req.watcher} if req.watcher else set()
        self.entries[req.name] = _Entry(endpoint, req.cls.describe if via == "import" else cls.__qualname__, via, req.max_restarts, req.within, req.restart, watchers)
        try:
            self.sup.start_child(ChildSpec(
                req.name, host_one, (endpoint, req.name, cls_ref, req.args, req.kwargs, str(workdir)),
                restart=req.restart, max_restarts=req.max_restarts, within=req.within,
            ))
        except BaseException:
            del self.entries[req.name]
            raise
        log.info("node %s: spawned %s (%s, class by %s) at %s", self._node(), req.name, cls.__qualname__, via, endpoint)
        return Spawned(req.name, endpoint, via)

    def _list(self) -> list[ChildInfo]:
        out = []
        for name, e in self.entries.items():
            status = self.sup.status(name)
            out.append(ChildInfo(name, e.endpoint, e.cls, e.via, status, self.sup.pid(name), self.sup.restarts(name), self.sup.uptime(name)))
        return out

    def _on_event(self, event: SupervisorEvent) -> None:
        """Supervisor listener (its lock held, its thread): tell the watchers of a death."""
        entry = self.entries.get(event.child)
        if entry is None or event.kind not in ("exited", "gave_up") or self.actor_system is None:
            return
        gave_up = None
        if event.kind == "exited" and not_restarted(entry.restart, event.exitcode):
            gave_up = f"{event.child!r} on node {self._node()} exited with {event.exitcode} and is not restarted (restart={entry.restart!r})"
        elif event.kind == "gave_up":
            gave_up = (
                f"node {self._node()} gave up on {event.child!r}: its process died more than {entry.limit} "
                f"times within {entry.within:g} s (last exit code {event.exitcode}); it is not restarted"
            )
        notice = ChildDied(self._node(), event.child, event.exitcode, gave_up)
        for watcher in list(entry.watchers):
            try:
                self.actor_system.ref(watcher).tell(notice)
            except Exception as exc:
                # A tell never learns that its peer is gone (ZeroMQ queues it for the peer's return), so
                # this is a watcher the notice cannot even be sent to: a bad address, no key for its host.
                log.info("node %s: cannot tell watcher %s (%s); dropping it", self._node(), watcher, exc)
                entry.watchers.discard(watcher)


def run_agent(endpoint: str, workdir: str | os.PathLike[str], *, announce: bool = False) -> None:
    """Run a node agent in this process until SIGTERM or SIGINT (what ``zactor node`` does)."""
    directory = Path(workdir).absolute()
    private_dirs(directory)  # 0700: the actors' state is nobody else's to read
    shown = str(directory).replace("{", "{{").replace("}", "}}")  # the announcement is a format string
    announcement = f"node agent listening on {{endpoint}}, directory {shown} (Ctrl-C stops it)" if announce else None
    host(endpoint, [Hosted(AGENT_NAME, NodeAgent, (str(directory),))], announce=announcement)
