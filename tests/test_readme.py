"""Every code block of README.md run exactly as written, in a fresh directory, as a reader would paste it.

Shell blocks (``sh`` or untagged) run under ``bash -e`` with the installed ``zactor`` on the PATH; Python
blocks run as a script; JSON blocks must be what they claim (a history line ``zactor check`` reads). A
block that cannot run here says why in an HTML comment on the line before it, ``<!-- not run: REASON -->``
(a server that runs until Ctrl-C, a second machine, a half-hour install); the reasons are checked to be
there, and most name the test that covers the block some other way. Every block runs in a session of its
own, bounded in time, and the whole session is killed after it, so a server a block starts in the
background (``&``) does not outlive it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from apps.linearizability.history import parse_line

README = Path(__file__).resolve().parent.parent / "README.md"
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->")
EXPECTED = {
    "class Greeter": "hello, you",
    "asyncio.gather": "100 replies; first: ('hello', 0)",
    "greeting hello": "hello",
    "zactor mr sample-data": "",
}
"""What a block prints, for the blocks whose output the README states (found by a phrase of the block)."""


@dataclass
class Block:
    line: int
    lang: str
    body: str
    not_run: str | None

    @property
    def id(self) -> str:
        return f"line{self.line}-{self.lang or 'untagged'}"


def blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start = i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = lines[start - 1] if start else ""
        reason = NOT_RUN.search(before)
        out.append(Block(start + 1, m[1], "\n".join(lines[start + 1 : end]) + "\n", reason[1] if reason else None))
        i = end + 1
    return out


ALL = blocks()


def test_the_readme_has_blocks_of_each_kind_and_most_run():
    kinds = {b.lang for b in ALL if b.not_run is None}
    assert {"sh", "python", "json"} <= kinds
    assert sum(b.not_run is None for b in ALL) >= 6


@pytest.mark.parametrize("block", [b for b in ALL if b.not_run is not None], ids=lambda b: b.id)
def test_a_block_not_run_says_why(block: Block):
    assert len(block.not_run or "") > 15  # a reason, not a bare marker


def _run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` until it exits (not until what it left in the background closes its output), then kill its session."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(cwd / ".stdout", "w+") as out, open(cwd / ".stderr", "w+") as err:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err, text=True, start_new_session=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # what the block left running in the background
            except ProcessLookupError:
                pass
            proc.wait(10)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(argv, proc.returncode, out.read(), err.read())
    if proc.returncode == -signal.SIGKILL:
        pytest.fail(f"still running after {timeout} s: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return done


@pytest.mark.slow
@pytest.mark.parametrize("block", [b for b in ALL if b.not_run is None and b.lang != "json"], ids=lambda b: b.id)
def test_a_readme_block_runs_as_written(block: Block, tmp_path: Path):
    if block.lang == "python":
        script = tmp_path / "example.py"
        script.write_text(block.body)
        done = _run([sys.executable, str(script)], tmp_path, timeout=120)
    else:
        assert block.lang in ("sh", ""), f"a {block.lang} block: run it here, or say why not"
        done = _run(["bash", "-e", "-c", block.body], tmp_path, timeout=120)
    assert done.returncode == 0, f"{block.body}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    for phrase, output in EXPECTED.items():
        if phrase in block.body:
            assert output in done.stdout, done.stdout


@pytest.mark.parametrize("block", [b for b in ALL if b.not_run is None and b.lang == "json"], ids=lambda b: b.id)
def test_a_readme_json_block_is_a_history_line(block: Block):
    for line in block.body.splitlines():
        json.loads(line)
        op = parse_line(line)
        assert op.ret is not None and op.ret >= op.call
