"""The rigs panel: the table of rigs, and add / edit / remove / save / reload of the rigs file."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from app.console import Console
from app.gui.qtasync import show_error, spawn
from app.gui.rigs_model import COL, MainSyncDelegate, RigTableModel
from app.gui.widgets import add_ok_cancel, button_bar, row_table
from core.config import Role


class RigDialog(QDialog):
    """Name, URI and role of one rig (other options of an edited rig are kept as they were)."""

    def __init__(self, parent: QWidget | None, name: str = "", uri: str = "", role: str = "aux") -> None:
        super().__init__(parent)
        self.setObjectName("rigDialog")
        self.setWindowTitle("Edit rig" if name else "Add rig")
        self.name = QLineEdit(name, objectName="rigName")
        self.name.setPlaceholderText("e.g. cameras or 'cameras:left'")
        self.uri = QLineEdit(uri, objectName="rigUri")
        self.uri.setPlaceholderText("udp://host:port · zmq://host:port · sio://host:3000 · rpc://host:port/target")
        self.role = QComboBox(objectName="rigRole")
        self.role.addItems([r.value for r in Role])
        self.role.setCurrentText(role)
        form = QFormLayout(self)
        form.addRow("Name", self.name)
        form.addRow("URI", self.uri)
        form.addRow("Role", self.role)
        add_ok_cancel(self, form)


class RigsPanel(QWidget):
    def __init__(self, console: Console, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.console = console
        self.model = RigTableModel(console, self)
        self.model.refused.connect(lambda text: show_error(self, "Main sync", text))
        self.view = row_table("rigsTable", self.model)
        self.view.setItemDelegateForColumn(COL["main_sync"], MainSyncDelegate(self.view))
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.view.setAlternatingRowColors(True)
        self.view.doubleClicked.connect(lambda _i: self.edit_rig())
        for col, width in ((COL["name"], 110), (COL["transport"], 190), (COL["link"], 110), (COL["status"], 100),
                           (COL["main_sync"], 80), (COL["age"], 90), (COL["rtt_ms"], 80), (COL["progress"], 200)):
            self.view.setColumnWidth(col, width)

        bar, self.buttons = button_bar("rigs", (
            ("add", "Add…", "Add a rig to the rigs file", self.add_rig),
            ("edit", "Edit…", "Change the selected rig's name, URI or role", self.edit_rig),
            ("remove", "Remove", "Remove the selected rig", self.remove_rig),
            ("save", "Save", "Write the rigs back to the rigs file", self.save),
            ("reload", "Reload", "Read the rigs file again and reconnect", self.reload),
        ))
        bar.addStretch(1)
        self.file_label = QLabel(objectName="rigsFile")
        self.file_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        bar.addWidget(self.file_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.view)
        self.dialog: RigDialog | None = None
        self.update_actions()

    def update_actions(self) -> None:
        editable = not self.console.active
        for key in ("add", "edit", "remove", "reload"):
            self.buttons[key].setEnabled(editable)
        self.buttons["save"].setEnabled(bool(self.console.specs) or self.console.rigs_path is not None)
        self.file_label.setText(str(self.console.rigs_path or "no rigs file"))

    def selected(self) -> str | None:
        rows = self.view.selectionModel().selectedRows() if self.view.selectionModel() else []
        if not rows:
            return None
        return self.model.names[rows[0].row()]

    def select(self, name: str) -> None:
        if name in self.model.names:
            self.view.selectRow(self.model.names.index(name))

    # ------------------------------------------------------------------ actions
    def add_rig(self) -> None:
        self._open_dialog(RigDialog(self), replace=None)

    def edit_rig(self) -> None:
        name = self.selected()
        if name is None:
            show_error(self, "Edit rig", "Select a rig first.")
            return
        spec = self.console.specs[name]
        self._open_dialog(RigDialog(self, name, spec.uri, spec.role.value), replace=name)

    def _open_dialog(self, dialog: RigDialog, replace: str | None) -> None:
        self.dialog = dialog
        options: dict[str, Any] = dict(self.console.specs[replace].options) if replace else {}

        def accepted() -> None:
            value = {"uri": dialog.uri.text().strip(), "role": dialog.role.currentText(), **options}
            spawn(self.console.put_rig(dialog.name.text().strip(), value, replace=replace), self, "Rig",
                  on_done=lambda _spec: self.update_actions())

        dialog.accepted.connect(accepted)
        dialog.open()

    def remove_rig(self) -> None:
        name = self.selected()
        if name is None:
            show_error(self, "Remove rig", "Select a rig first.")
            return
        spawn(self.console.remove_rig(name), self, "Remove rig", on_done=lambda _r: self.update_actions())

    def save(self) -> None:
        try:
            self.console.save()
        except (OSError, ValueError) as ex:
            show_error(self, "Save rigs", str(ex))

    def reload(self) -> None:
        spawn(self.console.reload(), self, "Reload rigs", on_done=lambda _r: self.update_actions())
