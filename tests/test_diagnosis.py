"""Why nothing answered: each cause a client can observe is named, with its fix, within 2 s (not at the timeout).

Real processes throughout: a KV server (`zactor kv serve`) or a Raft-KV
cluster (`zactor kv cluster`) in children, and a clerk here whose keyring,
security mode or endpoint is the one a user got wrong. Each test asserts the
sentence the user reads and how soon it comes; the clerk's own timeout is
10 s, so an answer within 2 s can only come from the diagnosis.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import ActorSystem
from actors.errors import NoNodeAgent, NoSuchActor, Unreachable
from actors.testing import Echo
from apps import kvraft
from apps.kvsrv.client import Clerk, KVMisdirected, KVUnavailable
from tests.helpers import free_port, wait_until
from tests.processes import Processes, listening, running, zactor
from transport.keys import SecurityWarning, init_keyring, resolve_keyring
from transport.once import OncePerCause
from transport.probe import LinkState

WITHIN = 2.0
"""Seconds within which an observable cause must be reported (the clerk's timeout is 10 s)."""


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path, limit=30)
    try:
        yield p
    finally:
        p.kill_all()


def kv_server(procs: Processes, *security: str) -> str:
    """A `zactor kv serve` on a free loopback port; its endpoint once it listens."""
    return listening(procs.start(*security, "kv", "serve", "--endpoint", f"tcp://127.0.0.1:{free_port()}"))


def timed_get(clerk: Clerk) -> tuple[Exception, float]:
    """The error a clerk's get ends in, and the seconds it took."""
    t0 = time.monotonic()
    with pytest.raises(KVUnavailable) as caught:
        clerk.get("k")
    return caught.value, time.monotonic() - t0


def other_keyring(tmp_path: Path, *, knows_server: bool) -> Path:
    """A second machine's keyring; ``knows_server``: it has the server's key for 127.0.0.1 (but the server not its)."""
    ring = init_keyring(tmp_path / "other-keys")
    if knows_server:
        assert zactor("keys", "add", "server", resolve_keyring().public.decode(), "--host", "127.0.0.1",
                      "--role", "member", "--keys", str(ring)).returncode == 0
    return ring


# ---- a peer that answers for other names ------------------------------------


def test_an_ask_for_a_name_a_node_does_not_host_fails_at_once_naming_node_and_what_it_hosts(remote: str, system: ActorSystem) -> None:
    t0 = time.monotonic()
    with pytest.raises(NoSuchActor) as caught:
        system.ref(remote, "nobody").ask("hello?", timeout=10.0)
    assert time.monotonic() - t0 < WITHIN
    err = caught.value
    assert (err.name, err.node) == ("nobody", remote)
    assert {"echo", "collector"} <= set(err.hosted)
    assert f"no actor named 'nobody' on {remote}; it hosts " in str(err) and "'echo'" in str(err)


