"""No stray-key accidents, STOP ALL from anywhere, Move dialogs that cannot surprise: clicked and typed like an
operator would, against the demo rigs (real rig processes on loopback), checking what the rigs did."""

from __future__ import annotations

import asyncio

from conftest import run, wait_for, wait_in_control
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox
from test_window import all_online, boxes, click, start_by_clicks

from core.drivers.manipulator import Vec4
from core.journal import load_session, read_description
from core.session import Phase

CTRL = Qt.KeyboardModifier.ControlModifier


def button(box: QMessageBox, name: str):
    return [b for b in box.buttons() if b.objectName() == name][0]


def test_ctrl_q_during_a_session_asks_and_each_answer_does_what_it_says(make_window, demo, qtbot, loop):
    window = make_window(demo.rigs_file)
    start_by_clicks(qtbot, window, "KS010")
    wait_for(qtbot, lambda: window.console.phase is Phase.RUNNING)
    # Ctrl+Q: a question, not a closed window; Cancel keeps everything as it was
    qtbot.keyClick(window, Qt.Key.Key_Q, CTRL)
    wait_for(qtbot, lambda: boxes("confirmQuit", window))
    box = boxes("confirmQuit", window)[0]
    assert "reattach" in box.informativeText()
    box.button(QMessageBox.StandardButton.Cancel).click()
    wait_for(qtbot, lambda: not boxes("confirmQuit", window))
    assert window.isVisible() and window.console.phase is Phase.RUNNING
    wait_for(qtbot, lambda: QApplication.activeWindow() is window)  # the keyboard is back in the window
    # Ctrl+. asks too; No leaves the rigs recording
    qtbot.keyClick(window, Qt.Key.Key_Period, CTRL)
    wait_for(qtbot, lambda: boxes("confirmStop", window))
    boxes("confirmStop", window)[0].button(QMessageBox.StandardButton.No).click()
    qtbot.wait(200)  # (a negative check: give a wrong stop the time to show)
    assert window.console.phase is Phase.RUNNING
    # "Stop the session and quit": the rigs stop (the journal and the description say so), the window closes
    qtbot.keyClick(window, Qt.Key.Key_Q, CTRL)
    wait_for(qtbot, lambda: boxes("confirmQuit", window))
    button(boxes("confirmQuit", window)[0], "stopAndQuit").click()
    wait_for(qtbot, lambda: not window.isVisible())
    folder = window.console.session.folder
    assert load_session(folder).phase == "stopped" and read_description(folder)["outcome"] == "completed"
    run(qtbot, loop, window.console.cleanup())  # the demo rigs are shared with the next tests


def test_quit_and_leave_the_rigs_running(make_window, demo, qtbot, loop):
    window = make_window(demo.rigs_file)
    qtbot.keyClicks(window.session.project, "brainwide")
    start_by_clicks(qtbot, window, "KS011")
    wait_for(qtbot, lambda: window.console.phase is Phase.RUNNING)
    window.close()  # the window's close button
    wait_for(qtbot, lambda: boxes("confirmQuit", window))
    button(boxes("confirmQuit", window)[0], "leaveRunning").click()
    wait_for(qtbot, lambda: not window.isVisible())
    # the rigs were left recording: a fresh console finds them RUNNING and offers to reattach
    summary = load_session(window.console.session.folder)
    assert summary.phase == "running"
    second = make_window(demo.rigs_file)
    wait_for(qtbot, lambda: boxes("reattach", second))
    boxes("reattach", second)[0].button(QMessageBox.StandardButton.Yes).click()
    wait_for(qtbot, lambda: second.console.session is not None and second.console.session.attached)
    # what was typed at Start comes back with the session
    wait_for(qtbot, lambda: second.session.subject.currentText() == "KS011")
    assert second.session.project.text() == "brainwide"
    wait_for(qtbot, lambda: second.console.can("stop"))
    run(qtbot, loop, second.console.stop())
    assert load_session(second.console.session.folder).phase == "stopped"
    run(qtbot, loop, second.console.cleanup())


