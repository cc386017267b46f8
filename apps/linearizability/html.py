"""One self-contained HTML page of a checked history, for the person debugging a failure.

Each part of the history (each key, for the KV model) gets a time line with
one lane per client and one bar per operation, from its call to its return
(striped to the end if it never returned), labelled by the model. Parts that
are not linearizable come first and open: the longest linearizable prefix is
green and numbered in its order, the operations that cannot be placed after
it are red, and a table gives the model state after each step of the prefix.
Hovering a bar shows its times, its place in the order and the state after
it.

The time axis is by default *event order*: every distinct call or return
time is one step, so bursts and idle stretches take the same room and
thousands of operations stay readable (real time is a switch away). The
page needs no network: the data is embedded as JSON and drawn by inline
script; a summary of the verdict is plain HTML, readable without script.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apps.linearizability.checker import CheckResult, PartitionResult, Verdict
from apps.linearizability.history import Operation
from apps.linearizability.model import NO_REPLY, Model

__all__ = ["render_html"]

_CSS_CLASS = {Verdict.OK: "ok", Verdict.ILLEGAL: "illegal", Verdict.UNKNOWN: "unknown"}

_STYLE = """
:root { --lane: 22px; --label: 96px; }
body { font: 13px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 16px 20px; color: #1f2328; }
h1 { font-size: 19px; margin: 0 0 6px; } h2 { font-size: 15px; display: inline; }
.ok { color: #1a7f37; } .illegal { color: #cf222e; } .unknown { color: #9a6700; }
.summary td, .summary th { padding: 2px 10px 2px 0; text-align: left; vertical-align: top; }
.summary th { font-weight: 600; color: #57606a; }
.controls { position: sticky; top: 0; background: #fff; padding: 6px 0; border-bottom: 1px solid #d0d7de; z-index: 5; }
.controls label { margin-right: 16px; }
.legend span { display: inline-block; padding: 0 6px; margin-right: 6px; border-radius: 3px; font-size: 11px; }
details.part { margin: 14px 0; border: 1px solid #d0d7de; border-radius: 6px; padding: 6px 10px; }
details.part > summary { cursor: pointer; }
.meta { color: #57606a; margin-left: 8px; }
.timeline { overflow-x: auto; position: relative; margin-top: 8px; border-top: 1px solid #eaeef2; }
.canvas { position: relative; }
.ruler { position: relative; height: 18px; color: #57606a; font-size: 10px; }
.tick { position: absolute; top: 0; border-left: 1px solid #d0d7de; padding-left: 2px; height: 100%; white-space: nowrap; }
.lane { position: relative; height: var(--lane); border-bottom: 1px solid #f0f2f4; }
.who { position: sticky; left: 0; width: var(--label); height: var(--lane); line-height: var(--lane); background: #fff;
       color: #57606a; z-index: 2; display: inline-block; font-size: 12px; border-right: 1px solid #eaeef2; }
.op { position: absolute; top: 3px; height: calc(var(--lane) - 6px); line-height: calc(var(--lane) - 6px);
      border-radius: 3px; background: #ddf4ff; border: 1px solid #54aeff; box-sizing: border-box; overflow: hidden;
      white-space: nowrap; text-overflow: ellipsis; font-size: 11px; padding: 0 3px; cursor: default; }
.op.lin { background: #dafbe1; border-color: #4ac26b; }
.op.stuck { background: #ffebe9; border: 2px solid #cf222e; font-weight: 600; z-index: 1; }
.op.open { background-image: repeating-linear-gradient(45deg, transparent 0 6px, rgba(0,0,0,.07) 6px 12px);
           border-right-style: dashed; }
.op.focus { outline: 3px solid #8250df; z-index: 3; }
#tip { position: fixed; display: none; max-width: 520px; background: #fff; border: 1px solid #8c959f; border-radius: 6px;
       box-shadow: 0 4px 14px rgba(0,0,0,.15); padding: 8px 10px; z-index: 10; pointer-events: none; font-size: 12px; }
#tip b { font-family: ui-monospace, monospace; font-weight: 600; }
#tip .row { color: #57606a; }
.mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
table.prefix { border-collapse: collapse; margin: 6px 0; }
table.prefix td, table.prefix th { padding: 1px 10px 1px 0; text-align: left; border-bottom: 1px solid #f0f2f4; }
table.prefix tr.stuck td { color: #cf222e; font-weight: 600; }
table.prefix tr:hover td { background: #f6f8fa; cursor: pointer; }
button { font: inherit; }
.op-open-sample { background-image: repeating-linear-gradient(45deg, transparent 0 6px, rgba(0,0,0,.1) 6px 12px);
                  border: 1px dashed #54aeff; }
"""

_SCRIPT = r"""
(function () {
  const data = JSON.parse(document.getElementById('history-data').textContent);
  const tip = document.getElementById('tip');
  const zoom = document.getElementById('zoom');
  const axis = document.getElementById('axis');
  const onlyBad = document.getElementById('only-bad');
  const esc = s => String(s).replace(/[&<>"']/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));
  const ms = ns => Math.abs(ns) < 1e3 ? ns.toFixed(0) + ' ns' : Math.abs(ns) < 1e6 ? (ns / 1e3).toFixed(1) + ' µs'
                                                            : (ns / 1e6).toFixed(3) + ' ms';
  const LABEL = 96;
  // Op fields: [client, call, ret or null, description, place in prefix or -1, stuck 0/1, state after or null]
  const C = 0, CALL = 1, RET = 2, DESC = 3, ORDER = 4, STUCK = 5, STATE = 6;

  function layout(part) {
    const times = [];
    for (const op of part.ops) { times.push(op[CALL]); if (op[RET] !== null) times.push(op[RET]); }
    const uniq = Array.from(new Set(times)).sort((a, b) => a - b);
    const unit = Number(zoom.value);
    const end = (uniq.length + 2) * unit;
    if (axis.value === 'real') {
      const lo = uniq[0], hi = uniq[uniq.length - 1];
      const scale = (uniq.length * unit) / Math.max(1, hi - lo);
      return {x: t => t === null ? end : (t - lo) * scale, end, uniq, unit};
    }
    const rank = new Map(uniq.map((t, k) => [t, k]));
    return {x: t => t === null ? end : rank.get(t) * unit, end, uniq, unit};
  }

  function draw(p) {
    const part = data.parts[p];
    const box = document.getElementById('timeline-' + p);
    const L = layout(part);
    const html = [];
    const width = L.end + LABEL + 60;
    html.push('<div class="canvas" style="width:' + width + 'px">');
    html.push('<div class="ruler">');
    const every = Math.max(1, Math.ceil(110 / L.unit));
    if (axis.value === 'real') {
      const lo = L.uniq[0], hi = L.uniq[L.uniq.length - 1];
      const n = Math.max(1, Math.floor(L.end / 110));
      for (let k = 0; k <= n; k++) {
        const t = lo + (hi - lo) * k / n;
        html.push('<div class="tick" style="left:' + (LABEL + L.x(t)) + 'px">' + ms(t) + '</div>');
      }
    } else {
      for (let k = 0; k < L.uniq.length; k += every) {
        html.push('<div class="tick" style="left:' + (LABEL + k * L.unit) + 'px">' + ms(L.uniq[k]) + '</div>');
      }
    }
    html.push('</div>');
    const byClient = new Map(part.clients.map(c => [c, []]));
    part.ops.forEach((op, i) => byClient.get(op[C]).push(i));
    for (const [client, idx] of byClient) {
      html.push('<div class="lane"><span class="who">client ' + esc(client) + '</span>');
      for (const i of idx) {
        const op = part.ops[i];
        const left = LABEL + L.x(op[CALL]);
        const w = Math.max(4, L.x(op[RET]) - L.x(op[CALL]) + (op[RET] === null ? 0 : 2));
        const cls = ['op'];
        let label = op[DESC];
        if (part.marked && op[ORDER] >= 0) { cls.push('lin'); label = '#' + (op[ORDER] + 1) + ' ' + label; }
        if (op[STUCK]) cls.push('stuck');
        if (op[RET] === null) cls.push('open');
        html.push('<div id="op-' + p + '-' + i + '" class="' + cls.join(' ') + '" data-p="' + p + '" data-i="' + i +
                  '" style="left:' + left + 'px;width:' + w + 'px">' + esc(label) + '</div>');
      }
      html.push('</div>');
    }
    html.push('</div>');
    box.innerHTML = html.join('');
    box.dataset.drawn = '1';
  }

  function redrawOpen() {
    document.querySelectorAll('details.part').forEach(d => {
      const p = Number(d.dataset.p);
      d.style.display = (onlyBad.checked && data.parts[p].verdict === 'ok') ? 'none' : '';
      if (d.open) draw(p); else document.getElementById('timeline-' + p).dataset.drawn = '';
    });
  }

  function describe(p, i) {
    const part = data.parts[p], op = part.ops[i];
    const rows = ['<b>' + esc(op[DESC]) + '</b>', '<div class="row">client ' + esc(op[C]) + ' &middot; ' + esc(part.name) + '</div>',
                  '<div class="row">called at ' + ms(op[CALL]) + ', ' +
                  (op[RET] === null ? 'never returned: may take effect any time after its call, or never'
                                    : 'returned at ' + ms(op[RET]) + ' (' + ms(op[RET] - op[CALL]) + ')') + '</div>'];
    if (op[ORDER] >= 0) {
      const what = part.verdict === 'ok' ? 'takes effect ' : 'in the longest linearizable prefix, ';
      rows.push('<div>' + what + '#' + (op[ORDER] + 1) + ' of ' + part.prefixLength + '; state after: <span class="mono">' +
                esc(op[STATE]) + '</span></div>');
    }
    if (op[STUCK]) rows.push('<div class="illegal">cannot be placed after the prefix: the model refuses it in state <span class="mono">' +
                             esc(part.final) + '</span></div>');
    else if (part.verdict === 'illegal' && op[ORDER] < 0) rows.push('<div class="row">not reached by the longest prefix</div>');
    return rows.join('');
  }

  document.addEventListener('mouseover', e => {
    const el = e.target.closest && e.target.closest('.op');
    if (!el) { tip.style.display = 'none'; return; }
    tip.innerHTML = describe(Number(el.dataset.p), Number(el.dataset.i));
    tip.style.display = 'block';
  });
  document.addEventListener('mousemove', e => {
    if (tip.style.display !== 'block') return;
    const pad = 14, w = tip.offsetWidth, h = tip.offsetHeight;
    tip.style.left = Math.min(e.clientX + pad, window.innerWidth - w - 4) + 'px';
    tip.style.top = (e.clientY + pad + h > window.innerHeight ? e.clientY - h - pad : e.clientY + pad) + 'px';
  });
  document.addEventListener('click', e => {
    const row = e.target.closest && e.target.closest('[data-goto]');
    if (!row) return;
    const [p, i] = row.dataset.goto.split('-');
    const d = document.querySelector('details.part[data-p="' + p + '"]');
    if (!d.open) { d.open = true; }
    if (!document.getElementById('timeline-' + p).dataset.drawn) draw(Number(p));
    document.querySelectorAll('.op.focus').forEach(x => x.classList.remove('focus'));
    const el = document.getElementById('op-' + p + '-' + i);
    el.classList.add('focus');
    el.scrollIntoView({block: 'center', inline: 'center', behavior: 'smooth'});
  });
  document.querySelectorAll('details.part').forEach(d => d.addEventListener('toggle', () => {
    const p = Number(d.dataset.p);
    if (d.open && !document.getElementById('timeline-' + p).dataset.drawn) draw(p);
  }));
  document.querySelectorAll('button.more').forEach(b => b.addEventListener('click', () => {
    b.closest('details').querySelectorAll('tr.hidden').forEach(r => { r.classList.remove('hidden'); r.style.display = ''; });
    b.remove();
  }));
  zoom.addEventListener('input', redrawOpen);
  axis.addEventListener('change', redrawOpen);
  onlyBad.addEventListener('change', redrawOpen);
  redrawOpen();
})();
"""

_PREFIX_ROWS_SHOWN = 40
"""Rows of the prefix table shown at first: the end of the prefix is where the trouble is."""


def render_html(history: Sequence[Operation], model: Model, result: CheckResult, path: str | Path) -> Path:
    """Write the page for ``history`` as checked in ``result`` to ``path``; returns the path.

    ``model`` must be the one the history was checked with: it names the
    operations and states and replays the prefixes.
    """
    times = [t for op in history for t in (op.call, op.ret) if t is not None]
    t0 = min(times, default=0)
    # Parts that need a person's eyes first; the rest keep the model's order.
    order = sorted(range(len(result.partitions)), key=lambda k: result.partitions[k].verdict is Verdict.OK)
    parts = [result.partitions[k] for k in order]
    parts_data = [_part_data(part, model, t0) for part in parts]
    data = {"verdict": _CSS_CLASS[result.verdict], "parts": parts_data}
    # A small history is drawn in full at once; a large one draws each part when opened.
    few = len(history) <= 2000
    sections = "".join(
        _part_section(p, part, parts_data[p], model, open_=part.verdict is not Verdict.OK or few) for p, part in enumerate(parts)
    )
    css = _CSS_CLASS[result.verdict]
    span = (max(times) - t0) / 1e6 if times else 0.0
    # With several parts and a failure, show the failing parts only at first.
    checked = " checked" if result.verdict is not Verdict.OK and len(parts) > 1 else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(result.verdict.value)}: {len(history)} operations</title>
<style>{_STYLE}</style></head>
<body>
<h1>History of {len(history)} operations: <span class="{css}">{html.escape(result.verdict.value)}</span></h1>
<div class="meta">model {html.escape(model.name)} &middot; {len(result.partitions)} part(s) &middot; {span:.3f} ms of history
&middot; checked in {result.seconds:.3f} s</div>
{_summary(parts, model)}
<div class="controls">
<label>zoom <input id="zoom" type="range" min="2" max="80" value="18"></label>
<label>time axis <select id="axis"><option value="events">event order</option><option value="real">real time</option></select></label>
<label><input id="only-bad" type="checkbox"{checked}> only parts that are not linearizable</label>
<span class="legend"><span class="op-sample" style="background:#ddf4ff;border:1px solid #54aeff">operation</span>
<span style="background:#dafbe1;border:1px solid #4ac26b">#n in the longest linearizable prefix</span>
<span style="background:#ffebe9;border:2px solid #cf222e">cannot be placed next</span>
<span class="op-open-sample">never returned</span></span>
</div>
{sections}
<div id="tip"></div>
<script type="application/json" id="history-data">{_embed(data)}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
    out = Path(path)
    out.write_text(page, encoding="utf-8")
    return out


def _embed(data: Any) -> str:
    """JSON that cannot end the script element it sits in, whatever the values contain."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _output(op: Operation) -> Any:
    return NO_REPLY if op.ret is None else op.output


def _part_data(part: PartitionResult, model: Model, t0: int) -> dict[str, Any]:
    place = {i: n for n, i in enumerate(part.prefix)}
    state_after = {i: model.describe_state(state) for i, state in part.replay(model)}
    stuck = set(part.stuck)
    ops = [
        [
            op.client,
            op.call - t0,
            None if op.ret is None else op.ret - t0,
            model.describe_operation(op.input, _output(op)),
            place.get(i, -1),
            1 if i in stuck else 0,
            state_after.get(i),
        ]
        for i, op in enumerate(part.ops)
    ]
    return {
        "name": part.name,
        "verdict": _CSS_CLASS[part.verdict],
        "clients": sorted({op.client for op in part.ops}),
        "ops": ops,
        "prefixLength": len(part.prefix),
        # Colouring the prefix only helps where it is not the whole part.
        "marked": part.verdict is not Verdict.OK,
        "final": model.describe_state(part.state),
    }


def _op_line(part: PartitionResult, i: int, model: Model) -> str:
    op = part.ops[i]
    return f"{model.describe_operation(op.input, _output(op))} (client {op.client})"


def _summary(parts: list[PartitionResult], model: Model) -> str:
    rows = []
    for p, part in enumerate(parts):
        css = _CSS_CLASS[part.verdict]
        if part.verdict is Verdict.ILLEGAL:
            stuck = "; ".join(_op_line(part, i, model) for i in part.stuck)
            note = f"cannot place {html.escape(stuck)} after {len(part.prefix)} of {len(part.ops)} operations"
        elif part.verdict is Verdict.UNKNOWN:
            note = f"undecided after {part.steps} steps; deepest prefix {len(part.prefix)} of {len(part.ops)}"
        else:
            note = ""
        rows.append(
            f"<tr><td><a href='#part-{p}'>{html.escape(part.name)}</a></td><td>{len(part.ops)}</td>"
            f"<td class='{css}'>{html.escape(part.verdict.value)}</td><td>{note}</td></tr>"
        )
        if len(rows) >= 200:
            rows.append(f"<tr><td colspan='4'>… and {len(parts) - 200} more parts</td></tr>")
            break
    return "<table class='summary'><tr><th>part</th><th>operations</th><th>verdict</th><th></th></tr>" + "".join(rows) + "</table>"


def _part_section(p: int, part: PartitionResult, data: dict[str, Any], model: Model, open_: bool) -> str:
    css = _CSS_CLASS[part.verdict]
    detail = ""
    if part.verdict is not Verdict.OK and part.prefix:
        detail = _prefix_table(p, part, data, model)
    if part.verdict is Verdict.ILLEGAL:
        items = "".join(
            f"<li data-goto='{p}-{i}' style='cursor:pointer'><span class='mono illegal'>{html.escape(_op_line(part, i, model))}</span></li>"
            for i in part.stuck
        )
        detail += (
            f"<p>After the prefix the state is <span class='mono'>{html.escape(model.describe_state(part.state))}</span>, "
            f"and the operation(s) that real time allows next are refused by the model:</p><ul>{items}</ul>"
        )
    return (
        f"<details class='part' id='part-{p}' data-p='{p}'{' open' if open_ else ''}><summary><h2>{html.escape(part.name)}: "
        f"<span class='{css}'>{html.escape(part.verdict.value)}</span></h2><span class='meta'>{len(part.ops)} operations, "
        f"{len(data['clients'])} clients, {part.steps} search steps</span></summary>"
        f"<div class='timeline' id='timeline-{p}'></div>{detail}</details>"
    )


def _prefix_table(p: int, part: PartitionResult, data: dict[str, Any], model: Model) -> str:
    ops = data["ops"]
    initial = html.escape(model.describe_state(model.init()))
    rows = [f"<tr><td>0</td><td></td><td class='mono'>(initial state)</td><td class='mono'>{initial}</td></tr>"]
    hide_before = len(part.prefix) - _PREFIX_ROWS_SHOWN
    for n, i in enumerate(part.prefix):
        hidden = " class='hidden' style='display:none'" if n < hide_before else ""
        rows.append(
            f"<tr{hidden} data-goto='{p}-{i}'><td>#{n + 1}</td><td>client {part.ops[i].client}</td>"
            f"<td class='mono'>{html.escape(ops[i][3])}</td><td class='mono'>{html.escape(ops[i][6] or '')}</td></tr>"
        )
    for i in part.stuck:
        rows.append(
            f"<tr class='stuck' data-goto='{p}-{i}'><td>✗</td><td>client {part.ops[i].client}</td>"
            f"<td class='mono'>{html.escape(ops[i][3])}</td><td>refused</td></tr>"
        )
    more = f"<button class='more'>show all {len(part.prefix)} steps</button>" if hide_before > 0 else ""
    title = "Longest linearizable prefix" if part.verdict is Verdict.ILLEGAL else "Deepest prefix reached"
    return (
        f"<details open><summary>{title}: {len(part.prefix)} of {len(part.ops)} operations, "
        f"with the model state after each (click a row to find it)</summary>{more}"
        f"<table class='prefix'><tr><th>#</th><th>client</th><th>operation</th><th>state after</th></tr>{''.join(rows)}</table></details>"
    )
