"""A session report (:func:`core.report.build_report`) as timeline lanes: one per rig, each a list of coloured
spans on one time axis. Qt-free, so the window's timeline (``app/gui/timeline.py``) and the report page's SVG
(``app/report_html.py``) draw the same thing from one place, and a test reads the lanes without a screen.

A lane has three rows: the rig's ExpStatus over time (each status lasts until the next, the last one until the
end of the record), the steps (sent to answered, coloured by outcome), and the incidents (an open one lasts to
the end); a verified transfer is a point at the time its ``SHA256SUMS`` was written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.palette import TIMELINE_INCIDENT, TIMELINE_STATUS, TIMELINE_STEP, TIMELINE_TRANSFER, TIMELINE_UNKNOWN

#: the rows of a lane, top to bottom
ROWS = ("status", "step", "incident")
#: what each colour of a lane means (the window's legend and the page's)
LEGEND = [*((c, s.lower()) for s, c in TIMELINE_STATUS.items()), (TIMELINE_STEP["ok"], "step answered"),
          (TIMELINE_STEP["error"], "step failed"), (TIMELINE_STEP["timeout"], "no answer"),
          (TIMELINE_INCIDENT, "incident"), (TIMELINE_TRANSFER, "files verified")]


@dataclass(frozen=True)
class Span:
    """One coloured stretch of a lane; ``kind`` is a row of :data:`ROWS` or ``"transfer"`` (a point)."""

    kind: str
    start: float
    end: float
    colour: str
    label: str


@dataclass
class Lane:
    rig: str
    role: str
    spans: list[Span] = field(default_factory=list)

    def of(self, kind: str) -> list[Span]:
        return [s for s in self.spans if s.kind == kind]


def time_span(report: dict[str, Any]) -> tuple[float, float]:
    """The time axis: first to last record, stretched to a verified transfer after them (never empty)."""
    first = float(report.get("first") or 0.0)
    last = float(report.get("last") or first)
    for rig in report.get("rigs", {}).values():
        at = (rig.get("files") or {}).get("at")
        if isinstance(at, int | float) and at > last:
            last = float(at)
    return first, max(last, first + 1e-3)


def lanes(report: dict[str, Any]) -> list[Lane]:
    """One lane per rig of the report, in the report's order."""
    t0, t1 = time_span(report)
    out = []
    for name, rig in report.get("rigs", {}).items():
        lane = Lane(name, str(rig.get("role")))
        statuses = [s for s in rig.get("statuses", []) if isinstance(s.get("t"), int | float)]
        for k, st in enumerate(statuses):
            end = statuses[k + 1]["t"] if k + 1 < len(statuses) else t1
            lane.spans.append(Span("status", st["t"], end, TIMELINE_STATUS.get(st["name"], TIMELINE_UNKNOWN),
                                   st["name"]))
        for step in rig.get("steps", []):
            if isinstance(step.get("start"), int | float):
                outcome = step.get("outcome")
                error = f": {step['error']}" if step.get("error") else ""
                lane.spans.append(Span("step", step["start"], step.get("end") or step["start"],
                                       TIMELINE_STEP.get(outcome, TIMELINE_UNKNOWN),
                                       f"{step['step']} ({step.get('event')}): {outcome}{error}"))
        for inc in rig.get("incidents", []):
            until = "" if inc.get("to") else " (still open)"
            lane.spans.append(Span("incident", inc.get("from") or t0, inc.get("to") or t1, TIMELINE_INCIDENT,
                                   f"{inc.get('kind')}{until}: {inc.get('detail')}"))
        at = (rig.get("files") or {}).get("at")
        if isinstance(at, int | float):
            files = rig["files"]
            lane.spans.append(Span("transfer", at, at, TIMELINE_TRANSFER,
                                   f"files verified: {files.get('files')} files, {files.get('bytes')} bytes"))
        out.append(lane)
    return out
