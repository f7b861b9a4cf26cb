"""Main sync: exp_ref numbering per subject and day, in both folder layouts, reserved by mkdir."""

import datetime as dt

import pytest

from core.drivers.main_sync import MainSync, SessionClock, next_sequence, session_folder
from core.protocol import format_exp_ref

DAY = dt.date(2026, 11, 23)


def test_first_session_is_1_and_numbers_increase(tmp_path):
    sync = MainSync(tmp_path, today=lambda: DAY)
    refs = [format_exp_ref(sync.allocate("KS001")) for _ in range(3)]
    assert refs == ["2026-11-23_1_KS001", "2026-11-23_2_KS001", "2026-11-23_3_KS001"]
    assert all(session_folder(tmp_path, r).is_dir() for r in refs)


def test_numbers_are_per_subject_and_day(tmp_path):
    sync = MainSync(tmp_path, today=lambda: DAY)
    sync.allocate("KS001")
    assert format_exp_ref(sync.allocate("KS002")) == "2026-11-23_1_KS002"
    assert format_exp_ref(sync.allocate("KS001", dt.date(2026, 11, 24))) == "2026-11-24_1_KS001"


def test_iblrig_layout_and_gaps_count(tmp_path):
    (tmp_path / "KS001" / "2026-11-23" / "004").mkdir(parents=True)
    (tmp_path / "2026-11-23_2_KS001").mkdir()
    (tmp_path / "2026-11-23_9_OTHER").mkdir()
    (tmp_path / "2026-11-23_x_KS001").mkdir()  # not a ref: ignored
    assert next_sequence(tmp_path, "KS001", DAY) == 5
    assert next_sequence(tmp_path / "missing", "KS001", DAY) == 1


def test_race_with_another_allocator(tmp_path, monkeypatch):
    """A number taken between the scan and the mkdir is skipped, not shared."""
    import core.drivers.main_sync as ms

    real = ms.next_sequence

    def stale(*args, **kwargs):
        n = real(*args, **kwargs)
        (tmp_path / f"2026-11-23_{n}_KS001").mkdir()  # the other process wins this one
        return n

    monkeypatch.setattr(ms, "next_sequence", stale)
    assert format_exp_ref(MainSync(tmp_path, today=lambda: DAY).allocate("KS001")) == "2026-11-23_2_KS001"


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
