"""The session panel: subject and details, Start / Stop / Abort / Cleanup, the exp_ref, elapsed time.

Buttons are enabled from :meth:`app.console.Console.can` each time the session's part of the live state
changes; a click schedules the console coroutine and returns. A partial failure during Start asks the
experimenter (roll back or continue) through :meth:`decide`, which the console calls mid-step.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction, QFont, QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.console import Console
from app.gui.qtasync import FrameCoalescer, ask, show_error, spawn
from app.gui.rigs_down_dialog import CANCEL, WAIT, ask_rigs_down, wait_for_rigs
from app.palette import ALARM_OPEN
from app.wording import PHASES, outcome_words, step_word
from core.session import FINAL, Phase, StepResult

RECENT_SUBJECTS = 12
#: the session label while an alarm is on (a rig of the session lost or in error)
WARNING_STYLE = f"QLabel {{ background: {ALARM_OPEN[0]}; color: {ALARM_OPEN[1]}; font-weight: bold; padding: 3px; }}"


def failure_text(result: StepResult) -> str:
    """Which rigs failed and why, in plain words (the protocol detail is in :func:`failure_detail`)."""
    lines = [f"{step_word(result.step).capitalize()} failed on {len(result.failed)} rig(s):"]
    for name in result.failed:
        o = result.outcomes[name]
        lines.append(f"  • {name}: {outcome_words(o.result, o.error)}")
    return "\n".join(lines)


def failure_detail(result: StepResult) -> str:
    return "\n".join(f"{name}: {o.event} {o.result}: {o.error}" for name, o in result.outcomes.items() if not o.ok)


def failure_question(parent: QWidget, name: str, title: str, result: StepResult, question: str) -> QMessageBox:
    """A warning box naming the rigs of ``result`` that failed and why (the protocol detail on demand) and
    asking ``question``; the caller adds its answers. One shape for every "some rigs did not..." choice."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, failure_text(result), parent=parent)
    box.setObjectName(name)
    box.setDetailedText(failure_detail(result))
    box.setInformativeText(question)
    return box


def phase_text(console: Console, loading: bool = False) -> str:
    """The session panel's one-line status, in the experimenter's words."""
    s = console.session
    rigs = console.state.get(["rigs"]) or {}
    connecting = [n for n, r in rigs.items() if isinstance(r, dict) and r.get("link") == "connecting"]
    if s is not None and s.busy:
        return f"{step_word(s.busy)}…"
    if s is None or s.phase is Phase.IDLE:
        if console.rigset is None:
            return "connecting…" if loading or console.specs else "no rigs loaded"
        return f"connecting to {len(connecting)} rig(s)…" if connecting else PHASES["idle"]
    text = PHASES.get(s.phase.value, s.phase.value.upper())
    if console.state.get(["session", "cleaned"]) and s.phase in FINAL:
        text += " · cleaned up, ready for the next session"
    if s.degraded:
        text += " (some rigs left out)"
    if s.main_sync and s.phase is not Phase.IDLE:
        text += f" · main sync {s.main_sync}"
    return text


