"""The Data panel: each session's files on their way from the rigs, per rig, until verified.

A thin view over :class:`app.transfers.TransferManager` (the console's ``transfers``) and its Qt-free rows
(:func:`app.transfers.transfer_row`): a tree of sessions with one row per rig (progress bar, bytes, rate,
ETA, a verified mark, the error in plain words), Retry for the selected session (or every failed one), the
destination (a setting kept in QSettings; empty means ``$RIGDECK_TRANSFER_DIR`` or the data folder), and a
line at the top naming the sessions whose files are not yet verified, with one click to resume them.
Progress repaints at most once per frame, whatever the chunk rate, and once a second while anything
transfers (a row that gets no bytes turns to "stalled" instead of keeping its last rate).
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.console import Console
from app.gui.qtasync import FrameCoalescer, spawn
from app.transfers import session_words, transfer_row
from core.transfer import PendingSession, pending_text
from core.workers import in_worker

HEADERS = ["Session / rig", "Progress", "Bytes", "Rate", "ETA", "Verified", "State / error"]
COL = {name: i for i, name in enumerate(HEADERS)}
SETTING_TO = "transfer/to"


class DataPanel(QWidget):
    def __init__(self, console: Console, settings: QSettings | None = None) -> None:
        super().__init__(objectName="dataPanel")
        self.console = console
        self.settings = settings
        self.pending: list[PendingSession] = []
        self.sessions: dict[str, QTreeWidgetItem] = {}
        self.rows: dict[tuple[str, str], QTreeWidgetItem] = {}
        self.bars: dict[tuple[str, str], QProgressBar] = {}
        self.dialog: Any = None

        self.banner = QLabel(objectName="pendingBanner")
        self.resume_button = QPushButton("Resume", objectName="resumeTransfers")
        self.resume_button.setToolTip("Copy the files of these sessions now (only what is missing)")
        self.resume_button.clicked.connect(self.resume_pending)
        top = QHBoxLayout()
        top.addWidget(self.banner, 1)
        top.addWidget(self.resume_button)

        self.destination = QLineEdit(objectName="transferTo")
        self.destination.setPlaceholderText("default: $RIGDECK_TRANSFER_DIR, else each session's own folder")
        self.destination.editingFinished.connect(lambda: self.set_destination(self.destination.text()))
        choose = QPushButton("Choose…", objectName="chooseTransferTo")
        choose.clicked.connect(self.choose_destination)
        where = QHBoxLayout()
        where.addWidget(QLabel("Copy session files to:"))
        where.addWidget(self.destination, 1)
        where.addWidget(choose)

        self.tree = QTreeWidget(objectName="transfers")
        self.tree.setHeaderLabels(HEADERS)
        self.tree.setRootIsDecorated(True)
        self.tree.setUniformRowHeights(True)
        header = self.tree.header()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COL["State / error"], QHeaderView.ResizeMode.Stretch)
        self.retry_button = QPushButton("Retry", objectName="retryTransfer")
        self.retry_button.setToolTip("Copy again what is not verified: the selected session, else every failed one")
        self.retry_button.clicked.connect(self.retry)
        bottom = QHBoxLayout()
        bottom.addStretch(1)
        bottom.addWidget(self.retry_button)

        column = QVBoxLayout(self)
        column.setContentsMargins(4, 4, 4, 4)
        column.addLayout(top)
        column.addLayout(where)
        column.addWidget(self.tree, 1)
        column.addLayout(bottom)

        saved = str(settings.value(SETTING_TO, "") or "") if settings is not None else ""
        self.destination.setText(saved)
        self.set_destination(saved)
        self._coalescer = FrameCoalescer(self.refresh, self)
        self._unsubscribe = console.transfers.subscribe(lambda: self._coalescer.mark("transfers"))
        # while anything transfers, repaint each second even when no byte comes: a rig gone mid-transfer must
        # turn its row to "stalled", not leave its last rate and ETA standing
        self._clock = QTimer(self, interval=1000, timeout=self._tick)
        self._clock.start()
        self.show_pending([])
        self.refresh(set())

    # ---------------------------------------------------------------- destination
    def set_destination(self, text: str) -> None:
        text = text.strip()
        self.console.transfers.to = Path(text).expanduser() if text else None
        if self.settings is not None:
            self.settings.setValue(SETTING_TO, text)

    def choose_destination(self) -> None:
        dialog = QFileDialog(self, "Copy session files to", self.destination.text())
        dialog.setFileMode(QFileDialog.FileMode.Directory)
        dialog.fileSelected.connect(lambda path: (self.destination.setText(path), self.set_destination(path)))
        self.dialog = dialog
        dialog.open()

    # ---------------------------------------------------------------- pending at start-up
    def check_pending(self) -> None:
        """Look (off the GUI thread's way: a scan of journals) for sessions whose files are not verified."""

        async def look() -> list[PendingSession]:
            return await in_worker(self.console.transfers.pending, specs=self.console.specs)

        spawn(look(), self, "Data", on_done=self.show_pending)

    def show_pending(self, pending: list[PendingSession]) -> None:
        self.pending = [p for p in pending if p.exp_ref not in self.console.transfers.jobs]
        text = pending_text(self.pending)
        # about earlier sessions only: this launch's transfers, failed ones included, are in the list below
        self.banner.setText(text or "No earlier session is waiting for its files to be transferred.")
        self.resume_button.setVisible(bool(self.pending))

    def resume_pending(self) -> None:
        self.console.transfers.resume(self.pending, self.console.specs)
        self.show_pending([])

    # ---------------------------------------------------------------- retry
    def retry(self) -> None:
        item = self.tree.currentItem()
        ref = None
        while item is not None:
            ref = item.data(0, Qt.ItemDataRole.UserRole)
            item = item.parent()
        manager = self.console.transfers
        refs = [ref] if ref else [r for r, job in manager.jobs.items()
                                  if not job.verified and not manager.running(r)]
        for r in refs:
            manager.retry(r)

    # ---------------------------------------------------------------- painting
    def _tick(self) -> None:
        manager = self.console.transfers
        if any(manager.running(ref) for ref in manager.jobs):
            self._coalescer.mark("transfers")

    def refresh(self, _dirty: set[Hashable]) -> None:
        manager = self.console.transfers
        for ref, job in reversed(list(manager.jobs.items())):  # newest first
            top = self.sessions.get(ref)
            if top is None:
                top = QTreeWidgetItem([ref])
                top.setData(0, Qt.ItemDataRole.UserRole, ref)
                self.tree.insertTopLevelItem(0, top)
                top.setExpanded(True)
                self.sessions[ref] = top
            top.setText(COL["State / error"], session_words(job, manager.running(ref)))
            top.setToolTip(0, str(job.to))
            for rig in job.rigs.values():
                self._paint_rig(top, transfer_row(ref, rig))
        self.retry_button.setEnabled(any(not j.verified and not manager.running(r) for r, j in manager.jobs.items()))

    def _paint_rig(self, top: QTreeWidgetItem, row: Any) -> None:
        key = (row.exp_ref, row.rig)
        item = self.rows.get(key)
        if item is None:
            item = QTreeWidgetItem([row.rig])
            top.addChild(item)
            self.rows[key] = item
            bar = QProgressBar(objectName=f"progress_{row.rig}")
            bar.setRange(0, 100)
            bar.setMaximumHeight(16)
            self.bars[key] = bar
            self.tree.setItemWidget(item, COL["Progress"], bar)
        self.bars[key].setValue(row.percent)
        self.bars[key].setVisible(row.state != "no transfer")
        item.setText(COL["Bytes"], row.bytes)
        item.setText(COL["Rate"], row.rate)
        item.setText(COL["ETA"], row.eta)
        item.setText(COL["Verified"], "✔" if row.verified else "")
        item.setText(COL["State / error"], row.error or row.state)
        item.setToolTip(COL["State / error"], row.error or row.state)

    def detach(self) -> None:
        self._clock.stop()
        self._unsubscribe()
