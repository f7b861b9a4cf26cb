"""The Move and Set depth dialogs: they name the probe, show its travel, and cannot surprise.

- Each axis shows its travel limits; a value outside them is refused with a message and the cursor put
  back in that field (a spin box limited to the range would silently turn a typed 100 into 10).
- The fields follow the probe live until the experimenter edits one: a dialog left open while the probe
  moves never sends it back to where it was when the dialog opened.
- Absolute (go to) or relative (move by) targets; the range check is on the resulting position.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QRadioButton,
    QWidget,
)

from app.gui.widgets import add_ok_cancel
from app.wording import mm
from core.drivers.manipulator import Vec4

AXES = ("x", "y", "z", "w")
AXIS_NAMES = {"x": "x (left-right)", "y": "y (front-back)", "z": "z (up-down)", "w": "w (depth)"}
DEFAULT_SPEED = 1.0
#: what a field accepts while typing (wide, so nothing is clamped); the travel is checked on OK
TYPING_RANGE = 1e6


def number_box(name: str, value: float, suffix: str = " mm") -> QDoubleSpinBox:
    box = QDoubleSpinBox(objectName=name)
    box.setDecimals(3)
    box.setRange(-TYPING_RANGE, TYPING_RANGE)
    box.setSuffix(suffix)
    box.setValue(value)
    box.setKeyboardTracking(True)
    return box


class FollowingField:
    """A number field that shows a live value until the experimenter types in it (or steps it)."""

    def __init__(self, box: QDoubleSpinBox) -> None:
        self.box = box
        self.edited = False
        self._setting = False
        box.valueChanged.connect(self._changed)

    def _changed(self, _value: float) -> None:
        if not self._setting:
            self.edited = True

    def follow(self, value: float) -> None:
        if not (self.edited or self.box.hasFocus() and self.box.lineEdit().isModified()):
            self.reset(value)

    def reset(self, value: float) -> None:
        """Show ``value`` and follow again from here."""
        self._setting = True
        try:
            self.box.setValue(value)
            self.box.lineEdit().setModified(False)
        finally:
            self._setting = False
        self.edited = False


class ProbeDialog(QDialog):
    """What the Move and Set depth dialogs share: the probe's name, a problem line, refusing on OK."""

    def __init__(self, parent: QWidget | None, rig: str, mid: str, title: str) -> None:
        super().__init__(parent)
        self.rig, self.mid = rig, mid
        self.setWindowTitle(f"{title} — probe {mid} on {rig}")
        self.heading = QLabel(f"<b>Probe {mid}</b> on rig <b>{rig}</b>", objectName="probeName")
        self.problem = QLabel(objectName="moveProblem")
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet("color: #b3261e;")  # 6.5:1 on white
        self.problem.hide()

    def refuse(self, text: str, box: QDoubleSpinBox) -> None:
        self.problem.setText(text)
        self.problem.show()
        box.setFocus()
        box.selectAll()

    def check(self) -> tuple[str, QDoubleSpinBox] | None:
        raise NotImplementedError

    def accept(self) -> None:  # noqa: D102 - refuse to close on a value outside the travel
        problem = self.check()
        if problem is not None:
            self.refuse(*problem)
            return
        super().accept()


def out_of_travel(axis: str, value: float, limit: float) -> str | None:
    if not math.isfinite(value) or value < 0 or value > limit:
        return f"{AXIS_NAMES[axis]} would be {mm(value)} mm: outside this probe's travel (0 to {limit:g} mm)."
    return None


