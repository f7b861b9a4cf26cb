"""The console window, clicked like an experimenter would, against real rig services (subprocesses).

Each test checks what the rigs did (their recordings, their replies, the journal), not only the widgets.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import run, wait_for, wait_in_control
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QLabel, QMessageBox
from video_helpers import decoded_frames, stamps

from app.demo_rigs import start_demo_rigs
from app.gui.rigs_model import COL
from core.drivers.recorder import read_recording
from core.journal import load_session, read_description, read_journal
from core.paths import session_folder
from core.session import Phase

LEFT = Qt.MouseButton.LeftButton


def rows_text(window, column):
    model = window.rigs.model
    return {model.names[r]: model.index(r, COL[column]).data() for r in range(model.rowCount())}


def session_rigs_connected(window):
    """Every session rig back to CONNECTED; the manipulator rig says "manipulators" (": watching" while an
    earlier test's console, on the demo rigs all tests share, still holds its control)."""
    return all(v == "CONNECTED" or v.startswith("manipulators") for v in rows_text(window, "status").values())


def all_online(window):
    links = rows_text(window, "link")
    return links and all(v == "online" for v in links.values())


def recordings(rigs_dir, rig, exp_ref):
    """The recording files ``rig`` wrote for ``exp_ref`` (in its own rig's session folder)."""
    return [p for p in session_folder(rigs_dir / rig, exp_ref).rglob("*") if p.suffix in (".rdrec", ".mkv")]


def has_frames(path):
    """A finished recording holds frames. The demo's cameras film test patterns with ffmpeg: a video and a
    timestamp line per frame after the header."""
    if path.suffix == ".mkv":  # a video that plays: decoded to as many frames as it has timestamps
        timestamps = path.with_name(f"{path.stem}.timestamps.csv")
        return timestamps.exists() and 0 < len(stamps(timestamps)) == decoded_frames(path)
    return bool(read_recording(path, with_data=False)[0])


def recording(rigs_dir, rig, exp_ref):
    """``rig`` is writing its recordings for ``exp_ref`` now: each RigDeck recording has grown past nothing
    (ffmpeg may hold a slow camera's video in its buffers until it stops, so a video only has to exist;
    its frames are checked once the session has stopped)."""
    files = recordings(rigs_dir, rig, exp_ref)
    return files and all(path.suffix == ".mkv" or path.stat().st_size > 0 for path in files)


def click(qtbot, widget):
    """Like a person: wait (a little) for the button to light up, then click it."""
    wait_for(qtbot, widget.isEnabled, timeout=5000)
    qtbot.mouseClick(widget, LEFT)


def click_cell(qtbot, view, row, column):
    rect = view.visualRect(view.model().index(row, column))
    qtbot.mouseClick(view.viewport(), LEFT, pos=rect.center())


def boxes(name, window=None):
    """Visible message boxes called ``name`` (of ``window``, when given)."""
    return [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.objectName() == name
            and w.isVisible() and (window is None or (w.parentWidget() and w.parentWidget().window() is window))]


def close_boxes():
    for w in QApplication.topLevelWidgets():
        if isinstance(w, QMessageBox) and w.isVisible():
            w.close()


def start_by_clicks(qtbot, window, subject="KS001"):
    wait_for(qtbot, lambda: all_online(window))
    window.session.subject.setCurrentText("")
    qtbot.keyClicks(window.session.subject.lineEdit(), subject)
    click(qtbot, window.session.buttons["start"])


def stop_and_cleanup(qtbot, window):
    click(qtbot, window.session.buttons["stop"])
    wait_for(qtbot, lambda: window.console.phase is Phase.STOPPED and window.console.session.busy is None)
    click(qtbot, window.session.buttons["cleanup"])
    wait_for(qtbot, lambda: session_rigs_connected(window))
    wait_for(qtbot, lambda: window.console.session.busy is None)


def test_opens_on_the_demo_rigs_and_shows_them_live(make_window, demo, qtbot):
    window = make_window(demo.rigs_file)
    assert window.windowTitle() == "RigDeck — remote_rigs.yaml"
    wait_for(qtbot, lambda: all_online(window))
    assert window.rigs.model.names == ["sync", "cameras", "ephys", "probes"]
    assert rows_text(window, "transport")["probes"].startswith("sio")
    wait_for(qtbot, lambda: rows_text(window, "status")["cameras"] == "CONNECTED")
    wait_for(qtbot, lambda: len(window.manipulators.model.rows) == 2)
    wait_for(qtbot, lambda: "4 online" in window.summary.text())  # the status bar repaints on its own frame
    # only what is valid is enabled
    assert not window.session.buttons["stop"].isEnabled() and window.session.buttons["start"].isEnabled()


def test_full_session_by_clicks(make_window, demo, qtbot):
    window = make_window(demo.rigs_file)
    start_by_clicks(qtbot, window)
    wait_for(qtbot, lambda: window.console.phase is Phase.RUNNING)
    wait_for(qtbot, lambda: [rows_text(window, "status")[n] for n in ("sync", "cameras", "ephys")] == ["RUNNING"] * 3)
    exp_ref = window.console.session.exp_ref
    assert exp_ref.endswith("_KS001")
    wait_for(qtbot, lambda: window.session.exp_ref.text() == exp_ref)
    assert not window.session.buttons["start"].isEnabled() and not window.rigs.buttons["remove"].isEnabled()
    rigs_dir = Path(demo.rigs_file).parents[1] / "rigs"
    wait_for(qtbot, lambda: all(recording(rigs_dir, rig, exp_ref) for rig in ("sync", "cameras", "ephys")))
    stop_and_cleanup(qtbot, window)

    folder = window.console.session.folder
    summary = load_session(folder)
    assert summary.phase == "stopped" and summary.participants == ["sync", "cameras", "ephys"]
    assert read_description(folder)["outcome"] == "completed"
    # what the rigs did: each recorder wrote a readable file in its own rig's session folder
    for rig in ("sync", "cameras", "ephys"):
        files = recordings(rigs_dir, rig, exp_ref)
        assert files, f"{rig} recorded nothing for {exp_ref}"
        for path in files:
            assert has_frames(path), f"{path} has no frames"


def test_main_sync_choice_is_sent_to_the_rigs_and_locked_during_the_session(make_window, demo, qtbot):
    window = make_window(demo.rigs_file)
    wait_for(qtbot, lambda: all_online(window))
    view = window.rigs.view
    assert rows_text(window, "name") and window.console.shown_main_sync() == "sync"
    click_cell(qtbot, view, window.rigs.model.names.index("cameras"), COL["main_sync"])
    assert window.console.main_sync_choice == "cameras"
    start_by_clicks(qtbot, window, "KS002")
    wait_for(qtbot, lambda: window.console.phase is Phase.RUNNING)
    assert window.console.session.main_sync == "cameras"
    # the rigs agreed: cameras handed out the exp_ref and reports itself main sync
    infos = [r for r in read_journal(window.console.session.journal_path).records
             if r.get("kind") == "reply" and r.get("event") == "EXPINFO"]
    claims = {r["rig"]: r["data"][1].get("main_sync") for r in infos}
    assert claims == {"sync": False, "cameras": True, "ephys": False}
    # locked: the radios look disabled and say why; a click changes nothing and pops nothing up
    ephys = window.rigs.model.index(window.rigs.model.names.index("ephys"), COL["main_sync"])
    assert not ephys.flags() & Qt.ItemFlag.ItemIsUserCheckable
    assert "Locked while a session" in ephys.data(Qt.ItemDataRole.ToolTipRole)
    click_cell(qtbot, view, ephys.row(), COL["main_sync"])
    qtbot.wait(100)  # (a negative check: nothing to wait for)
    assert not boxes("errorBox", window)
    assert window.console.main_sync_choice == "cameras" and window.console.shown_main_sync() == "cameras"
    stop_and_cleanup(qtbot, window)
    assert read_description(window.console.session.folder)["main_sync"] == "cameras"


def probes_window(make_window, demo, qtbot, loop):
    """A window over the demo rigs, in control of the probes, probe 1 selected: (window, its Manipulators tab)."""
    window = make_window(demo.rigs_file)
    panel = window.manipulators
    wait_for(qtbot, lambda: len(panel.model.rows) == 2)
    wait_in_control(qtbot, loop, window.console)
    panel.select("probes", "1")
    return window, panel


def test_move_a_manipulator_then_stop_all(make_window, demo, qtbot, loop):
    window, panel = probes_window(make_window, demo, qtbot, loop)
    start = dict(panel.model.entry("probes", "1"))
    click(qtbot, panel.buttons["move"])
    wait_for(qtbot, lambda: panel.dialog is not None and panel.dialog.isVisible())
    dialog = panel.dialog
    target = {"x": min(start["x"] + 8, 19.0), "y": start["y"], "z": start["z"], "w": start["w"]}
    for axis, value in target.items():
        dialog.axes[axis].setValue(value)
    dialog.speed.setValue(1.0)
    assert dialog.limits["x"] == 20.0 and dialog.findChild(QLabel, "travel_x").text() == "0 – 20 mm"
    dialog.accept()
    wait_for(qtbot, lambda: panel.model.entry("probes", "1").get("moving"))
    wait_for(qtbot, lambda: abs(panel.model.entry("probes", "1")["x"] - start["x"]) > 0.3)
    assert panel.model.index(0, 6).data() == "moving"
    click(qtbot, panel.stop_all_button)
    wait_for(qtbot, lambda: not panel.model.entry("probes", "1").get("moving"), timeout=3000)
    # the server halted it mid-way: ask the rig itself, twice, a moment apart
    client = window.console.client("probes")
    loop = asyncio.get_event_loop()
    first = run(qtbot, loop, client.position("1"))
    qtbot.wait(300)  # a short look for something that must NOT happen: the stage moving on
    second = run(qtbot, loop, client.position("1"))
    assert first == second, "still moving after STOP ALL"
    assert start["x"] + 0.3 < first.x < target["x"] - 0.3
    assert any("STOP ALL" in e.text for e in window.console.logbook.entries)
    assert not boxes("errorBox", window), "a move halted by STOP ALL is not an error to report"
    # set depth drives only w
    panel.select("probes", "2")
    before = dict(panel.model.entry("probes", "2"))
    click(qtbot, panel.buttons["depth"])
    wait_for(qtbot, lambda: panel.dialog is not dialog and panel.dialog.isVisible())
    assert panel.dialog.limit == 20.0
    panel.dialog.depth.setValue(before["w"] + 0.5)
    panel.dialog.speed.setValue(2.0)
    panel.dialog.accept()
    wait_for(qtbot, lambda: abs(panel.model.entry("probes", "2")["w"] - (before["w"] + 0.5)) < 0.01)
    after = panel.model.entry("probes", "2")
    assert (after["x"], after["y"], after["z"]) == (before["x"], before["y"], before["z"])


def test_another_console_takes_the_probes_and_take_control_brings_them_back(make_window, demo, qtbot, loop):
    from transports.sio.client import SioManipulatorClient, sio_url

    window, panel = probes_window(make_window, demo, qtbot, loop)
    control = panel.buttons["control"]
    assert not control.isVisible() and panel.buttons["move"].isEnabled()
    address = window.console.specs["probes"].address
    other = SioManipulatorClient(sio_url(address.host, address.port))  # a second console, elsewhere in the lab
    try:
        run(qtbot, loop, other.connect())
        assert run(qtbot, loop, other.take_control())
        # this console is told at once: it watches, Move is off and says why, Take control shows
        wait_for(qtbot, control.isVisible)
        wait_for(qtbot, lambda: rows_text(window, "status")["probes"] == "manipulators: watching")  # the rigs table too
        assert not panel.buttons["move"].isEnabled() and not panel.buttons["depth"].isEnabled()
        assert "Another console controls probes" in panel.buttons["move"].toolTip()
        assert panel.buttons["stop"].isEnabled()  # stopping a probe is a safety command anyone may send
        click(qtbot, control)
        wait_for(qtbot, lambda: not control.isVisible())
        assert panel.buttons["move"].isEnabled() and window.console.client("probes").controller is True
        wait_for(qtbot, lambda: rows_text(window, "status")["probes"] == "manipulators")
        wait_for(qtbot, lambda: other.controller is False)  # the other console was told
        assert any("now moves the manipulators" in e.text for e in window.console.logbook.entries)
    finally:
        run(qtbot, loop, other.close())


def test_a_bad_rigs_file_gives_a_dialog_not_a_traceback(make_window, qtbot, tmp_path):
    bad = tmp_path / "remote_rigs.yaml"
    bad.write_text("sync: udp://127.0.0.1:9001\nsync: udp://127.0.0.1:9002\n")
    window = make_window(bad)
    wait_for(qtbot, lambda: boxes("errorBox", window))
    text = boxes("errorBox", window)[0].text()
    assert str(bad) in text and "sync" in text and "duplicate" in text.lower()
    close_boxes()
    assert window.isVisible() and window.console.specs == {}


RIGS_WITH_A_FLAKY_ONE = """
main:
  role: main_sync
  rig: {uris: [udp://127.0.0.1:0], main_sync: true, drivers: {recorders: {cam: {kind: camera, rate: 30}}}}
good:
  rig: {uris: [udp://127.0.0.1:0], drivers: {recorders: {mic: {kind: microphone, rate: 1000}}}}
flaky:
  rig: {uris: [udp://127.0.0.1:0], fail_on: [EXPSTART]}
"""


@pytest.fixture
def own_rigs(tmp_path):
    spec = tmp_path / "rigs.yaml"
    spec.write_text(RIGS_WITH_A_FLAKY_ONE)
    rigs = start_demo_rigs(tmp_path / "rigdata", spec)
    yield rigs
    rigs.stop()


def test_partial_failure_asks_then_continues_and_a_killed_rig_turns_unreachable(make_window, own_rigs, qtbot):
    window = make_window(own_rigs.rigs_file)
    start_by_clicks(qtbot, window, "KS003")
    wait_for(qtbot, lambda: boxes("partialFailure"))
    box = boxes("partialFailure")[0]
    assert "flaky" in box.text() and "start" in box.text()
    click(qtbot, [b for b in box.buttons() if b.objectName() == "continue"][0])
    wait_for(qtbot, lambda: window.console.phase is Phase.RUNNING and window.console.session.busy is None)
    assert window.console.session.degraded
    # the engine is RUNNING before the session label shows it: the label repaints at most once per frame,
    # after the change (asserting on it at once read the frame painted while "start" was still busy)
    wait_for(qtbot, lambda: "some rigs left out" in window.session.phase.text())
    # kill a rig during the session: its row turns unreachable
    own_rigs.procs["good"].kill()
    wait_for(qtbot, lambda: rows_text(window, "link")["good"] == "unreachable", timeout=8000)
    assert rows_text(window, "last_error")["good"]
    click(qtbot, window.session.buttons["stop"])
    wait_for(qtbot, lambda: window.console.phase is Phase.STOPPED)
    summary = load_session(window.console.session.folder)
    assert summary.degraded and "flaky" not in summary.participants
    assert summary.links.get("good") == "unreachable"
    close_boxes()


def test_abort_asks_first(make_window, demo, qtbot):
    window = make_window(demo.rigs_file)
    start_by_clicks(qtbot, window, "KS004")
    wait_for(qtbot, lambda: window.console.phase is Phase.RUNNING)
    click(qtbot, window.session.buttons["abort"])
    wait_for(qtbot, lambda: boxes("confirmAbort"))
    boxes("confirmAbort")[0].button(QMessageBox.StandardButton.No).click()
    qtbot.wait(200)  # a short look for something that must NOT happen: the session aborting anyway
    assert window.console.phase is Phase.RUNNING
    click(qtbot, window.session.buttons["abort"])
    wait_for(qtbot, lambda: boxes("confirmAbort"))
    boxes("confirmAbort")[0].button(QMessageBox.StandardButton.Yes).click()
    wait_for(qtbot, lambda: window.console.phase is Phase.ABORTED)
    assert read_description(window.console.session.folder)["outcome"] == "aborted"
    click(qtbot, window.session.buttons["cleanup"])
    wait_for(qtbot, lambda: session_rigs_connected(window))


def test_an_unfinished_session_is_offered_for_reattach_and_can_be_stopped(make_window, demo, qtbot, loop):
    first = make_window(demo.rigs_file)
    start_by_clicks(qtbot, first, "KS005")
    wait_for(qtbot, lambda: first.console.phase is Phase.RUNNING)
    exp_ref = first.console.session.exp_ref
    run(qtbot, loop, first.console.close())  # the console "dies": links gone, rigs still running
    first.close()

    second = make_window(demo.rigs_file)
    wait_for(qtbot, lambda: boxes("reattach", second))
    assert exp_ref in boxes("reattach", second)[0].text()
    boxes("reattach", second)[0].button(QMessageBox.StandardButton.Yes).click()
    wait_for(qtbot, lambda: second.console.session is not None and second.console.session.attached)
    assert second.console.session.exp_ref == exp_ref
    wait_for(qtbot, lambda: second.session.exp_ref.text() == exp_ref)  # the label repaints on its own frame
    wait_for(qtbot, lambda: [rows_text(second, "status")[n] for n in ("sync", "cameras", "ephys")] == ["RUNNING"] * 3)
    stop_and_cleanup(qtbot, second)
    assert load_session(second.console.session.folder).phase == "stopped"
