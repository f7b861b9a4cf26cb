"""Small pieces the panels share: a flat table model base, a row-selecting table, a button bar, OK/Cancel."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sized
from typing import Any

from PySide6.QtCore import QAbstractItemModel, QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QPushButton, QTableView

Index = QModelIndex | QPersistentModelIndex


class FlatTableModel(QAbstractTableModel):
    """A table with fixed column headers over a list (``self.rows_source()``); subclasses write ``data``."""

    headers: list[str] = []

    def rows_source(self) -> Sized:
        raise NotImplementedError

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self.rows_source())

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self.headers)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.headers[section]
        return None


def add_ok_cancel(dialog: QDialog, form: QFormLayout) -> None:
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    form.addRow(buttons)


def row_table(name: str, model: QAbstractItemModel, single: bool = True) -> QTableView:
    """A table that selects whole rows, without row numbers, its last column stretched."""
    view = QTableView(objectName=name)
    view.setModel(model)
    view.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
    if single:
        view.setSelectionMode(QTableView.SelectionMode.SingleSelection)
    view.verticalHeader().setVisible(False)
    view.horizontalHeader().setStretchLastSection(True)
    return view


def button_bar(prefix: str, specs: Iterable[tuple[str, str, str, Callable[[], Any]]]
               ) -> tuple[QHBoxLayout, dict[str, QPushButton]]:
    """A row of buttons from ``(key, text, tooltip, slot)``; object names ``<prefix>_<key>`` (tests find them)."""
    bar = QHBoxLayout()
    buttons: dict[str, QPushButton] = {}
    for key, text, tip, slot in specs:
        button = QPushButton(text, objectName=f"{prefix}_{key}")
        button.setToolTip(tip)
        button.clicked.connect(slot)
        bar.addWidget(button)
        buttons[key] = button
    return bar, buttons
