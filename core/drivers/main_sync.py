"""The main-sync role: the rig that owns the session clock and hands out the experiment reference.

In an IBL session exactly one rig is "main sync" (it records the sync pulses every other stream is
aligned to); iblrig asks every rig for its info and takes the exp_ref from the one that says
``main_sync: true``. This module is that rig's bookkeeping:

- :func:`next_sequence` / :meth:`MainSync.allocate`: ``YYYY-MM-DD_N_subject`` with N the next free
  number for that subject and day in the data folder. The session folder is created at once, so two
  sessions asking at the same time (or a console that dies between EXPINFO and EXPINIT) never get the
  same number: numbers are reserved by ``mkdir``, which is atomic.
- :class:`SessionClock`: seconds since the session started, monotonic (never jumps with NTP), with
  the wall-clock time of its zero kept for the experiment description.

Folders recognised when counting, so RigDeck and iblrig data sit side by side without clashes:
``<data>/<YYYY-MM-DD>_<N>_<subject>/`` (RigDeck's flat layout) and ``<data>/<subject>/<YYYY-MM-DD>/<NNN>/``
(iblrig's layout).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from core.protocol import ExpRef, format_exp_ref, parse_exp_ref

_SEQ_RE = re.compile(r"^\d{1,6}$")


def session_folder(data_dir: str | os.PathLike[str], exp_ref: object) -> Path:
    """Where a rig files a session: ``<data_dir>/<YYYY-MM-DD>_<N>_<subject>``."""
    return Path(data_dir) / format_exp_ref(exp_ref)


def used_sequences(data_dir: str | os.PathLike[str], subject: str, date: _dt.date) -> set[int]:
    """Session numbers already taken for ``subject`` on ``date`` in ``data_dir`` (both layouts)."""
    root = Path(data_dir)
    used: set[int] = set()
    prefix = f"{date:%Y-%m-%d}_"
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return used
    for entry in entries:
        name = entry.name
        if name.startswith(prefix) and entry.is_dir():
            try:
                ref = parse_exp_ref(name)
            except ValueError:
                continue
            if ref.subject == subject and ref.date == date:
                used.add(ref.sequence)
    nested = root / subject / f"{date:%Y-%m-%d}"
    if nested.is_dir():
        for entry in nested.iterdir():
            if entry.is_dir() and _SEQ_RE.match(entry.name):
                used.add(int(entry.name))
    return used


def next_sequence(data_dir: str | os.PathLike[str], subject: str, date: _dt.date, start: int = 1) -> int:
    """The next free session number: one above the highest taken (gaps are never reused)."""
    used = used_sequences(data_dir, subject, date)
    return max(used) + 1 if used else start


class SessionClock:
    """Seconds since the session started, on a monotonic clock; ``wall_start`` is its zero as epoch s."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self._monotonic = monotonic
        self._wall = wall
        self.wall_start: float | None = None
        self._m0: float | None = None

    def start(self) -> float:
        self._m0 = self._monotonic()
        self.wall_start = self._wall()
        return self.wall_start

    @property
    def started(self) -> bool:
        return self._m0 is not None

    def now(self) -> float:
        """Session time in seconds (0 before start)."""
        return 0.0 if self._m0 is None else self._monotonic() - self._m0

    def wall(self, session_time: float) -> float:
        """The epoch time of a session time."""
        return (self.wall_start or 0.0) + session_time

    def reset(self) -> None:
        self._m0 = None
        self.wall_start = None


class MainSync:
    """The main-sync rig's duties: number sessions in ``data_dir`` and keep the session clock."""

    def __init__(self, data_dir: str | os.PathLike[str], today: Callable[[], _dt.date] = _dt.date.today) -> None:
        self.data_dir = Path(data_dir)
        self._today = today
        self.clock = SessionClock()

    def allocate(self, subject: str, date: _dt.date | None = None) -> ExpRef:
        """Reserve and return the next exp_ref for ``subject`` today (its folder now exists, empty)."""
        if not isinstance(subject, str) or not subject.strip():
            raise ValueError(f"subject must be a non-empty name, not {subject!r}")
        subject = subject.strip()
        parse_exp_ref({"date": _dt.date(2000, 1, 1), "sequence": 1, "subject": subject})  # validates the name
        day = date or self._today()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        sequence = next_sequence(self.data_dir, subject, day)
        for _ in range(1000):  # another process may take a number between our scan and our mkdir
            ref = ExpRef(day, sequence, subject)
            try:
                session_folder(self.data_dir, ref).mkdir()
            except FileExistsError:
                sequence += 1
                continue
            return ref
        raise RuntimeError(f"could not reserve a session folder for {subject} on {day} in {self.data_dir}")
