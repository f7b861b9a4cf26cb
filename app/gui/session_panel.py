"""The session panel: subject and details, Start / Stop / Abort / Cleanup, the exp_ref, elapsed time.

Buttons are enabled from :meth:`app.console.Console.can` each time the session's part of the live state
changes; a click schedules the console coroutine and returns. A partial failure during Start asks the
experimenter (roll back or continue) through :meth:`decide`, which the console calls mid-step.
"""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QFont, QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.console import Console
from app.gui.qtasync import FrameCoalescer, ask, show_error, spawn
from core.session import StepResult

RECENT_SUBJECTS = 12


def failure_text(result: StepResult) -> str:
    lines = [f"{result.step} failed on {len(result.failed)} rig(s):"]
    for name in result.failed:
        o = result.outcomes[name]
        lines.append(f"  • {name}: {o.result} — {o.error}")
    return "\n".join(lines)


class SessionPanel(QWidget):
    def __init__(self, console: Console, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.console = console
        self.settings = settings
        console.decide = self.decide
        self.partial_box: QMessageBox | None = None
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
        form = QFormLayout()
        form.addRow("Subject", self.subject)
        form.addRow("Project", self.project)
        form.addRow("Procedures", self.procedures)
        form.addRow("Notes", self.notes)

        self.buttons: dict[str, QPushButton] = {}
        grid = QGridLayout()
        for i, (key, text, tip) in enumerate((
            ("start", "Start", "EXPINFO → EXPINIT → EXPSTART on every rig (Ctrl+Return)"),
            ("stop", "Stop", "EXPEND on every rig (Ctrl+.)"),
            ("abort", "Abort…", "EXPINTERRUPT on every rig, after confirmation"),
            ("cleanup", "Cleanup", "EXPCLEANUP: rigs back to CONNECTED for the next session"),
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
        self.phase = QLabel("no session", objectName="phase")
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
        if not path or path[0] in ("session", "console"):
            self._coalescer.mark("session")

    def detach(self) -> None:
        self._unsubscribe()

    # ------------------------------------------------------------------ view
    def update_state(self) -> None:
        for key, button in self.buttons.items():
            button.setEnabled(self.console.can(key))
        s = self.console.session
        self.exp_ref.setText((s.exp_ref if s else None) or "—")
        if s is None:
            self.phase.setText("IDLE" if self.console.rigset is not None else "no rigs loaded")
        else:
            text = s.phase.value.upper()
            if s.busy:
                text = f"{s.busy}…"
            if s.degraded:
                text += " (degraded)"
            if s.main_sync:
                text += f" · main sync {s.main_sync}"
            self.phase.setText(text)
        self.tick()

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
        spawn(self.console.start(subject, self.details()), self, "Start", on_done=self._report)
        self.update_state()

    def stop(self) -> None:
        if self.console.can("stop"):
            spawn(self.console.stop(), self, "Stop", on_done=self._report)
            self.update_state()

    def abort(self) -> None:
        if not self.console.can("abort"):
            return
        box = QMessageBox(QMessageBox.Icon.Question, "Abort the session?",
                          "Send EXPINTERRUPT to every rig? The session ends as aborted.",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.setObjectName("confirmAbort")
        self.confirm_box = box

        async def confirm_then_abort() -> StepResult | None:
            if await ask(box) != QMessageBox.StandardButton.Yes:
                return None
            return await self.console.abort()

        spawn(confirm_then_abort(), self, "Abort", on_done=self._report)

    def cleanup(self) -> None:
        if self.console.can("cleanup"):
            spawn(self.console.cleanup(), self, "Cleanup", on_done=self._report)

    def _report(self, result: StepResult | None) -> None:
        self.update_state()
        if result is not None and not result.ok:
            text = failure_text(result) if result.failed else ""
            show_error(self, f"{result.step.capitalize()} failed", f"{result.error}\n\n{text}".strip())

    async def decide(self, result: StepResult) -> str:
        """Ask the experimenter what to do with a partial failure: roll back (default) or continue."""
        box = QMessageBox(QMessageBox.Icon.Warning, "Some rigs failed", failure_text(result), parent=self)
        box.setObjectName("partialFailure")
        box.setInformativeText("Roll back stops the rigs that did start; continue goes on without the failed ones "
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
