"""What a rig's row says: nothing the console has not confirmed recently looks live."""

from app.rig_view import age_cell, clock, error_cell, status_cell

HEARD = 1_796_000_000.0


def test_an_online_rig_shows_its_status_live():
    cell = status_cell({"link": "online", "status": 20, "last_heard": HEARD})
    assert cell.text == "RUNNING" and not cell.stale


def test_an_unreachable_rig_shows_its_last_known_status_greyed_with_the_time_it_was_last_heard():
    cell = status_cell({"link": "unreachable", "status": 20, "last_heard": HEARD})
    assert cell.text == f"RUNNING as of {clock(HEARD)}" and cell.stale
    assert age_cell({"link": "unreachable", "last_heard": HEARD}, now=HEARD + 12).stale


def test_a_rig_never_reached_in_this_launch_shows_no_status_even_with_one_from_a_journal():
    for link in ("connecting", "unreachable", "online"):
        cell = status_cell({"link": link, "status": 20, "last_heard": None, "last_reply": None})
        assert cell.text == "—" and cell.stale and cell.tooltip == "not reached yet in this launch"


def test_the_error_column_shows_the_error_now_and_the_tooltip_the_history():
    history = [[HEARD, "no reply to EXPSTATUS within 1 s"]]
    now = error_cell({"last_error": "no reply to EXPSTATUS within 1 s", "errors": history})
    assert now.text == "The rig stopped answering (nothing for 1 s)"  # in plain words; the tooltip has it whole
    assert "now: no reply to EXPSTATUS within 1 s" in now.tooltip
    after = error_cell({"last_error": None, "errors": history})
    assert after.text == "" and f"{clock(HEARD)}  no reply to EXPSTATUS" in after.tooltip


def test_a_manipulator_rig_says_when_this_console_only_watches_it():
    assert status_cell({"role": "manipulator", "link": "online"}).text == "manipulators"
    watching = status_cell({"role": "manipulator", "link": "online", "watching": True})
    assert watching.text == "manipulators: watching" and "Take control" in watching.tooltip
