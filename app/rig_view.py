"""What a rig's row says, without Qt: nothing the console has not confirmed recently may look live.

The rigs table shows a rig's ``rigs/<name>`` live state (the rig monitor's). A value is only as good as
the last time the rig was heard: an unreachable rig's ExpStatus is the last one it reported, so it is
shown greyed "as of" that time; a rig never heard in this launch has no status at all (a journal's old
one would be a guess dressed as a fact). Kept apart from the Qt model so every rule is tested headless.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from typing import Any

from app.wording import plain
from core.monitor import status_name

NOT_REACHED = "not reached yet in this launch"


@dataclass(frozen=True)
class Cell:
    """A table cell: its text, whether it is old news (drawn greyed), and its tooltip."""

    text: str
    stale: bool = False
    tooltip: str = ""


def clock(epoch: float | None) -> str:
    """Local wall-clock time of an epoch, as an experimenter reads it off the wall: ``10:31:02``."""
    return _dt.datetime.fromtimestamp(epoch).strftime("%H:%M:%S") if epoch else "—"


def age_text(last: float | None, now: float | None = None) -> str:
    if not last:
        return "—"
    age = max(0.0, (now or time.time()) - last)
    return f"{age:.1f} s ago" if age < 60 else f"{age / 60:.0f} min ago"


def heard(rig: dict[str, Any]) -> float | None:
    """When the rig last said anything (a reply, a heartbeat, a pushed update), or None: never, here."""
    return rig.get("last_heard") or rig.get("last_reply")


def status_cell(rig: dict[str, Any]) -> Cell:
    """The ExpStatus column: live when online, the last known one greyed "as of" when not, else none."""
    if rig.get("role") == "manipulator":
        return Cell("manipulators", tooltip="A manipulator rig: watched, not started by sessions")
    last = heard(rig)
    status = rig.get("status")
    if last is None:
        return Cell("—", stale=True, tooltip=NOT_REACHED)
    if status is None:
        return Cell("—", tooltip="the rig has not told its status yet")
    name = status_name(status)
    if rig.get("link") == "online":
        return Cell(name, tooltip=f"{name}, confirmed {age_text(last)}")
    return Cell(f"{name} as of {clock(last)}", stale=True,
                tooltip=f"last known status: the rig is {rig.get('link')} and was last heard at {clock(last)}")


def age_cell(rig: dict[str, Any], now: float | None = None) -> Cell:
    """The "Last heard" column: time since any message from the rig."""
    last = heard(rig)
    if last is None:
        return Cell("—", stale=True, tooltip=NOT_REACHED)
    return Cell(age_text(last, now), stale=rig.get("link") != "online", tooltip=f"last heard at {clock(last)}")


def error_cell(rig: dict[str, Any]) -> Cell:
    """The "Last error" column: the trouble the rig is in now (empty once it is back); the tooltip keeps
    the rig's recent errors with their times, so a cleared error is still one hover away."""
    current = rig.get("last_error")
    history = [entry for entry in rig.get("errors") or [] if isinstance(entry, list | tuple) and len(entry) == 2]
    lines = [f"{clock(t)}  {text}" for t, text in history[-10:]]
    tooltip = ("now: " + str(current) if current else "no error now") + \
        ("\n\nrecent errors:\n" + "\n".join(lines) if lines else "")
    return Cell(plain(str(current))[0] if current else "", tooltip=tooltip)


__all__ = ["Cell", "NOT_REACHED", "age_cell", "age_text", "clock", "error_cell", "heard", "status_cell"]