class SessionPanel(QWidget):
    def __init__(self, console: Console, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.console = console
        self.settings = settings
        console.decide = self.decide
        self.partial_box: QMessageBox | None = None
        #: a rigs file is being loaded (the window says so): "connecting…" rather than "no rigs loaded"
        self.loading = False
        self.confirm_box: QMessageBox | None = None

        self.subject = QComboBox(objectName="subject")
        self.subject.setEditable(True)
        self.subject.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.subject.lineEdit().setPlaceholderText("subject (e.g. KS001)")
        self.subject.addItems(self.recent_subjects())
        self.subject.setCurrentText("")
        self.subject.setToolTip("The animal's name; recent subjects are in the list")
        self.project = QLineEdit(objectName="project", placeholderText="optional")
        self.procedures = QLineEdit(objectName="procedures", placeholderText="comma-separated, optional")
        self.notes = QLineEdit(objectName="notes", placeholderText="optional")
        # each field is at least as wide as its placeholder: nothing is clipped at the default size
        self.subject.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.subject.setMinimumContentsLength(12)  # a long recent subject never widens the dock
        for edit in (self.subject.lineEdit(), self.project, self.procedures, self.notes):
            edit.setMinimumWidth(edit.fontMetrics().horizontalAdvance(edit.placeholderText()) + 24)
        form = QFormLayout()
        form.addRow("Subject", self.subject)
        form.addRow("Project", self.project)
        form.addRow("Procedures", self.procedures)
        form.addRow("Notes", self.notes)

        self.buttons: dict[str, QPushButton] = {}
        grid = QGridLayout()
        for i, (key, text, tip) in enumerate((
            ("start", "Start session", "Prepare, initialise and start every rig (Ctrl+Return)"),
            ("stop", "Stop session", "End the recording on every rig (one click here; Ctrl+. and the menu ask first)"),
            ("abort", "Abort…", "End the session as aborted on every rig, after a question"),
            ("cleanup", "Cleanup", "Put every rig back to ready for the next session"),
        )):
            button = QPushButton(text, objectName=f"session_{key}")
            button.setToolTip(tip)
            button.setMinimumHeight(34)
            grid.addWidget(button, i // 2, i % 2)
            self.buttons[key] = button
        self.buttons["start"].clicked.connect(self.start)
        self.buttons["stop"].clicked.connect(self.stop)
        self.buttons["abort"].clicked.connect(self.abort)
        self.buttons["cleanup"].clicked.connect(self.cleanup)
        #: the Session menu's actions, enabled with the buttons (the window puts them in its menu)
        self.actions: dict[str, QAction] = {}
        for key, text, slot in (("start", "&Start session", self.start), ("stop", "S&top session…", self.stop_asking),
                                ("abort", "&Abort…", self.abort), ("cleanup", "&Cleanup", self.cleanup)):
            act = QAction(text, self, objectName=f"action_{key}")
            act.setStatusTip(self.buttons[key].toolTip())
            act.triggered.connect(slot)
            self.actions[key] = act

        self.exp_ref = QLabel("—", objectName="expRef")
        big = QFont(self.exp_ref.font())
        big.setPointSizeF(big.pointSizeF() * 1.6)
        big.setBold(True)
        self.exp_ref.setFont(big)
        self.exp_ref.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.exp_ref.setToolTip("The experiment reference (select or use Copy)")
        copy = QToolButton(objectName="copyExpRef", text="Copy")
        copy.setToolTip("Copy the exp_ref to the clipboard")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.console.session.exp_ref or "")
                             if self.console.session else None)
        ref_row = QHBoxLayout()
        ref_row.addWidget(self.exp_ref, 1)
        ref_row.addWidget(copy)
        self.phase = QLabel("no rigs loaded", objectName="phase")
        self.phase.setWordWrap(True)  # a long status wraps: the dock never widens with the text
        self.phase.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.exp_ref.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        # room for a usual exp_ref from the start, so the dock does not widen when a session begins
        self.exp_ref.setMinimumWidth(self.exp_ref.fontMetrics().horizontalAdvance("2026-12-31_001_KS0001"))
        self.elapsed = QLabel("", objectName="elapsed")
        status_row = QHBoxLayout()
        status_row.addWidget(self.phase, 1)
        status_row.addWidget(self.elapsed)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(form)
        layout.addLayout(grid)
        layout.addLayout(ref_row)
        layout.addLayout(status_row)
        layout.addStretch(1)

        self._coalescer = FrameCoalescer(lambda _keys: self.update_state(), self)
        self._unsubscribe = console.state.subscribe(self._on_mod)
        self.update_state()

    def _on_mod(self, mod: dict[str, Any]) -> None:
        path = mod.get("path") or []
        if not path or path[0] in ("session", "console") or (path[0] == "rigs" and len(path) < 3) \
                or (path[0] == "rigs" and path[2] == "link"):  # "connecting to N rig(s)…" follows the links
            self._coalescer.mark("session")

    def detach(self) -> None:
        self._unsubscribe()

    # ------------------------------------------------------------------ view
    def update_state(self) -> None:
        for key, button in self.buttons.items():
            allowed = self.console.can(key)
            button.setEnabled(allowed)
            self.actions[key].setEnabled(allowed)
        s = self.console.session
        self.exp_ref.setText((s.exp_ref if s else None) or "—")
        self.phase.setText(phase_text(self.console, self.loading))
        warning = self.console.warning()
        if warning:
            self.phase.setText(f"{self.phase.text()}\n{warning}")
        self.phase.setStyleSheet(WARNING_STYLE if warning else "")
        self.tick()

    def show_session(self) -> None:
        """Fill subject and details from the current session (after a reattach: what its journal says)."""
        s = self.console.session
        if s is None:
            return
        self.subject.setCurrentText(s.subject or "")
        projects = s.details.get("projects") or []
        self.project.setText(", ".join(str(p) for p in projects) if isinstance(projects, list) else str(projects))
        procedures = s.details.get("procedures") or []
        self.procedures.setText(", ".join(map(str, procedures)) if isinstance(procedures, list) else str(procedures))
        self.notes.setText(str(s.details.get("notes") or ""))

    def tick(self) -> None:
        """Elapsed time since EXPSTART (the window's clock calls this once a second)."""
        s = self.console.session
        if s is None or not s.started:
            self.elapsed.setText("")
            return
        end = s.ended or time.time()
        secs = int(max(0.0, end - s.started))
        self.elapsed.setText(f"{secs // 3600:d}:{secs // 60 % 60:02d}:{secs % 60:02d}")

    # ------------------------------------------------------------------ subjects
    def recent_subjects(self) -> list[str]:
        value = self.settings.value("session/recent_subjects", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])][:RECENT_SUBJECTS]

    def remember_subject(self, subject: str) -> None:
        recent = [subject, *(s for s in self.recent_subjects() if s != subject)][:RECENT_SUBJECTS]
        self.settings.setValue("session/recent_subjects", recent)
        self.subject.clear()
        self.subject.addItems(recent)
        self.subject.setCurrentText(subject)

    def details(self) -> dict[str, Any]:
        procedures = [p.strip() for p in self.procedures.text().split(",") if p.strip()]
        project = self.project.text().strip()
        return {"projects": [project] if project else [], "procedures": procedures,
                "notes": self.notes.text().strip()}

    # ------------------------------------------------------------------ actions
    def start(self) -> None:
        if not self.console.can("start"):
            return
        subject = self.subject.currentText().strip()
        if not subject:
            show_error(self, "Start", "Type a subject first.")
            return
        self.remember_subject(subject)
        down = self.console.known_down()
        if down:  # ask at once rather than wait a timeout for each and refuse
            spawn(self._start_with_rigs_down(subject, down), self, "Start", on_done=self.report_result)
        else:
            spawn(self.console.start(subject, self.details()), self, "Start", on_done=self.report_result)
        self.update_state()

    async def _start_with_rigs_down(self, subject: str, down: list[str]) -> StepResult | None:
        choice = await ask_rigs_down(self, self.console.start_offer(down))
        if choice == CANCEL:
            return None
        if choice == WAIT:
            if not await wait_for_rigs(self, self.console, down):
                return None
            return await self.console.start(subject, self.details())
        return await self.console.start(subject, self.details(), without=down)

    def stop(self) -> None:
        """The Stop session button: one deliberate click on a labelled button stops at once."""
        if self.console.can("stop"):
            spawn(self.console.stop(), self, "Stop", on_done=self.report_result)
            self.update_state()

    def stop_asking(self) -> None:
        """Stop from the keyboard or the menu: a stray Ctrl+. must not end a recording, so ask first."""
        self._confirm("stop", "confirmStop", "Stop the session?",
                      "Stop the recording on every rig now? The session ends as completed.", self.console.stop)

    def abort(self) -> None:
        self._confirm("abort", "confirmAbort", "Abort the session?",
                      "Abort the session on every rig? Recording stops and the session ends as aborted.",
                      self.console.abort)

    def _confirm(self, action: str, name: str, title: str, text: str,
                 act: Callable[[], Awaitable[StepResult]]) -> None:
        """Ask ``text`` (No is the default: Enter does not end a recording); on Yes run ``act`` if still allowed."""
        if not self.console.can(action):
            return
        box = QMessageBox(QMessageBox.Icon.Question, title, text,
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.setObjectName(name)
        self.confirm_box = box

        async def confirm_then_act() -> StepResult | None:
            if await ask(box) != QMessageBox.StandardButton.Yes or not self.console.can(action):
                return None
            return await act()

        spawn(confirm_then_act(), self, action.capitalize(), on_done=self.report_result)

    def cleanup(self) -> None:
        if self.console.can("cleanup"):
            spawn(self.console.cleanup(), self, "Cleanup", on_done=self.report_result)

    def report_result(self, result: StepResult | None) -> None:
        self.update_state()
        if result is not None and not result.ok:
            text = failure_text(result) if result.failed else ""
            show_error(self, f"{step_word(result.step).capitalize()} failed", f"{result.error}\n\n{text}".strip(),
                       failure_detail(result))

    async def decide(self, result: StepResult) -> str:
        """Ask the experimenter what to do with a partial failure: roll back (default) or continue."""
        box = failure_question(self, "partialFailure", "Some rigs failed", result,
                               "Roll back stops the rigs that did start; continue goes on without the failed ones "
                               "(the session is marked degraded).")
        rollback = box.addButton("Roll back", QMessageBox.ButtonRole.DestructiveRole)
        rollback.setObjectName("rollback")
        go_on = box.addButton("Continue without them", QMessageBox.ButtonRole.AcceptRole)
        go_on.setObjectName("continue")
        box.setDefaultButton(rollback)
        self.partial_box = box
        clicked = await ask(box)
        self.partial_box = None
        return "continue" if clicked is go_on else "rollback"
