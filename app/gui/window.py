"""The main window: rigs table in the middle, session panel, manipulators and log in docks.

Where does a click go? Every panel's buttons call :class:`app.console.Console` coroutines through
:func:`app.gui.qtasync.spawn`; this module only arranges panels, menus, shortcuts, the status bar, the
one-second display clock (elapsed time, reply ages) and the saved layout (QSettings).
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QVBoxLayout,
    QWidget,
)

from app.console import Console
from app.gui.alarm_banner import AlarmBanner
from app.gui.data_panel import DataPanel
from app.gui.icons import icon
from app.gui.log_panel import LogPanel
from app.gui.manipulators_panel import ManipulatorsPanel
from app.gui.qtasync import FrameCoalescer, ask, spawn
from app.gui.rigs_model import COL
from app.gui.rigs_panel import RigsPanel
from app.gui.session_panel import SessionPanel, failure_question
from app.gui.stop_all_key import StopAllBanner, StopAllKey
from app.gui.timeline import TimelineDialog
from app.palette import ALARM_OPEN
from app.stop_all import StopAllReport
from app.wording import PHASES
from core.steps import StepResult

SHORTCUTS = {"start": "Ctrl+Return", "stop": "Ctrl+.", "stop_all": "F12"}
#: saved column layouts; "2": headers that stretch to fit (a layout saved before scrolled sideways at 1280 px)
RIGS_HEADER, LOG_HEADER = "rigs/header2", "log/header2"
#: the status bar while an alarm is on
STATUS_WARNING_STYLE = (f"QStatusBar {{ background: {ALARM_OPEN[0]}; }} "
                        f"QStatusBar QLabel {{ color: {ALARM_OPEN[1]}; font-weight: bold; }}")


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
        self.timeline: TimelineDialog | None = None

        self.rigs = RigsPanel(console)
        self.rigs.reload_handler = self.reload_rigs
        self.stop_all_banner = StopAllBanner()
        central = QWidget(objectName="central")
        column = QVBoxLayout(central)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        column.addWidget(self.stop_all_banner)
        self.banner = AlarmBanner(console.alarms, self, self.settings)
        column.addWidget(self.banner)
        column.addWidget(self.rigs, 1)
        self.setCentralWidget(central)
        self.session = SessionPanel(console, self.settings)
        self.manipulators = ManipulatorsPanel(console)
        self.manipulators.stop_all_handler = self.stop_all
        self.quit_box: QMessageBox | None = None
        self._quitting = False
        self.log = LogPanel(console)
        self.data = DataPanel(console, self.settings)
        self.docks = {
            "session": self._dock("Session", self.session, Qt.DockWidgetArea.LeftDockWidgetArea),
            "manipulators": self._dock("Manipulators", self.manipulators, Qt.DockWidgetArea.BottomDockWidgetArea),
            "log": self._dock("Log", self.log, Qt.DockWidgetArea.BottomDockWidgetArea),
            "data": self._dock("Data", self.data, Qt.DockWidgetArea.BottomDockWidgetArea),
        }
        self.tabifyDockWidget(self.docks["manipulators"], self.docks["log"])
        self.tabifyDockWidget(self.docks["log"], self.docks["data"])
        self.docks["manipulators"].raise_()

        self.summary = QLabel(objectName="statusSummary")
        self.statusBar().addPermanentWidget(self.summary)
        self._menus()
        # F12 is caught for the whole application (any window, any dialog, focus anywhere), not as a shortcut
        self.stop_all_key = StopAllKey(self.stop_all, self)
        QApplication.instance().installEventFilter(self.stop_all_key)

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
        self.rigs.actions["open"] = action(file, "&Open rigs file…", self.choose_rigs, "Ctrl+O",
                                           "Open a remote_rigs.yaml")
        self.rigs.actions["reload"] = action(file, "&Reload rigs file", self.reload_rigs, "Ctrl+Shift+R")
        self.rigs.actions["save"] = action(file, "&Save rigs file", self.rigs.save, "Ctrl+S")
        file.addSeparator()
        self.open_session_action = action(file, "Open s&ession…", self.choose_session, None,
                                          "Show a past session's timeline and report")
        file.addSeparator()
        action(file, "&Quit", self.close, "Ctrl+Q", "Close the window (asks first while a session runs)")
        session = self.menuBar().addMenu("&Session")
        for key in ("start", "stop", "abort", "cleanup"):
            act = self.session.actions[key]
            if key in SHORTCUTS:
                act.setShortcut(QKeySequence(SHORTCUTS[key]))
            session.addAction(act)
        session.addSeparator()
        stop_all = action(session, "STOP ALL manipulators", self.stop_all, None,
                          "Halt every probe now; F12 works in every window of RigDeck")
        stop_all.setObjectName("action_stop_all")
        # shown beside the item; the key itself is handled by StopAllKey (a shortcut would be blocked by dialogs)
        stop_all.setShortcut(QKeySequence(SHORTCUTS["stop_all"]))
        stop_all.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        self.stop_all_action = stop_all
        view = self.menuBar().addMenu("&View")
        for dock in self.docks.values():
            view.addAction(dock.toggleViewAction())
        view.addSeparator()
        view.addAction(self.banner.sound_action)
        depth_down = QAction("Depth axis points &down (as in Pinpoint)", self, checkable=True,
                             objectName="action_depth_down")
        depth_down.setChecked(self.settings.value("view/depth_down", True, type=bool))
        depth_down.toggled.connect(self.set_depth_down)
        view.addAction(depth_down)
        self.depth_down_action = depth_down
        self.manipulators.plots.depth_down = depth_down.isChecked()

    def set_depth_down(self, down: bool) -> None:
        self.settings.setValue("view/depth_down", down)
        self.manipulators.plots.set_depth_down(down)

    # ------------------------------------------------------------------ STOP ALL
    def stop_all(self) -> None:
        """STOP ALL (button, menu, F12 anywhere): send at once, show it on screen until dismissed."""
        report = StopAllReport(time.time())
        self.stop_all_banner.show_report(report)
        spawn(self.console.stop_all(report), self, "STOP ALL", on_done=self.stop_all_banner.show_report)

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
            self.data.check_pending()

        self.setWindowTitle(f"RigDeck — {path.name}")
        self.session.loading = True
        self.session.update_state()  # "connecting…"
        task = spawn(self.console.load(path), self, "Rigs file", on_done=loaded)

        def finished(_task: Any) -> None:  # loaded or not: Reload may now read the (fixed) file again
            self.session.loading = False
            self.session.update_state()
            self.rigs.update_actions()

        task.add_done_callback(finished)

    def reload_rigs(self) -> None:
        """Reload the rigs file: the loaded one, or the one that failed (fixed since, perhaps)."""
        path = self.console.rigs_path or self.console.wanted_path
        if path is not None and not self.console.active:
            self.open_rigs(path)

    def choose_rigs(self) -> None:
        if self.console.active:  # (the menu item is off then; a shortcut may still arrive)
            return
        current = self.console.rigs_path or self.console.wanted_path
        dialog = QFileDialog(self, "Open rigs file", str(current.parent if current else Path.home()),
                             "Rigs files (*.yaml *.yml);;All files (*)")
        dialog.fileSelected.connect(self.open_rigs)
        self.dialog = dialog
        dialog.open()

    # ------------------------------------------------------------------ past sessions
    def choose_session(self) -> None:
        """File > Open session…: pick a session folder (subject/date/number) under the data folder; the
        chooser opens on the current session's folder when there is one."""
        session = self.console.session
        start = session.folder if session is not None and session.folder else self.console.data_dir
        dialog = QFileDialog(self, "Open session folder", str(start))
        dialog.setFileMode(QFileDialog.FileMode.Directory)
        dialog.fileSelected.connect(self.open_session)
        self.dialog = dialog
        dialog.open()

    def open_session(self, path: str | Path) -> None:
        """Show a session's timeline (its report rebuilt from the journal, off the GUI thread)."""
        def show(report: dict[str, Any]) -> None:
            self.timeline = TimelineDialog(report, self)
            self.timeline.show()

        spawn(self.console.open_report(path), self, "Open session", on_done=show)

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
                              f"Session {summary.exp_ref} ({summary.subject}) was left "
                              f"{PHASES.get(summary.phase, summary.phase)} by a console that closed or stopped.\n"
                              "Reattach to it (watch its rigs, and stop it from here)?",
                              QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
            box.setObjectName("reattach")
            self.reattach_box = box
            if await ask(box) == QMessageBox.StandardButton.Yes:
                await self.console.attach(summary)
                self.session.show_session()
                self.session.update_state()
                self.rigs.update_actions()

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
        phase = PHASES.get(self.console.phase.value, self.console.phase.value).lower()
        ref = self.console.session.exp_ref if self.console.session else None
        parts.append(f"session {phase}" + (f" ({ref})" if ref else ""))
        warning = self.console.warning()
        if warning:
            parts.append(warning)
        self.summary.setText(" · ".join(parts))
        self.statusBar().setStyleSheet(STATUS_WARNING_STYLE if warning else "")
        self.rigs.update_actions()

    def _tick(self) -> None:
        self.session.tick()
        self.rigs.model.refresh(COL["age"])

    async def _ask_quit(self) -> None:
        ref = self.console.session.exp_ref if self.console.session else None
        box = QMessageBox(QMessageBox.Icon.Warning, "A session is running",
                          f"Session {ref or ''} is still recording.".replace("  ", " "), parent=self)
        box.setObjectName("confirmQuit")
        box.setInformativeText("Stop it on every rig and quit, or quit and leave the rigs recording: the next "
                               "RigDeck started on this rigs file offers to reattach to the session, so it can "
                               "be stopped then.")
        stop_quit = box.addButton("Stop the session and quit", QMessageBox.ButtonRole.DestructiveRole)
        stop_quit.setObjectName("stopAndQuit")
        leave = box.addButton("Quit, leave the rigs running", QMessageBox.ButtonRole.AcceptRole)
        leave.setObjectName("leaveRunning")
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(cancel)
        box.setEscapeButton(cancel)
        self.quit_box = box
        clicked = await ask(box)
        if clicked is stop_quit:
            if self.console.can("stop"):
                result = await self.console.stop()
                if not result.ok and not await self._quit_anyway(result):
                    return
            elif self.console.active:
                await self.console.abort("the experimenter quit the console")
        elif clicked is not leave:
            return
        self._quitting = True
        self.close()

    async def _quit_anyway(self, result: StepResult) -> bool:
        """The stop the experimenter asked for on quitting did not reach every rig: say which, and let them
        choose between quitting (the journal records the unconfirmed stop) and staying to deal with it."""
        self.session.update_state()
        box = failure_question(self, "stopFailedOnQuit", "Not every rig confirmed the stop", result,
                               "A rig that did not confirm may still be recording, or may be down. Quit anyway "
                               "(the session's journal records which rigs did not confirm), or stay to check them.")
        quit_anyway = box.addButton("Quit anyway", QMessageBox.ButtonRole.DestructiveRole)
        quit_anyway.setObjectName("quitAnyway")
        stay = box.addButton("Stay open", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(stay)
        box.setEscapeButton(stay)
        return await ask(box) is quit_anyway

    # ------------------------------------------------------------------ layout
    def restore_layout(self) -> None:
        for key, restore in (("window/geometry", self.restoreGeometry), ("window/state", self.restoreState),
                             (RIGS_HEADER, self.rigs.view.horizontalHeader().restoreState),
                             (LOG_HEADER, self.log.view.horizontalHeader().restoreState)):
            value = self.settings.value(key)
            if isinstance(value, QByteArray | bytes):
                restore(value)

    def save_layout(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue(RIGS_HEADER, self.rigs.view.horizontalHeader().saveState())
        self.settings.setValue(LOG_HEADER, self.log.view.horizontalHeader().saveState())
        self.settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        """Closing while a session runs asks first (stop and quit / quit and leave the rigs running / cancel):
        a stray Ctrl+Q must not leave rigs recording with nobody watching them."""
        if self.console.active and not self._quitting:
            event.ignore()
            if self.quit_box is None or not self.quit_box.isVisible():
                spawn(self._ask_quit(), self, "Quit")
            return
        QApplication.instance().removeEventFilter(self.stop_all_key)
        self.save_layout()
        self.clock.stop()
        self._unsubscribe()
        for panel in (self.rigs.model, self.session, self.manipulators, self.log.model, self.banner, self.data):
            panel.detach()
        super().closeEvent(event)
