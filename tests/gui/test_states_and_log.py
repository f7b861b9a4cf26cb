"""Rigs-file and menu states, plain words, a layout that holds still at 1280x720, a log and plots for people."""

from __future__ import annotations

from pathlib import Path

from conftest import wait_for
from test_window import all_online, boxes, click, close_boxes, start_by_clicks, stop_and_cleanup

from core.session import Phase


def test_reload_after_a_fixed_file_and_open_starts_in_its_folder(make_window, demo, qtbot, tmp_path):
    rigs = tmp_path / "lab" / "remote_rigs.yaml"
    rigs.parent.mkdir()
    good = Path(demo.rigs_file).read_text()
    rigs.write_text("sync: udp://127.0.0.1:9001\ncameras:\n  uri: udp://127.0.0.1:9002\n   role: aux\n")
    window = make_window(rigs)
    wait_for(qtbot, lambda: boxes("errorBox", window))
    text = boxes("errorBox", window)[0].text()
    assert f"{rigs}, line 4, column" in text and "indentation" in text and "<unicode string>" not in text
    close_boxes()
    # fixed in an editor; Reload reads it (it used to say "no rigs file loaded")
    rigs.write_text(good)
    assert window.rigs.buttons["reload"].isEnabled() and window.rigs.actions["reload"].isEnabled()
    click(qtbot, window.rigs.buttons["reload"])
    wait_for(qtbot, lambda: window.console.specs and all_online(window))
    assert not boxes("errorBox", window)
    window.choose_rigs()
    assert Path(window.dialog.directory().absolutePath()) == rigs.parent
    window.dialog.reject()


def test_rig_actions_are_enabled_exactly_when_valid_and_add_keeps_what_was_typed(make_window, demo, qtbot):
    window = make_window()
    panel = window.rigs
    assert not panel.buttons["edit"].isEnabled() and not panel.buttons["remove"].isEnabled()
    assert not panel.buttons["reload"].isEnabled() and not panel.buttons["save"].isEnabled()
    assert window.session.phase.text() == "no rigs loaded"
    window.open_rigs(demo.rigs_file)
    assert "connecting" in window.session.phase.text()
    wait_for(qtbot, lambda: all_online(window))
    wait_for(qtbot, lambda: "READY" in window.session.phase.text())
    assert not panel.buttons["edit"].isEnabled()  # rows, but none selected
    panel.select("cameras")
    assert panel.buttons["edit"].isEnabled() and panel.buttons["remove"].isEnabled()
    # Add: a mistake keeps the dialog open with what was typed, says what is wrong, and points at the field
    click(qtbot, panel.buttons["add"])
    dialog = panel.dialog
    qtbot.keyClicks(dialog.name, "lickometer")
    qtbot.keyClicks(dialog.uri, "udp://127.0.0.1:notaport")
    dialog.accept()
    assert dialog.isVisible() and dialog.problem.isVisible() and dialog.problem.text()
    assert dialog.name.text() == "lickometer" and dialog.uri.text() == "udp://127.0.0.1:notaport"
    assert dialog.focusWidget() is dialog.uri
    dialog.name.setText("cameras")  # a name already taken
    dialog.uri.setText("udp://127.0.0.1:9555")
    dialog.accept()
    assert dialog.isVisible() and "already" in dialog.problem.text() and dialog.focusWidget() is dialog.name
    dialog.reject()
    assert list(window.console.specs) == ["sync", "cameras", "ephys", "probes"]
    # during a session: the rigs cannot change, and the buttons and menu items say so by being off
    start_by_clicks(qtbot, window, "KS020")
    wait_for(qtbot, lambda: window.console.phase is Phase.RUNNING)
    wait_for(qtbot, lambda: not any(panel.buttons[k].isEnabled() for k in ("add", "edit", "remove", "reload")))
    assert not panel.actions["reload"].isEnabled() and not panel.actions["open"].isEnabled()
    stop_and_cleanup(qtbot, window)


