"""The Data tab against the demo rigs: a finished session left untransferred is offered at start-up and
resumed in one click; after Stop every rig's files are gathered with progress and verified marks; a
destination that cannot be written is an error in plain words, and Retry (once it can) finishes the job."""

from __future__ import annotations

import datetime as _dt

from conftest import wait_for
from PySide6.QtCore import Qt
from test_window import all_online, click, start_by_clicks

from app.gui.data_panel import COL
from core.journal import JOURNAL_NAME, Journal
from core.paths import session_folder
from core.session import Phase


def old_session(data_dir, demo, exp_ref):
    """A finished session of yesterday whose files were never gathered (its console was closed before)."""
    folder = session_folder(data_dir, exp_ref)
    folder.mkdir(parents=True)
    rigs = {"cameras": {"uri": demo.rigs["cameras"]["uri"], "role": "aux", "options": {}}}
    with Journal(folder / JOURNAL_NAME) as journal:
        journal.write("session", exp_ref=exp_ref, subject="OLD", participants=["cameras"], rigs=rigs)
        journal.write("phase", phase="running")
        journal.write("phase", phase="stopped")


def rig_cells(window, exp_ref, column):
    top = window.data.sessions.get(exp_ref)
    if top is None:
        return {}
    return {top.child(i).text(0): top.child(i).text(COL[column]) for i in range(top.childCount())}


def test_pending_sessions_resume_in_one_click_and_a_stopped_session_is_gathered(make_window, demo, qtbot, tmp_path):
    old = f"{_dt.date.today() - _dt.timedelta(days=1):%Y-%m-%d}_1_OLD"
    old_session(tmp_path / "data", demo, old)
    window = make_window(demo.rigs_file)
    window.docks["data"].raise_()
    panel = window.data
    wait_for(qtbot, lambda: panel.banner.text() == "1 session on 1 rig not yet transferred")
    assert panel.resume_button.isVisible()
    click(qtbot, panel.resume_button)
    wait_for(qtbot, lambda: rig_cells(window, old, "Verified") == {"cameras": "✔"})
    assert not panel.resume_button.isVisible()

    # a destination below a plain file cannot be created: plain words, no verified mark, Retry lights up
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    panel.destination.setText(str(blocker / "lab"))
    panel.destination.editingFinished.emit()
    start_by_clicks(qtbot, window, "KS010")
    wait_for(qtbot, lambda: window.console.phase is Phase.RUNNING)
    click(qtbot, window.session.buttons["stop"])
    wait_for(qtbot, lambda: window.console.phase is Phase.STOPPED)
    ref = window.console.session.exp_ref
    wait_for(qtbot, lambda: set(rig_cells(window, ref, "State / error")) == {"sync", "cameras", "ephys"}
             and all("destination" in text for text in rig_cells(window, ref, "State / error").values()))
    errors = rig_cells(window, ref, "State / error")
    assert all(text.startswith("cannot write to the destination: Not a directory") for text in errors.values())
    assert set(rig_cells(window, ref, "Verified").values()) == {""}
    wait_for(qtbot, panel.retry_button.isEnabled)  # once the transfer task has ended, after its last rig's error

    blocker.unlink()
    panel.tree.setCurrentItem(panel.sessions[ref])
    click(qtbot, panel.retry_button)
    wait_for(qtbot, lambda: set(rig_cells(window, ref, "Verified").values()) == {"✔"})
    assert all(panel.bars[(ref, name)].value() == 100 for name in ("sync", "cameras", "ephys"))
    assert all(" of " in text for text in rig_cells(window, ref, "Bytes").values())
    to = window.console.transfers.jobs[ref].to
    assert to == session_folder(blocker / "lab", ref) and (to / "cameras" / "SHA256SUMS").is_file()
    assert panel.sessions[ref].text(COL["State / error"]).startswith("verified")
    assert panel.tree.topLevelItem(0).data(0, Qt.ItemDataRole.UserRole) == ref  # newest first
    assert all_online(window)
