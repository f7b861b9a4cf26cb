"""The log panel: every message sent and received and every error, filterable by rig and level.

Rows come from the console's :class:`~app.console.LogBook`; new entries are inserted in one batch per
frame. Copy puts the selected lines (or all shown) on the clipboard; Save writes the shown lines to a file.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QBrush, QColor, QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.console import Console, LogEntry
from app.gui.qtasync import FrameCoalescer, show_error
from app.gui.widgets import FlatTableModel, row_table

Index = QModelIndex | QPersistentModelIndex
LEVELS = ["debug", "info", "warning", "error"]
HEADERS = ["Time", "Level", "Rig", "Message"]
LEVEL_COLOURS = {"error": "#d0342c", "warning": "#b58900", "debug": "#8a8a8a"}


def entry_fields(e: LogEntry) -> tuple[str, str, str, str]:
    stamp = time.strftime("%H:%M:%S", time.localtime(e.time)) + f".{int(e.time * 1000) % 1000:03d}"
    return stamp, e.level, e.rig or "-", e.text


def entry_line(e: LogEntry) -> str:
    return "\t".join(entry_fields(e))


class LogModel(FlatTableModel):
    headers = HEADERS

    def __init__(self, console: Console, parent: Any = None) -> None:
        super().__init__(parent)
        self.entries: list[LogEntry] = list(console.logbook.entries)
        self.limit = console.logbook.entries.maxlen or 20_000
        self._pending: list[LogEntry] = []
        self._coalescer = FrameCoalescer(self._flush, self)
        self._unsubscribe = console.logbook.subscribe(self._on_entry)

    def detach(self) -> None:
        self._unsubscribe()

    def _on_entry(self, entry: LogEntry) -> None:
        self._pending.append(entry)
        self._coalescer.mark("new")

    def _flush(self, _dirty: set[Hashable]) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        overflow = len(self.entries) + len(pending) - self.limit
        if overflow > 0:
            drop = min(overflow, len(self.entries))
            self.beginRemoveRows(QModelIndex(), 0, drop - 1)
            del self.entries[:drop]
            self.endRemoveRows()
        first = len(self.entries)
        self.beginInsertRows(QModelIndex(), first, first + len(pending) - 1)
        self.entries.extend(pending)
        self.endInsertRows()

    def rows_source(self) -> list[LogEntry]:
        return self.entries

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        e = self.entries[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return entry_fields(e)[index.column()]
        if role == Qt.ItemDataRole.ForegroundRole and e.level in LEVEL_COLOURS:
            return QBrush(QColor(LEVEL_COLOURS[e.level]))
        if role == Qt.ItemDataRole.UserRole:
            return e
        return None


class LogFilter(QSortFilterProxyModel):
    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.rig = ""  # "" = all rigs
        self.min_level = "info"

    def set_filter(self, rig: str, min_level: str) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt >= 6.9; invalidateFilter() is deprecated there
            self.beginFilterChange()
            self.rig, self.min_level = rig, min_level
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self.rig, self.min_level = rig, min_level
            self.invalidateFilter()

    def filterAcceptsRow(self, row: int, parent: Index) -> bool:  # noqa: N802
        e: LogEntry = self.sourceModel().entries[row]
        if self.rig and e.rig not in (self.rig, ""):
            return False
        return LEVELS.index(e.level) >= LEVELS.index(self.min_level)


class LogPanel(QWidget):
    def __init__(self, console: Console, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.console = console
        self.model = LogModel(console, self)
        self.proxy = LogFilter(self)
        self.proxy.setSourceModel(self.model)
        self.view = row_table("logTable", self.proxy, single=False)
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.view.setColumnWidth(0, 100)
        self.view.setColumnWidth(1, 60)
        self.view.setColumnWidth(2, 90)
        self.model.rowsInserted.connect(self._follow)

        self.rig = QComboBox(objectName="logRig")
        self.rig.setToolTip("Show one rig's lines (and console-wide ones)")
        self.level = QComboBox(objectName="logLevel")
        self.level.addItems(LEVELS)
        self.level.setCurrentText("info")
        self.level.setToolTip("Lowest level shown (debug shows every message sent)")
        self.rig.currentIndexChanged.connect(self._refilter)
        self.level.currentIndexChanged.connect(self._refilter)
        copy = QPushButton("Copy", objectName="logCopy", toolTip="Copy the selected lines (or all shown)")
        copy.clicked.connect(self.copy)
        save = QPushButton("Save…", objectName="logSave", toolTip="Save the shown lines to a text file")
        save.clicked.connect(self.save)
        QShortcut(QKeySequence.StandardKey.Copy, self.view, activated=self.copy)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Rig"))
        bar.addWidget(self.rig)
        bar.addWidget(QLabel("Level"))
        bar.addWidget(self.level)
        bar.addStretch(1)
        bar.addWidget(copy)
        bar.addWidget(save)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.view)
        self.dialog: QFileDialog | None = None
        self.set_rigs(list(console.specs))

    def set_rigs(self, names: list[str]) -> None:
        current = self.rig.currentData() or ""
        self.rig.blockSignals(True)
        self.rig.clear()
        self.rig.addItem("all rigs", "")
        for name in names:
            self.rig.addItem(name, name)
        self.rig.setCurrentIndex(max(0, self.rig.findData(current)))
        self.rig.blockSignals(False)
        self._refilter()

    def _refilter(self) -> None:
        self.proxy.set_filter(self.rig.currentData() or "", self.level.currentText())

    def _follow(self) -> None:
        bar = self.view.verticalScrollBar()
        if bar.value() >= bar.maximum() - 2:
            self.view.scrollToBottom()

    def shown_lines(self, selected_only: bool = False) -> list[str]:
        rows = sorted({i.row() for i in self.view.selectionModel().selectedRows()}) if selected_only else []
        if not rows:
            rows = list(range(self.proxy.rowCount()))
        return [entry_line(self.proxy.index(r, 0).data(Qt.ItemDataRole.UserRole)) for r in rows]

    def copy(self) -> None:
        QGuiApplication.clipboard().setText("\n".join(self.shown_lines(selected_only=True)))

    def save(self) -> None:
        dialog = QFileDialog(self, "Save log", str(Path.home() / "rigdeck-log.txt"), "Text (*.txt);;All files (*)")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.fileSelected.connect(self.save_to)
        self.dialog = dialog
        dialog.open()

    def save_to(self, path: str) -> None:
        try:
            Path(path).write_text("\n".join(self.shown_lines()) + "\n", encoding="utf-8")
        except OSError as ex:
            show_error(self, "Save log", f"cannot write {path}: {ex}")
