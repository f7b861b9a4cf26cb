"""The manipulators panel: every probe of every manipulator rig, live; move, depth, stop, and STOP ALL.

Positions arrive as live-state mods under ``rigs/<rig>/service/manipulators/<id>`` (pushed by RigDeck
servers, polled from ephys-link) and repaint at most once per frame. The plots (depth over time, a top
view of x-y) use pyqtgraph, imported only when the plot area is first shown (it costs ~0.5 s).
STOP ALL goes straight to :meth:`app.console.Console.stop_all`: nothing queues in front of it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QHeaderView,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.console import Console
from app.gui.icons import icon
from app.gui.move_dialogs import DepthDialog, MoveDialog
from app.gui.probe_plots import ManipulatorPlots
from app.gui.qtasync import FrameCoalescer, spawn
from app.gui.widgets import FlatTableModel, button_bar, row_table
from app.palette import LEVEL_COLOURS

Index = QModelIndex | QPersistentModelIndex
AXES = ("x", "y", "z", "w")
HEADERS = ["Rig", "Probe", "x (mm)", "y (mm)", "z (mm)", "w (mm)", "Moving", "Inside brain"]
WIDTHS = [90, 60, 80, 80, 80, 80, 70, 95]
LOCK_TIP = "Probe {mid} is inside the brain: only depth moves are allowed (untick Inside brain to move it)"
WATCH_TIP = ("Another console controls {rig}'s manipulators: this one only watches them (Stop probe and STOP "
             "ALL still work). Take control to move them; the other console is told.")


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
                return "inside" if entry.get("inside_brain") else "outside"
        if role == Qt.ItemDataRole.TextAlignmentRole and 2 <= col <= 5:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == 6 and entry.get("moving"):
                return QBrush(QColor(LEVEL_COLOURS["warning"]))
            if col == 7 and entry.get("inside_brain"):
                return QBrush(QColor(LEVEL_COLOURS["error"]))
        if role == Qt.ItemDataRole.ToolTipRole and col == 7:
            return LOCK_TIP.format(mid=mid) if entry.get("inside_brain") else "Outside the brain: every axis can move"
        if role == Qt.ItemDataRole.FontRole and 2 <= col <= 5:
            font = QFont("monospace")
            font.setStyleHint(QFont.StyleHint.Monospace)
            return font
        return None


class ManipulatorsPanel(QWidget):
    def __init__(self, console: Console, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.console = console
        self.model = ManipulatorModel(console, self)
        self.view = row_table("manipulatorsTable", self.model)
        header = self.view.horizontalHeader()
        header.setStretchLastSection(False)  # "Inside brain" is one word: it gets a narrow column
        for col, width in enumerate(WIDTHS):
            self.view.setColumnWidth(col, width)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.view.selectionModel().selectionChanged.connect(lambda *_: self.update_actions())
        self.model.modelReset.connect(self.update_actions)
        self.model.dataChanged.connect(lambda *_: self.update_actions())
        self.model.listeners.append(self._follow_dialog)
        #: the window's STOP ALL (shows the confirmation); without a window, the console's directly
        self.stop_all_handler: Callable[[], None] | None = None

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
            ("stop", "Stop probe", "Stop the selected probe where it is (STOP ALL stops every probe)", self.stop_one),
            ("control", "Take control", WATCH_TIP.format(rig="this rig"), self.take_control),
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

    def detach(self) -> None:
        self.model.detach()

    def selected(self) -> tuple[str, str] | None:
        rows = self.view.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self.model.rows):
            return None
        return self.model.rows[rows[0].row()]

    def select(self, rig: str, mid: str) -> None:
        if (rig, mid) in self.model.rows:
            self.view.selectRow(self.model.rows.index((rig, mid)))

    def update_actions(self) -> None:
        """Move is disabled while the probe is inside the brain (the rig would refuse it), and moves while
        another console controls the rig (Take control shows then); the tooltips say why."""
        sel = self.selected()
        have = sel is not None
        locked = bool(sel and self.model.entry(*sel).get("inside_brain"))
        # (control lives in ``rigs/<rig>/watching``: a change repaints the model, which calls this again)
        watching = bool(sel and self.console.watching(sel[0]))
        for button in self.buttons.values():
            button.setEnabled(have)
        self.buttons["move"].setEnabled(have and not locked and not watching)
        self.buttons["depth"].setEnabled(have and not watching)
        self.buttons["move"].setToolTip(WATCH_TIP.format(rig=sel[0]) if watching and sel else
                                        LOCK_TIP.format(mid=sel[1]) if locked and sel else
                                        "Move the selected probe to a position, or by a distance, at a speed")
        self.buttons["control"].setVisible(watching)
        if sel:
            self.buttons["control"].setToolTip(WATCH_TIP.format(rig=sel[0]))
        self.inside.setEnabled(have and not watching)
        self._sync_inside()
        if locked and isinstance(self.dialog, MoveDialog) and self.dialog.isVisible() \
                and (self.dialog.rig, self.dialog.mid) == sel:
            self.dialog.problem.setText(LOCK_TIP.format(mid=sel[1]))
            self.dialog.problem.show()

    def _follow_dialog(self) -> None:
        dialog = self.dialog
        if isinstance(dialog, MoveDialog | DepthDialog) and dialog.isVisible():
            dialog.follow(self.model.entry(dialog.rig, dialog.mid))

    def _sync_inside(self) -> None:
        sel = self.selected()
        self.inside.setChecked(bool(sel and self.model.entry(*sel).get("inside_brain")))

    # ------------------------------------------------------------------ actions
    def stop_all(self) -> None:
        if self.stop_all_handler is not None:
            self.stop_all_handler()
        else:
            spawn(self.console.stop_all(), self, "STOP ALL")

    def take_control(self) -> None:
        sel = self.selected()
        if sel:
            spawn(self.console.take_control(sel[0]), self, "Take control", on_done=lambda _ok: self.update_actions())

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
        if not self.buttons["move"].isEnabled():
            return
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
