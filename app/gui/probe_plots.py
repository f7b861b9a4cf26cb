"""Depth over time and a top (x-y) view of every probe, drawn to be read by everyone.

- Colours from the Okabe-Ito palette (told apart with common colour-vision deficiencies), lines 2 px wide,
  each probe also with its own dot shape, so no probe is known by its colour alone.
- Every dot of the top view carries its name beside it ("probes/1"), so overlapping dots stay readable.
- Depth increases downwards, as Pinpoint draws it (View > "Depth axis points down" flips it).

pyqtgraph is imported when the plots are first shown (it costs ~0.5 s).
"""

from __future__ import annotations

import collections
import time
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

from app.palette import PLOT_INK, series_colour

HISTORY_SECONDS = 60.0
PLOT_HZ = 10.0
LINE_WIDTH = 2
SYMBOLS = ["o", "s", "t", "d", "+", "x", "star", "p"]


class ManipulatorPlots(QWidget):
    """Depth over time and a top (x-y) view over ``model.rows`` (a ManipulatorModel)."""

    def __init__(self, model: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.layout_ = QHBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.placeholder = QLabel("plots appear when shown")
        self.layout_.addWidget(self.placeholder)
        self.ready = False
        self.depth_down = True
        self.history: dict[tuple[str, str], collections.deque[tuple[float, float]]] = {}
        self.curves: dict[tuple[str, str], Any] = {}
        self.labels: dict[tuple[str, str], Any] = {}
        self._t0 = time.monotonic()
        self._last_plot = -1.0
        self._ticks = 0
        self._depth_top = 20.0
        self._pending = QTimer(self)  # one trailing redraw so the last position is always drawn
        self._pending.setSingleShot(True)
        self._pending.timeout.connect(self.update_plots)

    def showEvent(self, event: Any) -> None:  # noqa: N802
        if not self.ready:
            self._build()
        super().showEvent(event)

    def _build(self) -> None:
        import pyqtgraph as pg  # lazily: ~0.5 s of import

        self.pg = pg
        self.placeholder.deleteLater()
        # Fixed axes (time as "seconds ago", depth over the travel range): a redraw then changes only the
        # curves, never the axes' ticks and labels, which is most of what a pyqtgraph repaint costs.
        self.depth_plot = pg.PlotWidget(title="depth (w) over the last minute")
        self.depth_plot.setLabel("bottom", "seconds ago")
        self.depth_plot.setXRange(-HISTORY_SECONDS, 0, padding=0)
        self.depth_plot.setYRange(0, 20, padding=0.02)
        self.depth_plot.getPlotItem().enableAutoRange(x=False, y=False)
        self.depth_plot.setMouseEnabled(x=False, y=True)
        self.depth_plot.addLegend(offset=(5, 5))
        self.top_plot = pg.PlotWidget(title="top view (x-y)")
        self.top_plot.setLabel("bottom", "x", "mm")
        self.top_plot.setLabel("left", "y", "mm")
        self.top_plot.setAspectLocked(True)
        self.top_plot.setXRange(0, 20)
        self.top_plot.setYRange(0, 20)
        self.top_plot.getPlotItem().enableAutoRange(x=False, y=False)
        self.scatter = pg.ScatterPlotItem(size=12, pen=pg.mkPen(PLOT_INK, width=1))
        self.top_plot.addItem(self.scatter)
        self.layout_.addWidget(self.depth_plot, 2)
        self.layout_.addWidget(self.top_plot, 1)
        self.ready = True
        self.set_depth_down(self.depth_down)
        self.model.listeners.append(self.update_plots)
        self.update_plots()

    def set_depth_down(self, down: bool) -> None:
        """Depth grows downwards (Pinpoint's way) or upwards."""
        self.depth_down = down
        if self.ready:
            self.depth_plot.getPlotItem().invertY(down)
            self.depth_plot.setLabel("left", "depth w (down)" if down else "depth w (up)", "mm")

    def update_plots(self) -> None:
        """Called after each table repaint; redraws at most PLOT_HZ, the two plots on alternate ticks (one
        plot's repaint per event-loop turn keeps the loop's worst lateness down under 100 Hz streams)."""
        if not self.ready:
            return
        now = time.monotonic() - self._t0
        if now - self._last_plot < 1.0 / PLOT_HZ:
            if not self._pending.isActive():
                self._pending.start(int(1000 / PLOT_HZ))
            return
        self._last_plot = now
        self._ticks += 1
        spots: list[dict[str, Any]] = []
        top = 20.0
        for i, (rig, mid) in enumerate(self.model.rows):
            entry = self.model.entry(rig, mid)
            if not isinstance(entry.get("w"), int | float):
                continue
            key = (rig, mid)
            colour = series_colour(i)
            history = self.history.setdefault(key, collections.deque(maxlen=6000))
            history.append((now, float(entry["w"])))
            while history and now - history[0][0] > HISTORY_SECONDS:
                history.popleft()
            top = max(top, float(entry["w"]))
            x, y = float(entry.get("x") or 0), float(entry.get("y") or 0)
            spots.append({"pos": (x, y), "brush": colour, "symbol": SYMBOLS[i % len(SYMBOLS)]})
            if self._ticks % 2:
                if key not in self.curves:
                    self.curves[key] = self.depth_plot.plot(pen=self.pg.mkPen(colour, width=LINE_WIDTH),
                                                            name=f"{rig}/{mid}")
                self.curves[key].setData([t - now for t, _ in history], [w for _, w in history])
        if not self._ticks % 2:
            self.scatter.setData(spots=spots)
            placed: list[tuple[float, float]] = []
            for key, spot in zip(self.model.rows, spots, strict=False):
                x, y = spot["pos"]
                near = sum(abs(x - px) < 3.0 and abs(y - py) < 1.0 for px, py in placed)
                placed.append((x, y))
                self._label(key, spot["brush"], x, y, near)
        elif top > self._depth_top:
            self._depth_top = top
            self.depth_plot.setYRange(0, top, padding=0.02)

    def _label(self, key: tuple[str, str], colour: str, x: float, y: float, near: int) -> None:
        """The probe's name to the right of its dot, in its colour; the ``near``-th label close to earlier ones
        is stacked above them, so dots that overlap still have readable names."""
        label = self.labels.get(key)
        if label is None:
            label = self.pg.TextItem(f"{key[0]}/{key[1]}", color=colour)
            self.top_plot.addItem(label)
            self.labels[key] = label
        label.setAnchor((-0.15, 0.5 + 1.1 * near))
        label.setPos(x, y)
