"""A rig's drivers' health on screen: the Rig cell's tooltip and the rig detail, against the real demo rigs
(the cameras rig is zmq:// with two ffmpeg video recorders, so its drivers' health is pushed live)."""

from __future__ import annotations

import re

from conftest import wait_for
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMenu
from test_window import LEFT, start_by_clicks, stop_and_cleanup

from app.gui.rig_detail import RigDetailDialog
from app.gui.rigs_model import COL
from app.rig_view import NO_DRIVER_HEALTH
from core.session import Phase


def frames_in(text: str, driver: str) -> int:
    """The frame count a health line says for ``driver`` (-1 when it says none)."""
    found = re.search(rf"^{driver} \(video\): recording, [\d.]+ fps, ([\d,]+) frames, \d+ dropped", text, re.M)
    return int(found.group(1).replace(",", "")) if found else -1


def test_drivers_health_counts_up_in_the_detail_and_the_rig_tooltip(make_window, demo, qtbot):
    window = make_window(demo.rigs_file)
    view, model = window.rigs.view, window.rigs.model
    start_by_clicks(qtbot, window, "KS010")
    row = model.names.index("cameras")
    wait_for(qtbot, lambda: window.console.phase is Phase.RUNNING)

    # double-click the cameras row: a non-modal detail that follows the rig
    rect = view.visualRect(model.index(row, COL["name"]))
    qtbot.mouseClick(view.viewport(), LEFT, pos=rect.center())  # a view only takes a double-click it saw pressed
    qtbot.mouseDClick(view.viewport(), LEFT, pos=rect.center())
    wait_for(qtbot, lambda: "cameras" in window.rigs.details_dialogs)
    dialog: RigDetailDialog = window.rigs.details_dialogs["cameras"]
    assert dialog.isVisible() and not dialog.isModal()
    assert dialog.fields["uri"].text().startswith("zmq://") and dialog.fields["link"].text() == "online"

    def table_text() -> str:
        drivers = dialog.drivers
        return "\n".join(r.line for r in drivers.rows)

    wait_for(qtbot, lambda: frames_in(table_text(), "left") > 0 and frames_in(table_text(), "right") > 0)
    first = frames_in(table_text(), "left")
    wait_for(qtbot, lambda: frames_in(table_text(), "left") > first)  # live: the table follows the recording
    shown = dialog.drivers.index(0, 3).data(Qt.ItemDataRole.DisplayRole)
    assert re.search(r"frames", shown)

    def tooltip() -> str:
        return model.index(row, COL["name"]).data(Qt.ItemDataRole.ToolTipRole)

    wait_for(qtbot, lambda: frames_in(tooltip(), "left") > 0)
    seen = frames_in(tooltip(), "left")
    wait_for(qtbot, lambda: frames_in(tooltip(), "left") > seen)
    # the udp main-sync rig pushes nothing: its tooltip says so rather than showing nothing
    assert NO_DRIVER_HEALTH in model.index(model.names.index("sync"), COL["name"]).data(Qt.ItemDataRole.ToolTipRole)

    stop_and_cleanup(qtbot, window)
    wait_for(qtbot, lambda: "not recording" in table_text())
    dialog.close()
    wait_for(qtbot, lambda: "cameras" not in window.rigs.details_dialogs)


def test_details_from_the_right_click_menu_of_a_rig_that_pushes_nothing(make_window, demo, qtbot):
    window = make_window(demo.rigs_file)
    view, model = window.rigs.view, window.rigs.model
    wait_for(qtbot, lambda: "sync" in model.names and model.rig(model.names.index("sync")).get("link") == "online")
    rect = view.visualRect(model.index(model.names.index("sync"), COL["status"]))
    view.customContextMenuRequested.emit(rect.center())  # what a right-click on that row asks for
    menus = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMenu) and w.isVisible()]
    assert len(menus) == 1
    [details] = [a for a in menus[0].actions() if a.text() == "Details…"]
    details.trigger()
    menus[0].close()
    dialog = window.rigs.details_dialogs["sync"]
    assert dialog.isVisible() and dialog.fields["uri"].text().startswith("udp://")
    assert dialog.none.text() == NO_DRIVER_HEALTH and not dialog.table.isVisible()
    dialog.close()
