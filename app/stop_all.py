"""STOP ALL with proof: halt every probe of every manipulator rig, then confirm each one stands still.

A "sent" line in a log is not what an experimenter needs after pressing the red button while a probe is
moving: they need to know the probes stopped. :func:`halt_and_confirm` sends ``stop_all`` to every
manipulator rig at once (nothing queues in front of it), then reads each probe's position until two
readings a moment apart agree, and returns a :class:`StopAllReport` the window shows until dismissed:
"2/2 probes halted (positions confirmed) in 84 ms", or which probe did not confirm and why.
Qt-free, so the rule is tested headless and the CLI could print the same sentence.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app.wording import plain
from core.drivers.manipulator import Vec4

#: how long the stop request itself may take per rig (s)
STOP_TIMEOUT = 1.0
#: time between the two position readings that must agree (s)
SETTLE = 0.05
#: how long a probe may take to stand still before it counts as not confirmed (s)
CONFIRM_WITHIN = 2.0


class ManipulatorClient(Protocol):
    """The part of a manipulator client STOP ALL uses (``transports.sio.client.SioManipulatorClient``)."""

    ids: Sequence[str]

    async def stop_all(self, timeout: float | None = None) -> None: ...
    async def list_ids(self) -> list[str]: ...
    async def position(self, manipulator_id: str, timeout: float | None = None) -> Vec4: ...


@dataclass(frozen=True)
class ProbeHalt:
    """One probe after STOP ALL: halted (two equal readings) or the reason it could not be confirmed."""

    rig: str
    probe: str
    position: Vec4 | None
    problem: str | None = None

    @property
    def halted(self) -> bool:
        return self.problem is None


@dataclass
class StopAllReport:
    """What one STOP ALL did, in words an experimenter reads at a glance."""

    sent_at: float  # wall clock, for "sent at HH:MM:SS"
    probes: list[ProbeHalt] = field(default_factory=list)
    #: rig -> why the stop itself failed there (its probes cannot be confirmed)
    rig_errors: dict[str, str] = field(default_factory=dict)
    elapsed_ms: float | None = None
    done: bool = False

    @property
    def ok(self) -> bool:
        return self.done and not self.rig_errors and all(p.halted for p in self.probes)

    def sent_text(self) -> str:
        return "STOP ALL sent at " + time.strftime("%H:%M:%S", time.localtime(self.sent_at))

    def result_text(self) -> str:
        if not self.done:
            return "waiting for the probes to confirm…"
        halted = sum(p.halted for p in self.probes)
        if not self.probes and not self.rig_errors:
            return "no probes to stop"
        ms = f"{self.elapsed_ms:.0f} ms" if self.elapsed_ms is not None else "?"
        if self.ok:
            return f"{halted}/{len(self.probes)} probes halted (positions confirmed) in {ms}"
        parts = [f"{halted}/{len(self.probes)} probes halted (confirmed in {ms})"]
        parts += [f"{p.rig} probe {p.probe} NOT confirmed: {p.problem}" for p in self.probes if not p.halted]
        parts += [f"{rig}: stop not confirmed: {error}" for rig, error in self.rig_errors.items()]
        return "; ".join(parts)

    def text(self) -> str:
        return f"{self.sent_text()} — {self.result_text()}"


async def _confirm(rig: str, client: ManipulatorClient, probe: str, settle: float, within: float) -> ProbeHalt:
    """Read the probe's position until two readings ``settle`` apart agree (or ``within`` runs out)."""
    deadline = time.monotonic() + within
    try:
        before = await client.position(probe, timeout=within)
        while True:
            await asyncio.sleep(settle)
            now = await client.position(probe, timeout=max(0.1, deadline - time.monotonic()))
            if now == before:
                return ProbeHalt(rig, probe, now)
            if time.monotonic() > deadline:
                return ProbeHalt(rig, probe, now, "still moving")
            before = now
    except Exception as ex:  # a probe we cannot read is reported, never raised: the other probes still count
        return ProbeHalt(rig, probe, None, plain_error(ex))


async def _halt_rig(rig: str, client: ManipulatorClient, settle: float, within: float
                    ) -> tuple[list[ProbeHalt], str | None]:
    try:
        await client.stop_all(STOP_TIMEOUT)
    except Exception as ex:  # the rig refused or did not answer: say so, with the probes we know of
        return [ProbeHalt(rig, p, None, "no answer to the stop") for p in client.ids], plain_error(ex)
    try:
        ids = list(client.ids) or await client.list_ids()
    except Exception as ex:
        return [], f"halted, but its probes could not be listed: {plain_error(ex)}"
    halts = await asyncio.gather(*(_confirm(rig, client, p, settle, within) for p in ids))
    return list(halts), None


async def halt_and_confirm(clients: Mapping[str, ManipulatorClient], *, settle: float = SETTLE,
                           within: float = CONFIRM_WITHIN, report: StopAllReport | None = None) -> StopAllReport:
    """Stop every probe of every rig in ``clients`` at once and confirm each one stands still.

    ``report`` (made by the caller right before, so the window can show "sent at" at once) is filled in.
    """
    report = report or StopAllReport(time.time())
    t0 = time.monotonic()
    results = await asyncio.gather(*(_halt_rig(rig, c, settle, within) for rig, c in clients.items()))
    for rig, (halts, error) in zip(clients, results, strict=True):
        report.probes.extend(halts)
        if error:
            report.rig_errors[rig] = error
    report.elapsed_ms = (time.monotonic() - t0) * 1e3
    report.done = True
    return report


def plain_error(ex: BaseException) -> str:
    """One short sentence for an exception (its own text, or what kind of failure it was)."""
    if isinstance(ex, TimeoutError | asyncio.TimeoutError):
        return "no answer in time"
    return plain(str(ex).splitlines()[0])[0] if str(ex) else type(ex).__name__
