"""A rig's detail: URI, role, link, status, last heard and a live table of its drivers' health.

Non-modal, so it can stay open beside the window through a session. Every text comes from
:mod:`app.rig_view` (tested headless); this module only lays it out and repaints when the rig's
``rigs/<name>`` live state changes (coalesced to a frame) and once a second for the ages.
"""

from __future__ import annotations

from collections.abc import Hashable, Sized
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHeaderView,
    QLabel,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.console import Console
from app.gui.qtasync import FrameCoalescer
from app.gui.widgets import FlatTableModel, Index, row_table
from app.palette import LINK_COLOURS
from app.rig_view import DriverHealth, age_cell, driver_health, drivers_text, error_cell, status_cell

#: (header, DriverHealth attribute)
DRIVER_COLUMNS = [("Driver", "name"), ("Kind", "kind"), ("State", "state"), ("Counts", "counts"),
                  ("Last activity", "activity"), ("Error", "error")]


class DriverTableModel(FlatTableModel):
    """The drivers' health rows, replaced wholesale on each repaint (a rig has a handful of drivers)."""

    headers = [header for header, _ in DRIVER_COLUMNS]

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.rows: list[DriverHealth] = []

    def rows_source(self) -> Sized:
        return self.rows

    def set_rows(self, rows: list[DriverHealth]) -> None:
        if [r.name for r in rows] != [r.name for r in self.rows]:
            self.beginResetModel()
            self.rows = rows
            self.endResetModel()
        elif rows:
            self.rows = rows
            self.dataChanged.emit(self.index(0, 0), self.index(len(rows) - 1, len(self.headers) - 1))

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self.rows):
            return None
        row = self.rows[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return getattr(row, DRIVER_COLUMNS[index.column()][1])
        if role == Qt.ItemDataRole.ForegroundRole and row.error:
            return QBrush(QColor(LINK_COLOURS["unreachable"]))
        return None


class RigDetailDialog(QDialog):
    """One rig's detail, following ``rigs/<name>`` of the console's live state until closed."""

    def __init__(self, console: Console, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.console = console
        self.name = name
        self.setObjectName("rigDetail")
        self.setWindowTitle(f"Rig {name}")
        self.setModal(False)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.fields = {key: QLabel(objectName=f"rigDetail_{key}") for key in
                       ("uri", "role", "link", "status", "heard", "error")}
        form = QFormLayout()
        for key, label in (("uri", "URI"), ("role", "Role"), ("link", "Link"), ("status", "Status"),
                           ("heard", "Last heard"), ("error", "Last error")):
            self.fields[key].setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.fields[key].setWordWrap(key == "error")
            form.addRow(label, self.fields[key])
        self.drivers = DriverTableModel(self)
        self.table = row_table("rigDetailDrivers", self.drivers)
        self.table.setWordWrap(False)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.table.setSelectionMode(QTableView.SelectionMode.NoSelection)
        header = self.table.horizontalHeader()
        for column in range(len(DRIVER_COLUMNS) - 1):  # a handful of rows: whole texts, the error takes the rest
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.none = QLabel(objectName="rigDetailNoDrivers")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(QLabel("Drivers"))
        layout.addWidget(self.table)
        layout.addWidget(self.none)
        layout.addWidget(buttons)
        self.resize(760, 340)
        self._coalescer = FrameCoalescer(self._flush, self)
        self._unsubscribe = console.state.subscribe(self._on_mod)
        self._ages = QTimer(self)
        self._ages.timeout.connect(self.refresh)
        self._ages.start(1000)
        self.refresh()

    def _on_mod(self, mod: dict[str, Any]) -> None:
        path = mod.get("path") or []
        if not path or mod.get("action") == "init" or (path[0] == "rigs" and (len(path) < 2 or path[1] == self.name)):
            self._coalescer.mark(self.name)

    def _flush(self, _dirty: set[Hashable]) -> None:
        self.refresh()

    def rig(self) -> dict[str, Any]:
        value = self.console.state.get(["rigs", self.name])
        return value if isinstance(value, dict) else {}

    def refresh(self) -> None:
        """Repaint every field and the drivers' table from the live state now."""
        rig = self.rig()
        status, age, error = status_cell(rig), age_cell(rig), error_cell(rig)
        self.fields["uri"].setText(str(rig.get("uri") or self._spec_uri()))
        self.fields["role"].setText(str(rig.get("role") or "—"))
        self.fields["link"].setText(str(rig.get("link") or "—"))
        self.fields["status"].setText(status.text)
        self.fields["status"].setToolTip(status.tooltip)
        self.fields["heard"].setText(age.text)
        self.fields["error"].setText(error.text or "none")
        self.fields["error"].setToolTip(error.tooltip)
        rows = driver_health(rig)
        self.drivers.set_rows(rows)
        self.table.setVisible(bool(rows))
        self.none.setVisible(not rows)
        self.none.setText("" if rows else drivers_text(rig))

    def _spec_uri(self) -> str:
        spec = self.console.specs.get(self.name)
        return spec.uri if spec else "—"

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - stop following the live state
        self._unsubscribe()
        self._unsubscribe = lambda: None
        self._ages.stop()
        super().closeEvent(event)
