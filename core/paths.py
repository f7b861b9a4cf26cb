"""Where sessions live on disk: the platform data directory and one folder per session.

A session folder is ``<data_dir>/<subject>/<YYYY-MM-DD>/<NNN>`` (iblrig's layout, so an IBL user finds
RigDeck sessions where they expect them); ``NNN`` is the exp_ref's sequence number, zero-padded to 3.
The next free number is found by scanning that day's folder and *reserved* with an exclusive
``mkdir``, so two consoles starting a session for the same subject in the same second never share one.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from pathlib import Path

from core.protocol import ExpRef, parse_exp_ref

ENV_DATA_DIR = "RIGDECK_DATA_DIR"
APP_NAME = "rigdeck"


def default_data_dir(env: dict[str, str] | None = None, platform: str | None = None) -> Path:
    """The per-user data directory: ``$RIGDECK_DATA_DIR`` if set, else the platform convention.

    Linux/BSD: ``$XDG_DATA_HOME/rigdeck`` (default ``~/.local/share/rigdeck``); macOS:
    ``~/Library/Application Support/RigDeck``; Windows: ``%LOCALAPPDATA%\\RigDeck`` (else ``%APPDATA%``).
    ``env`` and ``platform`` are parameters so every branch can be tested on any OS.
    """
    env = dict(os.environ) if env is None else env
    platform = sys.platform if platform is None else platform
    override = env.get(ENV_DATA_DIR, "").strip()
    if override:
        return Path(override).expanduser()
    home = Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    if platform.startswith("win"):
        base = env.get("LOCALAPPDATA") or env.get("APPDATA")
        return (Path(base) if base else home / "AppData" / "Local") / "RigDeck"
    if platform == "darwin":
        return home / "Library" / "Application Support" / "RigDeck"
    xdg = env.get("XDG_DATA_HOME", "").strip()
    # XDG says a relative XDG_DATA_HOME is invalid and must be ignored
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".local" / "share"
    return base / APP_NAME


def resolve_data_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The data directory to use: an explicit ``--data-dir`` wins over the environment and the default."""
    return Path(path).expanduser() if path else default_data_dir()


def check_subject(subject: str) -> str:
    """A subject name is a folder name: refuse empty names and path tricks with a clear message."""
    if not isinstance(subject, str) or not subject.strip():
        raise ValueError("subject must be a non-empty name")
    subject = subject.strip()
    if subject in (".", "..") or any(c in subject for c in '/\\:*?"<>|\0') or subject != subject.strip("."):
        raise ValueError(f"subject {subject!r} cannot be a folder name (no / \\ : * ? \" < > | or leading dots)")
    return subject


def session_folder(data_dir: str | os.PathLike[str], exp_ref: ExpRef | str | dict) -> Path:
    """``<data_dir>/<subject>/<date>/<NNN>`` for an experiment reference."""
    ref = parse_exp_ref(exp_ref)
    return Path(data_dir) / check_subject(ref.subject) / f"{ref.date:%Y-%m-%d}" / f"{ref.sequence:03d}"


def used_numbers(data_dir: str | os.PathLike[str], subject: str, date: _dt.date) -> list[int]:
    """Session numbers already present for this subject and day (any all-digit folder name)."""
    day = Path(data_dir) / check_subject(subject) / f"{date:%Y-%m-%d}"
    try:
        return sorted(int(p.name) for p in day.iterdir() if p.is_dir() and p.name.isdigit())
    except FileNotFoundError:
        return []


def next_exp_ref(data_dir: str | os.PathLike[str], subject: str, date: _dt.date | None = None) -> ExpRef:
    """The next number after the highest used one (gaps from deleted sessions are not reused)."""
    date = date or _dt.date.today()
    used = used_numbers(data_dir, subject, date)
    return ExpRef(date, (used[-1] + 1) if used else 1, check_subject(subject))


def reserve_session(
    data_dir: str | os.PathLike[str], subject: str, date: _dt.date | None = None, attempts: int = 1000
) -> tuple[ExpRef, Path]:
    """Pick the next free exp_ref and create its folder exclusively; retry if another process won the race."""
    for _ in range(attempts):
        ref = next_exp_ref(data_dir, subject, date)
        folder = session_folder(data_dir, ref)
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return ref, folder
    raise RuntimeError(f"could not reserve a session folder for {subject!r} in {data_dir} after {attempts} tries")
