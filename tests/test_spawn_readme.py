"""The README's "Embedding zactor in your application" example, run exactly as printed, against a node agent."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _section() -> str:
    text = README.read_text()
    start = text.index("## Embedding zactor in your application")
    return text[start : text.index("\n## ", start + 1)]


@pytest.mark.slow
def test_readme_embedding_example_runs_as_printed(node: tuple[str, Path], tmp_path: Path) -> None:
    endpoint, _ = node
    section = _section()
    program = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shell = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    expected = shell.split("$ python counter_demo.py tcp://127.0.0.2:7070\n")[1].split("$ ")[0]
    script = tmp_path / "counter_demo.py"
    script.write_text(program)
    out = subprocess.run([sys.executable, str(script), endpoint], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == expected
    assert (tmp_path / "counter-here" / "count").exists()
    listed = subprocess.run([sys.executable, "-m", "apps.cli", "node", "list", "--node", endpoint], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    row = listed.stdout.splitlines()[1].split()
    assert row[0] == "there" and row[1] == "running" and row[3] == "1" and "(cloudpickle)" in row
    stop_line = next(line for line in shell.splitlines() if line.startswith("$ zactor node stop"))
    stopped = subprocess.run([sys.executable, "-m", "apps.cli", *stop_line.split()[2:-1], endpoint],
                             capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0 and stopped.stdout == shell.split(stop_line + "\n")[1].split("\n")[0].replace(
        "tcp://127.0.0.2:7070", endpoint) + "\n", stopped
    again = subprocess.run([sys.executable, str(script), endpoint], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr  # "there" is gone, so a second run can place it again
