"""What every driver shares: how it is configured from a rig file, what it is told about a session, its health.

A driver is built from one entry of ``rig.yaml``'s ``drivers`` section. Built-in kinds and plugin kinds
(entry points in the ``rigdeck.drivers`` group, see :mod:`core.drivers.kinds`) follow one contract, the
classmethods of :class:`Configurable`, so a plugin's options are refused or accepted exactly like a
built-in kind's, with the rig file and the key named. ``docs/drivers.md`` is the user-facing version.

Health (``drivers/<name>`` in the rig's live state) is what a driver says about itself through
:meth:`Configurable.health`: ``alive`` (doing its job now), ``last_activity`` (epoch s of the last frame,
output line or move) and ``last_error`` (plain words, or None), plus whatever the driver adds.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from core.protocol import parse_exp_ref

#: fault listener: (driver name, what went wrong in plain words)
FaultListener = Callable[[str, str], None]


class DriverError(RuntimeError):
    """A driver cannot do what the session asks (cannot start, not ready in time); the text is for users."""


@dataclass(frozen=True)
class DriverContext:
    """What a driver may know about the rig that builds it."""

    rig: str = "rig"
    base_dir: Path = Path(".")  # the rig file's folder: relative paths in options are relative to it
    fsync: bool = False
    source: str = "<rig>"


@dataclass(frozen=True)
class SessionInfo:
    """The session a driver is started for; also the placeholders of an external program's command line."""

    exp_ref: str
    session_path: Path
    rig: str

    @property
    def subject(self) -> str:
        return parse_exp_ref(self.exp_ref).subject

    @property
    def date(self) -> str:
        day = parse_exp_ref(self.exp_ref).date
        return day.isoformat() if isinstance(day, _dt.date) else str(day)

    def placeholders(self) -> dict[str, str]:
        """``{exp_ref}``, ``{session_path}``, ``{subject}``, ``{rig}``, ``{date}``."""
        return {"exp_ref": self.exp_ref, "session_path": str(self.session_path), "subject": self.subject,
                "rig": self.rig, "date": self.date}

    def environment(self) -> dict[str, str]:
        """The same values as ``RIGDECK_EXP_REF``, ``RIGDECK_SESSION_PATH``, ... environment variables."""
        return {f"RIGDECK_{key.upper()}": value for key, value in self.placeholders().items()}


class Configurable:
    """The rig-file side of a driver class (built-in or plugin). Override what your driver needs.

    - ``kind``: the name a rig file uses (``kind: mylab-laser``).
    - ``options``: every key the driver accepts besides ``kind``, with a one-line description; any
      other key is refused before the rig starts, naming the rig file and the key.
    - :meth:`validate_options`: check values and fill defaults; raise ``ValueError("key: problem")``.
    - :meth:`from_options`: build the driver for one rig (called once, before serving).
    - :meth:`check`: readiness for ``rigdeck serve --check`` without starting anything (program found,
      device openable); return None when ready, else the problem in plain words.
    """

    kind: ClassVar[str] = ""
    options: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], context: DriverContext) -> dict[str, Any]:
        return dict(options)

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any], context: DriverContext) -> Any:
        return cls(name, **options)  # type: ignore[call-arg]

    @classmethod
    async def check(cls, options: Mapping[str, Any], context: DriverContext) -> str | None:
        return None


def health(alive: bool, last_activity: float | None, last_error: str | None, **extra: Any) -> dict[str, Any]:
    """A ``drivers/<name>`` entry: the three fields every driver reports, then its own."""
    return {"alive": bool(alive), "last_activity": None if last_activity is None else round(last_activity, 3),
            "last_error": last_error, **extra}