class MoveDialog(ProbeDialog):
    """Target position (absolute, or relative to where the probe is) and speed."""

    def __init__(self, parent: QWidget | None, rig: str, mid: str, current: dict[str, Any],
                 dims: Vec4 | None) -> None:
        super().__init__(parent, rig, mid, "Move")
        self.setObjectName("moveDialog")
        self.limits = dict(zip(AXES, dims.as_tuple() if dims else (20.0,) * 4, strict=True))
        self.current = {a: float(current.get(a) or 0.0) for a in AXES}
        self.absolute = QRadioButton("Go to (absolute)", objectName="moveAbsolute", checked=True)
        self.relative = QRadioButton("Move by (relative)", objectName="moveRelative")
        self.mode = QButtonGroup(self)
        self.mode.addButton(self.absolute)
        self.mode.addButton(self.relative)
        self.absolute.toggled.connect(self._mode_changed)
        modes = QHBoxLayout()
        modes.addWidget(self.absolute)
        modes.addWidget(self.relative)
        modes.addStretch(1)

        grid = QGridLayout()
        for col, text in enumerate(("axis", "now", "target", "travel")):
            grid.addWidget(QLabel(f"<i>{text}</i>"), 0, col)
        self.axes: dict[str, QDoubleSpinBox] = {}
        self.fields: dict[str, FollowingField] = {}
        self.now: dict[str, QLabel] = {}
        for row, axis in enumerate(AXES, start=1):
            box = number_box(f"move_{axis}", self.current[axis])
            box.setToolTip(f"0 to {self.limits[axis]:g} mm; follows the probe until you type")
            self.axes[axis] = box
            self.fields[axis] = FollowingField(box)
            self.now[axis] = QLabel(mm(self.current[axis]), objectName=f"now_{axis}")
            grid.addWidget(QLabel(AXIS_NAMES[axis]), row, 0)
            grid.addWidget(self.now[axis], row, 1)
            grid.addWidget(box, row, 2)
            grid.addWidget(QLabel(f"0 – {self.limits[axis]:g} mm", objectName=f"travel_{axis}"), row, 3)
        self.speed = number_box("move_speed", DEFAULT_SPEED, " mm/s")
        self.speed.setRange(0.001, 50.0)
        form = QFormLayout(self)
        form.addRow(self.heading)
        form.addRow(modes)
        form.addRow(grid)
        form.addRow("speed", self.speed)
        form.addRow(self.problem)
        add_ok_cancel(self, form)

    def _mode_changed(self) -> None:
        """Switching mode resets the fields: absolute shows where the probe is, relative shows 0."""
        for axis, field in self.fields.items():
            field.reset(self.current[axis] if self.absolute.isChecked() else 0.0)
        self.problem.hide()

    def follow(self, entry: dict[str, Any]) -> None:
        """The probe moved: show it, and move the fields not yet edited along (absolute mode)."""
        for axis in AXES:
            value = entry.get(axis)
            if isinstance(value, int | float):
                self.current[axis] = float(value)
                self.now[axis].setText(mm(value))
                if self.absolute.isChecked():
                    self.fields[axis].follow(float(value))

    def target(self) -> Vec4:
        values = {a: self.axes[a].value() for a in AXES}
        if self.relative.isChecked():
            values = {a: self.current[a] + v for a, v in values.items()}
        return Vec4(**values)

    def check(self) -> tuple[str, QDoubleSpinBox] | None:
        target = self.target().as_dict()
        for axis in AXES:
            problem = out_of_travel(axis, target[axis], self.limits[axis])
            if problem:
                return problem, self.axes[axis]
        return None


class DepthDialog(ProbeDialog):
    """A new depth (w only) and speed; follows the probe's depth until edited."""

    def __init__(self, parent: QWidget | None, rig: str, mid: str, current: float, limit: float) -> None:
        super().__init__(parent, rig, mid, "Set depth")
        self.setObjectName("depthDialog")
        self.limit = limit
        self.depth = number_box("depth_value", current)
        self.depth.setToolTip(f"0 to {limit:g} mm; follows the probe until you type")
        self.field = FollowingField(self.depth)
        self.speed = number_box("depth_speed", DEFAULT_SPEED / 2, " mm/s")
        self.speed.setRange(0.001, 50.0)
        self.now = QLabel(f"now {mm(current)} mm · travel 0 – {limit:g} mm", objectName="depthNow")
        form = QFormLayout(self)
        form.addRow(self.heading)
        form.addRow(self.now)
        form.addRow("depth (w)", self.depth)
        form.addRow("speed", self.speed)
        form.addRow(self.problem)
        add_ok_cancel(self, form)

    def follow(self, entry: dict[str, Any]) -> None:
        value = entry.get("w")
        if isinstance(value, int | float):
            self.now.setText(f"now {mm(value)} mm · travel 0 – {self.limit:g} mm")
            self.field.follow(float(value))

    def check(self) -> tuple[str, QDoubleSpinBox] | None:
        problem = out_of_travel("w", self.depth.value(), self.limit)
        return (problem, self.depth) if problem else None
