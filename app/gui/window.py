"""The main window: rigs table in the middle, session panel, manipulators and log in docks.

Where does a click go? Every panel's buttons call :class:`app.console.Console` coroutines through
:func:`app.gui.qtasync.spawn`; this module only arranges panels, menus, shortcuts, the status bar, the
one-second display clock (elapsed time, reply ages) and the saved layout (QSettings).
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox, QWidget

from app.console import Console
from app.gui.icons import icon
from app.gui.log_panel import LogPanel
from app.gui.manipulators_panel import ManipulatorsPanel
from app.gui.qtasync import FrameCoalescer, ask, spawn
from app.gui.rigs_model import COL
from app.gui.rigs_panel import RigsPanel
from app.gui.session_panel import SessionPanel

SHORTCUTS = {"start": "Ctrl+Return", "stop": "Ctrl+.", "stop_all": "F12"}


class MainWindow(QMainWindow):
    def __init__(self, console: Console, settings: QSettings | None = None) -> None:
        super().__init__()
        self.console = console
        self.settings = settings or QSettings("RigDeck", "RigDeck")
        self.setObjectName("mainWindow")
        self.setWindowIcon(icon("rigdeck"))
        self.setWindowTitle("RigDeck")
        self.resize(1280, 800)
        self.dialog: Any = None
        self.reattach_box: QMessageBox | None = None

        self.rigs = RigsPanel(console)
        self.setCentralWidget(self.rigs)
        self.session = SessionPanel(console, self.settings)
        self.manipulators = ManipulatorsPanel(console)
        self.log = LogPanel(console)
        self.docks = {
            "session": self._dock("Session", self.session, Qt.DockWidgetArea.LeftDockWidgetArea),
            "manipulators": self._dock("Manipulators", self.manipulators, Qt.DockWidgetArea.BottomDockWidgetArea),
            "log": self._dock("Log", self.log, Qt.DockWidgetArea.BottomDockWidgetArea),
        }
        self.tabifyDockWidget(self.docks["manipulators"], self.docks["log"])
        self.docks["manipulators"].raise_()

        self.summary = QLabel(objectName="statusSummary")
        self.statusBar().addPermanentWidget(self.summary)
        self._menus()
        self.stop_all_shortcut = QShortcut(QKeySequence(SHORTCUTS["stop_all"]), self,
                                           activated=self.manipulators.stop_all)
        self.stop_all_shortcut.setContext(Qt.ShortcutContext.ApplicationShortcut)

        self.clock = QTimer(self)  # a display clock (elapsed time, reply ages), not a poll of anything
        self.clock.setInterval(1000)
        self.clock.timeout.connect(self._tick)
        self.clock.start()
        self._coalescer = FrameCoalescer(self._refresh, self)
        self._unsubscribe = console.state.subscribe(self._on_mod)
        self.restore_layout()
        self._refresh(set())

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{title.lower()}")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _menus(self) -> None:
        def action(menu: Any, text: str, slot: Any, shortcut: str | None = None, tip: str = "") -> QAction:
            act = QAction(text, self)
            if shortcut:
                act.setShortcut(QKeySequence(shortcut))
            act.setStatusTip(tip)
            act.triggered.connect(slot)
            menu.addAction(act)
            return act

        file = self.menuBar().addMenu("&File")
        action(file, "&Open rigs file…", self.choose_rigs, "Ctrl+O", "Open a remote_rigs.yaml")
        action(file, "&Reload rigs file", self.rigs.reload, "Ctrl+Shift+R")
        action(file, "&Save rigs file", self.rigs.save, "Ctrl+S")
        file.addSeparator()
        action(file, "&Quit", self.close, "Ctrl+Q")
        session = self.menuBar().addMenu("&Session")
        action(session, "&Start", self.session.start, SHORTCUTS["start"], "Start a session on every rig")
        action(session, "S&top", self.session.stop, SHORTCUTS["stop"], "Stop the session (EXPEND)")
        action(session, "&Abort…", self.session.abort, None, "Interrupt the session (EXPINTERRUPT)")
        action(session, "&Cleanup", self.session.cleanup)
        session.addSeparator()
        action(session, "STOP ALL manipulators", self.manipulators.stop_all, None, "F12 works everywhere")
        view = self.menuBar().addMenu("&View")
        for dock in self.docks.values():
            view.addAction(dock.toggleViewAction())

    # ------------------------------------------------------------------ rigs file
    def open_rigs(self, path: str | Path) -> None:
        """Load a rigs file; a bad one gives a dialog naming the problem and keeps what was loaded."""
        path = Path(path)

        def loaded(_r: Any) -> None:
            self.settings.setValue("rigs/last_file", str(path.resolve()))
            self.setWindowTitle(f"RigDeck — {path.name}")
            self.rigs.update_actions()
            self.log.set_rigs(list(self.console.specs))
            self.offer_reattach()

        self.setWindowTitle(f"RigDeck — {path.name}")
        spawn(self.console.load(path), self, "Rigs file", on_done=loaded)

    def choose_rigs(self) -> None:
        dialog = QFileDialog(self, "Open rigs file", str(self.console.rigs_path or Path.home()),
                             "Rigs files (*.yaml *.yml);;All files (*)")
        dialog.fileSelected.connect(self.open_rigs)
        self.dialog = dialog
        dialog.open()

    def offer_reattach(self) -> None:
        """Offer the newest unfinished session whose rigs are all in the loaded rigs file."""

        async def offer() -> None:
            rigs = set(self.console.specs)
            unfinished = [s for s in await self.console.unfinished()
                          if s.rigs and set(s.participants or s.rigs) <= rigs]
            if not unfinished or self.console.active:
                return
            summary = unfinished[0]
            box = QMessageBox(QMessageBox.Icon.Question, "Unfinished session",
                              f"Session {summary.exp_ref} ({summary.subject}) was left {summary.phase} by a console "
                              f"that stopped.\nReattach to it (poll its rigs, and stop it from here)?",
                              QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
            box.setObjectName("reattach")
            self.reattach_box = box
            if await ask(box) == QMessageBox.StandardButton.Yes:
                await self.console.attach(summary)
                self.session.update_state()

        spawn(offer(), self, "Reattach")

    # ------------------------------------------------------------------ status
    def _on_mod(self, mod: dict[str, Any]) -> None:
        """The status bar shows links and the session: a rig's pushed tree (positions at 100 Hz) is not news."""
        path = mod.get("path") or []
        if len(path) < 3 or path[0] != "rigs" or path[2] != "service":
            self._coalescer.mark("state")

    def _refresh(self, _dirty: set[Hashable]) -> None:
        rigs = self.console.state.get(["rigs"]) or {}
        counts: dict[str, int] = {}
        for rig in rigs.values():
            if isinstance(rig, dict):
                counts[str(rig.get("link"))] = counts.get(str(rig.get("link")), 0) + 1
        parts = [f"{len(rigs)} rigs"] + [f"{n} {k}" for k, n in sorted(counts.items())]
        phase = self.console.phase.value
        ref = self.console.session.exp_ref if self.console.session else None
        parts.append(f"session {phase}" + (f" ({ref})" if ref else ""))
        self.summary.setText(" · ".join(parts))
        self.rigs.update_actions()

    def _tick(self) -> None:
        self.session.tick()
        self.rigs.model.refresh(COL["age"])

    # ------------------------------------------------------------------ layout
    def restore_layout(self) -> None:
        for key, restore in (("window/geometry", self.restoreGeometry), ("window/state", self.restoreState),
                             ("rigs/header", self.rigs.view.horizontalHeader().restoreState),
                             ("log/header", self.log.view.horizontalHeader().restoreState)):
            value = self.settings.value(key)
            if isinstance(value, QByteArray | bytes):
                restore(value)

    def save_layout(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("rigs/header", self.rigs.view.horizontalHeader().saveState())
        self.settings.setValue("log/header", self.log.view.horizontalHeader().saveState())
        self.settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self.save_layout()
        self.clock.stop()
        self._unsubscribe()
        for panel in (self.rigs.model, self.session, self.manipulators.model, self.log.model):
            panel.detach()
        super().closeEvent(event)
