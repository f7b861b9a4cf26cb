"""Data directory conventions and session folder numbering."""

import datetime as dt
from pathlib import Path

import pytest

from core.paths import (
    check_subject,
    default_data_dir,
    next_exp_ref,
    reserve_session,
    resolve_data_dir,
    session_folder,
)
from core.protocol import ExpRef


def test_default_data_dir_per_platform():
    home = {"HOME": "/home/ann"}
    assert default_data_dir(home, "linux") == Path("/home/ann/.local/share/rigdeck")
    assert default_data_dir({**home, "XDG_DATA_HOME": "/data/xdg"}, "linux") == Path("/data/xdg/rigdeck")
    assert default_data_dir({**home, "XDG_DATA_HOME": "relative"}, "linux") == Path("/home/ann/.local/share/rigdeck")
    assert default_data_dir(home, "darwin") == Path("/home/ann/Library/Application Support/RigDeck")
    assert default_data_dir({"USERPROFILE": "C:/Users/ann", "LOCALAPPDATA": "C:/L"}, "win32") == Path("C:/L/RigDeck")
    assert default_data_dir({**home, "RIGDECK_DATA_DIR": "/srv/rd"}, "darwin") == Path("/srv/rd")


def test_resolve_data_dir_prefers_explicit(tmp_path, monkeypatch):
    monkeypatch.setenv("RIGDECK_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "x") == tmp_path / "x"


def test_session_folder_layout(tmp_path):
    assert session_folder(tmp_path, "2026-11-22_7_KS001") == tmp_path / "KS001" / "2026-11-22" / "007"


@pytest.mark.parametrize("bad", ["", " ", "..", "a/b", "a\\b", ".hidden", "c:d"])
def test_bad_subjects_refused(bad):
    with pytest.raises(ValueError):
        check_subject(bad)


def test_numbering_across_sessions_of_one_day(tmp_path):
    day = dt.date(2026, 11, 22)
    assert next_exp_ref(tmp_path, "KS001", day) == ExpRef(day, 1, "KS001")
    refs = [reserve_session(tmp_path, "KS001", day)[0].sequence for _ in range(3)]
    assert refs == [1, 2, 3]
    # another subject and another day start at 1; gaps are not reused
    assert reserve_session(tmp_path, "KS002", day)[0].sequence == 1
    assert reserve_session(tmp_path, "KS001", day + dt.timedelta(days=1))[0].sequence == 1
    (tmp_path / "KS001" / "2026-11-22" / "010").mkdir()
    ref, folder = reserve_session(tmp_path, "KS001", day)
    assert ref.sequence == 11 and folder.name == "011" and folder.is_dir()
