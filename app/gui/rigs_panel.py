"""The rigs panel: the table of rigs, and add / edit / remove / save / reload of the rigs file."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any

from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QVBoxLayout,
    QWidget,
)

from app.console import Console
from app.gui.qtasync import show_error, spawn
from app.gui.rig_detail import RigDetailDialog
from app.gui.rigs_model import COL, MainSyncDelegate, RigTableModel, fit_columns
from app.gui.widgets import add_ok_cancel, button_bar, row_table
from app.wording import plain
from core.config import ConfigError, Role, parse_rig
from transports.registry import TRANSPORTS


class RigDialog(QDialog):
    """Name, URI and role of one rig (other options of an edited rig are kept as they were).

    OK checks the entry the way the rigs file is checked; a mistake keeps the dialog open with what was
    typed, says what is wrong under the fields and puts the cursor in the field at fault.
    """

    def __init__(self, parent: QWidget | None, name: str = "", uri: str = "", role: str = "aux",
                 taken: Collection[str] = (), options: dict[str, Any] | None = None) -> None:
        super().__init__(parent)
        self.taken = set(taken)
        self.options = dict(options or {})
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
        self.problem = QLabel(objectName="rigProblem")
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet("color: #b3261e;")  # 6.6:1 on white
        self.problem.hide()
        form.addRow(self.problem)
        add_ok_cancel(self, form)

    def value(self) -> dict[str, Any]:
        return {"uri": self.uri.text().strip(), "role": self.role.currentText(), **self.options}

    def check(self) -> str | None:
        """What is wrong with the entry (None: fine); focuses the field at fault."""
        name = self.name.text().strip()
        field = self.name
        try:
            if name in self.taken:
                raise ConfigError(f"a rig called {name!r} is already in the rigs file")
            parse_rig(name, self.value(), TRANSPORTS, "this rig")
            return None
        except ConfigError as ex:
            text = re.sub(r"^this rig: (rig '[^']*': )?", "", str(ex), flags=re.IGNORECASE)
            if "uri" in text.lower() or "scheme" in text.lower() or "port" in text.lower() or "host" in text.lower():
                field = self.uri
            elif "role" in text.lower():
                field = self.role
            field.setFocus()
            return text

    def accept(self) -> None:  # noqa: D102 - refuse to close on a mistake
        problem = self.check()
        if problem:
            self.problem.setText(plain(problem)[0])
            self.problem.show()
            return
        super().accept()


class RigsPanel(QWidget):
    def __init__(self, console: Console, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.console = console
        self.model = RigTableModel(console, self)
        self.model.refused.connect(lambda text: show_error(self, "Main sync", text))
        #: menu actions the window adds (reload, save), enabled with the buttons
        self.actions: dict[str, QAction] = {}
        self.reload_handler: Callable[[], None] | None = None
        self.view = row_table("rigsTable", self.model)
        self.view.setItemDelegateForColumn(COL["main_sync"], MainSyncDelegate(self.view))
        self.view.setAlternatingRowColors(True)
        # double-click: the rig's detail (read-only, so it works during a session too); the menu also edits
        self.view.doubleClicked.connect(lambda index: self.details(self.model.names[index.row()]))
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._context_menu)
        #: open rig details by rig name (non-modal; one per rig)
        self.details_dialogs: dict[str, RigDetailDialog] = {}
        fit_columns(self.view)
        self.view.selectionModel().selectionChanged.connect(lambda *_: self.update_actions())
        self.model.modelReset.connect(self.update_actions)

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
        """Each button (and its menu twin) is enabled exactly when its action would be accepted."""
        editable = not self.console.active
        chosen = self.selected() is not None
        allowed = {
            "open": editable,
            "add": editable,
            "edit": editable and chosen,
            "remove": editable and chosen,
            "reload": editable and (self.console.rigs_path or self.console.wanted_path) is not None,
            "save": bool(self.console.specs) and self.console.rigs_path is not None,
        }
        why = "" if editable else " (not while a session is under way)"
        for key, ok in allowed.items():
            if key in self.buttons:
                self.buttons[key].setEnabled(ok)
            if key in self.actions:
                self.actions[key].setEnabled(ok)
        self.buttons["edit"].setToolTip("Change the selected rig's name, URI or role" + why)
        self.buttons["remove"].setToolTip("Remove the selected rig" + why)
        self.file_label.setText(str(self.console.rigs_path or self.console.wanted_path or "no rigs file"))

    def selected(self) -> str | None:
        rows = self.view.selectionModel().selectedRows() if self.view.selectionModel() else []
        if not rows:
            return None
        return self.model.names[rows[0].row()]

    def select(self, name: str) -> None:
        if name in self.model.names:
            self.view.selectRow(self.model.names.index(name))

    # ------------------------------------------------------------------ actions
    def details(self, name: str | None = None) -> RigDetailDialog | None:
        """Show the rig's detail (its drivers' health, live), raising the one already open."""
        name = name or self.selected()
        if name is None or name not in self.model.names:
            return None
        dialog = self.details_dialogs.get(name)
        if dialog is None:
            dialog = RigDetailDialog(self.console, name, self)
            dialog.destroyed.connect(lambda *_: self.details_dialogs.pop(name, None))
            self.details_dialogs[name] = dialog
        dialog.show()
        dialog.raise_()
        return dialog

    def _context_menu(self, pos: QPoint) -> None:
        index = self.view.indexAt(pos)
        if not index.isValid():
            return
        self.view.selectRow(index.row())
        menu = QMenu(self)
        menu.addAction("Details…", self.details)
        for key in ("edit", "remove"):
            item = menu.addAction(self.buttons[key].text(), self.buttons[key].click)
            item.setEnabled(self.buttons[key].isEnabled())
        menu.popup(self.view.viewport().mapToGlobal(pos))

    def add_rig(self) -> None:
        if self.buttons["add"].isEnabled():
            self._open_dialog(RigDialog(self, taken=self.console.specs), replace=None)

    def edit_rig(self) -> None:
        name = self.selected()
        if name is None or not self.buttons["edit"].isEnabled():
            return
        spec = self.console.specs[name]
        self._open_dialog(RigDialog(self, name, spec.uri, spec.role.value, taken=set(self.console.specs) - {name},
                                    options=dict(spec.options)), replace=name)

    def _open_dialog(self, dialog: RigDialog, replace: str | None) -> None:
        self.dialog = dialog

        def accepted() -> None:
            spawn(self.console.put_rig(dialog.name.text().strip(), dialog.value(), replace=replace), self, "Rig",
                  on_done=lambda _spec: self.update_actions())

        dialog.accepted.connect(accepted)
        dialog.open()

    def remove_rig(self) -> None:
        name = self.selected()
        if name is None or not self.buttons["remove"].isEnabled():
            return
        spawn(self.console.remove_rig(name), self, "Remove rig", on_done=lambda _r: self.update_actions())

    def save(self) -> None:
        try:
            self.console.save()
        except (OSError, ValueError) as ex:
            show_error(self, "Save rigs", str(ex))

    def reload(self) -> None:
        if self.reload_handler is not None:  # the window's: it also updates the title, the log's rigs, reattach
            self.reload_handler()
        else:
            spawn(self.console.reload(), self, "Reload rigs", on_done=lambda _r: self.update_actions())
