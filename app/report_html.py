"""A session report (:func:`core.report.build_report`) as one self-contained HTML page, and saving both files.

The page has to open anywhere a session folder is copied to (a lab server, a mail attachment): inline CSS,
an inline SVG timeline, no script and nothing fetched from a network. Every text that came from a rig or a
rigs file (names, errors, details) goes through :func:`html.escape`: a rig called ``<script>`` is shown as
typed, never run.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from html import escape
from pathlib import Path
from typing import Any

from app.palette import series_colour
from app.timeline_spans import LEGEND, lanes, time_span
from core.report import REPORT_HTML, REPORT_JSON, build_report, write_text_atomic

log = logging.getLogger(__name__)

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1a1a1a;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f4f4f4}.bad{color:#b00020;font-weight:600}.good{color:#00703c;font-weight:600}
.muted{color:#666}.tag{display:inline-block;padding:0 6px;border-radius:3px;background:#eee}
svg text{font:11px system-ui,sans-serif}
.key{display:inline-block;width:12px;height:10px;margin:0 4px 0 10px}
"""


def clock(t: Any, with_date: bool = False) -> str:
    """Epoch seconds as local time (``HH:MM:SS.mmm``), or "-"."""
    try:
        when = _dt.datetime.fromtimestamp(t).astimezone()
    except (TypeError, ValueError, OverflowError, OSError):  # not a time this platform can show
        return "-"
    return when.isoformat(sep=" ", timespec="milliseconds") if with_date else when.strftime("%H:%M:%S.%f")[:-3]


def duration(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return "-"
    seconds = b - a
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def size_text(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def files_text(files: dict[str, Any]) -> str:
    """A rig's files in words: "12 files, 1.2 GiB, verified", "not transferred", "no transfer (why)"..."""
    state = files.get("state")
    if state == "not transferred":
        return "not transferred"
    if state == "no transfer":
        why = str(files.get("error") or "").removeprefix("no transfer: ")
        return f"no transfer ({why})" if why else "no transfer"
    text = f"{files.get('files', 0)} files, {size_text(int(files.get('bytes') or 0))}"
    if files.get("verified"):
        return f"{text}, verified"
    if state == "files missing":
        return f"{text}, {len(files.get('missing') or [])} missing since verified"
    if state == "failed":
        return f"transfer failed: {files.get('error') or 'no reason recorded'} ({text})"
    return f"{text}, not verified yet"


def _e(value: Any) -> str:
    return escape("-" if value is None else str(value), quote=True)


def _table(head: list[str], rows: list[list[str]]) -> str:
    """``rows`` hold HTML already escaped (cells may carry a class)."""
    cells = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _outcome_cell(text: Any, ok: bool) -> str:
    return f'<span class="{"good" if ok else "bad"}">{_e(text)}</span>'


def _svg(report: dict[str, Any]) -> str:
    """The timeline as inline SVG: one lane per rig (statuses, steps, incidents, transfer), then depth traces."""
    t0, t1 = time_span(report)
    left, width, lane_h, top = 140, 900, 34, 10
    rows = {"status": (4, 10), "step": (16, 8), "incident": (26, 5)}
    all_lanes = lanes(report)
    depth = report.get("depth", {})
    plot_h = 120 if depth else 0
    height = top + lane_h * len(all_lanes) + (plot_h + 30 if depth else 0) + 20

    def x(t: Any) -> float:
        return left + (float(t) - t0) / (t1 - t0) * width

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 20}" height="{height}" '
             f'role="img" aria-label="session timeline">']
    for i, lane in enumerate(all_lanes):
        y = top + i * lane_h
        parts.append(f'<text x="4" y="{y + 18}">{_e(lane.rig)}</text>')
        for span in lane.spans:
            title = f"<title>{_e(span.label)}</title>"
            if span.kind == "transfer":
                parts.append(f'<circle cx="{x(span.start):.1f}" cy="{y + 9}" r="5" fill="{span.colour}">{title}'
                             '</circle>')
                continue
            dy, h = rows[span.kind]
            w = max(x(span.end) - x(span.start), 1 if span.kind == "status" else 2)
            parts.append(f'<rect x="{x(span.start):.1f}" y="{y + dy}" width="{w:.1f}" height="{h}" '
                         f'fill="{span.colour}">{title}</rect>')
    if depth:
        y0 = top + lane_h * len(all_lanes) + 20
        values = [p[1] for points in depth.values() for p in points]
        lo, hi = min(values), max(values)
        hi = hi if hi > lo else lo + 1
        parts.append(f'<text x="4" y="{y0 + 12}">depth (mm)</text>'
                     f'<text x="4" y="{y0 + 28}" class="muted">{lo:g} to {hi:g}</text>')
        for k, (probe, points) in enumerate(depth.items()):
            path = " ".join(f"{x(t):.1f},{y0 + (d - lo) / (hi - lo) * plot_h:.1f}" for t, d in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{series_colour(k)}" stroke-width="2">'
                         f'<title>{_e(probe)}</title></polyline>')
    parts.append(f'<text x="{left}" y="{height - 4}">{_e(clock(t0))}</text>'
                 f'<text x="{left + width - 80}" y="{height - 4}">{_e(clock(t1))}</text></svg>')
    return "".join(parts)


