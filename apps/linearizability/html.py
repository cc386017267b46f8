"""A self-contained HTML page of a history: one time line per client, per partition.

Operations are bars from call to return (to the right edge if they never
returned), labelled by the model. In a partition that is not linearizable,
the longest linearizable prefix is green and numbered in its order, with the
model state after each step on hover, and the operations that cannot be
placed next are red. No network, no scripts beyond a few lines inline.
"""

from __future__ import annotations

import html
from pathlib import Path

from apps.linearizability.checker import CheckResult, Verdict
from apps.linearizability.history import Operation
from apps.linearizability.model import UNKNOWN, Model

_STYLE = """
body { font: 13px/1.4 system-ui, sans-serif; margin: 20px; color: #222; }
h1 { font-size: 18px; } h2 { font-size: 15px; margin-top: 28px; }
.ok { color: #1a7f37; } .illegal { color: #cf222e; } .unknown { color: #9a6700; }
.lane { position: relative; height: 26px; border-bottom: 1px solid #eee; }
.who { position: absolute; left: 0; width: 90px; top: 5px; color: #666; }
.track { position: absolute; left: 100px; right: 10px; top: 0; bottom: 0; }
.op { position: absolute; top: 4px; height: 18px; border-radius: 3px; background: #d0d7de; overflow: hidden;
      white-space: nowrap; font-size: 11px; padding: 0 3px; box-sizing: border-box; cursor: default; }
.op.lin { background: #aceebb; } .op.stuck { background: #ffcecb; outline: 2px solid #cf222e; }
.op.open { background: repeating-linear-gradient(45deg, #d0d7de, #d0d7de 6px, #eaeef2 6px, #eaeef2 12px); }
.scroll { overflow-x: auto; } .inner { min-width: 900px; }
table { border-collapse: collapse; margin-top: 8px; } td { padding: 2px 8px; border-bottom: 1px solid #eee; }
"""


def render_html(history: list[Operation], model: Model, result: CheckResult, path: str | Path) -> Path:
    """Write the page to ``path``; returns it."""
    parts = []
    ends = [op.ret for op in history if op.ret is not None] + [op.call for op in history]
    t0, t1 = (min(ends), max(ends)) if ends else (0, 1)
    span = max(1, t1 - t0)
    for part in result.partitions:
        parts.append(_partition(part, model, t0, span))
    css_class = {Verdict.OK: "ok", Verdict.ILLEGAL: "illegal", Verdict.UNKNOWN: "unknown"}[result.verdict]
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>history: {result.verdict.value}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>History of {len(history)} operations: <span class='{css_class}'>{result.verdict.value}</span></h1>"
        f"<p>Time runs left to right over {span / 1e6:.1f} ms. Hover an operation for details. "
        "Green: the longest linearizable prefix (numbered in order). Red: cannot be placed next. "
        "Striped: never returned.</p>" + "".join(parts) + "</body></html>"
    )
    out = Path(path)
    out.write_text(page, encoding="utf-8")
    return out


def _partition(part, model: Model, t0: int, span: int) -> str:
    order = {op_index: n for n, op_index in enumerate(part.longest)}
    stuck = set(part.stuck) if part.verdict == Verdict.ILLEGAL else set()
    states = part.states
    clients = sorted({op.client for op in part.ops})
    lanes = []
    for client in clients:
        bars = []
        for i, op in enumerate(part.ops):
            if op.client != client:
                continue
            left = (op.call - t0) / span * 100
            right = 100.0 if op.ret is None else (op.ret - t0) / span * 100
            width = max(right - left, 0.3)
            classes = ["op"]
            label = model.describe_operation(op.input, UNKNOWN if op.ret is None else op.output)
            tip = [label, f"call {(op.call - t0) / 1e6:.3f} ms", "never returned" if op.ret is None else f"return {(op.ret - t0) / 1e6:.3f} ms"]
            if op.ret is None:
                classes.append("open")
            if part.verdict == Verdict.ILLEGAL and i in order:
                classes.append("lin")
                n = order[i]
                tip.append(f"linearized #{n + 1}; state after: {model.describe_state(states[n])}" if n < len(states) else f"linearized #{n + 1}")
                label = f"#{n + 1} {label}"
            if i in stuck:
                classes.append("stuck")
                tip.append("cannot be placed after the green prefix")
            bars.append(
                f"<div class='{' '.join(classes)}' style='left:{left:.3f}%;width:{width:.3f}%' "
                f"title='{html.escape(chr(10).join(tip), quote=True)}'>{html.escape(label)}</div>"
            )
        lanes.append(f"<div class='lane'><div class='who'>client {client}</div><div class='track'>{''.join(bars)}</div></div>")
    css_class = {Verdict.OK: "ok", Verdict.ILLEGAL: "illegal", Verdict.UNKNOWN: "unknown"}[part.verdict]
    detail = ""
    if part.verdict == Verdict.ILLEGAL:
        rows = "".join(
            f"<tr><td>#{n + 1}</td><td>{html.escape(model.describe_operation(part.ops[i].input, part.ops[i].output))}</td>"
            f"<td>{html.escape(model.describe_state(states[n])) if n < len(states) else ''}</td></tr>"
            for n, i in enumerate(part.longest)
        )
        blocked = "".join(f"<li>{html.escape(model.describe_operation(part.ops[i].input, part.ops[i].output))}</li>" for i in sorted(stuck))
        detail = (
            f"<p>Longest linearizable prefix ({len(part.longest)} of {len(part.ops)}) and the state after each step:</p>"
            f"<table>{rows}</table><p>Cannot be placed next:</p><ul>{blocked}</ul>"
        )
    return (
        f"<h2>{html.escape(part.name)}: <span class='{css_class}'>{part.verdict.value}</span> "
        f"({len(part.ops)} operations)</h2><div class='scroll'><div class='inner'>{''.join(lanes)}</div></div>{detail}"
    )
