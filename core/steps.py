"""What a session step is and what it gives back: phases, policies, per-rig outcomes, progress reports.

The vocabulary of :mod:`core.session`, apart from the engine, so a CLI printer or a GUI panel can read
results without the engine's machinery in view. :mod:`core.session` re-exports every name here.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from core.monitor import status_name
from core.protocol import ExpMessage, ExpStatus


class Phase(enum.StrEnum):
    IDLE = "idle"
    INFO = "info"
    INITIALISED = "initialised"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"
    ABORTED = "aborted"


FINAL = frozenset({Phase.STOPPED, Phase.FAILED, Phase.ABORTED})

#: the actions each phase allows (``status`` and ``alyx`` are allowed in every phase)
ACTIONS: dict[Phase, frozenset[str]] = {
    Phase.IDLE: frozenset({"info"}),
    Phase.INFO: frozenset({"info", "init", "interrupt"}),
    Phase.INITIALISED: frozenset({"start", "interrupt"}),
    Phase.RUNNING: frozenset({"stop", "interrupt"}),
    Phase.STOPPED: frozenset({"stop", "cleanup"}),
    Phase.FAILED: frozenset({"interrupt", "cleanup"}),
    Phase.ABORTED: frozenset({"interrupt", "cleanup"}),
}
ALWAYS = frozenset({"status", "alyx"})


class Policy(enum.StrEnum):
    ROLLBACK = "rollback"
    CONTINUE = "continue"


class SessionError(RuntimeError):
    """The engine was asked something it cannot do now (wrong phase, busy, unknown rig)."""


#: status a successful reply to each command implies, when the rig does not say
EXPECTED: dict[ExpMessage, ExpStatus] = {
    ExpMessage.EXPINIT: ExpStatus.INITIALIZED,
    ExpMessage.EXPSTART: ExpStatus.RUNNING,
    ExpMessage.EXPEND: ExpStatus.STOPPED,
    ExpMessage.EXPINTERRUPT: ExpStatus.STOPPED,
    ExpMessage.EXPCLEANUP: ExpStatus.CONNECTED,
}


@dataclass
class Outcome:
    """What one rig did with one command."""

    rig: str
    event: str
    #: "reply" | "error" (error report or unusable reply) | "timeout" | "skipped"
    result: str
    reply: list[Any] | None = None
    error: str | None = None
    status: int | None = None
    rtt_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.result == "reply"

    def describe(self) -> str:
        if self.ok:
            rtt = f" ({self.rtt_ms:.1f} ms)" if self.rtt_ms is not None else ""
            return f"{status_name(self.status)}{rtt}"
        return f"{self.result.upper()}: {self.error}"

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "result": self.result, "ok": self.ok, "status": self.status,
                "status_name": status_name(self.status), "error": self.error, "rtt_ms": self.rtt_ms}


@dataclass
class StepResult:
    """One session step: every rig's outcome, where the session is now, and what went wrong."""

    step: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    phase: Phase = Phase.IDLE
    ok: bool = True
    error: str | None = None
    #: outcomes of the EXPINTERRUPT sent by a rollback, if any
    rollback: dict[str, Outcome] = field(default_factory=dict)
    #: rigs a `continue` policy dropped in this step
    dropped: list[str] = field(default_factory=list)
    #: outcomes of the EXPINTERRUPT a stop, abort or rollback sent to dropped rigs that may be going on their own
    stood_down: dict[str, Outcome] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [name for name, o in self.outcomes.items() if not o.ok]


@dataclass(frozen=True)
class Progress:
    """A progress report for a CLI line or a GUI cell. ``rig`` is None for session-wide events."""

    step: str
    rig: str | None
    #: "sent" | "reply" | "error" | "timeout" | "phase" | "note"
    kind: str
    detail: str = ""
    outcome: Outcome | None = None


ProgressListener = Callable[[Progress], None]
#: ``await decide(result)`` -> the policy to apply to this partial failure (a GUI asks the experimenter)
Decider = Callable[["StepResult"], Awaitable["Policy | str"]]


@dataclass
class AlyxResult:
    source: str | None
    base_url: str | None
    users: list[str]
    relayed: dict[str, Outcome]
    outcomes: dict[str, Outcome]
