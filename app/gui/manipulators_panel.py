"""The manipulators panel: every probe of every manipulator rig, live; move, depth, stop, and STOP ALL.

Positions arrive as live-state mods under ``rigs/<rig>/service/manipulators/<id>`` (pushed by RigDeck
servers, polled from ephys-link) and repaint at most once per frame. The plots (depth over time, a top
view of x-y) use pyqtgraph, imported only when the plot area is first shown (it costs ~0.5 s).
STOP ALL goes straight to :meth:`app.console.Console.stop_all`: nothing queues in front of it.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Hashable
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.console import Console
from app.gui.icons import icon
from app.gui.qtasync import FrameCoalescer, spawn
from app.gui.widgets import FlatTableModel, add_ok_cancel, button_bar, row_table
from core.drivers.manipulator import Vec4

Index = QModelIndex | QPersistentModelIndex
AXES = ("x", "y", "z", "w")
HEADERS = ["Rig", "ID", "x (mm)", "y (mm)", "z (mm)", "w (mm)", "Moving", "Inside brain"]
HISTORY_SECONDS = 60.0
PLOT_HZ = 10.0
DEFAULT_SPEED = 1.0


class ManipulatorModel(FlatTableModel):
    """Rows: (rig, id) pairs found in the live state; cells read it at paint time."""

    headers = HEADERS

    def __init__(self, console: Console, parent: Any = None) -> None:
        super().__init__(parent)
        self.console = console
        self.rows: list[tuple[str, str]] = []
        self.repaints = 0
        self.listeners: list[Any] = []  # called after each repaint (the plots)
        self._coalescer = FrameCoalescer(self._flush, self)
        self._unsubscribe = console.state.subscribe(self._on_mod)
        self._flush({"*"})

    def detach(self) -> None:
        self._unsubscribe()

    def entry(self, rig: str, mid: str) -> dict[str, Any]:
        value = self.console.state.get(["rigs", rig, "service", "manipulators", mid])
        return value if isinstance(value, dict) else {}

    def current_rows(self) -> list[tuple[str, str]]:
        out = []
        for rig in self.console.manipulator_links():
            found = self.console.state.get(["rigs", rig, "service", "manipulators"])
            if isinstance(found, dict):
                out.extend((rig, str(mid)) for mid in found)
        return out

    def _on_mod(self, mod: dict[str, Any]) -> None:
        path = mod.get("path") or []
        # every flush re-reads all rows (16 manipulators is nothing), so one key is all the coalescer needs
        if mod.get("action") == "init" or not path or (path[0] == "rigs" and (len(path) <= 2 or path[2] == "service")):
            self._coalescer.mark("rows")

    def _flush(self, _dirty: set[Hashable]) -> None:
        self.repaints += 1
        rows = self.current_rows()
        if rows != self.rows:
            self.beginResetModel()
            self.rows = rows
            self.endResetModel()
        elif self.rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.rows) - 1, len(HEADERS) - 1))
        for listener in list(self.listeners):
            listener()

    def rows_source(self) -> list[tuple[str, str]]:
        return self.rows

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self.rows):
            return None
        rig, mid = self.rows[index.row()]
        entry = self.entry(rig, mid)
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return rig
            if col == 1:
                return mid
            if 2 <= col <= 5:
                value = entry.get(AXES[col - 2])
                return f"{value:.3f}" if isinstance(value, int | float) else "—"
            if col == 6:
                return "moving" if entry.get("moving") else "still"
            if col == 7:
                return "LOCKED (inside)" if entry.get("inside_brain") else "outside"
        if role == Qt.ItemDataRole.TextAlignmentRole and 2 <= col <= 5:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == 6 and entry.get("moving"):
                return QBrush(QColor("#b58900"))
            if col == 7 and entry.get("inside_brain"):
                return QBrush(QColor("#d0342c"))
        if role == Qt.ItemDataRole.FontRole and 2 <= col <= 5:
            font = QFont("monospace")
            font.setStyleHint(QFont.StyleHint.Monospace)
            return font
        return None


class MoveDialog(QDialog):
    """Target position (x, y, z, w) and speed; spin boxes limited to the platform's travel."""

    def __init__(self, parent: QWidget | None, rig: str, mid: str, current: dict[str, Any], dims: Vec4 | None) -> None:
        super().__init__(parent)
        self.setObjectName("moveDialog")
        self.setWindowTitle(f"Move {rig} / {mid}")
        form = QFormLayout(self)
        self.axes: dict[str, QDoubleSpinBox] = {}
        limits = dims.as_tuple() if dims else (20.0,) * 4
        for axis, limit in zip(AXES, limits, strict=True):
            box = QDoubleSpinBox(objectName=f"move_{axis}")
            box.setDecimals(3)
            box.setRange(0.0, float(limit))
            box.setSuffix(" mm")
            box.setValue(float(current.get(axis) or 0.0))
            box.setToolTip(f"0 to {limit:g} mm")
            form.addRow(axis, box)
            self.axes[axis] = box
        self.speed = QDoubleSpinBox(objectName="move_speed")
        self.speed.setDecimals(3)
        self.speed.setRange(0.001, 50.0)
        self.speed.setValue(DEFAULT_SPEED)
        self.speed.setSuffix(" mm/s")
        form.addRow("speed", self.speed)
        add_ok_cancel(self, form)

    def target(self) -> Vec4:
        return Vec4(*(self.axes[a].value() for a in AXES))


