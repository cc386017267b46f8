"""The report of a soak run: ``report.html`` for a person, ``summary.json`` for scripts.

The charts are plotly's (an optional extra, ``pip install 'zactor[soak]'``):
one self-contained page, zoomable, which matters on a ten-hour run.
Throughput and latency per second share a time axis with the nemesis
intervals drawn as bands; per-fault counts; each checked window's verdict;
and for a window found not linearizable, the checker's own time line of the
keys that failed (``apps.linearizability.render_html``), linked and embedded.
"""

from __future__ import annotations

import html
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from apps.linearizability import KVModel, check, render_html
from apps.soak.verdict import EXIT_NAMES, INTERRUPTED, Findings

log = logging.getLogger(__name__)

_COLORS = {"kill": "#d62728", "pause": "#9467bd", "partition": "#ff7f0e", "net": "#17becf", "disk": "#8c564b",
           "burst": "#e377c2", "vote": "#bcbd22", "stale": "#7f7f7f", "reconfig": "#2ca02c"}


def require_plotly() -> Any:
    """plotly, or a RuntimeError that says how to get it."""
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise RuntimeError("the soak report needs plotly: pip install 'zactor[soak]' (or pip install plotly)") from None
    return go


def write(config: Any, findings: Findings, extra: dict[str, Any], code: int, started: float) -> tuple[Path, Path]:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    series = extra.pop("samples").series(extra.get("seconds", config.seconds))
    per_window = extra.get("window_throughputs", [])
    summary = {
        "system": config.system,
        "verdict": EXIT_NAMES[code],
        "exit_code": code,
        "seed": config.seed,
        "replay": config.command,
        "broken_variant": config.broken or None,
        "minutes": config.seconds / 60.0,
        "nemeses": list(config.nemeses),
        "clients": config.clients,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "answered": sum(series["ok"]),
        "throughput": extra.get("throughput"),
        "interrupted": code == INTERRUPTED,
        "throughput_window": config.throughput_window,
        "min_window_throughput": min(per_window) if per_window else None,
        "min_throughput_required": config.min_throughput,
        "violations": findings.violations,
        "invalid": findings.invalid,
        "fault_counts": dict(Counter(f"{e['kind']}/{e['variant']}" for e in extra.get("events", []))),
        **{k: v for k, v in extra.items() if k not in ("throughput",)},
    }
    json_path = out / "summary.json"
    json_path.write_text(json.dumps(summary, indent=1, default=str))
    violation_pages = _violation_pages(findings, out)
    html_path = out / "report.html"
    html_path.write_text(_page(config, summary, series, violation_pages))
    return html_path, json_path


def _violation_pages(findings: Findings, out: Path) -> list[str]:
    """The checker's time line of each failing window, restricted to the keys that failed."""
    pages = []
    for number, history, result in findings.illegal[:3]:
        keys = {op.input["key"] for p in result.illegal for op in p.ops}
        part = [op for op in history if op.input["key"] in keys]
        again = check(part, KVModel(), timeout=30.0)
        name = f"violation-window-{number}.html"
        render_html(part, KVModel(), again, out / name)
        pages.append(name)
    return pages


WINDOWED = ("kvraft", "etcd", "shardkv")
"""The systems whose history is checked window by window (the others have their own checks)."""

CLEAN = {
    "kvraft": "no violation found: every checked window of the history linearizable, every acknowledged append "
              "present once and in order, every server applied the same command at each index all through the run, "
              "every replica's state the same after the final heal",
    "etcd": "no violation found: every checked window of the history linearizable, every acknowledged append "
            "present once and in order, every member's key space the same after the final heal",
    "shardkv": "no violation found: every checked window of the history linearizable, every acknowledged append "
               "present once and in order while shards moved between groups, every group in the latest configuration "
               "with its shards, and the replicas of each group and of the controller the same after the final heal",
    "raft": "no violation found: every peer applied the same command at each index, in order, and every "
            "acknowledged command is still at its index on every peer after the final heal",
    "mr": "no violation found: every job's output equal to the sequential word count's, line for line, "
          "while its workers were being killed (on namespace hosts, also cut off, or on lossy links)",
}
"""What a clean run of each system showed, in that system's own terms."""


def _clean_words(config: Any, summary: dict[str, Any]) -> str:
    if summary.get("interrupted"):
        return (f"{summary.get('stopped_early', 'interrupted')}: no violation in what was recorded until then "
                "(the final reads after the heal were skipped)")
    return CLEAN[config.system]


