"""The session timeline: one lane per rig on one time axis, the probes' depth traces aligned below.

Drawn with QPainter from a session report (:func:`core.report.build_report`) through
:func:`app.timeline_spans.lanes`, the same lanes the report page's SVG shows. Each lane has three rows
(status, steps, incidents) and a dot when the rig's files were verified; hovering a span says what it
was. The depth plot below shares the lanes' time axis, so a probe's descent lines up with the rigs' steps.
:class:`TimelineDialog` shows one past session (File > Open session…).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, QUrl
from PySide6.QtGui import QColor, QDesktopServices, QHelpEvent, QPainter, QPaintEvent, QPen, QPolygonF
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QScrollArea,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from app.palette import series_colour
from app.report_html import clock, duration, files_text
from app.timeline_spans import LEGEND, Lane, Span, lanes, time_span
from core.report import REPORT_HTML

LEFT, RIGHT, TOP = 150, 16, 8
LANE_H = 38
#: (y offset, height) of each row inside a lane
ROWS = {"status": (4, 12), "step": (18, 9), "incident": (29, 6)}
DEPTH_H = 150
AXIS_H = 24
LEGEND_H = 24


class TimelineView(QWidget):
    """Paints a report's lanes and depth traces; :attr:`lanes` is what a test (or a reader) checks."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("timeline")
        self.setMouseTracking(True)
        self.report: dict[str, Any] = {}
        self.lanes: list[Lane] = []
        self.t0, self.t1 = 0.0, 1.0
        self.setMinimumWidth(640)

    def set_report(self, report: dict[str, Any]) -> None:
        self.report = report
        self.lanes = lanes(report)
        self.t0, self.t1 = time_span(report)
        depth = DEPTH_H + 20 if report.get("depth") else 0
        self.setMinimumHeight(TOP + LANE_H * len(self.lanes) + depth + AXIS_H + LEGEND_H)
        self.update()

    # ------------------------------------------------------------------ geometry
    def x(self, t: float) -> float:
        width = max(self.width() - LEFT - RIGHT, 10)
        return LEFT + (t - self.t0) / (self.t1 - self.t0) * width

    def span_rect(self, lane_index: int, span: Span) -> QRectF:
        y = TOP + lane_index * LANE_H
        if span.kind == "transfer":
            return QRectF(self.x(span.start) - 5, y + 5, 10, 10)
        dy, h = ROWS[span.kind]
        x0 = self.x(span.start)
        return QRectF(x0, y + dy, max(self.x(span.end) - x0, 1.0 if span.kind == "status" else 2.0), h)

    def span_at(self, pos: QPointF) -> Span | None:
        """The span under a point (the topmost drawn: incidents and steps over statuses)."""
        for i, lane in enumerate(self.lanes):
            for span in reversed(lane.spans):
                if self.span_rect(i, span).adjusted(-1, -1, 1, 1).contains(pos):
                    return span
        return None

    # ------------------------------------------------------------------ painting
    def paintEvent(self, _event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor("#ffffff"))
        ink = QColor("#1a1a1a")
        for i, lane in enumerate(self.lanes):
            y = TOP + i * LANE_H
            if i % 2:
                p.fillRect(QRectF(0, y, self.width(), LANE_H), QColor("#f5f5f5"))
            p.setPen(ink)
            p.drawText(QRectF(6, y, LEFT - 10, LANE_H / 2 + 4), Qt.AlignmentFlag.AlignVCenter, lane.rig)
            p.setPen(QColor("#5f6368"))
            p.drawText(QRectF(6, y + LANE_H / 2, LEFT - 10, LANE_H / 2), Qt.AlignmentFlag.AlignVCenter, lane.role)
            for span in lane.spans:
                rect = self.span_rect(i, span)
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(QColor(span.colour))
                if span.kind == "transfer":
                    p.drawEllipse(rect)
                else:
                    p.drawRect(rect)
        bottom = TOP + LANE_H * len(self.lanes)
        if self.report.get("depth"):
            bottom = self._paint_depth(p, bottom + 10)
        self._paint_axis(p, bottom + 4)
        self._paint_legend(p, bottom + AXIS_H + 4)
        p.end()

    def _paint_legend(self, p: QPainter, y: float) -> None:
        """What the colours mean, in one row under the axis."""
        x = float(LEFT)
        for colour, text in LEGEND:
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(colour))
            p.drawRect(QRectF(x, y + 4, 12, 10))
            p.setPen(QColor("#1a1a1a"))
            width = p.fontMetrics().horizontalAdvance(text)
            p.drawText(QPointF(x + 16, y + 13), text)
            x += 16 + width + 14

    def _paint_depth(self, p: QPainter, y0: float) -> float:
        depth: dict[str, list[list[float]]] = self.report["depth"]
        values = [d for points in depth.values() for _, d in points]
        lo, hi = min(values), max(values)
        hi = hi if hi > lo else lo + 1.0
        p.setPen(QColor("#1a1a1a"))
        p.drawText(QRectF(6, y0, LEFT - 10, 18), Qt.AlignmentFlag.AlignVCenter, "depth (mm)")
        p.setPen(QColor("#5f6368"))
        p.drawText(QRectF(6, y0 + 18, LEFT - 10, 18), Qt.AlignmentFlag.AlignVCenter, f"{lo:g} (top)")
        p.drawText(QRectF(6, y0 + DEPTH_H - 18, LEFT - 10, 18), Qt.AlignmentFlag.AlignVCenter, f"{hi:g}")
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(QRectF(LEFT, y0, self.width() - LEFT - RIGHT, DEPTH_H))
        for k, (probe, points) in enumerate(depth.items()):  # deeper is lower, as in the Manipulators plot
            line = QPolygonF([QPointF(self.x(t), y0 + (d - lo) / (hi - lo) * DEPTH_H) for t, d in points])
            p.setPen(QPen(QColor(series_colour(k)), 2))
            p.drawPolyline(line)
            p.drawText(QPointF(LEFT + 6, y0 + 14 + 14 * k), probe)
        return y0 + DEPTH_H

    def _paint_axis(self, p: QPainter, y: float) -> None:
        p.setPen(QColor("#5f6368"))
        p.drawLine(QPointF(LEFT, y), QPointF(self.width() - RIGHT, y))
        for k in range(5):
            t = self.t0 + (self.t1 - self.t0) * k / 4
            x = self.x(t)
            p.drawLine(QPointF(x, y), QPointF(x, y + 4))
            label = _dt.datetime.fromtimestamp(t).strftime("%H:%M:%S")
            flags = Qt.AlignmentFlag.AlignRight if k == 4 else Qt.AlignmentFlag.AlignLeft
            p.drawText(QRectF(x - (80 if k == 4 else 0), y + 4, 80, 16), flags, label)

    def event(self, e: QEvent) -> bool:
        if e.type() == QEvent.Type.ToolTip and isinstance(e, QHelpEvent):
            span = self.span_at(QPointF(e.pos()))
            if span is not None:
                when = clock(span.start) + ("" if span.end == span.start else f" to {clock(span.end)}")
                QToolTip.showText(e.globalPos(), f"{span.label}\n{when}", self)
            else:
                QToolTip.hideText()
            return True
        return super().event(e)


