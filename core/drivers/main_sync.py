"""The main-sync role: the rig that owns the session clock and hands out the experiment reference.

In an IBL session exactly one rig is "main sync" (it records the sync pulses every other stream is
aligned to); iblrig asks every rig for its info and takes the exp_ref from the one that says
``main_sync: true``. This module is that rig's bookkeeping:

- :meth:`MainSync.allocate`: ``YYYY-MM-DD_N_subject`` with N the next free number for that subject
  and day in the data folder (:mod:`core.paths`, iblrig's ``<data>/<subject>/<date>/<NNN>`` layout, the
  same one the console files its sessions in). Nothing is written: EXPINFO, which asks for a number,
  can come from any peer, as often as it likes, with any subject, so the folder is only made when a
  session really starts (EXPINIT). Numbers handed out are remembered here instead (a bounded table),
  so two consoles asking at the same time, or one that dies between EXPINFO and EXPINIT, never get the
  same number from this rig.
- :class:`SessionClock`: seconds since the session started, monotonic (never jumps with NTP), with
  the wall-clock time of its zero kept for the experiment description.
"""

from __future__ import annotations

import collections
import datetime as _dt
import os
import time
from collections.abc import Callable
from pathlib import Path

from core.paths import check_subject, next_exp_ref, session_folder, used_numbers
from core.protocol import ExpRef

#: how many (subject, day) pairs the handed-out table keeps: enough for any lab, bounded for any peer
HANDED_OUT_LIMIT = 1024

__all__ = ["MainSync", "SessionClock", "next_exp_ref", "session_folder"]


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
        # (subject, day) -> the highest number handed out, oldest pair first (evicted past the limit)
        self._handed_out: collections.OrderedDict[tuple[str, _dt.date], int] = collections.OrderedDict()

    def allocate(self, subject: str, date: _dt.date | None = None) -> ExpRef:
        """The next exp_ref for ``subject`` on ``date`` (default today): after every session folder on disk
        and every number this rig handed out before. Creates nothing on disk."""
        subject = check_subject(subject)
        day = date or self._today()
        used = used_numbers(self.data_dir, subject, day)
        number = max(used[-1] if used else 0, self._handed_out.get((subject, day), 0)) + 1
        self._handed_out[(subject, day)] = number
        self._handed_out.move_to_end((subject, day))
        while len(self._handed_out) > HANDED_OUT_LIMIT:
            self._handed_out.popitem(last=False)
        return ExpRef(day, number, subject)