def test_the_session_menu_stop_asks_and_the_button_does_not(make_window, demo, qtbot):
    window = make_window(demo.rigs_file)
    start_by_clicks(qtbot, window, "KS012")
    wait_for(qtbot, lambda: window.console.phase is Phase.RUNNING)
    assert window.session.buttons["stop"].text() == "Stop session"
    wait_for(qtbot, window.session.actions["stop"].isEnabled)  # the panel repaints once per frame
    assert not window.session.actions["start"].isEnabled()
    window.session.actions["stop"].trigger()
    wait_for(qtbot, lambda: boxes("confirmStop", window))
    boxes("confirmStop", window)[0].button(QMessageBox.StandardButton.Yes).click()
    wait_for(qtbot, lambda: window.console.phase is Phase.STOPPED and window.console.session.busy is None)
    # menus follow the buttons: Stop is now off in both, Cleanup on in both (once the panel has repainted)
    wait_for(qtbot, window.session.actions["cleanup"].isEnabled)
    for key in ("start", "stop", "abort", "cleanup"):
        assert window.session.actions[key].isEnabled() == window.session.buttons[key].isEnabled(), key
    click(qtbot, window.session.buttons["cleanup"])
    wait_for(qtbot, lambda: "cleaned up" in window.session.phase.text())


def move_probes_apart(qtbot, loop, console) -> dict[str, asyncio.Task]:
    """Both demo probes set off on long moves (1 mm/s): they are moving while the test acts."""
    wait_in_control(qtbot, loop, console)
    tasks = {}
    for mid in ("1", "2"):
        pos = run(qtbot, loop, console.client("probes").position(mid))
        far = Vec4(*(2.0 if v > 10 else 18.0 for v in pos.as_tuple()))
        tasks[mid] = loop.create_task(console.move("probes", mid, far, 1.0))
    return tasks


def test_f12_in_the_move_dialog_halts_every_moving_probe_and_says_so(make_window, demo, qtbot, loop):
    window = make_window(demo.rigs_file)
    panel = window.manipulators
    wait_for(qtbot, lambda: all_online(window) and len(panel.model.rows) == 2)
    assert panel.buttons["stop"].text() == "Stop probe"
    assert window.stop_all_action.shortcut().toString() == "F12"  # shown beside the menu item
    moves = move_probes_apart(qtbot, loop, window.console)
    wait_for(qtbot, lambda: all(panel.model.entry("probes", m).get("moving") for m in ("1", "2")))
    panel.select("probes", "1")
    click(qtbot, panel.buttons["move"])
    wait_for(qtbot, lambda: panel.dialog is not None and panel.dialog.isVisible())
    field = panel.dialog.axes["y"]
    field.setFocus()
    qtbot.keyClick(field, Qt.Key.Key_F12)  # typed into the dialog's field: F12 is not a digit, it is STOP ALL
    banner = window.stop_all_banner
    wait_for(qtbot, lambda: banner.isVisible() and banner.report is not None and banner.report.done
             and "waiting" not in banner.label.text())
    assert banner.report.ok, banner.label.text()
    assert "2/2 probes halted (positions confirmed) in" in banner.label.text()
    assert "STOP ALL sent at " in banner.label.text()
    wait_for(qtbot, lambda: all(t.done() for t in moves.values()))
    # ask the rig itself: both probes stand still, neither reached its target
    client = window.console.client("probes")
    first = {m: run(qtbot, loop, client.position(m)) for m in ("1", "2")}
    qtbot.wait(300)
    assert first == {m: run(qtbot, loop, client.position(m)) for m in ("1", "2")}, "still moving after F12"
    assert all(t.result() is None for t in moves.values()), "a halted move is reported as halted, not arrived"
    # the confirmation stays until dismissed
    qtbot.wait(100)
    assert banner.isVisible()
    click(qtbot, banner.dismiss)
    assert not banner.isVisible()
    panel.dialog.reject()


