"""The small things a new user meets in the first hour: --version, --keys everywhere, help per action,
positionals that say what they are, and a Raft cluster whose pids are printed so its elections can be provoked."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.processes import zactor

ROOT = Path(__file__).parent.parent


def test_version_comes_from_the_package_metadata() -> None:
    out = zactor("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"zactor {importlib.metadata.version('zactor')}"


def test_every_keys_subcommand_takes_keys_dir(tmp_path: Path) -> None:
    ring = tmp_path / "ring"
    init = zactor("keys", "init", "--keys", str(ring))
    assert init.returncode == 0, init.stderr
    public = init.stdout.strip()
    assert (ring / "secret.key").exists() or list(ring.iterdir())
    assert zactor("keys", "show", "--keys", str(ring)).stdout.strip() == public
    other = zactor("keys", "init", "--keys", str(tmp_path / "other")).stdout.strip()
    assert zactor("keys", "add", "b", other, "--host", "10.0.0.2", "--keys", str(ring)).returncode == 0
    listed = zactor("keys", "list", "--keys", str(ring))
    assert f"self {public}" in listed.stdout and f"b {other} client 10.0.0.2" in listed.stdout
    assert zactor("keys", "revoke", "b", "--keys", str(ring)).returncode == 0
    assert "b " not in zactor("keys", "list", "--keys", str(ring)).stdout.split("\n", 2)[2]
    clash = zactor("keys", "init", str(tmp_path / "a"), "--keys", str(tmp_path / "b"))
    assert clash.returncode == 2 and "two different keyrings" in clash.stderr


def test_an_action_has_help_of_its_own() -> None:
    out = zactor("node", "list", "--help")
    assert out.returncode == 0 and out.stdout.startswith("usage: zactor node list")
    assert "--node" in out.stdout and "--endpoint" not in out.stdout  # list's options only
    serve = zactor("node", "serve", "--help")
    assert "--endpoint" in serve.stdout and "--node" not in serve.stdout
    assert zactor("node", "--help").stdout.count("serve") >= 2  # the overview names both actions


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


@pytest.mark.parametrize("module", ["apps.keys_cli", "apps.node_cli", "apps.raft.cli", "apps.kvsrv.cli",
                                    "apps.mapreduce.cli", "apps.linearizability.cli", "apps.soak.cli"])
def test_every_positional_argument_says_what_it_is(module: str) -> None:
    build = importlib.import_module(module).build_parser
    bare = [
        f"{p.prog} {a.dest}"
        for p in _parsers(build())
        for a in p._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction) and a.help is None
    ]
    assert bare == []


def test_raft_cluster_prints_pids_commits_and_an_election_follows_a_kill() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "apps.cli", "raft", "cluster", "--peers", "3", "--for", "60"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()

    def until(pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            seen.append(line)
            m = re.search(pattern, line)
            if m:
                return m
        pytest.fail(f"no line matching {pattern!r} within {timeout} s: {''.join(seen)}")

    try:
        pids = {int(m[1]): int(m[2]) for m in (until(r"peer (\d): pid (\d+)") for _ in range(3))}
        leader = until(r"leader (\d)  term (\d+)  commit index [1-9]")  # the new leader's no-op is committed
        old, term = int(leader[1]), int(leader[2])
        os.kill(pids[old], signal.SIGKILL)
        restarted = until(rf"peer {old} started again: pid (\d+)")
        assert int(restarted[1]) != pids[old]
        while True:  # a leader in a later term: the election the kill caused
            m = until(r"leader (\d)  term (\d+)  commit index (\d+)")
            if int(m[2]) > term:
                break
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.mark.parametrize("action", ["members", "remove 1", "add --endpoint tcp://127.0.0.1:7009", "replace 1 --endpoint tcp://127.0.0.1:7009"])
def test_keys_given_before_a_cluster_action_is_kept(action: str) -> None:
    """``--keys`` (and ``--insecure``) belong to ``kv cluster`` and to each of its actions; given before the action they must not be lost."""
    from apps.kvsrv.cli import build_parser

    parser = build_parser()
    tail = [*action.split(), "--servers", "tcp://127.0.0.1:7001"]
    before = parser.parse_args(["cluster", "--keys", "/ring", "--insecure", *tail])
    after = parser.parse_args(["cluster", *tail, "--keys", "/ring", "--insecure"])
    neither = parser.parse_args(["cluster", *tail])
    assert (before.keys, before.insecure) == (after.keys, after.insecure) == ("/ring", True)
    assert (neither.keys, neither.insecure) == (None, False)
