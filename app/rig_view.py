"""What a rig's row says, without Qt: nothing the console has not confirmed recently may look live.

The rigs table shows a rig's ``rigs/<name>`` live state (the rig monitor's). A value is only as good as
the last time the rig was heard: an unreachable rig's ExpStatus is the last one it reported, so it is
shown greyed "as of" that time; a rig never heard in this launch has no status at all (a journal's old
one would be a guess dressed as a fact). Kept apart from the Qt model so every rule is tested headless.
"""

from __future__ import annotations

import datetime as _dt
import re
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
        if rig.get("watching"):
            return Cell("manipulators: watching", tooltip="Another console moves these manipulators; this one only "
                        "watches them (Take control, in the Manipulators tab, moves them from here)")
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
    the rig's recent errors with their times, so a cleared error is still one hover away.

    A driver in error is named here in plain words (``driver left: Ffmpeg exited ...``) even before the
    rig's next status check turns it into the rig's error, and instead of that check's protocol wording
    (``DriverFault: rig cams is RUNNING with an error: ...``), which stays in the tooltip."""
    current = rig.get("last_error")
    history = [entry for entry in rig.get("errors") or [] if isinstance(entry, list | tuple) and len(entry) == 2]
    lines = [f"{clock(t)}  {text}" for t, text in history[-10:]]
    tooltip = ("now: " + str(current) if current else "no error now") + \
        ("\n\nrecent errors:\n" + "\n".join(lines) if lines else "")
    failing = [d for d in driver_health(rig) if d.error]
    if failing and (not current or is_driver_fault(str(current))):
        first = failing[0]
        more = f" (+{len(failing) - 1} more)" if len(failing) > 1 else ""
        return Cell(f"driver {first.name}: {first.error}{more}", tooltip=tooltip)
    return Cell(fault_words(str(current)) if current else "", tooltip=tooltip)


def fault_words(text: str) -> str:
    """A rig's error in plain words; a driver fault's status report loses its protocol preamble
    (``DriverFault: rig cams is RUNNING with an error: driver acquisition failed: ...`` ->
    ``Driver acquisition failed: ...``): what a polled (udp/tcp) rig's row says, having no drivers' tree."""
    found = re.match(rf"\s*{DRIVER_FAULT}: rig \S+ is \w+ with an error: (.+)", text, re.S)
    text = found.group(1) if found else text
    tail = OUTPUT_TAIL.search(text)
    if tail:  # keep what the program said in words, drop its machine lines (the tooltip has them all)
        said = [part.strip() for part in text[tail.end():].split(" | ")]
        words = [part for part in said if part and not MACHINE_LINE.match(part)]
        text = text[:tail.end()] + " " + " | ".join(words) if words else text[:tail.start()]
    return plain(text.strip())[0]


#: where a driver's error quotes its program's last output (``; last output: ...``, ``; ffmpeg said: ...``)
OUTPUT_TAIL = re.compile(r";\s*(?:last output|[\w.-]+ said):")
#: a line of numbers (ffmpeg's per-frame checksum lines: ``0, 1796044110063184, 33333, 424, 0x60d01078``)
MACHINE_LINE = re.compile(r"^[\d\s,.:x-]*(0x[0-9a-f]+)?[\d\s,.:-]*$", re.I)


def is_driver_fault(text: str) -> bool:
    """A rig's error that only repeats a driver's (its status report, or its pushed ``fault``)."""
    return DRIVER_FAULT in text or re.match(r"\s*driver \S+ failed:", text, re.I) is not None


# ---------------------------------------------------------------------- drivers' health
#: what a rig without a pushed ``drivers`` tree (udp/tcp, sio) shows instead of its drivers
NO_DRIVER_HEALTH = "no driver health (this rig does not push its state)"
#: the rig's EXPSTATUS error report for a driver fault starts with this (core.service)
DRIVER_FAULT = "DriverFault"
#: what a driver's ``last_activity`` is, by driver type
ACTIVITY = {"recorder": "last frame", "program": "last output", "manipulator": "last move"}


@dataclass(frozen=True)
class DriverHealth:
    """One driver of a rig as the operator reads it: ``state`` a word or two, ``counts`` its numbers,
    ``activity`` how long ago it last did something, ``error`` its trouble in plain words (or "")."""

    name: str
    kind: str
    state: str
    counts: str
    activity: str
    error: str

    @property
    def line(self) -> str:
        """``left (video): recording, 30.0 fps, 1,234 frames, 0 dropped, last frame 0.1 s ago``."""
        head = f"{self.name} ({self.kind})" if self.kind and self.kind != self.name else self.name
        if self.error:
            return f"{head}: ERROR {self.error}"
        return f"{head}: " + ", ".join(part for part in (self.state, self.counts, self.activity) if part)


def _state_word(entry: dict[str, Any]) -> str:
    kind, alive = entry.get("type"), bool(entry.get("alive"))
    if kind == "recorder":
        return "recording" if alive else "not recording"
    if kind == "program":
        if alive:
            return "running"
        code = entry.get("exit_code")
        return f"exited (code {code})" if isinstance(code, int) else "not running"
    if kind == "manipulator":
        return "answering" if alive else "not answering"
    return "working" if alive else "idle"


def _counts(entry: dict[str, Any]) -> str:
    parts = []
    if isinstance(entry.get("fps"), int | float):
        parts.append(f"{entry['fps']:.1f} fps")
    if isinstance(entry.get("frames"), int):
        parts.append(f"{entry['frames']:,} frames")
    if isinstance(entry.get("dropped"), int):
        parts.append(f"{entry['dropped']:,} dropped")
    return ", ".join(parts)


def one_driver(name: str, entry: dict[str, Any], now: float | None = None) -> DriverHealth:
    """A ``drivers/<name>`` entry of a rig's live state in plain words (bad values are skipped, never raised)."""
    error = entry.get("last_error")
    last = entry.get("last_activity")
    activity = ""
    if isinstance(last, int | float) and last > 0:
        activity = f"{ACTIVITY.get(str(entry.get('type')), 'last activity')} {age_text(last, now)}"
    return DriverHealth(name=str(name), kind=str(entry.get("kind") or entry.get("type") or ""),
                        state=_state_word(entry), counts=_counts(entry), activity=activity,
                        error=fault_words(str(error)) if error else "")


def driver_health(rig: dict[str, Any], now: float | None = None) -> list[DriverHealth]:
    """Every driver of a rig, from the tree it pushes (``rigs/<name>/service/drivers``), by name."""
    service = rig.get("service")
    drivers = service.get("drivers") if isinstance(service, dict) else None
    if not isinstance(drivers, dict):
        return []
    return [one_driver(name, entry, now) for name, entry in sorted(drivers.items()) if isinstance(entry, dict)]


def drivers_text(rig: dict[str, Any], now: float | None = None) -> str:
    """The drivers' health, one line each, or why there is none (what the Rig cell's tooltip lists)."""
    service = rig.get("service")
    if not isinstance(service, dict) or not isinstance(service.get("drivers"), dict):
        return NO_DRIVER_HEALTH
    lines = [d.line for d in driver_health(rig, now)]
    return "\n".join(lines) if lines else "this rig has no drivers"


__all__ = ["Cell", "DriverHealth", "NOT_REACHED", "NO_DRIVER_HEALTH", "age_cell", "age_text", "clock", "driver_health",
           "drivers_text", "error_cell", "heard", "one_driver", "status_cell"]
