"""``zactor top`` against a running ``zactor kv cluster``: the table, the live view in tmux, the Prometheus endpoint."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import ActorSystem
from actors.testing import Echo
from tests.helpers import free_port, wait_until
from tests.processes import ROOT, running, zactor

pytestmark = pytest.mark.slow  # a real three-server cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    root = Path(tempfile.mkdtemp(prefix="top-"))
    endpoints = ",".join(f"ipc://{root}/s{i}.sock" for i in range(3))
    try:
        with running("kv", "cluster", "--servers", "3", "--endpoints", endpoints, "--data-dir", str(root / "data"),
                     "--for", "300") as lines:
            lines.wait_for("leader: server", 60)
            for i in range(5):
                assert zactor("kv", "put", "--servers", endpoints, f"k{i}", "v", timeout=60).returncode == 0
            yield endpoints
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _table(endpoints: str) -> list[list[str]]:
    out = zactor("top", "--nodes", endpoints, "--once", "--interval", "0.5", timeout=60)
    assert out.returncode == 0, out.stderr
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.stdout.splitlines() if line.startswith("│")]


def test_once_shows_every_actor_with_its_figures_and_the_raft_roles(cluster: str) -> None:
    rows = _table(cluster)
    assert {(r[0], r[2]) for r in rows} == {(ep, actor) for ep in cluster.split(",") for actor in ("kvraft", "raft")}
    for _node, pid, actor, cls, mailbox, rate, handled, p99, restarts, _raft in rows:
        assert pid.isdigit() and mailbox.isdigit() and restarts == "0"
        assert int(handled) > 0 and float(p99) > 0, (actor, handled, p99)  # handling a message takes time
        assert rate.isdigit() and (actor != "raft" or int(rate) > 0), (actor, rate)  # heartbeats never stop
        assert cls == {"kvraft": "KVRaftServer", "raft": "RaftPeer"}[actor]
    roles = [r[9].split()[0] for r in rows if r[2] == "raft"]
    assert sorted(roles) == ["follower", "follower", "leader"], roles
    # Five puts and the leader's no-op or more are committed and applied everywhere the leader says.
    leader = next(r[9] for r in rows if r[9].startswith("leader"))
    fields = dict(part.split("=") for part in leader.split()[1:])
    assert int(fields["commit"]) >= 5 and int(fields["applied"]) >= 5, leader


def test_a_node_that_does_not_answer_is_shown_down_not_an_error() -> None:
    gone = f"ipc://{tempfile.gettempdir()}/top-nobody-{uuid.uuid4().hex}.sock"
    rows = _table(gone)
    assert rows == [[gone, "-", "(no answer)", "", "", "", "", "", "", ""]]


def test_an_embedded_system_shows_its_own_actors() -> None:
    with ActorSystem() as system:
        echo = system.spawn(Echo, name="echo")
        for _ in range(3):
            echo.ask("hi")
        rows = _table(system.endpoint)
        assert [(r[2], r[3], r[6]) for r in rows] == [("echo", "Echo", "3")]


def test_live_view_in_tmux_refreshes(cluster: str) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    session = f"zactor-top-{uuid.uuid4().hex[:8]}"
    # The pane's own size, not a COLUMNS the test runner may have inherited.
    command = f"cd {ROOT} && env -u COLUMNS -u LINES {sys.executable} -m apps.cli top --nodes {cluster} --for 60"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "220", "-y", "30", command], check=True, timeout=10)
    try:
        def capture() -> str:
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, timeout=10).stdout

        assert wait_until(lambda: "leader t=" in capture(), timeout=30), capture()
        first = next(line for line in capture().splitlines() if "zactor top" in line)
        assert wait_until(lambda: first not in capture(), timeout=10), "the view did not refresh"  # its clock moved on
        screen = capture()
        assert screen.count("RaftPeer") == 3 and screen.count("KVRaftServer") == 3, screen
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=10)


def test_metrics_endpoint_serves_the_same_figures(cluster: str) -> None:
    port = free_port()
    with running("top", "--nodes", cluster, "--metrics-port", str(port), "--headless", "--for", "120") as lines:
        lines.wait_for("metrics: http://127.0.0.1:", 30)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith("zactor_")}
    eps = cluster.split(",")
    assert all(samples[f'zactor_node_up{{node="{ep}"}}'] == 1.0 for ep in eps), body
    assert sum(samples[f'zactor_raft_is_leader{{node="{ep}"}}'] for ep in eps) == 1.0, body
    assert all(samples[f'zactor_actor_handled_total{{actor="raft",node="{ep}"}}'] > 0 for ep in eps), body
    assert all(samples[f'zactor_raft_applied_index{{node="{ep}"}}'] >= 5 for ep in eps), body


def test_bad_flags_are_usage_errors() -> None:
    for args, message in ((["--nodes", "localhost:1"], "is not an endpoint"),
                          (["--nodes", "ipc:///tmp/x.sock", "--headless"], "--headless needs --metrics-port"),
                          (["--nodes", "ipc:///tmp/x.sock", "--interval", "0"], "--interval must be positive")):
        out = zactor("top", *args)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)


def test_the_refused_metric_adds_every_kind_of_refusal() -> None:
    """A client key's code, a revoked key's frames and a non-reader's cut-off requests are refusals too."""
    from apps.top.metrics import NodesCollector
    from apps.top.sample import NodeLook

    counters = {"received": 9, "rejected": 1, "malformed": 2, "unknown_actor": 4, "dropped_full": 8, "refused": 16,
                "revoked": 32, "cut_off": 64, "closed": 1000, "accept_failed": 1000}

    class OneNode:
        def look(self) -> list[NodeLook]:
            return [NodeLook("tcp://127.0.0.1:1", {"counters": counters, "actors": []})]

    families = {f.name: f for f in NodesCollector(OneNode()).collect()}  # type: ignore[arg-type]
    assert [s.value for s in families["zactor_node_refused"].samples] == [127]
