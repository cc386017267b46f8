"""`zactor bench kvraft`: a short real run of all three systems, its JSON rows, and that it leaves no process behind.

The run happens in a child interpreter that makes itself a child subreaper
(prctl), so any process the benchmark started and lost track of is
re-parented to it rather than to init; after the run it lists every
descendant still alive. The child runs in its own process group, which the
test kills whatever happens, so a failing run cannot leak etcd or servers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks import BENCHMARKS

ROOT = Path(__file__).resolve().parent.parent

RUN_AND_LIST_LEFTOVERS = textwrap.dedent(
    """
    import ctypes, json, os, sys, time

    PR_SET_CHILD_SUBREAPER = 36
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")

    from benchmarks import kvraft

    result = kvraft.run(clients=(1, 2), seconds=0.4, warmup=0.1, trials=1, rounds=2, procs=2, appends=20)

    def processes():
        table = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            table[int(entry)] = (int(ppid), state, cmdline)
        return table

    def leftovers():
        # Python's own helpers (the fork server and the resource tracker) live as
        # long as this interpreter does; everything else below us must be gone.
        table = processes()
        mine, found = {os.getpid()}, True
        while found:
            found = False
            for pid, (ppid, state, cmdline) in table.items():
                if ppid in mine and pid not in mine:
                    mine.add(pid)
                    found = True
        return sorted(
            f"{pid} {table[pid][2][:200]}"
            for pid in mine - {os.getpid()}
            if table[pid][1] != "Z"
            and "multiprocessing.forkserver" not in table[pid][2]
            and "multiprocessing.resource_tracker" not in table[pid][2]
        )

    deadline = time.monotonic() + 10
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(0.2)
    print(json.dumps({"result": result, "leftovers": left}))
    """
)


@pytest.fixture(scope="module")
def short_run() -> dict:
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_AND_LIST_LEFTOVERS],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=150)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
    assert proc.returncode == 0, f"benchmark run failed:\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


SYSTEMS = ("zactor", "etcd", "pysyncobj")


def test_kvraft_is_part_of_plain_bench() -> None:
    assert BENCHMARKS["kvraft"] == "benchmarks.kvraft"


@pytest.mark.slow
def test_every_system_served_every_measurement(short_run: dict) -> None:
    rows = short_run["result"]["rows"]
    assert [(r["op"], r["value_bytes"], r["clients"]) for r in rows] == [
        (op, size, n) for n in (1, 2) for op, size in (("put", 10), ("put", 1000), ("get", 10))
    ]
    for row in rows:
        for system in SYSTEMS:
            assert row[f"{system}_ops_per_s"] > 0, (system, row)
            assert 0 < row[f"{system}_p50_ms"] <= row[f"{system}_p99_ms"], (system, row)
            # CPU is counted in the servers' and the clients' processes while they work.
            assert row[f"{system}_server_cpu_us_per_op"] > 0 and row[f"{system}_client_cpu_us_per_op"] > 0, (system, row)
            assert isinstance(row[f"{system}_retries"], int) and row[f"{system}_retries"] >= 0
        assert row["ratio_vs_etcd"] == round(row["zactor_ops_per_s"] / row["etcd_ops_per_s"], 2)
        assert row["ratio_vs_pysyncobj"] == round(row["zactor_ops_per_s"] / row["pysyncobj_ops_per_s"], 2)
        assert len(row["trial_ratios_vs_etcd"]) == 1
        if row["op"] == "get":  # the extra cluster whose Gets go through the Raft log
            assert row["zactor_log_read_ops_per_s"] > 0
            assert 0 < row["zactor_log_read_p50_ms"] <= row["zactor_log_read_p99_ms"]


@pytest.mark.slow
def test_speed_scenario_figure_is_measured(short_run: dict) -> None:
    appends = short_run["result"]["appends"]
    # The driver checks afterwards that the key holds exactly `count` bytes.
    assert appends["count"] == 20
    assert appends["avg_ms"] > 0
    assert appends["target_ms"] == 3.0


@pytest.mark.slow
def test_report_states_durability_and_reads(short_run: dict) -> None:
    from benchmarks.kvraft import report

    text = report(short_run["result"])
    assert "never fsync'd" in text and "fsync'd by the leader and a majority" in text
    assert "not linearizable" in text
    assert "speed scenario: 20 sequential appends" in text


@pytest.mark.slow
def test_no_process_outlives_the_run(short_run: dict) -> None:
    assert short_run["leftovers"] == []


def test_bad_flag_is_a_clear_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.kvraft", "--clients", "1,x"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "--clients must be comma-separated integers" in proc.stderr


def test_an_etcd_member_that_cannot_start_is_a_clear_error_and_the_others_are_stopped(tmp_path: Path) -> None:
    import socket

    from apps.etcd.cluster import EtcdCluster

    cluster = EtcdCluster(str(tmp_path))
    with socket.socket() as squatter:  # member 1's client port is taken
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(cluster.endpoints[1])
        squatter.listen()
        with pytest.raises(RuntimeError, match=r"etcd member 1 exited .*address already in use"):
            with cluster:
                pass
    assert cluster.procs and all(p.poll() is not None for p in cluster.procs)


def test_etcd_client_sends_a_request_again_after_a_5xx_and_counts_it() -> None:
    import http.server
    import threading

    from apps.etcd.cluster import EtcdClient

    answers = [503, 503, 200]

    class Gateway(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            status = answers.pop(0)
            body = b'{"error":"etcdserver: leader changed"}' if status != 200 else b'{"header":{}}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = EtcdClient(*server.server_address, timeout=5.0, retry_for=5.0)
        client.put("k", "v")
        assert client.retries == 2 and answers == []
        answers.append(400)  # a client error is not retried
        with pytest.raises(RuntimeError, match="HTTP 400"):
            client.get("k")
        assert client.retries == 2
        client.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