def test_the_node_logs_asks_for_an_unknown_name_once_not_per_message(system: ActorSystem, caplog: pytest.LogCaptureFixture) -> None:
    with ActorSystem() as client, caplog.at_level(logging.WARNING, logger="actors.wire"):
        for _ in range(5):
            with pytest.raises(NoSuchActor):
                client.ref(system.endpoint, "ghost").ask("x", timeout=5.0)
    lines = [r.getMessage() for r in caplog.records if "'ghost'" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "which this node does not host" in lines[0]
    assert system.node.counters.snapshot()["unknown_actor"] == 5


@pytest.mark.slow
def test_a_kv_clerk_at_a_raft_kv_node_is_told_so_within_2s() -> None:
    ports = [free_port() for _ in range(3)]
    endpoints = [f"tcp://127.0.0.1:{p}" for p in ports]
    with running("kv", "cluster", "--servers", "3", "--endpoints", ",".join(endpoints)) as out:
        out.wait_for("servers:", timeout=60)
        with ActorSystem() as system:
            assert wait_until(lambda: system.probe(endpoints[0]).ok, 60)  # server 0 is up and serving
            t0 = time.monotonic()
            with pytest.raises(KVMisdirected) as caught:
                Clerk(endpoints[0], system=system, give_up_after=10.0).get("k")
            assert time.monotonic() - t0 < WITHIN
        assert "kvraft" in caught.value.hosted
        assert f"{endpoints[0]} is not a KV server" in str(caught.value)
        cli = zactor("kv", "get", "--server", endpoints[0], "k", timeout=30)
        assert cli.returncode == 1
        assert "is not a KV server" in cli.stderr and "replicated KV cluster" in cli.stderr
        assert "--servers" in cli.stderr, cli.stderr


# ---- what the socket monitor tells ---------------------------------------------


def test_nothing_listening_is_named_within_2s_with_the_command_that_starts_a_server() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with ActorSystem() as system:
        err, took = timed_get(Clerk(endpoint, system=system, give_up_after=10.0, unreachable_after=0.5))
    assert took < WITHIN
    assert f"nothing is listening at {endpoint}" in str(err)
    assert f"zactor kv serve --endpoint {endpoint}" in str(err)
    cli = zactor("kv", "get", "--server", endpoint, "k", "--timeout", "3", timeout=30)
    assert cli.returncode == 1 and f"nothing is listening at {endpoint}" in cli.stderr, cli.stderr
    note, failure = cli.stderr.strip().splitlines()[-2:]
    assert note.endswith("waiting up to 2 s for it") and f"nothing is listening at {endpoint}" in note, cli.stderr
    assert failure.startswith("zactor kv get: no answer from the KV server") and "zactor kv serve --endpoint" in failure


def test_a_clerk_says_at_once_why_it_waits_and_gets_its_answer_from_a_server_that_starts(procs: Processes) -> None:
    """A cluster just started in the background (the README's three commands) is not there for a moment: the
    command says so at once, and its call is answered once the server listens."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    notes: list[str] = []
    answers: list[str] = []
    with ActorSystem() as system:
        clerk = Clerk(endpoint, system=system, give_up_after=60.0, unreachable_after=60.0, tell_waiting=notes.append)
        caller = threading.Thread(target=lambda: answers.append(clerk.get("k")), daemon=True)
        t0 = time.monotonic()
        caller.start()
        assert wait_until(lambda: notes, WITHIN), "no word of why the clerk waits"
        assert time.monotonic() - t0 < WITHIN and f"nothing is listening at {endpoint}" in notes[0]
        procs.start("kv", "serve", "--endpoint", endpoint)
        caller.join(60)
    assert answers == [""] and len(notes) == 1
    with running("kv", "put", "--server", endpoint, "k", "v") as out:  # and the command, now the server is up
        assert out.proc.wait(30) == 0


def test_a_patient_clerk_waits_for_a_server_that_starts_late(procs: Processes) -> None:
    """Nothing listening is not final for a clerk without unreachable_after: the server may be starting."""
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    with ActorSystem() as system:
        clerk = Clerk(endpoint, system=system, give_up_after=30.0)
        assert system.probe(endpoint).state is LinkState.NOTHING_LISTENING
        procs.start("kv", "serve", "--endpoint", endpoint)
        assert clerk.get("k") == ""


def test_a_key_the_server_refuses_is_named_within_2s_with_keys_add(procs: Processes, tmp_path: Path) -> None:
    endpoint = kv_server(procs)
    ring = other_keyring(tmp_path, knows_server=True)
    with ActorSystem(keys=ring) as system:
        assert system.probe(endpoint).state is LinkState.KEY_REFUSED
        err, took = timed_get(Clerk(endpoint, system=system, give_up_after=10.0))
    assert took < WITHIN
    assert f"the node at {endpoint} refused this machine's key" in str(err)
    assert "zactor keys add" in str(err)
    cli = zactor("--keys", str(ring), "kv", "get", "--server", endpoint, "k", timeout=30)
    assert cli.returncode == 1 and "refused this machine's key" in cli.stderr, cli.stderr


def test_a_server_on_another_keyring_is_named_within_2s(procs: Processes, tmp_path: Path) -> None:
    endpoint = kv_server(procs)
    with ActorSystem(keys=other_keyring(tmp_path, knows_server=False)) as system:
        err, took = timed_get(Clerk(endpoint, system=system, give_up_after=10.0))
    assert took < WITHIN
    assert "uses another keyring" in str(err) and "--keys DIR" in str(err) and "zactor keys add" in str(err)


def test_an_insecure_client_against_a_secure_server_is_told_within_2s(procs: Processes) -> None:
    endpoint = kv_server(procs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        with ActorSystem(secure=False) as system:
            err, took = timed_get(Clerk(endpoint, system=system, give_up_after=10.0))
    assert took < WITHIN
    assert f"the node at {endpoint} requires CURVE security and this side runs with --insecure" in str(err)


def test_a_secure_client_against_an_insecure_server_is_told_within_2s(procs: Processes) -> None:
    endpoint = kv_server(procs, "--insecure")
    with ActorSystem() as system:
        err, took = timed_get(Clerk(endpoint, system=system, give_up_after=10.0))
    assert took < WITHIN
    assert f"the node at {endpoint} runs without security (--insecure)" in str(err)


def test_a_reachable_server_probes_ok_and_the_clerk_gets_its_answer(procs: Processes) -> None:
    endpoint = kv_server(procs)
    with ActorSystem() as system:
        assert system.probe(endpoint).ok
        assert Clerk(endpoint, system=system, give_up_after=10.0).get("k") == ""




def test_a_replicated_clerk_where_nothing_listens_is_told_within_2s() -> None:
    endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(3)]
    with ActorSystem() as system:
        clerk = kvraft.Clerk(endpoints, system=system, give_up_after=10.0, unreachable_after=0.5)
        t0 = time.monotonic()
        with pytest.raises(KVUnavailable) as caught:
            clerk.get("k")
        assert time.monotonic() - t0 < WITHIN
    assert all(f"nothing is listening at {ep}" in str(caught.value) for ep in endpoints)
    assert "zactor kv cluster" in str(caught.value)


def test_a_replicated_clerk_at_a_single_kv_server_is_told_so_within_2s(procs: Processes) -> None:
    endpoint = kv_server(procs)
    with ActorSystem() as system:
        clerk = kvraft.Clerk([endpoint], system=system, give_up_after=10.0)
        t0 = time.monotonic()
        with pytest.raises(KVMisdirected) as caught:
            clerk.get("k")
        assert time.monotonic() - t0 < WITHIN
    assert caught.value.hosted == ("kv",)
    assert f"{endpoint}: not a replicated KV server" in str(caught.value)
    assert "`zactor kv get --server`" in str(caught.value)


def test_a_replicated_clerk_whose_key_every_server_refuses_is_told_within_2s(procs: Processes, tmp_path: Path) -> None:
    endpoint = kv_server(procs)
    with ActorSystem(keys=other_keyring(tmp_path, knows_server=True)) as system:
        clerk = kvraft.Clerk([endpoint], system=system, give_up_after=10.0, unreachable_after=0.5)
        t0 = time.monotonic()
        with pytest.raises(KVUnavailable, match="refused this machine's key"):
            clerk.get("k")
        assert time.monotonic() - t0 < WITHIN


# ---- spawn_process(node=...) ------------------------------------------------------


def test_spawn_process_where_no_agent_runs_names_the_address_and_the_command_within_2s(system: ActorSystem) -> None:
    node = f"tcp://127.0.0.2:{free_port('127.0.0.2')}"
    t0 = time.monotonic()
    with pytest.raises(Unreachable) as caught:
        system.spawn_process(Echo, node=node, timeout=10.0)
    assert time.monotonic() - t0 < WITHIN
    assert caught.value.state is LinkState.NOTHING_LISTENING
    assert f"nothing is listening at {node}" in str(caught.value)
    assert f"zactor node --endpoint {node}" in str(caught.value)


def test_spawn_process_at_a_node_that_runs_no_agent_says_what_runs_there(system: ActorSystem, remote: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(NoNodeAgent) as caught:
        system.spawn_process(Echo, node=remote, timeout=10.0)
    assert time.monotonic() - t0 < WITHIN
    text = str(caught.value)
    assert f"no node agent at {remote}" in text and "'echo'" in text and f"zactor node --endpoint {remote}" in text


# ---- warnings at the default level, once per cause ---------------------------------


def json_lines(text: str) -> list[dict]:
    """The JSON log records among a command's stderr lines (other lines are its own prints)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_server_warns_once_per_cause_at_the_default_level_in_json(procs: Processes, tmp_path: Path) -> None:
    proc = procs.start("--log-format", "json", "kv", "serve", "--endpoint", f"tcp://127.0.0.1:{free_port()}")
    endpoint = listening(proc)
    ring = other_keyring(tmp_path, knows_server=True)
    for _ in range(2):  # two clients, each refused on its connection and its probe
        with ActorSystem(keys=ring) as stranger:
            timed_get(Clerk(endpoint, system=stranger, give_up_after=10.0))
    with ActorSystem() as member:
        for _ in range(3):
            with pytest.raises(NoSuchActor):
                member.ref(endpoint, "ghost").ask("x", timeout=5.0)
        counters = member.control(endpoint).counters()
    assert counters["rejected"] >= 4 and counters["unknown_actor"] == 3
    proc.terminate()
    assert proc.stderr is not None
    records = json_lines(proc.stderr.read().decode())
    refused = [r for r in records if "refused a connection" in r["message"]]
    ghost = [r for r in records if "'ghost'" in r["message"]]
    assert len(refused) == 1 and refused[0]["level"] == "WARNING", records
    assert "is not in the keyring" in refused[0]["message"]
    assert len(ghost) == 1 and ghost[0]["level"] == "WARNING", records
    assert {"time", "logger", "process"} <= set(ghost[0])


@pytest.mark.slow
def test_a_restart_is_a_warning_at_the_default_level() -> None:
    endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(3)]
    with running("--log-format", "json", "kv", "cluster", "--servers", "3", "--endpoints", ",".join(endpoints)) as out:
        line = out.wait_for("server 1:", timeout=60)
        pid = int(re.search(r"pid (\d+)", line).group(1))  # type: ignore[union-attr]
        out.wait_for("leader: server", timeout=60)
        os.kill(pid, signal.SIGKILL)
        restart = out.wait_for("restarting", timeout=30)
    record = json.loads(restart)
    assert record["level"] == "WARNING" and str(pid) in record["message"]


