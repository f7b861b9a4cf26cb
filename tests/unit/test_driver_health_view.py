"""A rig's drivers' health in plain words, from the tree a pushing rig mirrors (``rigs/<name>/service/drivers``)."""

from app.rig_view import NO_DRIVER_HEALTH, driver_health, drivers_text, error_cell

NOW = 1_796_000_000.0


def pushing(**drivers):
    return {"link": "online", "last_heard": NOW, "service": {"status": 20, "drivers": drivers}}


LEFT = {"alive": True, "last_activity": NOW - 0.1, "last_error": None, "type": "recorder", "kind": "video",
        "frames": 1234, "fps": 30.0, "dropped": 0, "pid": 10}
ACQUISITION = {"alive": True, "last_activity": NOW - 2, "last_error": None, "type": "program", "kind": "command",
               "pid": 11, "exit_code": None, "last_lines": ["camera ready"]}
LASER = {"alive": False, "last_activity": None, "type": "recorder", "kind": "example-laser", "frames": 0,
         "last_error": "laser interlock open"}


def test_each_driver_is_one_plain_line_in_name_order():
    text = drivers_text(pushing(left=LEFT, acquisition=ACQUISITION, laser=LASER), now=NOW)
    assert text.splitlines() == [
        "acquisition (command): running, last output 2.0 s ago",
        "laser (example-laser): ERROR Laser interlock open",
        "left (video): recording, 30.0 fps, 1,234 frames, 0 dropped, last frame 0.1 s ago",
    ]


def test_a_program_that_exited_says_its_exit_code():
    ended = {**ACQUISITION, "alive": False, "exit_code": 3}
    assert driver_health(pushing(acquisition=ended), now=NOW)[0].state == "exited (code 3)"


def test_rigs_that_do_not_push_their_state_say_so():
    assert drivers_text({"link": "online", "transport": "udp", "last_heard": NOW}) == NO_DRIVER_HEALTH
    assert drivers_text({"link": "online", "service": {"positions": {}}}) == NO_DRIVER_HEALTH  # sio: no drivers tree
    assert driver_health({"service": None}) == []


def test_bad_entries_from_the_wire_are_skipped_or_shown_without_crashing():
    rig = pushing(left="nonsense", right={"alive": "yes", "frames": "many", "fps": None, "last_activity": "x"})
    [right] = driver_health(rig, now=NOW)
    assert right.line == "right: working"


def test_a_driver_error_marks_the_rigs_error_cell_in_plain_words_before_and_instead_of_the_status_report():
    before = error_cell(pushing(left=LEFT, laser=LASER))  # the rig's next status check has not said it yet
    assert before.text == "driver laser: Laser interlock open"
    fault = "DriverFault: rig cams is RUNNING with an error: driver laser failed: laser interlock open"
    after = error_cell({**pushing(laser=LASER, other={**LASER}), "last_error": fault})
    assert after.text == "driver laser: Laser interlock open (+1 more)"
    assert fault in after.tooltip  # the rig's own words stay one hover away


def test_a_rig_error_that_is_not_a_driver_fault_keeps_the_cell():
    rig = {**pushing(laser=LASER), "last_error": "no reply to EXPSTATUS within 1 s"}
    assert error_cell(rig).text == "The rig stopped answering (nothing for 1 s)"
    assert error_cell(pushing(left=LEFT)).text == ""


def test_a_polled_rigs_driver_fault_loses_its_protocol_preamble():
    fault = ("DriverFault: rig cams is RUNNING with an error: driver acquisition failed: program acquisition "
             "ended mid-session (exit code 3)")
    cell = error_cell({"link": "online", "last_error": fault})  # udp: no drivers' tree, only the status report
    assert cell.text == "Driver acquisition failed: program acquisition ended mid-session (exit code 3)"


def test_a_programs_machine_output_is_cut_from_the_one_line_sentence_its_words_kept():
    said = ("ffmpeg stopped recording lavfi:testsrc mid-session (killed by SIGKILL); ffmpeg said: 0, 1796044110063184, "
            "33333, 424, 0x60d01078")
    left = {**LEFT, "alive": False, "last_error": said}
    rig = {**pushing(left=left), "last_error": f"driver left failed: {said}"}  # a zmq rig's pushed fault
    cell = error_cell(rig)
    assert cell.text == "driver left: Ffmpeg stopped recording lavfi:testsrc mid-session (killed by SIGKILL)"
    assert "0x60d01078" in cell.tooltip
    crash = "program acquisition ended mid-session (exit code 3); last output: 12, 3 | fatal: camera disconnected"
    assert error_cell({"last_error": crash}).text == \
        "Program acquisition ended mid-session (exit code 3); last output: fatal: camera disconnected"
