"""STOP ALL from anywhere: F12 caught on the QApplication, and a confirmation that stays on screen.

A window shortcut is not enough. Qt refuses a main window's shortcuts while a modal dialog is open (the Move
dialog), and a shortcut only fires when the shortcut map sees the key. :class:`StopAllKey` is an event
filter on the whole application: F12 pressed in any window of RigDeck, focus inside a widget or not,
triggers STOP ALL. It also hands keyboard focus back to the main window when a dialog closes and leaves
no window active (seen under a bare X server: after Enter closed the Move dialog, F12 went nowhere).

:class:`StopAllBanner` shows every STOP ALL until dismissed: "sent at HH:MM:SS", then how many probes are
confirmed halted and how fast, or which probe did not confirm.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtGui import QKeyEvent, QKeySequence
from PySide6.QtWidgets import QApplication, QFrame, QHBoxLayout, QLabel, QPushButton, QWidget

from app.stop_all import StopAllReport

KEY = Qt.Key.Key_F12

#: banner (background, text, border) while waiting, confirmed, not confirmed; text on background >= 7:1
BANNER_COLOURS = {
    "waiting": ("#fff4ce", "#3d2e00", "#8a6d00"),
    "ok": ("#e3f4e6", "#0b3d17", "#1b7a35"),
    "failed": ("#fde4e1", "#5c0a00", "#b3261e"),
}


class StopAllKey(QObject):
    """Application-wide F12 -> ``trigger()``; install with ``QApplication.instance().installEventFilter``."""

    def __init__(self, trigger: Callable[[], None], main: QWidget) -> None:
        super().__init__(main)
        self.trigger = trigger
        self.main = main
        self.presses = 0

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        kind = event.type()
        if kind in (QEvent.Type.ShortcutOverride, QEvent.Type.KeyPress) and isinstance(event, QKeyEvent) \
                and event.key() == KEY and not event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier:
            if kind == QEvent.Type.ShortcutOverride:
                event.accept()  # "this key is mine": the shortcut map lets the key press through to us
                return True
            if not event.isAutoRepeat():
                self.presses += 1
                self.trigger()
            return True
        if kind == QEvent.Type.Hide and isinstance(obj, QWidget) and obj.isWindow() and obj is not self.main:
            QTimer.singleShot(0, self._refocus)
        return False

    def _refocus(self) -> None:
        """A dialog closed and nothing has the keyboard: give it back to the main window."""
        if QApplication.activeWindow() is None and self.main.isVisible():
            self.main.activateWindow()
            self.main.raise_()


class StopAllBanner(QFrame):
    """Shown at the top of the main window from the moment STOP ALL is sent until the operator dismisses it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("stopAllBanner")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.label = QLabel(objectName="stopAllText")
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = self.label.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.label.setFont(font)
        self.dismiss = QPushButton("Dismiss", objectName="stopAllDismiss")
        self.dismiss.setToolTip("Hide this confirmation (the log keeps it)")
        self.dismiss.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.dismiss)
        self.report: StopAllReport | None = None
        self.hide()

    def show_report(self, report: StopAllReport) -> None:
        self.report = report
        state = "waiting" if not report.done else ("ok" if report.ok else "failed")
        back, text, border = BANNER_COLOURS[state]
        self.setStyleSheet(f"QFrame#stopAllBanner {{ background: {back}; border: 2px solid {border}; "
                           f"border-radius: 4px; }} QLabel {{ color: {text}; }}")
        self.label.setText(report.text())
        self.show()


def key_text() -> str:
    return QKeySequence(KEY).toString(QKeySequence.SequenceFormat.NativeText)
