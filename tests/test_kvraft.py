"""The replicated KV service beyond the lab's scenarios: a leader SIGKILLed mid-stream, ReadIndex
safety in a minority, log-based reads, bad input, and ``zactor kv cluster`` as a user runs it."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from apps.kvraft import Clerk, KVUnavailable
from apps.kvraft.messages import Get, Request
from apps.kvraft.server import SERVER_NAME
from apps.kvraft.testing import KVCluster
from tests.helpers import generic, wait_until
from tests.processes import Lines, running, zactor


def test_leader_killed_mid_stream_every_acknowledged_append_is_there_exactly_once() -> None:
    with KVCluster(3) as cluster:
        cluster.make_clerk().put("s", "")
        stop = threading.Event()
        acked: dict[int, list[str]] = {c: [] for c in range(4)}

        def client(cid: int) -> None:
            ck = cluster.make_clerk()
            j = 0
            while not stop.is_set():
                item = f"[{cid}.{j}]"
                ck.append("s", item)
                acked[cid].append(item)  # acknowledged: it must be in the value, once
                j += 1

        threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(4)]
        for t in threads:
            t.start()
        assert wait_until(lambda: sum(map(len, acked.values())) >= 50, 10.0), "no appends before the crash"
        leader = cluster.wait_for_leader()
        before = sum(map(len, acked.values()))
        cluster.crash(leader)  # SIGKILL, in the middle of the stream
        assert wait_until(lambda: sum(map(len, acked.values())) >= before + 50, 15.0), "no progress after the leader died"
        cluster.restart(leader)
        mid = sum(map(len, acked.values()))
        assert wait_until(lambda: sum(map(len, acked.values())) >= mid + 50, 15.0), "no progress after the restart"
        stop.set()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive()
        value = cluster.make_clerk().get("s")
        for cid, items in acked.items():
            positions = [value.find(item) for item in items]
            for item in items:
                assert value.count(item) == 1, f"{item} appears {value.count(item)} times"
            assert positions == sorted(positions), f"client {cid}'s appends are out of order"
        assert len(value) == sum(len(i) for items in acked.values() for i in items), "an append nobody made is in the value"
        statuses = cluster.status_all()
        top = max(s.commit_index for s in statuses if s)
        assert wait_until(lambda: cluster.peer(leader).status().commit_index >= top, 10.0), "the restarted server did not catch up"
        cluster.check_linearizable()


@pytest.mark.parametrize("read", ["index", "log"])
@pytest.mark.slow
def test_a_deposed_leader_cut_off_in_a_minority_never_answers_a_get(read: str) -> None:
    with KVCluster(5, read=read) as cluster:
        ck = cluster.make_clerk()
        ck.put("k", "old")
        old_leader = cluster.wait_for_leader()
        others = [i for i in range(5) if i != old_leader]
        cluster.partition([[old_leader], others])
        majority = cluster.make_clerk(others)
        majority.put("k", "new")
        assert majority.get("k") == "new"
        stale = cluster.make_clerk([old_leader])
        answers: list[str] = []
        reader = threading.Thread(target=lambda: answers.append(stale.get("k")), daemon=True)
        reader.start()
        # Long enough for the server's wait limit to expire and the clerk to ask again, more than once.
        reader.join(timeout=5.0)
        assert not answers, f"the cut-off leader answered a Get with {answers[0]!r}"
        _term, is_leader = cluster.peer(old_leader).get_state()
        assert is_leader, "the old leader should still believe it leads (the dangerous case)"
        cluster.heal()
        cluster.connect_clerk(stale)
        reader.join(timeout=10.0)
        assert answers == ["new"]
        cluster.check_linearizable()


@pytest.mark.slow
def test_log_reads_stay_linearizable_under_partitions(tmp_path: Path) -> None:
    generic(tmp_path, 5, 5, partitions=True, read="log", rounds=1)


def test_bad_requests_get_a_clear_error_and_the_service_goes_on() -> None:
    with KVCluster(3) as cluster:
        ck = cluster.make_clerk(record=False)
        ck.put("k", "v")
        with pytest.raises(ValueError, match="key must be a string"):
            ck.put(5, "v")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="value must be a string"):
            ck.append("k", None)  # type: ignore[arg-type]
        for ep in cluster.endpoints:  # garbage straight at every server: a wrong type, a bad reply address
            ref = cluster._system.ref(ep, SERVER_NAME)
            ref.tell("not a request")
            ref.tell(Request(Get("k"), reply_to=12, corr="x"))  # type: ignore[arg-type]
            ref.tell(Request(Get("k"), reply_to="nonsense", corr=1))
        assert ck.get("k") == "v"
        for i in range(3):
            assert cluster._sup.status(f"peer-{i}") == "running"


def test_a_clerk_with_a_deadline_gives_up_with_a_clear_error() -> None:
    directory = tempfile.mkdtemp(prefix="kv-nobody-")
    try:
        ck = Clerk([f"ipc://{directory}/a.sock", f"ipc://{directory}/b.sock"], give_up_after=0.5)
        with pytest.raises(KVUnavailable, match=r"within 0\.5 s"):
            ck.get("k")
        with pytest.raises(ValueError):
            Clerk([])
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# ---- the command line --------------------------------------------------------------------------------


@pytest.fixture
def kv_cluster_cli() -> Iterator[tuple[str, Lines, Path]]:
    root = Path(tempfile.mkdtemp(prefix="kvcli-"))
    endpoints = ",".join(f"ipc://{root}/s{i}.sock" for i in range(3))
    try:
        with running("kv", "cluster", "--servers", "3", "--endpoints", endpoints, "--data-dir", str(root / "data"),
                     "--maxraftstate", "2000", "--for", "120") as lines:
            yield endpoints, lines, root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_cli_cluster_serves_put_and_get_and_a_killed_server_comes_back(kv_cluster_cli: tuple[str, Lines, Path]) -> None:
    endpoints, lines, root = kv_cluster_cli
    assert lines.wait_for("servers:", 30).split()[-1] == endpoints
    pids = [int(next(line for line in lines.seen if f"server {i}:" in line).split()[-1]) for i in range(3)]
    lines.wait_for("leader: server", 30)
    out = zactor("kv", "put", "--servers", endpoints, "greeting", "hello")
    assert out.returncode == 0, out.stderr
    out = zactor("kv", "append", "--servers", endpoints, "greeting", ", world")
    assert out.returncode == 0 and out.stdout.strip() == "hello", out
    os.kill(pids[0], signal.SIGKILL)
    lines.wait_for("server 0 restarted", 30)
    assert (root / "data" / "server-0").is_dir()
    out = zactor("kv", "get", "--servers", endpoints, "greeting")
    assert out.returncode == 0 and out.stdout.strip() == "hello, world", out
    for pid in pids[1:]:  # the others too, one after the other: the data survives every restart
        os.kill(pid, signal.SIGKILL)
    lines.wait_for("server 1 restarted", 30)
    lines.wait_for("server 2 restarted", 30)
    out = zactor("kv", "get", "--servers", endpoints, "greeting")
    assert out.returncode == 0 and out.stdout.strip() == "hello, world", out


@pytest.mark.parametrize(
    "args, message",
    [
        (["cluster", "--servers", "0"], "--servers must be at least 1"),
        (["cluster", "--maxraftstate", "0"], "--maxraftstate must be"),
        (["cluster", "--endpoints", "localhost:1"], "is not an endpoint"),
        (["cluster", "--servers", "2", "--endpoints", "ipc:///tmp/a,ipc:///tmp/b,ipc:///tmp/c"], "names 3 servers"),
        (["cluster", "--read", "lease"], "invalid choice"),
        (["get", "k"], "one of the arguments --server --servers --ctrler is required"),
        (["get", "--server", "tcp://127.0.0.1:1", "--servers", "tcp://127.0.0.1:1", "k"], "not allowed with"),
    ],
)
def test_cli_bad_flags_are_usage_errors(args: list[str], message: str) -> None:
    out = zactor("kv", *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_cli_get_against_nobody_fails_clearly() -> None:
    out = zactor("kv", "get", "--servers", "ipc:///tmp/kv-nobody-here.sock", "--timeout", "0.5", "k")
    assert out.returncode == 1 and "no answer from the KV service" in out.stderr, out.stderr
