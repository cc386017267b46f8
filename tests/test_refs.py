"""One ref face and one future type: the ActorRef protocol, ReplyFuture's get/map/join, asyncio."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from actors import ActorRef, ActorSystem, AskTimeout, ReplyFuture
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