def render_html(report: dict[str, Any]) -> str:
    """The whole page. Pure: the same report gives the same page."""
    ok = report.get("outcome") == "completed"
    title = f"Session {report.get('exp_ref') or '(no exp_ref)'}"
    out = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
           f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>",
           f"<p>Subject <b>{_e(report.get('subject'))}</b> · outcome {_outcome_cell(report.get('outcome'), ok)}"
           f" · main sync {_e(report.get('main_sync'))} · policy {_e(report.get('policy'))}<br>"
           f"started {_e(clock(report.get('started'), True))} · ended {_e(clock(report.get('ended'), True))}"
           f" · ran {_e(duration(report.get('started'), report.get('ended')))}</p>",
           "<h2>Rigs</h2>"]
    rows = []
    for name, rig in report.get("rigs", {}).items():
        lost = sum(1 for i in rig.get("incidents", []))
        rows.append([_e(name), _e(rig.get("role")), _e(rig.get("uri")), _e(rig.get("final_status")),
                     _e(rig.get("final_link")), _e(lost), _e(files_text(rig.get("files", {}))),
                     "" if rig.get("participating") else '<span class="bad">dropped</span>'])
    out.append(_table(["Rig", "Role", "Address", "Final status", "Link", "Incidents", "Files", ""], rows))
    legend = " ".join(f'<span class="key" style="background:{c}"></span>{_e(text)}' for c, text in LEGEND)
    out.append(f"<h2>Timeline</h2>{_svg(report)}<p class=\"muted\">{legend}</p>")
    for name, rig in report.get("rigs", {}).items():
        out.append(f"<h3>{_e(name)} <span class=\"tag\">{_e(rig.get('role'))}</span></h3>")
        out.append(_table(["Step", "Message", "Sent", "Answered", "Outcome", "Status", "Error"], [
            [_e(s.get("step")), _e(s.get("event")), _e(clock(s.get("start"))), _e(clock(s.get("end"))),
             _outcome_cell(s.get("outcome"), s.get("outcome") == "ok"), _e(s.get("status")), _e(s.get("error"))]
            for s in rig.get("steps", [])]))
        if rig.get("incidents"):
            out.append(_table(["Incident", "From", "To", "Detail"], [
                [_outcome_cell(i.get("kind"), False), _e(clock(i.get("from"))),
                 _e(clock(i.get("to")) if i.get("to") else "still open"), _e(i.get("detail"))]
                for i in rig["incidents"]]))
    if report.get("moves"):
        out.append("<h2>Manipulator moves</h2>")
        out.append(_table(["Rig", "Probe", "Action", "Started", "Ended", "Target", "Reached", "Outcome"], [
            [_e(m.get("rig")), _e(m.get("manipulator")), _e(m.get("action")), _e(clock(m.get("from"))),
             _e(clock(m.get("t"))), _e(_where(m.get("target"))), _e(_where(m.get("reached"))),
             _outcome_cell(m.get("outcome"), m.get("outcome") in ("reached", "asked"))]
            for m in report["moves"]]))
    if report.get("notes"):
        out.append("<h2>Notes</h2>" + _table(["Time", "Note"], [
            [_e(clock(n.get("t"))), _e(n.get("text"))] for n in report["notes"]]))
    if report.get("problems"):
        out.append("<h2>Journal problems</h2><ul>" + "".join(f"<li>{_e(p)}</li>" for p in report["problems"])
                   + "</ul>")
    out.append(f"<p class=\"muted\">From {_e(report.get('journal'))} ({_e(report.get('records'))} records)</p>"
               "</body></html>")
    return "\n".join(out)


def _where(pos: Any) -> str:
    if isinstance(pos, dict):
        return ", ".join(f"{k} {float(v):.3f}" for k, v in pos.items() if isinstance(v, int | float))
    if isinstance(pos, int | float):
        return f"depth {float(pos):.3f}"
    return "-"


def save_report(folder: str | Path, html_path: str | Path | None = None) -> dict[str, Any]:
    """Build the report of the session in ``folder`` and write ``_rigdeck_report.json`` and the HTML page
    beside its journal (or the page at ``html_path``), each crash-safe (temp + rename). Returns the report."""
    folder = Path(folder)
    report = build_report(folder)
    write_text_atomic(folder / REPORT_JSON, json.dumps(report, indent=1, allow_nan=False, default=str))
    write_text_atomic(Path(html_path) if html_path else folder / REPORT_HTML, render_html(report))
    return report


def save_report_quietly(folder: str | Path | None) -> dict[str, Any] | None:
    """:func:`save_report` where a failure must not stop anything (a session just ended): logged instead."""
    if folder is None:
        return None
    try:
        return save_report(folder)
    except Exception as ex:  # a full disk or an unreadable journal: the session itself is unaffected
        log.error("cannot write the session report in %s: %s", folder, ex)
        return None
