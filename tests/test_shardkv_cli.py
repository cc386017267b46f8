"""``zactor shards``: the cluster command starts a controller and groups; join, move and query administer it, ``zactor kv --ctrler`` reads and writes."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import Lines, running, zactor


@pytest.fixture
def shards_cli() -> Iterator[tuple[Lines, Path]]:
    root = Path(tempfile.mkdtemp(prefix="shcli-"))
    try:
        with running("shards", "cluster", "--groups", "2", "--servers", "3", "--ipc", str(root),
                     "--data-dir", str(root / "data"), "--for", "180") as lines:
            yield lines, root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_cli_cluster_join_put_get_and_a_shard_moves_with_its_data(shards_cli: tuple[Lines, Path]) -> None:
    lines, root = shards_cli
    ctrler = lines.wait_for("ctrler:", 60).split()[-1]
    g100 = lines.wait_for("group 100:", 10).split()[-1]
    g101 = lines.wait_for("group 101:", 10).split()[-1]
    out = zactor("shards", "join", "--ctrler", ctrler, f"100={g100}", timeout=60)
    assert out.returncode == 0 and "shards: 100 100 100 100 100 100 100 100 100 100" in out.stdout, out
    out = zactor("kv", "put", "--ctrler", ctrler, "greeting", "hello", timeout=60)
    assert out.returncode == 0, out.stderr
    out = zactor("kv", "append", "--ctrler", ctrler, "greeting", ", world", timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "hello", out
    # "greeting" is in shard ord("g") % 10 = 3: move it to group 101, whose servers must get the data.
    out = zactor("shards", "join", "--ctrler", ctrler, f"101={g101}", timeout=60)
    assert out.returncode == 0 and "group 101:" in out.stdout, out
    out = zactor("shards", "move", "--ctrler", ctrler, "3", "101", timeout=60)
    assert out.returncode == 0, out.stderr
    out = zactor("shards", "query", "--ctrler", ctrler, timeout=60)
    assert out.returncode == 0 and out.stdout.split("\n")[1].split()[1 + 3] == "101", out.stdout
    out = zactor("kv", "get", "--ctrler", ctrler, "greeting", timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "hello, world", out
    assert (root / "data" / "group-101" / "server-0").is_dir()


@pytest.mark.parametrize(
    "args, message",
    [
        (["cluster", "--groups", "0"], "--groups and --servers must be at least 1"),
        (["cluster", "--maxraftstate", "0"], "--maxraftstate must be"),
        (["join", "--ctrler", "ipc:///tmp/nobody.sock", "abc"], "is not GID=EP"),
        (["query", "--ctrler", "localhost:1"], "is not an endpoint"),
        (["get", "--ctrler", "ipc:///tmp/nobody.sock", "k"], "invalid choice: 'get'"),
    ],
)
def test_cli_bad_flags_are_usage_errors(args: list[str], message: str) -> None:
    out = zactor("shards", *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_cli_against_no_controller_fails_clearly() -> None:
    out = zactor("shards", "query", "--ctrler", "ipc:///tmp/shards-nobody-here.sock", "--timeout", "0.5")
    assert out.returncode == 1 and "no answer" in out.stderr, out.stderr
    out = zactor("kv", "get", "--ctrler", "ipc:///tmp/shards-nobody-here.sock", "--timeout", "0.5", "k")
    assert out.returncode == 1 and "zactor kv get:" in out.stderr and "no answer" in out.stderr, out.stderr


def test_kv_takes_one_kind_of_address() -> None:
    out = zactor("kv", "get", "--ctrler", "ipc:///tmp/a.sock", "--servers", "ipc:///tmp/b.sock", "k")
    assert out.returncode == 2 and "not allowed with argument" in out.stderr, out.stderr


@pytest.mark.slow
def test_bench_shardkv_json_measures_every_group_count_at_both_loads_beside_lab_4_and_a_move() -> None:
    out = zactor("bench", "shardkv", "--json", "--clients", "2", "--clients-per-group", "1", "--idle-seconds", "0.2",
                 "--seconds", "0.3", "--rounds", "1", "--procs", "1", "--move-keys", "20", timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert [(r["load"], r["groups"], r["op"]) for r in result["rows"]] == [
        (load, g, op) for g in (1, 2, 3) for load in ("total", "per_group") for op in ("put", "get")]
    for row in result["rows"]:
        assert row["shardkv_ops"] > 0 and row["kvraft_ops"] > 0, row
        assert row["shardkv_server_cpu_us_per_op"] > 0 and row["kvraft_server_cpu_us_per_op"] > 0, row
        assert row["shardkv_idle_cpu_ms_per_s"] > 0 and row["kvraft_idle_cpu_ms_per_s"] > 0, row
        # Equal load per group: G clients on G groups, and as many on as many lab-4 groups, so every Raft group's batches match.
        want = (2, 2, 1) if row["load"] == "total" else (row["groups"], row["groups"], row["groups"])
        assert (row["clients"], row["kvraft_clients"], row["kvraft_groups"]) == want, row
    assert set(result["ratios"]) == {"total", "per_group"} and all(
        ratio > 0 for by_op in result["ratios"].values() for by_system in by_op.values() for ratio in by_system.values()
    ), result["ratios"]
    assert result["move"]["keys"] == 20 and result["move"]["shard_data_bytes"] > 0


def test_the_benchs_lab_4_groups_share_the_keys_as_the_controller_shares_the_shards() -> None:
    """The control for the sharded service (``kvraft-groups``) puts each shard on the group that the controller
    gives it after the groups join one at a time, as the bench joins them: the same load on each group."""
    from apps.shardctrler.messages import Join
    from apps.shardctrler.state import CtrlerState
    from apps.shardkv.messages import key2shard
    from benchmarks.shardkv_client import StaticGroupsClerk, spread

    state = CtrlerState()
    for seq, gid in enumerate((1, 2, 3), start=1):
        state.apply(Join({gid: (f"tcp://g{gid}",)}, 7, seq))
    clerk = StaticGroupsClerk([["ipc:///tmp/zactor-a"], ["ipc:///tmp/zactor-b"], ["ipc:///tmp/zactor-c"]])
    assert clerk.owner == state.query(-1).shards
    assert sorted(clerk.owner.count(g) for g in (1, 2, 3)) == [3, 3, 4]
    assert {key2shard(spread(f"bench-{w}-{t}")) for w in range(4) for t in range(12)} == set(range(10))
