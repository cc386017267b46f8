"""What a node agent and the systems that use it say to each other: its name and its seven messages.

Both sides import this module and nothing of each other: the agent
(:mod:`actors.agent`) answers these, the spawning side (:mod:`actors.spawn`,
:mod:`actors.directory`) sends them and hears ``ChildDied``.

* ``SpawnRequest`` -> ``Spawned``: host an actor in a supervised child.
* ``ListChildren`` -> ``list[ChildInfo]``: what the agent hosts.
* ``StopChild`` -> ``None``: stop a child for good.
* ``Lookup`` -> ``Spawned | None``: where a child named so lives (and watch it for ``watcher``).
* ``ChildDied``: told by the agent to each watcher when a child's process dies.
"""

from __future__ import annotations

from actors.classref import ClassRef
from actors.supervisor import RestartKind
from transport.message import message

AGENT_NAME = "zactor.agent"
"""The agent actor's name on its node."""


@message
class SpawnRequest:
    name: str
    cls: ClassRef
    args: tuple
    kwargs: dict
    restart: RestartKind = "permanent"
    max_restarts: int = 5
    within: float = 10.0
    persist_dir: str | None = None
    watcher: str | None = None
    """``endpoint#name`` to tell of this actor's deaths (a spawner's DeathWatcher)."""


@message
class Spawned:
    name: str
    endpoint: str
    via: str


@message
class ListChildren:
    pass


@message
class ChildInfo:
    name: str
    endpoint: str
    cls: str
    via: str
    status: str
    pid: int | None
    restarts: int
    uptime: float | None


@message
class StopChild:
    name: str


@message
class Lookup:
    name: str
    watcher: str | None = None


@message
class ChildDied:
    """Told by an agent to a spawner's watcher: ``gave_up`` says why it is not restarted."""

    node: str
    name: str
    exitcode: int | None
    gave_up: str | None = None