def _cell(value: Any) -> str:
    """A value of the summary as a person reads it: lists and mappings as text, not JSON."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(f"({_cell(v)})" if isinstance(v, list | tuple) else _cell(v) for v in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _page(config: Any, summary: dict[str, Any], series: dict[str, list[float]], violation_pages: list[str]) -> str:
    go = require_plotly()
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=("answered calls per second", "latency per second (ms)"))
    fig.add_trace(go.Scatter(x=series["t"], y=series["ok"], name="answered", mode="lines", line={"color": "#1f77b4"}), row=1, col=1)
    fig.add_trace(go.Scatter(x=series["t"], y=series["failed"], name="gave up", mode="lines", line={"color": "#d62728"}), row=1, col=1)
    fig.add_trace(go.Scatter(x=series["t"], y=series["p50"], name="p50", mode="lines", line={"color": "#2ca02c"}), row=2, col=1)
    fig.add_trace(go.Scatter(x=series["t"], y=series["p99"], name="p99", mode="lines", line={"color": "#ff7f0e"}), row=2, col=1)
    fig.update_yaxes(type="log", row=2, col=1)
    seen: set[str] = set()
    for e in summary.get("events", []):
        end = e["healed"] if e["healed"] is not None else e["started"] + e["duration"]
        color = _COLORS.get(e["kind"], "#7f7f7f")
        fig.add_vrect(x0=e["started"], x1=end, fillcolor=color, opacity=0.18, line_width=0, row="all", col=1)
        fig.add_trace(go.Scatter(
            x=[(e["started"] + end) / 2], y=[0], mode="markers", marker={"color": color, "size": 8, "symbol": "triangle-up"},
            name=e["kind"], legendgroup=e["kind"], showlegend=e["kind"] not in seen,
            hovertext=f"{e['kind']}/{e['variant']} on {e['hit']} {e['note']} {e['error']}", hoverinfo="text"), row=1, col=1)
        seen.add(e["kind"])
    fig.update_layout(height=620, margin={"l": 60, "r": 20, "t": 40, "b": 40}, xaxis2_title="seconds since start",
                      legend={"orientation": "h", "y": -0.12})
    counts = summary.get("fault_counts", {})
    bars = go.Figure(go.Bar(x=list(counts), y=list(counts.values()),
                            marker_color=[_COLORS.get(k.split("/")[0], "#7f7f7f") for k in counts]))
    bars.update_layout(title="faults inflicted, by nemesis and variant", height=320, margin={"l": 60, "r": 20, "t": 50, "b": 80})
    verdict = summary["verdict"]
    color = {"pass": "#2ca02c", "violation": "#d62728", "invalid": "#ff7f0e", "interrupted": "#7f7f7f"}[verdict]
    rows = "".join(
        f"<tr><td>{w['number']}</td><td>{w['ops']}</td><td>{w['verdict']}</td><td>{w['seconds']}</td>"
        f"<td>{html.escape(', '.join(w['illegal_keys'] + w['undecided_keys']))}</td></tr>"
        for w in summary.get("windows", [])
    )
    windows = (f"<h2>Checked windows</h2><table><tr><th>window</th><th>calls</th><th>verdict</th><th>check s</th>"
               f"<th>keys</th></tr>{rows}</table>") if config.system in WINDOWED else ""
    jobs = "".join(
        f"<tr><td>{j['job']}</td><td>{'ok' if j['ok'] else 'FAILED'}</td><td>{j['seconds']}</td><td>{html.escape(j['note'])}</td></tr>"
        for j in summary.get("jobs") or []
    )
    if jobs:
        windows += f"<h2>Jobs</h2><table><tr><th>job</th><th>output</th><th>seconds</th><th>note</th></tr>{jobs}</table>"
    faults = "".join(
        f"<tr><td>{e['offset']}</td><td>{e['started']}</td><td>{e['kind']}/{e['variant']}</td><td>{e['hit']}</td>"
        f"<td>{e['duration']}</td><td>{html.escape(e['note'] + ' ' + e['error'])}</td></tr>"
        for e in summary.get("events", [])
    )
    problems = "".join(f"<li class=bad>{html.escape(v)}</li>" for v in summary["violations"])
    problems += "".join(f"<li class=warn>{html.escape(v)}</li>" for v in summary["invalid"])
    timelines = "".join(
        f'<p><a href="{p}">{p}</a> (the checker\'s time line of the keys that failed)</p>'
        f'<iframe src="{p}" style="width:100%;height:520px;border:1px solid #ccc"></iframe>' for p in violation_pages
    )
    facts = {k: summary.get(k) for k in ("seed", "minutes", "nemeses", "clients", "answered", "throughput", "min_window_throughput",
                                         "min_throughput_required", "final_reads", "corrupt_journals", "errors", "error_kinds",
                                         "acknowledged", "checked_commands", "final_index", "final_check", "worker_kills",
                                         "replicas", "state_machine_safety", "final_heal", "broken_variant", "stopped_early",
                                         "started_at", "hosts", "host_layout", "packet_faults", "after_partition")}
    facts_html = "".join(f"<tr><th>{k}</th><td>{html.escape(_cell(v))}</td></tr>"
                         for k, v in facts.items() if v is not None)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>zactor soak {config.system}: {verdict}</title>
<style>body{{font-family:sans-serif;margin:20px;max-width:1400px}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ddd;padding:2px 8px;text-align:left}} .bad{{color:#d62728}} .warn{{color:#b35900}}
code{{background:#f4f4f4;padding:4px}} h1 span{{color:{color}}}</style></head><body>
<h1>zactor soak {config.system}: <span>{verdict.upper()}</span></h1>
<p>Replay: <code>{html.escape(config.command)}</code></p>
<ul>{problems or f"<li>{html.escape(_clean_words(config, summary))}</li>"}</ul>
{fig.to_html(full_html=False, include_plotlyjs="inline")}
{bars.to_html(full_html=False, include_plotlyjs=False)}
{timelines}
<h2>Run</h2><table>{facts_html}</table>
{windows}
<h2>Faults</h2><table><tr><th>scheduled at</th><th>started</th><th>fault</th><th>hit</th><th>duration</th><th>note</th></tr>{faults}</table>
</body></html>
"""
