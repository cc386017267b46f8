"""What ``zactor soak`` prints and writes: each system's report in its own words, tables rather than JSON,
one status-line format, and no traceback for a damaged journal that is refused as it must be."""

from __future__ import annotations

import html
import io
import re
from pathlib import Path

import pytest

from apps.soak.run import SoakConfig, Status, status_line
from apps.soak.verdict import Findings
from apps.soak.workload import PerSecond, Sample
from tests.processes import soak_run

ROOT = Path(__file__).parent.parent
pytest.importorskip("plotly")  # the report's charts: the soak extra


def _write(tmp_path: Path, system: str, extra: dict) -> str:
    from apps.soak import report

    config = SoakConfig(system, 5.0, 1, ("kill",), 2, tmp_path / system, 0.0, command=f"zactor soak {system}")
    samples = PerSecond()
    samples.add(Sample(1.0, 0.5, True, "job"))
    report.write(config, Findings(), {"seconds": 5.0, "samples": samples, "events": [], "windows": [], **extra}, 0, 0.0)
    return html.unescape((tmp_path / system / "report.html").read_text())


def _run_table(page: str) -> str:
    return page[page.index("<h2>Run</h2>") :].split("</table>", 1)[0]


def test_the_mr_report_speaks_of_jobs_in_tables_not_json(tmp_path):
    jobs = [{"job": 1, "ok": True, "seconds": 2.5, "note": "1 worker restarts"}, {"job": 2, "ok": True, "seconds": 1.9, "note": ""}]
    page = _write(tmp_path, "mr", {"jobs": jobs, "worker_kills": 3})
    assert "every job's output equal to the sequential word count's" in page
    assert "Checked windows" not in page and "linearizable" not in page  # no kvraft wording, no empty windows table
    assert "<h2>Jobs</h2>" in page and "<td>2.5</td>" in page and "1 worker restarts" in page
    run = _run_table(page)
    assert "worker_kills</th><td>3</td>" in run
    assert "{" not in run and "[" not in run and '"' not in run  # no raw JSON


def test_the_raft_report_speaks_of_commands(tmp_path):
    page = _write(tmp_path, "raft", {"acknowledged": 40, "checked_commands": 40, "final_index": 52,
                                      "corrupt_journals": {"refused": 2, "loaded": 0, "skipped": 1}})
    assert "every acknowledged command is still at its index on every peer" in page
    assert "Checked windows" not in page and "linearizable" not in page
    run = _run_table(page)
    assert "corrupt_journals</th><td>refused 2, loaded 0, skipped 1</td>" in run and "{" not in run


def test_one_status_line_format_for_every_system():
    findings = Findings()
    lines = {}
    for system, unit in (("kvraft", "calls"), ("raft", "commands"), ("mr", "jobs"), ("etcd", "calls")):
        config = SoakConfig(system, 60.0, 1, ("kill",), 1, Path("out"), 10.0)
        lines[system] = status_line(config, Status(config, stream=io.StringIO()), 30.0, 600, unit, 2, findings)
    shape = re.compile(r"^soak (\w+) running 00:30/01:00  (calls|commands|jobs) 600 \(20/s\)  faults 0  errors 2( {2}windows checked 0)?$")
    for system, line in lines.items():
        m = shape.match(line)
        assert m and m[1] == system, line
    assert "windows" in lines["kvraft"] and "windows" not in lines["mr"] and "windows" not in lines["raft"]


@pytest.mark.slow
def test_refused_damaged_journals_print_no_traceback_only_a_summary_line(tmp_path):
    code, summary, err = soak_run(tmp_path / "report", "kvraft", "--minutes", "0.4", "--seed", "6", "--nemesis", "disk",
                                  "--min-throughput", "10", timeout=150)
    assert code == 0, err[-3000:]
    refused = summary["corrupt_journals"]["refused"]
    assert refused > 0  # seed 6 flips a bit four times in 24 s
    assert "Traceback" not in err and "CorruptStateError:" not in err, err[-3000:]
    assert "refuses to start from damaged state" not in err, err[-3000:]  # not a line per server: one in all
    assert err.count("damaged journals: ") == 1 and f"damaged journals: {refused} refused at start as they must be" in err
