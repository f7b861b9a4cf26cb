"""The rigs table's model: one row per rig of the rigs file, bound to ``rigs/<name>`` of the live state
(the rig monitor's) and to ``session/rigs/<name>`` (the current session's step with that rig).

Live-state mods mark rows dirty; a :class:`~app.gui.qtasync.FrameCoalescer` turns them into at most one
``dataChanged`` per frame. The main-sync column is a radio (exactly one on), drawn by
:class:`MainSyncDelegate`; clicking it asks the console, which refuses during a session.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QEvent, QModelIndex, QPersistentModelIndex, QRect, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QApplication,
    QHeaderView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionButton,
    QStyleOptionViewItem,
    QTableView,
)

from app.console import Console
from app.gui.icons import link_icon
from app.gui.qtasync import FrameCoalescer
from app.palette import LINK_COLOURS, STALE
from app.rig_view import Cell, age_cell, drivers_text, error_cell, status_cell
from app.wording import progress_words
from core.session import SessionError

Index = QModelIndex | QPersistentModelIndex

#: (key, header, tooltip)
COLUMNS: list[tuple[str, str, str]] = [
    ("name", "Rig", "Name in the rigs file"),
    ("transport", "Transport", "udp/tcp: iblutil · zmq: RigDeck · sio: ephys-link Socket.IO · rpc: sipyco"),
    ("link", "Link", "connecting / online / unreachable"),
    ("status", "Rig status", "What the rig says it is doing: CONNECTED (ready), INITIALIZED, RUNNING, STOPPED; "
     "greyed 'as of' the time it was last heard when it cannot be reached, '—' before it was first reached"),
    ("main_sync", "Main sync", "The rig that owns the session clock and the exp_ref (locked during a session)"),
    ("age", "Last heard", "Time since the rig last sent anything: a reply or a pushed update"),
    ("rtt_ms", "RTT", "Round-trip time of the last request"),
    ("progress", "Step", "The last thing this session did with the rig"),
    ("last_error", "Last error", "The rig's trouble now (cleared when it recovers); hover for its recent errors"),
]
COL = {key: i for i, (key, _, _) in enumerate(COLUMNS)}

#: column -> width at the default size; the columns marked "stretch" share what is left, so every column
#: is on screen without a horizontal scrollbar at 1280x720 (long texts are elided, the tooltip has them whole)
WIDTHS: dict[str, int | str] = {"name": 90, "transport": "stretch", "link": 105, "status": 170, "main_sync": 70,
                                "age": 80, "rtt_ms": 70, "progress": "stretch", "last_error": "stretch"}
LOCKED_TIP = "Locked while a session is under way: the main-sync rig cannot change while the rigs record"


def fit_columns(view: QTableView) -> None:
    header = view.horizontalHeader()
    header.setStretchLastSection(False)
    header.setMinimumSectionSize(40)
    view.setTextElideMode(Qt.TextElideMode.ElideRight)
    view.setWordWrap(False)
    for key, width in WIDTHS.items():
        if width == "stretch":
            header.setSectionResizeMode(COL[key], QHeaderView.ResizeMode.Stretch)
        else:
            header.setSectionResizeMode(COL[key], QHeaderView.ResizeMode.Interactive)
            view.setColumnWidth(COL[key], int(width))


#: old news (a status "as of", the age of a rig that is away): greyed, still readable (see app/palette.py)
STALE_COLOUR = STALE
#: columns whose text comes from :mod:`app.rig_view` (greyed when the value is not confirmed now)
CELLS = {"status": status_cell, "age": age_cell, "last_error": error_cell}


class RigTableModel(QAbstractTableModel):
    """Rows follow ``console.specs``; cells read the live state at paint time (never a copy)."""

    refused = Signal(str)

    def __init__(self, console: Console, parent: Any = None) -> None:
        super().__init__(parent)
        self.console = console
        self.names: list[str] = list(console.specs)
        self.repaints = 0
        self._coalescer = FrameCoalescer(self._flush, self)
        self._unsubscribe = console.state.subscribe(self._on_mod)

    def detach(self) -> None:
        self._unsubscribe()

    # ------------------------------------------------------------------ live state -> rows
    def _on_mod(self, mod: dict[str, Any]) -> None:
        path = mod.get("path") or []
        if mod.get("action") == "init" or not path:
            self._coalescer.mark("*")
        elif path[0] == "rigs":
            if len(path) > 3 and path[2] == "service" and path[3] != "drivers":
                return  # a rig's own published tree (positions at 100 Hz): only its drivers' health is shown
            self._coalescer.mark(path[1] if len(path) > 1 else "*")
        elif path[0] == "console":
            self._coalescer.mark("*")
        elif path[0] == "session" and len(path) > 1 and path[1] == "rigs":
            self._coalescer.mark(path[2] if len(path) > 2 else "*")

    def _flush(self, dirty: set[Hashable]) -> None:
        self.repaints += 1
        names = list(self.console.specs)
        if names != self.names:
            self.beginResetModel()
            self.names = names
            self.endResetModel()
            return
        if "*" in dirty:
            self.refresh()
            return
        for name in dirty:
            if name in self.names:
                row = self.names.index(name)
                self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def refresh(self, column: int | None = None) -> None:
        """Repaint every row (or one column: the age column, once a second by the window's clock)."""
        if not self.names:
            return
        first, last = (0, len(COLUMNS) - 1) if column is None else (column, column)
        self.dataChanged.emit(self.index(0, first), self.index(len(self.names) - 1, last))

    # ------------------------------------------------------------------ Qt model
    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.names)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and 0 <= section < len(COLUMNS):
            if role == Qt.ItemDataRole.DisplayRole:
                return COLUMNS[section][1]
            if role == Qt.ItemDataRole.ToolTipRole:
                return COLUMNS[section][2]
        return None

    def rig(self, row: int) -> dict[str, Any]:
        value = self.console.state.get(["rigs", self.names[row]])
        return value if isinstance(value, dict) else {}

    def selectable_main_sync(self, name: str) -> bool:
        spec = self.console.specs.get(name)
        return bool(spec and spec.in_sessions) and not self.console.active

    def flags(self, index: Index) -> Qt.ItemFlag:
        flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.column() == COL["main_sync"] and self.selectable_main_sync(self.names[index.row()]):
            flags |= Qt.ItemFlag.ItemIsUserCheckable
        return flags

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self.names):
            return None
        name = self.names[index.row()]
        key = COLUMNS[index.column()][0]
        rig = self.rig(index.row())
        cell: Cell | None = CELLS[key](rig) if key in CELLS else None
        if role == Qt.ItemDataRole.DisplayRole:
            return cell.text if cell else self._text(name, key, rig)
        if role == Qt.ItemDataRole.ToolTipRole:
            if cell:
                return cell.tooltip or cell.text
            if key == "main_sync":
                spec = self.console.specs.get(name)
                if spec is None or not spec.in_sessions:
                    return f"{name} takes no part in sessions"
                if not self.selectable_main_sync(name):
                    return LOCKED_TIP
                return f"Make {name} the main-sync rig (it owns the session clock and the exp_ref)"
            if key == "progress":  # the protocol's own words, on demand
                return str(self.console.state.get(["session", "rigs", name, "progress"]) or "")
            if key == "name":
                return f"{name}: {rig.get('uri', '')} ({rig.get('role', 'aux')})\n\n{drivers_text(rig)}" \
                    "\n\n(double-click for details)"
            if key == "transport":
                return f"{name}: {rig.get('uri', '')} ({rig.get('role', 'aux')})"
            return self._text(name, key, rig)
        if role == Qt.ItemDataRole.DecorationRole and key == "link":
            return link_icon(str(rig.get("link", "connecting")))
        if role == Qt.ItemDataRole.ForegroundRole:
            if cell and cell.stale:
                return QBrush(QColor(STALE_COLOUR))
            if key == "link":
                return QBrush(QColor(LINK_COLOURS.get(str(rig.get("link")), "#8a8a8a")))
            if key == "last_error" and (rig.get("last_error") or self.data(index)):
                return QBrush(QColor(LINK_COLOURS["unreachable"]))
        if role == Qt.ItemDataRole.CheckStateRole and key == "main_sync":
            spec = self.console.specs.get(name)
            if spec is None or not spec.in_sessions:
                return None
            on = self.console.shown_main_sync() == name
            return Qt.CheckState.Checked if on else Qt.CheckState.Unchecked
        return None

    def _text(self, name: str, key: str, rig: dict[str, Any]) -> str:
        if key == "name":
            return name
        if key == "transport":
            return str(rig.get("uri", ""))  # the scheme (udp://, zmq://, ...) names the transport
        if key == "main_sync":
            return ""
        if key == "progress":
            return progress_words(str(self.console.state.get(["session", "rigs", name, "progress"]) or ""))
        if key == "rtt_ms":
            rtt = rig.get("rtt_ms")
            return f"{rtt:.2f} ms" if isinstance(rtt, int | float) else "—"
        return str(rig.get(key) or "")

    def setData(self, index: Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if role != Qt.ItemDataRole.CheckStateRole or COLUMNS[index.column()][0] != "main_sync":
            return False
        name = self.names[index.row()]
        try:
            self.console.set_main_sync(name)
        except SessionError as ex:
            self.refused.emit(str(ex))
            return False
        self.refresh(COL["main_sync"])
        return True


class MainSyncDelegate(QStyledItemDelegate):
    """Draw the main-sync cell as a radio button and turn a click on it into ``setData(Checked)``."""

    def _rect(self, option: QStyleOptionViewItem) -> QRect:
        style = QApplication.style()
        size = style.pixelMetric(QStyle.PixelMetric.PM_ExclusiveIndicatorWidth)
        r = option.rect
        return QRect(r.x() + (r.width() - size) // 2, r.y() + (r.height() - size) // 2, size, size)

    def paint(self, painter: Any, option: QStyleOptionViewItem, index: Index) -> None:
        state = index.data(Qt.ItemDataRole.CheckStateRole)
        if state is None:
            super().paint(painter, option, QModelIndex())
            return
        button = QStyleOptionButton()
        button.rect = self._rect(option)
        button.state = QStyle.StateFlag.State_Enabled if index.flags() & Qt.ItemFlag.ItemIsUserCheckable \
            else QStyle.StateFlag.State_None
        button.state |= QStyle.StateFlag.State_On if state == Qt.CheckState.Checked else QStyle.StateFlag.State_Off
        QApplication.style().drawPrimitive(QStyle.PrimitiveElement.PE_IndicatorRadioButton, button, painter)

    def editorEvent(self, event: QEvent, model: Any, option: QStyleOptionViewItem, index: Index) -> bool:
        """A click on an enabled radio picks that rig; a locked radio looks disabled and ignores the click (its
        tooltip says why: no box to dismiss in the middle of a session)."""
        if event.type() == QEvent.Type.MouseButtonRelease and index.data(Qt.ItemDataRole.CheckStateRole) is not None:
            if index.flags() & Qt.ItemFlag.ItemIsUserCheckable:
                model.setData(index, Qt.CheckState.Checked, Qt.ItemDataRole.CheckStateRole)
            return True
        return False
