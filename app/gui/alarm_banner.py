"""The alarm banner: a band across the top of the window, one line per alarm on the console's board.

A session rig lost (or in error) must not be a cell someone may or may not look at: the banner names the
rig, since when and what is at risk, beeps (unless turned off in View > Sound on alarms) and asks the
window manager for attention. A line stays until the experimenter clicks Acknowledge, and turns from red
to amber, saying when, once its rig is back. What raises an alarm and what it says is
:class:`app.alarms.AlarmBoard` (no Qt); this module only draws it.
"""

from __future__ import annotations

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QApplication, QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.alarms import Alarm, AlarmBoard

SOUND_KEY = "alarms/sound"
#: (background, text) for an alarm whose rig is still away, and for one whose rig is back
OPEN_STYLE = ("#c62828", "#ffffff")
CLOSED_STYLE = ("#f0a30a", "#1a1a1a")


class AlarmBanner(QFrame):
    """Hidden while the board is empty. ``window`` is the one asked for attention on a new alarm."""

    def __init__(self, board: AlarmBoard, window: QWidget, settings: QSettings) -> None:
        super().__init__(window)
        self.setObjectName("alarmBanner")
        self.board = board
        self.window_ = window
        self.settings = settings
        #: how many times it beeped / asked for attention (what a test can see of a sound)
        self.beeps = 0
        self.alerts = 0
        self.rows: dict[int, tuple[QWidget, QLabel, QPushButton]] = {}
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 4)
        self._layout.setSpacing(2)
        self.sound_action = QAction("Sound on alarms", self, checkable=True)
        self.sound_action.setObjectName("alarmSound")
        self.sound_action.setStatusTip("Beep when a rig of the running session is lost or reports an error")
        self.sound_action.setChecked(self.sound_on())
        self.sound_action.toggled.connect(lambda on: self.settings.setValue(SOUND_KEY, bool(on)))
        self._unsubscribe = board.on_change(self._on_change)
        self.refresh()

    def sound_on(self) -> bool:
        value = self.settings.value(SOUND_KEY, True)
        return value not in (False, "false", "0", 0)

    def detach(self) -> None:
        self._unsubscribe()

    def _on_change(self, _alarm: Alarm, raised: bool) -> None:
        if raised:
            if self.sound_action.isChecked():
                QApplication.beep()
                self.beeps += 1
            QApplication.alert(self.window_)
            self.alerts += 1
        self.refresh()

    def refresh(self) -> None:
        """One row per alarm shown, in the order they were raised (rows are few: rebuilt in place)."""
        shown = {alarm.id: alarm for alarm in self.board.shown()}
        for alarm_id in [i for i in self.rows if i not in shown]:
            row, _label, _button = self.rows.pop(alarm_id)
            row.deleteLater()
        for alarm in shown.values():
            if alarm.id not in self.rows:
                self.rows[alarm.id] = self._row(alarm)
            row, label, _button = self.rows[alarm.id]
            background, colour = OPEN_STYLE if alarm.open else CLOSED_STYLE
            row.setStyleSheet(f"QWidget#alarmRow {{ background: {background}; border-radius: 3px; }}"
                              f"QLabel {{ color: {colour}; font-weight: bold; }}")
            label.setText(alarm.text)
            label.setToolTip(f"{alarm.rig}: {alarm.detail or alarm.kind}")
        self.setVisible(bool(shown))

    def _row(self, alarm: Alarm) -> tuple[QWidget, QLabel, QPushButton]:
        row = QWidget(self, objectName="alarmRow")
        row.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        layout = QHBoxLayout(row)
        layout.setContentsMargins(8, 4, 4, 4)
        label = QLabel(row, objectName="alarmText")
        label.setWordWrap(True)
        button = QPushButton("Acknowledge", row, objectName=f"acknowledge_{alarm.id}")
        button.setToolTip("I have seen it: take it off the banner (the journal and the log keep it)")
        button.clicked.connect(lambda _=False, i=alarm.id: self.board.acknowledge(i))
        layout.addWidget(label, 1)
        layout.addWidget(button)
        self._layout.addWidget(row)
        return row, label, button

    def texts(self) -> list[str]:
        return [label.text() for _row, label, _button in self.rows.values()]

    def buttons(self) -> list[QPushButton]:
        return [button for _row, _label, button in self.rows.values()]