def summary_text(report: dict[str, Any]) -> str:
    """The dialog's heading (plain text: rig names are shown as typed): the session, how it ended, how long
    it ran, each rig's files."""
    files = "; ".join(f"{n}: {files_text(r.get('files', {}))}" for n, r in report.get("rigs", {}).items())
    degraded = " (degraded)" if report.get("degraded") else ""
    return (f"{report.get('exp_ref') or '(no exp_ref)'} · subject {report.get('subject')} · "
            f"{report.get('outcome')}{degraded} · ran {duration(report.get('started'), report.get('ended'))}\n"
            f"files: {files}")


class TimelineDialog(QDialog):
    """A past (or the current) session's timeline, with its report page one click away."""

    def __init__(self, report: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("timelineDialog")
        self.setWindowTitle(f"Session {report.get('exp_ref') or ''}")
        self.resize(1100, 420)
        self.report = report
        column = QVBoxLayout(self)
        self.heading = QLabel(objectName="timelineHeading")
        self.heading.setTextFormat(Qt.TextFormat.PlainText)
        self.heading.setText(summary_text(report))
        column.addWidget(self.heading)
        self.view = TimelineView()
        self.view.set_report(report)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.view)
        column.addWidget(scroll, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.page_button = buttons.addButton("Open report page", QDialogButtonBox.ButtonRole.ActionRole)
        page = Path(str(report.get("folder") or "")) / REPORT_HTML
        self.page_button.setEnabled(page.is_file())
        self.page_button.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(page))))
        buttons.rejected.connect(self.reject)
        column.addWidget(buttons)
