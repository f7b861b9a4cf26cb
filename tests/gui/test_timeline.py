"""File > Open session…: a past session of the demo rigs (real processes) as a timeline, lanes checked."""

from __future__ import annotations

import json

from conftest import run, wait_for, wait_in_control
from PySide6.QtCore import QPointF
from PySide6.QtWidgets import QMessageBox

from core.journal import load_session
from core.report import REPORT_HTML, REPORT_JSON
from core.session import Phase


def test_open_a_past_session_shows_one_lane_per_rig_and_the_depth_trace(make_window, demo, qtbot, loop):
    window = make_window(demo.rigs_file)
    console = window.console
    wait_for(qtbot, lambda: console.rigset is not None and console.can("start"))
    wait_for(qtbot, lambda: console.state.get(["rigs", "probes", "service", "manipulators", "1"]) is not None)
    wait_in_control(qtbot, loop, console)
    assert run(qtbot, loop, console.start("KS030")).ok
    start = console.state.get(["rigs", "probes", "service", "manipulators", "1", "w"])
    run(qtbot, loop, console.set_depth("probes", "1", 2.0 if start > 3 else start + 2.0, 20.0))
    assert run(qtbot, loop, console.stop()).ok and console.phase is Phase.STOPPED
    folder = console.session.folder
    assert json.loads((folder / REPORT_JSON).read_text())["outcome"] == "completed"  # written at the stop
    assert (folder / REPORT_HTML).is_file()
    rigs = list(load_session(folder).rigs)
    # the stop started gathering the rigs' files in the background: the timeline shows how that ended
    wait_for(qtbot, lambda: not console.transfers.running(console.session.exp_ref))

    window.open_session_action.trigger()  # File > Open session…: a folder chooser at the data folder
    wait_for(qtbot, lambda: window.dialog is not None and window.dialog.isVisible())
    window.dialog.fileSelected.emit(str(folder))
    window.dialog.reject()
    wait_for(qtbot, lambda: window.timeline is not None and window.timeline.isVisible())
    dialog = window.timeline
    view = dialog.view
    assert [lane.rig for lane in view.lanes] == rigs and {"sync", "cameras", "ephys"} <= set(rigs)
    assert {lane.rig: lane.role for lane in view.lanes}["sync"] == "main_sync"
    for lane in view.lanes:
        assert [s.label for s in lane.of("status")][-1] == "STOPPED", lane.rig
        steps = [s.label.split(" ")[0] for s in lane.of("step") if s.label.endswith(": ok")]
        assert steps[:4] == ["info", "init", "start", "stop"], lane.rig
        assert all(view.t0 <= s.start <= s.end <= view.t1 for s in lane.spans)
    trace = view.report["depth"]["probes/1"]
    assert len(trace) == 2 and trace[0][1] != trace[1][1]
    assert "completed" in dialog.heading.text() and "cameras: " in dialog.heading.text()
    assert dialog.heading.text().count("verified") == 3 and "not verified" not in dialog.heading.text()
    assert dialog.page_button.isEnabled()
    # a span on screen is the one hovering finds
    step = view.lanes[0].of("step")[0]
    assert view.span_at(view.span_rect(0, step).center()) == step
    assert view.span_at(QPointF(2, 2)) is None
    assert not view.grab().isNull()


def test_a_folder_without_a_journal_says_so(make_window, qtbot, tmp_path):
    window = make_window()
    window.open_session(tmp_path)
    wait_for(qtbot, lambda: any(isinstance(w, QMessageBox) and w.isVisible() and "no session journal" in w.text()
                                for w in window.findChildren(QMessageBox)))
    assert window.timeline is None
    for box in window.findChildren(QMessageBox):
        box.close()
