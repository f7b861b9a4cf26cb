"""Main sync: exp_ref numbering per subject and day (remembered, never written to disk), the session clock."""

import datetime as dt

import pytest

from core.drivers.main_sync import HANDED_OUT_LIMIT, MainSync, SessionClock, session_folder
from core.protocol import format_exp_ref

DAY = dt.date(2026, 11, 23)


def test_first_session_is_1_and_numbers_increase(tmp_path):
    sync = MainSync(tmp_path, today=lambda: DAY)
    refs = [format_exp_ref(sync.allocate("KS001")) for _ in range(3)]
    assert refs == ["2026-11-23_1_KS001", "2026-11-23_2_KS001", "2026-11-23_3_KS001"]
    assert list(tmp_path.iterdir()) == []  # numbers are handed out, not reserved on disk
    assert session_folder(tmp_path, refs[0]) == tmp_path / "KS001" / "2026-11-23" / "001"


def test_numbers_are_per_subject_and_day_and_skip_existing(tmp_path):
    (tmp_path / "KS001" / "2026-11-23" / "004").mkdir(parents=True)
    sync = MainSync(tmp_path, today=lambda: DAY)
    assert format_exp_ref(sync.allocate("KS001")) == "2026-11-23_5_KS001"
    assert format_exp_ref(sync.allocate("KS002")) == "2026-11-23_1_KS002"
    assert format_exp_ref(sync.allocate("KS001", dt.date(2026, 11, 24))) == "2026-11-24_1_KS001"


def test_the_handed_out_table_is_bounded(tmp_path):
    """Any peer may ask for numbers for any number of subjects: the table forgets the oldest pairs."""
    sync = MainSync(tmp_path, today=lambda: DAY)
    for n in range(HANDED_OUT_LIMIT + 50):
        sync.allocate(f"S{n}")
    assert len(sync._handed_out) == HANDED_OUT_LIMIT
    assert format_exp_ref(sync.allocate(f"S{HANDED_OUT_LIMIT + 49}")) == f"2026-11-23_2_S{HANDED_OUT_LIMIT + 49}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("subject", ["", "  ", "a/b", None])
def test_bad_subject(tmp_path, subject):
    with pytest.raises(ValueError):
        MainSync(tmp_path).allocate(subject)


def test_session_clock():
    ticks = iter([10.0, 12.5])
    clock = SessionClock(monotonic=lambda: next(ticks), wall=lambda: 1000.0)
    assert clock.now() == 0.0 and not clock.started
    assert clock.start() == 1000.0
    assert clock.now() == 2.5 and clock.wall(2.5) == 1002.5
