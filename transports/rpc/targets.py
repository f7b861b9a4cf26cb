"""pc_rpc targets that expose a RigDeck rig to ARTIQ/sipyco tools (``sipyco_rpctool``, experiments).

Only the methods below are reachable (the server never exposes ``_`` names), arguments and returns are
plain JSON-friendly values (dicts, lists, numbers), and nothing here executes code a client sends:
there is no equivalent of sipyco's ``remote_exec``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from core.drivers.manipulator import ManipulatorError
from core.protocol import ExpMessage
from transports.rpc.server import CALLER, urgent

#: mm: a move that ends farther than this from its target on any axis did not reach it (it was stopped)
REACH_TOLERANCE = 1e-3


def plain(value: Any) -> Any:
    """Dataclasses (Vec4, PlatformInfo...) and enums as plain values a non-Python client can read."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


class RigTarget:
    """The rig's session interface: the iblutil messages, by name, plus read-only views."""

    def __init__(self, service: Any) -> None:
        self._service = service

    def name(self) -> str:
        """The rig's name."""
        return str(getattr(self._service, "name", ""))

    def ping(self) -> bool:
        """True: the rig service answers."""
        return True

    async def handle(self, event: Any, data: list[Any] | None = None) -> list[Any]:
        """One iblutil session message: ``event`` (code or name, e.g. 64 or "EXPINFO") and its data
        (the message without the event); returns the reply data."""
        message = ExpMessage.validate(event, allow_bitwise=False)
        return plain(list(await self._service.handle(message, list(data or []), CALLER.get())))

    async def status(self, console_status: int = 0) -> int:
        """The rig's ExpStatus code (0 connected, 10 initialized, 20 running, 30 stopped)."""
        reply = await self._service.handle(ExpMessage.EXPSTATUS, [console_status], CALLER.get())
        return int(reply[0])

    async def info(self, data: dict[str, Any] | None = None, console_status: int = 0) -> dict[str, Any]:
        """EXPINFO: the rig's version, main_sync flag, current exp_ref and experiment description."""
        reply = await self._service.handle(ExpMessage.EXPINFO, [console_status, dict(data or {})], CALLER.get())
        return plain(reply[-1]) if reply else {}

    def state(self) -> Any:
        """A snapshot of the rig's live state (the same tree its sync_struct notifier publishes)."""
        state = getattr(self._service, "state", None)
        return state.snapshot() if state is not None else {}


def _vec4(value: Any) -> Any:
    from core.drivers.manipulator import Vec4

    if isinstance(value, dict):
        return Vec4(**{k: float(value[k]) for k in ("x", "y", "z", "w")})
    if isinstance(value, list | tuple) and len(value) == 4:
        return Vec4(*(float(v) for v in value))
    raise ValueError(f"a position is [x, y, z, w] or {{x, y, z, w}} in mm, not {value!r}")


class ManipulatorTarget:
    """The rig's manipulator driver (ephys-link operations), in mm and mm/s; positions as {x, y, z, w}."""

    def __init__(self, driver: Any) -> None:
        self._driver = driver

    async def platform_info(self) -> dict[str, Any]:
        """Name, axes count and dimensions of the platform."""
        return plain(await self._driver.platform_info())

    async def list_ids(self) -> list[str]:
        """The manipulators' ids."""
        return list(await self._driver.list_ids())

    async def position(self, manipulator_id: str) -> dict[str, float]:
        """Current position {x, y, z, w} in mm."""
        return plain(await self._driver.position(manipulator_id))

    async def angles(self, manipulator_id: str) -> dict[str, float]:
        """Yaw, pitch, roll of the probe (degrees)."""
        return plain(await self._driver.angles(manipulator_id))

    async def shank_count(self, manipulator_id: str) -> int:
        return int(await self._driver.shank_count(manipulator_id))

    async def set_position(self, manipulator_id: str, position: Any, speed: float) -> dict[str, float]:
        """Move to [x, y, z, w] (or {x, y, z, w}) mm at ``speed`` mm/s; returns the final position.
        A move stopped (or superseded) on its way raises ManipulatorError saying where it halted."""
        wanted = _vec4(position)
        final = await self._driver.set_position(manipulator_id, wanted, float(speed))
        for axis, got, want in zip("xyzw", final.as_tuple(), wanted.as_tuple(), strict=True):
            if not abs(got - want) <= REACH_TOLERANCE:
                raise ManipulatorError(f"manipulator {manipulator_id} stopped before reaching its target (axis {axis}):"
                                       f" requested {plain(wanted)}, halted at {plain(final)}")
        return plain(final)

    async def set_depth(self, manipulator_id: str, depth: float, speed: float) -> float:
        """Drive the depth axis to ``depth`` mm at ``speed`` mm/s; returns the final depth.
        A move stopped (or superseded) on its way raises ManipulatorError saying where it halted."""
        final = float(await self._driver.set_depth(manipulator_id, float(depth), float(speed)))
        if not abs(final - float(depth)) <= REACH_TOLERANCE:
            raise ManipulatorError(f"manipulator {manipulator_id} stopped before reaching depth {float(depth)}:"
                                   f" halted at {final}")
        return final

    async def set_inside_brain(self, manipulator_id: str, inside: bool) -> bool:
        return bool(await self._driver.set_inside_brain(manipulator_id, bool(inside)))

    @urgent
    async def stop(self, manipulator_id: str) -> None:
        """Stop one manipulator now (runs at once, even while other calls are running)."""
        await self._driver.stop(manipulator_id)

    @urgent
    async def stop_all(self) -> None:
        """Stop every manipulator now (runs at once, even while other calls are running)."""
        await self._driver.stop_all()

    def is_moving(self, manipulator_id: str) -> bool:
        return bool(self._driver.is_moving(manipulator_id))

    def is_inside_brain(self, manipulator_id: str) -> bool:
        return bool(self._driver.is_inside_brain(manipulator_id))


class RecordersTarget:
    """The rig's recorders, read-only: recording starts and stops with the session (EXPSTART / EXPEND on
    the rig target), never from here, so an ARTIQ tool can watch acquisition but not break a session."""

    def __init__(self, recorders: dict[str, Any]) -> None:
        self._recorders = recorders

    def _get(self, name: str) -> Any:
        try:
            return self._recorders[name]
        except KeyError:
            raise KeyError(f"no recorder {name!r}; this rig has {sorted(self._recorders)}") from None

    def list_recorders(self) -> list[str]:
        """The recorders' names."""
        return list(self._recorders)

    def describe(self, name: str) -> dict[str, Any]:
        """Kind, rate, frame size and state of one recorder."""
        return plain(self._get(name).describe())

    def frames(self, name: str) -> int:
        """Frames written by one recorder in the current (or last) recording."""
        return int(self._get(name).frames)

    def running(self, name: str) -> bool:
        """Whether the recorder is writing now."""
        return bool(self._get(name).running)