def test_f12_after_enter_closed_the_move_dialog(make_window, demo, qtbot, loop):
    """The field report: Enter closed the Move dialog, the probe moved, F12 did nothing (no window had focus)."""
    window = make_window(demo.rigs_file)
    panel = window.manipulators
    wait_for(qtbot, lambda: all_online(window) and len(panel.model.rows) == 2)
    panel.select("probes", "2")
    click(qtbot, panel.buttons["move"])
    wait_for(qtbot, lambda: panel.dialog is not None and panel.dialog.isVisible())
    dialog = panel.dialog
    x = dialog.axes["x"]
    target = 2.0 if dialog.current["x"] > 10 else 18.0
    x.setFocus()
    x.selectAll()
    qtbot.keyClicks(x, f"{target:.3f}")
    qtbot.keyClick(x, Qt.Key.Key_Return)
    wait_for(qtbot, lambda: not dialog.isVisible())
    wait_for(qtbot, lambda: panel.model.entry("probes", "2").get("moving"))
    wait_for(qtbot, lambda: QApplication.activeWindow() is window)  # the keyboard came back to the window
    qtbot.keyClick(QApplication.focusWidget() or window, Qt.Key.Key_F12)
    wait_for(qtbot, lambda: "probes halted" in window.stop_all_banner.label.text())
    assert window.stop_all_banner.report.ok
    wait_for(qtbot, lambda: not panel.model.entry("probes", "2").get("moving"))
    pos = run(qtbot, loop, window.console.client("probes").position("2"))
    assert abs(pos.x - target) > 0.05, "the probe was not halted on its way"
    window.stop_all_banner.dismiss.click()


def test_the_move_dialog_names_the_probe_refuses_out_of_range_and_follows_the_probe(make_window, demo, qtbot, loop):
    window = make_window(demo.rigs_file)
    panel = window.manipulators
    wait_for(qtbot, lambda: all_online(window) and len(panel.model.rows) == 2)
    client = window.console.client("probes")
    panel.select("probes", "1")
    click(qtbot, panel.buttons["move"])
    wait_for(qtbot, lambda: panel.dialog is not None and panel.dialog.isVisible())
    dialog = panel.dialog
    assert "probe 1" in dialog.windowTitle() and "probes" in dialog.windowTitle()
    assert "Probe 1" in dialog.heading.text()
    # the probe moves while the dialog is open: the fields follow it, until one is edited
    start = run(qtbot, loop, client.position("1"))
    y_target = 5.0 if start.y > 10 else 15.0
    move = loop.create_task(window.console.move("probes", "1", start.replace(y=y_target), 5.0))
    wait_for(qtbot, lambda: move.done())
    wait_for(qtbot, lambda: abs(dialog.axes["y"].value() - y_target) < 1e-6)
    # typing 100: refused with a message, nothing clamped, nothing moved
    x = dialog.axes["x"]
    x.setFocus()
    x.selectAll()
    qtbot.keyClicks(x, "100")
    assert x.value() == 100.0
    dialog.accept()
    assert dialog.isVisible() and dialog.problem.isVisible()
    assert "outside this probe's travel (0 to 20 mm)" in dialog.problem.text()
    assert x.value() == 100.0 and dialog.focusWidget() is x
    qtbot.wait(200)  # (a negative check)
    assert run(qtbot, loop, client.position("1")) == start.replace(y=y_target)
    # relative: move by +1 mm in x
    dialog.relative.click()
    assert x.value() == 0.0
    x.setFocus()
    x.selectAll()
    step = 1.0 if start.x < 19 else -1.0
    qtbot.keyClicks(x, f"{step:g}")
    dialog.speed.setValue(5.0)
    dialog.accept()
    assert not dialog.isVisible()
    wait_for(qtbot, lambda: abs(panel.model.entry("probes", "1")["x"] - (start.x + step)) < 1e-3)
    assert run(qtbot, loop, client.position("1")) == start.replace(x=start.x + step, y=y_target)


def test_move_is_disabled_while_the_probe_is_inside_the_brain(make_window, demo, qtbot, loop):
    window = make_window(demo.rigs_file)
    panel = window.manipulators
    wait_for(qtbot, lambda: all_online(window) and len(panel.model.rows) == 2)
    panel.select("probes", "2")
    wait_for(qtbot, panel.buttons["move"].isEnabled)
    click(qtbot, panel.inside)
    wait_for(qtbot, lambda: panel.model.entry("probes", "2").get("inside_brain"))
    wait_for(qtbot, lambda: not panel.buttons["move"].isEnabled())
    assert "inside the brain" in panel.buttons["move"].toolTip()
    assert panel.buttons["depth"].isEnabled() and panel.buttons["stop"].isEnabled()
    panel.move()  # even called directly: nothing opens
    assert panel.dialog is None or not panel.dialog.isVisible()
    click(qtbot, panel.inside)
    wait_for(qtbot, lambda: not panel.model.entry("probes", "2").get("inside_brain"))
    wait_for(qtbot, panel.buttons["move"].isEnabled)
