"""Alarms: a rig of the running session lost (or in error) is something the experimenter must see, not a cell.

The rig monitor keeps incidents for every rig at all times; an incident with a rig of the session under way
becomes an :class:`Alarm` here, worded for a person ("main sync lost: this session's sync pulses may be
missing from 10:31:02"). An alarm stays on the board until it is acknowledged, and shows when its rig came
back. The window draws the board (``app/gui/alarm_banner.py``) and beeps; this module has no Qt, so what
raises an alarm, what it says and when it goes away are tested headless.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from app.rig_view import clock
from core.listeners import Listeners, Unsubscribe
from core.monitor import LINK_LOST, Incident

#: what is at risk when a rig of each role drops out of a session
AT_RISK = {
    "main_sync": "this session's sync pulses may be missing",
    "aux": "what it records for this session may be missing",
    "manipulator": "probe positions are not tracked",
}


def duration_text(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


@dataclasses.dataclass
class Alarm:
    """One incident with a session rig, as the experimenter is told of it."""

    id: int
    rig: str
    role: str
    kind: str
    since: float
    until: float | None = None
    detail: str | None = None
    acknowledged: bool = False
    #: the session it was raised in (its line stays on the banner after that session, until acknowledged)
    exp_ref: str | None = None

    @property
    def open(self) -> bool:
        return self.until is None

    @property
    def who(self) -> str:
        return f"main sync {self.rig}" if self.role == "main_sync" else self.rig

    @property
    def text(self) -> str:
        """One stable sentence: who, since when, what it means; and when it ended, once it has."""
        risk = AT_RISK.get(self.role, AT_RISK["aux"])
        if self.kind == LINK_LOST:
            text = f"{self.who} lost: {risk} from {clock(self.since)}"
        else:
            what = f" ({self.detail})" if self.detail else ""
            text = f"{self.who} reported an error at {clock(self.since)}{what}: {risk} from then"
        if self.until is not None:
            text += f" — back at {clock(self.until)}, after {duration_text(self.until - self.since)}"
        return text

    @property
    def short(self) -> str:
        """For the session label and the status bar."""
        what = "lost" if self.kind == LINK_LOST else "error"
        return f"{self.rig} {what} {clock(self.since)}" + (f"–{clock(self.until)}" if self.until else "")


class AlarmBoard:
    """The alarms not yet acknowledged (:meth:`shown`) and the warning they make.

    ``on_change(listener)``: ``listener(alarm, raised)`` when an alarm is raised (``raised`` True: beep, ask
    for attention), updated (its rig is back) or acknowledged."""

    def __init__(self) -> None:
        self.alarms: dict[int, Alarm] = {}
        #: acknowledged while their rig is still down: off the board, still a warning until the rig is back
        self.acknowledged: dict[int, Alarm] = {}
        self._listeners: Listeners[[Alarm, bool]] = Listeners("alarm listener")

    def on_change(self, listener: Callable[[Alarm, bool], object]) -> Unsubscribe:
        return self._listeners.add(listener)

    def incident(self, incident: Incident, role: str, in_session: bool, exp_ref: str | None = None) -> Alarm | None:
        """Take an incident from the monitor: raise an alarm for a session rig (of session ``exp_ref``), or
        update the alarm it is."""
        alarm = self.alarms.get(incident.id) or self.acknowledged.get(incident.id)
        if alarm is not None:
            alarm.until, alarm.detail = incident.until, alarm.detail or incident.detail
            if not alarm.open:
                self.acknowledged.pop(alarm.id, None)
            self._listeners.notify(alarm, False)
            return alarm
        if not in_session or not incident.open:
            return None
        alarm = Alarm(incident.id, incident.rig, role, incident.kind, incident.since, incident.until, incident.detail,
                      exp_ref=exp_ref)
        self.alarms[alarm.id] = alarm
        self._listeners.notify(alarm, True)
        return alarm

    def acknowledge(self, alarm_id: int) -> None:
        """The experimenter has seen it: off the board (the journal and the log keep it)."""
        alarm = self.alarms.pop(alarm_id, None)
        if alarm is not None:
            alarm.acknowledged = True
            if alarm.open:
                self.acknowledged[alarm.id] = alarm
            self._listeners.notify(alarm, False)

    def shown(self) -> list[Alarm]:
        return sorted(self.alarms.values(), key=lambda a: a.since)

    def warning(self, exp_ref: str | None = None) -> str | None:
        """What the session label and status bar say, else None: every rig still lost (acknowledged or not),
        else the alarms of session ``exp_ref`` not yet acknowledged (an earlier session's do not redden this
        one's label; their lines stay on the banner)."""
        open_ones = [a for a in [*self.shown(), *self.acknowledged.values()] if a.open]
        this_session = [a for a in self.shown() if a.exp_ref == exp_ref]
        worth = sorted(open_ones or this_session, key=lambda a: a.since)
        return "⚠ " + ", ".join(a.short for a in worth) if worth else None


__all__ = ["AT_RISK", "Alarm", "AlarmBoard", "duration_text"]