def test_the_layout_holds_still_and_fits_1280x720(make_window, demo, qtbot):
    window = make_window(demo.rigs_file)
    window.resize(1280, 720)
    wait_for(qtbot, lambda: all_online(window))
    for edit in (window.session.project, window.session.procedures, window.session.notes,
                 window.session.subject.lineEdit()):
        assert edit.width() >= edit.fontMetrics().horizontalAdvance(edit.placeholderText()), edit.objectName()
    view = window.rigs.view
    assert view.horizontalScrollBar().maximum() == 0, "the rigs table scrolls sideways at 1280x720"
    assert view.columnViewportPosition(view.model().columnCount() - 1) + 60 <= view.viewport().width()
    manip = window.manipulators.view
    assert manip.columnWidth(7) <= 120, "'Inside brain' is one word"
    dock = window.docks["session"]
    before = dock.width()
    start_by_clicks(qtbot, window, "KS021")
    wait_for(qtbot, lambda: window.console.phase is Phase.RUNNING)
    qtbot.wait(50)  # (a relayout is one frame)
    assert dock.width() == before
    exp_ref = window.session.exp_ref
    assert exp_ref.width() >= exp_ref.fontMetrics().horizontalAdvance(exp_ref.text()), "exp_ref clipped"
    stop_and_cleanup(qtbot, window)
    assert dock.width() == before


def test_log_collapses_repeats_searches_and_keeps_protocol_detail_aside(make_window, demo, qtbot):
    window = make_window(demo.rigs_file)
    wait_for(qtbot, lambda: all_online(window))
    book, model = window.console.logbook, window.log.model
    rows = len(model.rows) if model.rows else 0
    wait_for(qtbot, lambda: len(model.rows) >= rows)
    for _ in range(3):
        book.add("warning", "cameras", "cameras:1234: no reply to CMD 604 within 5.0 s (8 send(s))")
    book.add("info", "sync", "link online")
    book.add("warning", "cameras", "cameras:1234: no reply to CMD 604 within 5.0 s (8 send(s))")
    wait_for(qtbot, lambda: any(r.count == 4 for r in model.rows))
    row = [r for r in model.rows if r.count == 4][0]
    assert row.entry.text == "The rig did not answer within 5 s"
    assert "CMD 604" in row.entry.detail and "CMD 604" not in row.entry.text
    fields = row.fields()
    assert fields[4] == "×4" and fields[5] == row.entry.detail
    assert sum(1 for r in model.rows if r.entry.text == row.entry.text) == 1
    # search
    qtbot.keyClicks(window.log.search, "did not answer")
    wait_for(qtbot, lambda: window.log.proxy.rowCount() == 1)
    window.log.search.clear()
    wait_for(qtbot, lambda: window.log.proxy.rowCount() > 1)


def test_plots_label_the_probes_and_point_depth_down(make_window, demo, qtbot):
    window = make_window(demo.rigs_file)
    window.docks["manipulators"].raise_()
    plots = window.manipulators.plots
    wait_for(qtbot, lambda: plots.ready and len(plots.labels) == 2)
    assert {label.toPlainText() for label in plots.labels.values()} == {"probes/1", "probes/2"}
    assert all(curve.opts["pen"].width() == 2 for curve in plots.curves.values())
    view = plots.depth_plot.getPlotItem().getViewBox()
    assert view.yInverted()
    window.depth_down_action.trigger()
    assert not view.yInverted()
    window.depth_down_action.trigger()
    assert view.yInverted()


def test_a_stop_all_with_an_unreachable_manipulator_rig_says_which(make_window, qtbot, tmp_path):
    rigs = tmp_path / "rigs.yaml"
    rigs.write_text("probes: {uri: 'sio://127.0.0.1:9', role: manipulator}\n")  # nothing listens there
    window = make_window(rigs, timeout=0.5)
    wait_for(qtbot, lambda: "probes" in window.console.manipulator_links())
    window.stop_all()
    banner = window.stop_all_banner
    wait_for(qtbot, lambda: "not confirmed" in banner.label.text())
    assert not banner.report.ok
    assert "probes: stop not confirmed: Not connected to the rig" in banner.label.text()
    assert banner.isVisible()