@pytest.mark.slow
def test_the_server_processes_of_a_cluster_log_in_the_format_the_command_was_given() -> None:
    """The servers are children started from the fork server, which does not inherit the command's logging:
    their warnings must still be JSON lines at the command's level, not bare text."""
    endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(3)]
    with running("--log-format", "json", "kv", "cluster", "--servers", "3", "--endpoints", ",".join(endpoints)) as out:
        out.wait_for("leader: server", timeout=60)
        with ActorSystem() as member, pytest.raises(NoSuchActor):
            member.ref(endpoints[1], "ghost").ask("x", timeout=5.0)
        line = out.wait_for("'ghost'", timeout=30)
        record = json.loads(line)
        assert record["level"] == "WARNING" and record["process"] != out.proc.pid, record
        assert {"time", "logger", "message"} <= set(record)


def test_an_unknown_log_format_is_refused_clearly() -> None:
    cli = zactor("--log-format", "xml", "kv", "get", "--server", "tcp://127.0.0.1:1", "k")
    assert cli.returncode == 2 and "--log-format takes text or json, not 'xml'" in cli.stderr


def test_once_per_cause_logs_a_cause_once_then_a_summary_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.once")
    quiet = OncePerCause(logger, every=3600.0)
    with caplog.at_level(logging.WARNING, logger="tests.once"):
        assert quiet.warn("a", "cause %s", "a") and quiet.warn("b", "cause %s", "b")
        assert not any(quiet.warn("a", "cause %s", "a") for _ in range(4))
        assert quiet.repeats("a") == 4 and quiet.repeats("b") == 0
        summary = OncePerCause(logger, every=0.0)  # every repeat is due a line: the summary's wording
        summary.warn("c", "cause %s", "c")
        summary.warn("c", "cause %s", "c")
    assert [r.getMessage() for r in caplog.records] == ["cause a", "cause b", "cause c", "cause c (again; 1 more like it in the last 0 s)"]
    bounded = OncePerCause(logger, every=3600.0, max_causes=2)
    for cause in ("x", "y", "z"):
        bounded.warn(cause, "cause")
    assert bounded.repeats("x") == 0 and bounded.warn("x", "cause")  # forgotten (the oldest), so logged again
