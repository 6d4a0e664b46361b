"""The picture of one run: a self-contained HTML page drawn from the run's record.

The steps on a time axis (work and waits told apart), the critical path through that
run's graph by the measured durations, AWS calls and cluster changes per step, and the
run's outcome. Inline CSS and SVG only: no script, font, image or stylesheet is
fetched, so it opens anywhere, offline. Tooltips are SVG <title>s.
"""

from __future__ import annotations

import html
import os

import networkx as nx

from .graph import critical_path
from .runs import seconds_between

WIDTH, LABEL, ROW, TOP = 1100, 170, 26, 34
PLOT = WIDTH - LABEL - 20
TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)

STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1f2328; }
h1 { font-size: 20px; margin: 0 0 4px; } .sub { color: #59636e; margin-bottom: 16px; }
.outcome { display: inline-block; padding: 2px 10px; border-radius: 10px; color: #fff; font-weight: 600; }
.complete { background: #1a7f37; } .failed { background: #cf222e; } .running { background: #9a6700; }
.facts span { margin-right: 18px; } .critical-path { margin: 10px 0 16px; }
svg text { font: 12px system-ui, sans-serif; fill: #1f2328; } svg .tick { fill: #59636e; }
.work { fill: #4f8fd6; } .wait { fill: url(#hatch); } .bar-failed { fill: #cf222e; }
.on-path { fill: none; stroke: #bc4c00; stroke-width: 3; } .unfinished { fill: #d4a72c; }
table { border-collapse: collapse; margin-top: 18px; }
th, td { border-bottom: 1px solid #d1d9e0; padding: 4px 10px; text-align: left; vertical-align: top; }
td { white-space: nowrap; } td.error { white-space: normal; }
th { background: #f6f8fa; } td.num { text-align: right; } tr.critical td:first-child { font-weight: 700; }
tr.critical td:first-child::before { content: "\\25C6 "; color: #bc4c00; }
.legend span { margin-right: 16px; } .swatch { display: inline-block; width: 14px; height: 10px; margin-right: 4px; }
.error { color: #cf222e; }
"""


def path_for(state_path: str, run: dict) -> str:
    """Beside the state file: <state without .json>.<command>.<run id>.html"""
    base = state_path[:-len(".json")] if state_path.endswith(".json") else state_path
    return f"{base}.{run['command']}.{run['run_id']}.html"


def write(state_path: str, run: dict) -> str:
    path = path_for(state_path, run)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render(run))
    return path


def run_graph(run: dict) -> nx.DiGraph:
    graph = nx.DiGraph()
    for name, record in run["steps"].items():
        graph.add_node(name)
        graph.add_edges_from((before, name) for before in record.get("after", []) if before in run["steps"])
    return graph


def durations(run: dict) -> dict[str, float]:
    return {name: seconds for name, record in run["steps"].items()
            if (seconds := seconds_between(record.get("started_at"), record.get("finished_at"))) is not None}


def critical_steps(run: dict) -> list[str]:
    """The chain of steps, each after the one before in the run's graph, with the longest
    measured total: the steps whose time was the run's time."""
    seconds = durations(run)
    return [name for name in critical_path(run_graph(run), seconds) if name in seconds]


def _offset(run: dict, when: str | None) -> float | None:
    return seconds_between(run["started_at"], when)


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s" if seconds >= 60 else f"{seconds:.1f}s"


def render(run: dict) -> str:
    e = html.escape
    outcome = run.get("outcome", "running")
    if outcome == "running":
        outcome = "interrupted" if run.get("finished_at") is None else outcome
    end = run.get("finished_at") or max((r.get("finished_at") or r.get("started_at") or run["started_at"]
                                         for r in run["steps"].values()), default=run["started_at"])
    wall = max(_offset(run, end) or 0.0, 0.001)
    path = critical_steps(run)
    calls = run.get("aws_calls") or {}
    title = f"{run['command']} {run.get('deployment', '')}: {outcome}"
    path_seconds = sum(durations(run)[name] for name in path)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>", f"<style>{STYLE}</style></head><body>",
        f"<h1>{e(run['command'])} {e(run.get('deployment', ''))} "
        f"<span class=\"outcome {'complete' if outcome == 'complete' else 'failed' if outcome == 'failed' else 'running'}\">"
        f"{e(outcome)}</span></h1>",
        f"<div class=\"sub\">run {e(run['run_id'])} · started {e(run['started_at'])} · "
        f"{'finished ' + e(run['finished_at']) if run.get('finished_at') else 'no end recorded (interrupted)'}</div>",
        "<div class=\"facts\">"
        f"<span>wall time <b>{_fmt(wall)}</b></span>"
        f"<span>steps <b>{sum(1 for r in run['steps'].values() if r.get('finished_at'))}</b> of "
        f"{len(run['steps'])} finished</span>"
        f"<span>AWS calls <b>{calls.get('mutating', 0) + calls.get('read', 0)}</b> "
        f"({calls.get('mutating', 0)} changing, {calls.get('read', 0)} read)</span>"
        f"<span>cluster changes <b>{sum(r.get('cluster_changes', 0) for r in run['steps'].values())}</b></span></div>",
        f"<p>{e(run.get('summary', ''))}</p>",
        f"<div class=\"critical-path\">Critical path ({_fmt(path_seconds)} of {_fmt(wall)} wall time): "
        f"<b>{' → '.join(e(name) for name in path) or '-'}</b></div>",
        _legend(), _timeline(run, wall, set(path)), _table(run, set(path)), "</body></html>", ""])


def _legend() -> str:
    return ('<div class="legend"><span><i class="swatch" style="background:#4f8fd6"></i>working</span>'
            '<span><i class="swatch" style="background:repeating-linear-gradient(45deg,#8c959f 0 2px,#eaeef2 2px 5px)">'
            '</i>waiting on AWS or the cluster</span><span><i class="swatch" style="background:#cf222e"></i>failed</span>'
            '<span><i class="swatch" style="border:3px solid #bc4c00;height:6px;width:10px"></i>critical path</span></div>')


def _ticks(wall: float) -> list[float]:
    step = next((s for s in TICK_STEPS if wall / s <= 10), TICK_STEPS[-1])
    return [step * i for i in range(int(wall // step) + 1)]


def _timeline(run: dict, wall: float, path: set[str]) -> str:
    e = html.escape
    scale = PLOT / wall
    order = sorted(run["steps"], key=lambda n: (run["steps"][n].get("started_at") or "~", n))
    height = TOP + ROW * len(order) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" role="img" '
             f'aria-label="steps on a time axis">',
             '<defs><pattern id="hatch" width="5" height="5" patternUnits="userSpaceOnUse" '
             'patternTransform="rotate(45)"><rect width="5" height="5" fill="#eaeef2"/>'
             '<rect width="2" height="5" fill="#8c959f"/></pattern></defs>']
    for tick in _ticks(wall):
        x = LABEL + tick * scale
        parts.append(f'<line x1="{x:.1f}" y1="{TOP - 8}" x2="{x:.1f}" y2="{height - 6}" stroke="#eaeef2"/>'
                     f'<text class="tick" x="{x:.1f}" y="{TOP - 14}" text-anchor="middle">{_fmt(tick)}</text>')
    for row, name in enumerate(order):
        record = run["steps"][name]
        y = TOP + row * ROW
        parts.append(f'<text x="{LABEL - 8}" y="{y + 16}" text-anchor="end">{e(name)}</text>')
        start = _offset(run, record.get("started_at"))
        if start is None:
            parts.append(f'<text class="tick" x="{LABEL + 4}" y="{y + 16}">not started</text>')
            continue
        end = _offset(run, record.get("finished_at"))
        kind = "bar-failed" if record.get("status") == "failed" else "work" if end is not None else "unfinished"
        stop = end if end is not None else wall
        tip = (f"{name}: {record.get('status')} from {_fmt(start)} to {_fmt(end)} ({_fmt(stop - start)}); "
               f"AWS calls {_calls(record)[0]} changing, {_calls(record)[1]} read; cluster changes {record.get('cluster_changes', 0)}"
               + ("; on the critical path" if name in path else ""))
        bar = f'x="{LABEL + start * scale:.1f}" y="{y + 4}" width="{max((stop - start) * scale, 1.5):.1f}" height="{ROW - 8}"'
        parts.append(f'<g><rect class="{kind}" {bar}><title>{e(tip)}</title></rect>')
        for wait in record.get("waits", []):
            begun = _offset(run, wait["started_at"])
            ended = _offset(run, wait.get("finished_at")) if wait.get("finished_at") else stop
            tip = (f"waiting for {wait['what']}: {_fmt(ended - begun)} "
                   f"(expected {_fmt(wait.get('expected_seconds'))})")
            parts.append(f'<rect class="wait" x="{LABEL + begun * scale:.1f}" y="{y + 4}" '
                         f'width="{max((ended - begun) * scale, 1):.1f}" height="{ROW - 8}"><title>{e(tip)}</title></rect>')
        if name in path:
            parts.append(f'<rect class="on-path" {bar}/>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _calls(record: dict) -> tuple[int, int]:
    """A step's AWS calls: changing, read."""
    calls = record.get("aws_calls") or {}
    return calls.get("mutating", 0), calls.get("read", 0)


def _table(run: dict, path: set[str]) -> str:
    e = html.escape
    rows = ["<table><thead><tr><th>step</th><th>status</th><th>start</th><th>end</th><th>took</th>"
            "<th>waiting</th><th>AWS calls<br>changing / read</th><th>cluster<br>changes</th><th>after</th>"
            "<th>error</th></tr></thead><tbody>"]
    for name, record in sorted(run["steps"].items(), key=lambda item: (item[1].get("started_at") or "~", item[0])):
        start, end = record.get("started_at"), record.get("finished_at")
        waited = sum(seconds_between(w["started_at"], w.get("finished_at")) or 0.0 for w in record.get("waits", []))
        waits = "; ".join(f"{w['what']} {_fmt(seconds_between(w['started_at'], w.get('finished_at')))}"
                          for w in record.get("waits", []))
        rows.append(
            f'<tr class="{"critical" if name in path else "step"}" data-step="{e(name)}">'
            f"<td>{e(name)}</td><td>{e(record.get('status', 'pending'))}</td>"
            f'<td data-start="{e(start or "")}" title="{e(start or "")}">{_fmt(_offset(run, start))}</td>'
            f'<td data-end="{e(end or "")}" title="{e(end or "")}">{_fmt(_offset(run, end))}</td>'
            f'<td class="num">{_fmt(seconds_between(start, end))}</td>'
            f'<td title="{e(waits)}" class="num">{_fmt(waited) if record.get("waits") else "-"}</td>'
            f"<td class=\"num\">{'%d / %d' % _calls(record)}</td><td class=\"num\">{record.get('cluster_changes', 0)}</td>"
            f"<td>{e(', '.join(record.get('after', [])))}</td>"
            f'<td class="error">{e(record.get("error", ""))}</td></tr>')
    rows.append("</tbody></table>")
    return "".join(rows)
