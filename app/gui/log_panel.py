"""The log panel: every message sent and received and every error, filterable by rig, level and text.

Rows come from the console's :class:`~app.console.LogBook`; new entries are inserted in one batch per
frame. A message a rig repeats (the same words at the same level, with nothing else from that rig in
between) collapses into its previous row, which counts it and shows when it was last seen: a rig that
keeps timing out is one row, not a scrolling wall. Messages are in plain words; the protocol detail is
in the Details column. Copy puts the selected lines (or all shown) on the clipboard; Save writes them.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass
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
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.console import Console, LogEntry
from app.gui.qtasync import FrameCoalescer, show_error
from app.gui.widgets import FlatTableModel, row_table
from app.palette import LEVEL_COLOURS

Index = QModelIndex | QPersistentModelIndex
LEVELS = ["debug", "info", "warning", "error"]
HEADERS = ["Time", "Level", "Rig", "Message", "Count", "Details"]
COLUMN = {name: i for i, name in enumerate(HEADERS)}


def stamp(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


@dataclass
class LogRow:
    """One row of the log: an entry, and how often (and until when) its rig said it again in a row."""

    entry: LogEntry
    last: float
    count: int = 1

    def fields(self) -> tuple[str, ...]:
        e = self.entry
        return stamp(self.last), e.level, e.rig or "-", e.text, (f"×{self.count}" if self.count > 1 else ""), e.detail

    def line(self) -> str:
        return "\t".join(self.fields())

    def tooltip(self, column: int) -> str:
        if column == COLUMN["Count"] or (column == COLUMN["Time"] and self.count > 1):
            return f"{self.count} times, first at {stamp(self.entry.time)}, last at {stamp(self.last)}"
        return self.fields()[column]


class LogModel(FlatTableModel):
    headers = HEADERS

    def __init__(self, console: Console, parent: Any = None) -> None:
        super().__init__(parent)
        self.rows: list[LogRow] = []
        #: rig -> its latest row and that row's serial number (row index = serial - rows dropped so far)
        self._latest: dict[str, tuple[LogRow, int]] = {}
        self._serial = 0
        self._dropped = 0
        self.limit = console.logbook.entries.maxlen or 20_000
        self._pending: list[LogEntry] = list(console.logbook.entries)
        self._coalescer = FrameCoalescer(self._flush, self)
        self._unsubscribe = console.logbook.subscribe(self._on_entry)
        self._flush(set())  # what was logged before the panel existed

    def detach(self) -> None:
        self._unsubscribe()

    def _on_entry(self, entry: LogEntry) -> None:
        self._pending.append(entry)
        self._coalescer.mark("new")

    def _collapse(self, entry: LogEntry) -> LogRow | None:
        """The row ``entry`` repeats (its rig's latest row, same level and words), or None."""
        latest = self._latest.get(entry.rig)
        if latest is None:
            return None
        row, serial = latest
        if serial < self._dropped or row.entry.level != entry.level or row.entry.text != entry.text:
            return None
        return row

    def _flush(self, _dirty: set[Hashable]) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        new: list[LogRow] = []
        changed: list[int] = []
        for entry in pending:
            row = self._collapse(entry)
            if row is not None:
                row.count += 1
                row.last = entry.time
                serial = self._latest[entry.rig][1]
                if serial < self._dropped + len(self.rows):
                    changed.append(serial - self._dropped)
                continue
            row = LogRow(entry, entry.time)
            self._latest[entry.rig] = (row, self._dropped + len(self.rows) + len(new))
            new.append(row)
        for i in sorted(set(changed)):
            self.dataChanged.emit(self.index(i, 0), self.index(i, len(HEADERS) - 1))
        if not new:
            return
        overflow = len(self.rows) + len(new) - self.limit
        if overflow > 0:
            drop = min(overflow, len(self.rows))
            self.beginRemoveRows(QModelIndex(), 0, drop - 1)
            del self.rows[:drop]
            self._dropped += drop
            self.endRemoveRows()
        first = len(self.rows)
        self.beginInsertRows(QModelIndex(), first, first + len(new) - 1)
        self.rows.extend(new)
        self.endInsertRows()

    def rows_source(self) -> list[LogRow]:
        return self.rows

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return row.fields()[index.column()]
        if role == Qt.ItemDataRole.ToolTipRole:
            return row.tooltip(index.column())
        if role == Qt.ItemDataRole.ForegroundRole and row.entry.level in LEVEL_COLOURS:
            return QBrush(QColor(LEVEL_COLOURS[row.entry.level]))
        if role == Qt.ItemDataRole.UserRole:
            return row
        return None


class LogFilter(QSortFilterProxyModel):
    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.rig = ""  # "" = all rigs
        self.min_level = "info"
        self.search = ""  # lower case; "" = everything

    def set_filter(self, rig: str, min_level: str, search: str = "") -> None:
        values = (rig, min_level, search.strip().lower())
        if hasattr(self, "beginFilterChange"):  # Qt >= 6.9; invalidateFilter() is deprecated there
            self.beginFilterChange()
            self.rig, self.min_level, self.search = values
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self.rig, self.min_level, self.search = values
            self.invalidateFilter()

    def filterAcceptsRow(self, row: int, parent: Index) -> bool:  # noqa: N802
        e: LogEntry = self.sourceModel().rows[row].entry
        if self.rig and e.rig not in (self.rig, ""):
            return False
        if self.search and self.search not in f"{e.rig}\t{e.text}\t{e.detail}".lower():
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
        header = self.view.horizontalHeader()
        header.setStretchLastSection(False)
        for column, width in ((0, 95), (1, 65), (2, 80), (4, 50)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            self.view.setColumnWidth(column, width)
        header.setSectionResizeMode(COLUMN["Message"], QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(COLUMN["Details"], QHeaderView.ResizeMode.Stretch)
        self.view.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.model.rowsInserted.connect(self._follow)

        self.rig = QComboBox(objectName="logRig")
        self.rig.setToolTip("Show one rig's lines (and console-wide ones)")
        self.level = QComboBox(objectName="logLevel")
        self.level.addItems(LEVELS)
        self.level.setCurrentText("info")
        self.level.setToolTip("Lowest level shown (debug shows every message sent)")
        self.rig.currentIndexChanged.connect(self._refilter)
        self.level.currentIndexChanged.connect(self._refilter)
        self.search = QLineEdit(objectName="logSearch", placeholderText="search the log…", clearButtonEnabled=True)
        self.search.setToolTip("Show only lines containing this text (message, rig or details)")
        self.search.textChanged.connect(self._refilter)
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
        bar.addWidget(self.search, 1)
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
        self.proxy.set_filter(self.rig.currentData() or "", self.level.currentText(), self.search.text())

    def _follow(self) -> None:
        bar = self.view.verticalScrollBar()
        if bar.value() >= bar.maximum() - 2:
            self.view.scrollToBottom()

    def shown_lines(self, selected_only: bool = False) -> list[str]:
        rows = sorted({i.row() for i in self.view.selectionModel().selectedRows()}) if selected_only else []
        if not rows:
            rows = list(range(self.proxy.rowCount()))
        return [self.proxy.index(r, 0).data(Qt.ItemDataRole.UserRole).line() for r in rows]

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
