"""One ref face and one future type: the ActorRef protocol, ReplyFuture's get/map/join, asyncio."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from actors import Actor, ActorRef, ActorSystem, AskTimeout, ProcessDied, ReplyFuture
from actors.testing import Echo
from tests.helpers import Held

README = Path(__file__).resolve().parents[1] / "README.md"


def test_local_and_remote_refs_satisfy_the_actor_ref_protocol(system: ActorSystem, remote: str) -> None:
    local = system.spawn(Echo, name="echo")
    for ref in (local, system.ref(remote, "echo")):
        assert isinstance(ref, ActorRef)
        future = ref.ask(("x", 1), block=False, timeout=10)
        assert isinstance(future, ReplyFuture)
        assert future.map(lambda v: v[1] + 1).get(timeout=10) == 2
        assert future.join(ref.ask(3, block=False, timeout=10)).get(timeout=10) == [("x", 1), 3]


def test_a_timed_out_get_can_be_retried_until_the_reply_comes(system: ActorSystem, remote: str) -> None:
    gate = threading.Event()
    held = system.spawn(Held, gate, name="held")
    future = held.ask("answered once the gate opens", block=False, timeout=30)
    for _ in range(3):
        with pytest.raises(AskTimeout):
            future.get(timeout=0.01)
    gate.set()
    assert future.get(timeout=10) == "answered once the gate opens"
    echo = system.ref(remote, "echo")
    slow = echo.ask("late", block=False, timeout=30)
    with pytest.raises(AskTimeout):
        slow.get(timeout=0)  # nothing can have come back yet: the poll times out, the ask stays
    assert slow.get(timeout=10) == "late"


def test_ask_async_from_asyncio_local_and_remote(system: ActorSystem, remote: str) -> None:
    local = system.spawn(Echo, name="echo")
    far = system.ref(remote, "echo")

    async def main() -> list:
        return list(await asyncio.gather(*(ref.ask_async(i, timeout=10) for ref in (local, far) for i in range(50))))

    assert asyncio.run(main()) == list(range(50)) * 2


def test_readme_asyncio_example_runs_as_shown(tmp_path: Path) -> None:
    text = README.read_text()
    match = re.search(r"<!-- example: asyncio -->\n```python\n(.*?)```\n<!-- /example -->", text, re.S)
    assert match, "the README lost its asyncio example"
    script = tmp_path / "asyncio_example.py"
    script.write_text(match.group(1))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=README.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "100 replies; first: ('hello', 0)"


class Sleeper(Actor):
    """Answers ``("sleep", s)`` after sleeping ``s`` seconds, anything else at once."""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, tuple) and message[0] == "sleep":
            time.sleep(message[1])
        return message


def test_every_kind_of_ref_satisfies_actor_ref_and_answers_ask_async(system: ActorSystem, remote: str) -> None:
    """Local, remote and process refs (what spawn_process and lookup return) all have the one face."""
    local = system.spawn(Echo, name="echo")
    far = system.ref(remote, "echo")
    spawned = system.spawn_process(Echo, name="spawned-echo")
    found = system.lookup("spawned-echo")
    refs = [local, far, spawned, found]
    assert [type(r).__name__ for r in refs] == ["LocalRef", "RemoteRef", "ProcessRef", "ProcessRef"]
    for ref in refs:
        assert isinstance(ref, ActorRef), f"{ref!r} does not satisfy ActorRef"

    async def main() -> list:
        return list(await asyncio.gather(*(ref.ask_async((n, i), timeout=10) for n, ref in enumerate(refs) for i in range(20))))

    assert asyncio.run(main()) == [(n, i) for n in range(len(refs)) for i in range(20)]


def test_ask_async_to_a_process_that_dies_fails_with_process_died(system: ActorSystem) -> None:
    """An ask_async in flight when its process is killed fails at once, as a blocking ask does."""
    sleeper = system.spawn_process(Sleeper, name="sleeper")
    assert sleeper.ask("up?", timeout=10) == "up?"
    pid = sleeper.pid()
    assert pid is not None

    async def main() -> BaseException | None:
        task = asyncio.ensure_future(sleeper.ask_async(("sleep", 60.0), timeout=30.0))
        await asyncio.sleep(0)  # the task runs up to its first await: the ask is sent and recorded
        os.kill(pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(task, 10.0)
        except BaseException as exc:
            return exc
        return None

    t0 = time.monotonic()
    error = asyncio.run(main())
    assert isinstance(error, ProcessDied), repr(error)
    assert time.monotonic() - t0 < 10.0  # the death ended it, not the ask's 30 s timeout