class DepthDialog(QDialog):
    def __init__(self, parent: QWidget | None, rig: str, mid: str, current: float, limit: float) -> None:
        super().__init__(parent)
        self.setObjectName("depthDialog")
        self.setWindowTitle(f"Set depth of {rig} / {mid}")
        form = QFormLayout(self)
        self.depth = QDoubleSpinBox(objectName="depth_value", decimals=3, suffix=" mm")
        self.depth.setRange(0.0, limit)
        self.depth.setValue(current)
        self.speed = QDoubleSpinBox(objectName="depth_speed", decimals=3, suffix=" mm/s")
        self.speed.setRange(0.001, 50.0)
        self.speed.setValue(DEFAULT_SPEED / 2)
        form.addRow("depth (w)", self.depth)
        form.addRow("speed", self.speed)
        add_ok_cancel(self, form)


class ManipulatorPlots(QWidget):
    """Depth over time and a top (x-y) view; pyqtgraph is imported when this is first shown."""

    def __init__(self, model: ManipulatorModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.layout_ = QHBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.placeholder = QLabel("plots appear when shown")
        self.layout_.addWidget(self.placeholder)
        self.ready = False
        self.history: dict[tuple[str, str], collections.deque[tuple[float, float]]] = {}
        self.curves: dict[tuple[str, str], Any] = {}
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
        self.depth_plot.setLabel("left", "w", "mm")
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
        self.scatter = pg.ScatterPlotItem(size=12)
        self.top_plot.addItem(self.scatter)
        self.layout_.addWidget(self.depth_plot, 2)
        self.layout_.addWidget(self.top_plot, 1)
        self.ready = True
        self.model.listeners.append(self.update_plots)
        self.update_plots()

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
        xs: list[float] = []
        ys: list[float] = []
        brushes = []
        top = 20.0
        for i, (rig, mid) in enumerate(self.model.rows):
            entry = self.model.entry(rig, mid)
            if not isinstance(entry.get("w"), int | float):
                continue
            key = (rig, mid)
            history = self.history.setdefault(key, collections.deque(maxlen=6000))
            history.append((now, float(entry["w"])))
            while history and now - history[0][0] > HISTORY_SECONDS:
                history.popleft()
            top = max(top, float(entry["w"]))
            xs.append(float(entry.get("x") or 0))
            ys.append(float(entry.get("y") or 0))
            brushes.append(self.pg.intColor(i, hues=8))
            if self._ticks % 2:
                if key not in self.curves:
                    self.curves[key] = self.depth_plot.plot(pen=self.pg.intColor(i, hues=8), name=f"{rig}/{mid}")
                self.curves[key].setData([t - now for t, _ in history], [w for _, w in history])
        if not self._ticks % 2:
            self.scatter.setData(x=xs, y=ys, brush=brushes)
        elif top > self._depth_top:
            self._depth_top = top
            self.depth_plot.setYRange(0, top, padding=0.02)


class ManipulatorsPanel(QWidget):
    def __init__(self, console: Console, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.console = console
        self.model = ManipulatorModel(console, self)
        self.view = row_table("manipulatorsTable", self.model)
        self.view.selectionModel().selectionChanged.connect(lambda *_: self.update_actions())
        self.model.modelReset.connect(self.update_actions)
        self.model.dataChanged.connect(lambda *_: self._sync_inside())

        self.stop_all_button = QPushButton("STOP ALL", objectName="stopAll")
        self.stop_all_button.setIcon(icon("stop"))
        self.stop_all_button.setToolTip("Stop every manipulator of every manipulator rig now (F12)")
        self.stop_all_button.setMinimumHeight(56)
        font = QFont(self.stop_all_button.font())
        font.setPointSizeF(font.pointSizeF() * 1.5)
        font.setBold(True)
        self.stop_all_button.setFont(font)
        self.stop_all_button.setStyleSheet("QPushButton#stopAll { background: #c62828; color: white; "
                                           "border-radius: 6px; padding: 6px 18px; }")
        self.stop_all_button.clicked.connect(self.stop_all)

        bar, self.buttons = button_bar("manip", (
            ("move", "Move…", "Move the selected manipulator to a position at a speed", self.move),
            ("depth", "Set depth…", "Drive the selected probe along its depth axis (w)", self.set_depth),
            ("stop", "Stop", "Stop the selected manipulator where it is", self.stop_one),
        ))
        self.inside = QCheckBox("Inside brain (lock x-y-z)", objectName="insideBrain")
        self.inside.setToolTip("While inside the brain only depth moves are allowed")
        self.inside.clicked.connect(self.toggle_inside)
        bar.addWidget(self.inside)
        bar.addStretch(1)
        bar.addWidget(self.stop_all_button)

        self.plots = ManipulatorPlots(self.model)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.view)
        splitter.addWidget(self.plots)
        splitter.setSizes([160, 220])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(splitter)
        self.dialog: QDialog | None = None
        self.update_actions()

    def selected(self) -> tuple[str, str] | None:
        rows = self.view.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self.model.rows):
            return None
        return self.model.rows[rows[0].row()]

    def select(self, rig: str, mid: str) -> None:
        if (rig, mid) in self.model.rows:
            self.view.selectRow(self.model.rows.index((rig, mid)))

    def update_actions(self) -> None:
        have = self.selected() is not None
        for button in self.buttons.values():
            button.setEnabled(have)
        self.inside.setEnabled(have)
        self._sync_inside()

    def _sync_inside(self) -> None:
        sel = self.selected()
        self.inside.setChecked(bool(sel and self.model.entry(*sel).get("inside_brain")))

    # ------------------------------------------------------------------ actions
    def stop_all(self) -> None:
        spawn(self.console.stop_all(), self, "STOP ALL")

    def stop_one(self) -> None:
        sel = self.selected()
        if sel:
            spawn(self.console.stop_manipulator(*sel), self, "Stop")

    def toggle_inside(self, checked: bool) -> None:
        sel = self.selected()
        if sel:
            spawn(self.console.set_inside_brain(*sel, checked), self, "Inside brain",
                  on_done=lambda _r: self._sync_inside())

    def move(self) -> None:
        self._dialog("Move", lambda rig, mid, dims: MoveDialog(self, rig, mid, self.model.entry(rig, mid), dims),
                     lambda rig, mid, d: self.console.move(rig, mid, d.target(), d.speed.value()))

    def set_depth(self) -> None:
        self._dialog("Set depth",
                     lambda rig, mid, dims: DepthDialog(self, rig, mid, float(self.model.entry(rig, mid).get("w")
                                                                              or 0.0), dims.w),
                     lambda rig, mid, d: self.console.set_depth(rig, mid, d.depth.value(), d.speed.value()))

    def _dialog(self, what: str, make: Any, act: Any) -> None:
        """Open ``make(rig, id, platform dimensions)`` for the selected manipulator; on OK run ``act``."""
        sel = self.selected()
        if sel is None:
            return
        rig, mid = sel

        async def open_dialog() -> None:
            dialog = make(rig, mid, (await self.console.platform(rig)).dimensions)
            self.dialog = dialog
            dialog.accepted.connect(lambda: spawn(act(rig, mid, dialog), self, what))
            dialog.open()

        spawn(open_dialog(), self, what)
