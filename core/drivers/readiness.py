"""Is each driver of a rig file ready? What ``rigdeck serve --check RIG.yaml`` reports, starting nothing.

Per driver: a program is found and executable (and its folder exists); a camera source opens (a short
ffmpeg probe that decodes one frame and writes nothing); a plugin kind imports and its own
:meth:`~core.drivers.base.Configurable.check` passes; a simulated driver is always ready. The checks
run one after the other, so two probes never fight over one camera.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.drivers.base import DriverContext
from core.drivers.command import check_command
from core.drivers.kinds import KindError, find_kind
from core.drivers.recorder import KINDS as SIMULATED_KINDS
from core.rig_config import RigConfig


@dataclass(frozen=True)
class Readiness:
    """One driver's verdict: ``problem`` is None when it is ready."""

    name: str
    role: str  # recorder | manipulator | program
    kind: str
    problem: str | None
    detail: str = ""

    @property
    def ready(self) -> bool:
        return self.problem is None


async def _check_kind(kind_name: str, role: str, options: dict, context: DriverContext,
                      problem: str | None) -> tuple[str | None, str]:
    if problem:
        return problem, ""
    try:
        kind = find_kind(kind_name, role)
    except KindError as ex:
        return str(ex), ""
    try:
        verdict = await kind.cls.check(options, context)
    except Exception as ex:  # a plugin's check that raises is a verdict too, not a crash of --check
        verdict = f"check failed: {type(ex).__name__}: {ex}"
    return verdict, kind.origin


async def check_drivers(config: RigConfig) -> list[Readiness]:
    """The readiness of every driver of ``config`` (load it with ``strict=False`` to see plugin problems here)."""
    context = config.driver_context()
    out: list[Readiness] = []
    for spec in config.recorders:
        if spec.kind in SIMULATED_KINDS:
            out.append(Readiness(spec.name, "recorder", spec.kind, None, "simulated"))
            continue
        problem, origin = await _check_kind(spec.kind, "recorder", dict(spec.options), context, spec.problem)
        detail = str(spec.options.get("source", "")) if spec.kind == "video" else origin
        out.append(Readiness(spec.name, "recorder", spec.kind, problem, detail))
    manipulator = config.manipulator
    if manipulator is not None:
        kind = str(manipulator.get("type", "simulated"))
        if manipulator.get("plugin"):
            problem, origin = await _check_kind(kind, "manipulator", dict(manipulator.get("options") or {}),
                                                context, manipulator.get("problem"))
            out.append(Readiness("manipulator", "manipulator", kind, problem, origin))
        elif kind == "ephys_link":
            out.append(Readiness("manipulator", "manipulator", kind, None,
                                 f"proxy to {manipulator['ephys_link']} (reached when the rig starts)"))
        else:
            out.append(Readiness("manipulator", "manipulator", kind, None, "simulated"))
    for command in config.commands:
        out.append(Readiness(command.name, "program", "command", check_command(command),
                             " ".join(command.run[:3]) + (" ..." if len(command.run) > 3 else "")))
    return out
