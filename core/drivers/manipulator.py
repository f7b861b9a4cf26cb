"""Manipulator driver interface (the ephys-link operations) and a simulated stage that behaves like hardware.

Units follow ephys-link's "unified space": x, y, z and the depth axis w in mm, speeds in mm/s, angles in
degrees. Every driver (the simulation here, the ephys-link proxy in ``transports``) implements
:class:`Manipulator`, so the rig service and the Socket.IO server never care which one they host.

Contract details the servers rely on:

- ``set_position`` / ``set_depth`` return where the stage actually ended. A move interrupted by ``stop``
  (or superseded by a newer move of the same manipulator) returns the position where it halted, without
  raising: the *server* compares it with the target and reports "did not reach target", as ephys-link does.
- Every refusal (unknown id, out of range, inside the brain, bad speed, NaN) is a :class:`ManipulatorError`
  whose message says what is wrong; nothing moves when a command is refused.
- Ids are strings; there is no indexing, so ``"-1"`` is just an unknown id.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.checks import is_number
from core.drivers.base import Configurable
from core.listeners import Listeners

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Vec4:
    """A position in unified space: x, y, z and depth w (mm)."""

    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    w: float = 0.0

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.z, self.w)

    def as_dict(self) -> dict[str, float]:
        return {"x": self.x, "y": self.y, "z": self.z, "w": self.w}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Vec4:
        """Missing components default to 0 (as ephys-link does); values must be numbers or numeric strings."""
        return cls(*(_number(data.get(axis, 0.0), axis) for axis in "xyzw"))

    def is_finite(self) -> bool:
        return all(math.isfinite(v) for v in self.as_tuple())

    def distance(self, other: Vec4) -> float:
        return math.dist(self.as_tuple(), other.as_tuple())

    def lerp(self, other: Vec4, fraction: float) -> Vec4:
        return Vec4(*(a + (b - a) * fraction for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def replace(self, **axes: float) -> Vec4:
        values = self.as_dict()
        values.update(axes)
        return Vec4(**values)


@dataclass(frozen=True)
class Vec3:
    """Probe angles (degrees): yaw x, pitch y, roll z, as ephys-link reports them."""

    x: float = 0.0
    y: float = 0.0
    z: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"x": self.x, "y": self.y, "z": self.z}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Vec3:
        return cls(*(_number(data.get(axis, 0.0), axis) for axis in "xyz"))


@dataclass(frozen=True)
class PlatformInfo:
    """What ephys-link's ``get_platform_info`` reports."""

    name: str
    cli_name: str
    axes_count: int
    dimensions: Vec4


class ManipulatorError(Exception):
    """A refused or failed manipulator command; the message is what a user (or Pinpoint) is shown."""


def _number(value: Any, what: str) -> float:
    """float() for numbers and numeric strings only (bool is not a number here)."""
    if not (isinstance(value, str) or is_number(value)):
        raise ManipulatorError(f"{what} must be a number, got {type(value).__name__}")
    try:
        return float(value)
    except ValueError:
        raise ManipulatorError(f"{what} must be a number, got {value!r}") from None


#: listener(id, position, moving)
PositionListener = Callable[[str, Vec4, bool], None]

INSIDE_BRAIN_TEXT = 'Cannot move manipulator while inside the brain. Set the depth ("set_depth") instead.'


class Manipulator(Configurable, abc.ABC):
    """The async interface of a set of manipulators on one platform.

    Besides the operations below, a driver tells :meth:`subscribe` listeners every position change (the
    rig's live state and health follow them) and releases its hardware in :meth:`close`. A plugin
    manipulator builds itself in :meth:`~core.drivers.base.Configurable.from_options`.
    """

    role = "manipulator"

    @abc.abstractmethod
    async def platform_info(self) -> PlatformInfo: ...

    @abc.abstractmethod
    async def list_ids(self) -> list[str]: ...

    @abc.abstractmethod
    async def position(self, manipulator_id: str) -> Vec4: ...

    @abc.abstractmethod
    async def angles(self, manipulator_id: str) -> Vec3: ...

    @abc.abstractmethod
    async def shank_count(self, manipulator_id: str) -> int: ...

    @abc.abstractmethod
    async def set_position(self, manipulator_id: str, pos: Vec4, speed: float) -> Vec4:
        """Move to ``pos`` at ``speed`` mm/s; return the final position (where it halted if stopped)."""

    @abc.abstractmethod
    async def set_depth(self, manipulator_id: str, depth: float, speed: float) -> float:
        """Drive the depth axis w only (allowed inside the brain); return the final depth."""

    @abc.abstractmethod
    async def set_inside_brain(self, manipulator_id: str, inside: bool) -> bool: ...

    @abc.abstractmethod
    async def stop(self, manipulator_id: str) -> None: ...

    @abc.abstractmethod
    async def stop_all(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def is_moving(self, manipulator_id: str) -> bool: ...

    @abc.abstractmethod
    def is_inside_brain(self, manipulator_id: str) -> bool: ...

    @abc.abstractmethod
    def subscribe(self, listener: PositionListener) -> Callable[[], None]:
        """Call ``listener(id, pos, moving)`` on position changes; returns the unsubscribe function."""


def check_speed(speed: Any) -> float:
    """A finite speed > 0 in mm/s, or a ManipulatorError saying why not."""
    value = _number(speed, "speed")
    if not math.isfinite(value) or value <= 0:
        raise ManipulatorError(f"speed must be a finite number > 0 mm/s, got {value}")
    return value


def check_position(pos: Any) -> Vec4:
    if not isinstance(pos, Vec4):
        raise ManipulatorError(f"position must be a Vec4, got {type(pos).__name__}")
    if not pos.is_finite():
        raise ManipulatorError(f"position must be finite numbers, got {pos.as_dict()}")
    return pos


class _Motion:
    """One manipulator's motion: a straight line from ``origin`` to ``target`` between loop times t0 and t1."""

    def __init__(self, home: Vec4) -> None:
        self.origin = home
        self.target = home
        self.t0 = 0.0
        self.t1 = 0.0
        self.done: asyncio.Future[Vec4] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.inside_brain = False

    def at(self, now: float) -> Vec4:
        if self.done is None or now >= self.t1:
            return self.target
        if self.t1 <= self.t0:
            return self.target
        return self.origin.lerp(self.target, (now - self.t0) / (self.t1 - self.t0))


class SimulatedManipulator(Manipulator):
    """Manipulators that move like real stages, computed from the event loop clock (no busy loop).

    A move takes distance/speed seconds along a straight line in 4-D; ``position`` interpolates in time.
    Targets outside ``[0, dimensions]`` on any axis are refused; ``stop`` halts a move where it is. While
    anything moves, subscribers get positions at ``update_hz`` and once more at each move's end.
    """

    def __init__(
        self,
        ids: Iterable[str] = ("1", "2"),
        dimensions: Vec4 = Vec4(20.0, 20.0, 20.0, 20.0),
        *,
        home: Vec4 | None = None,
        angles: Mapping[str, Vec3] | None = None,
        shanks: Mapping[str, int] | None = None,
        update_hz: float = 100.0,
        max_speed: float | None = None,
        name: str = "Simulated Manipulator",
        cli_name: str = "sim",
    ) -> None:
        self._ids = [str(i) for i in ids]
        if not self._ids or len(set(self._ids)) != len(self._ids):
            raise ValueError(f"manipulator ids must be non-empty and unique, got {self._ids}")
        if not (math.isfinite(update_hz) and update_hz > 0):
            raise ValueError(f"update_hz must be > 0, got {update_hz}")
        self.dimensions = dimensions
        self._home = home if home is not None else Vec4()
        self._check_range(self._home, "home")
        self._motions = {i: _Motion(self._home) for i in self._ids}
        self._angles = dict(angles or {})
        self._shanks = dict(shanks or {})
        self.update_interval = 1.0 / update_hz
        self.max_speed = max_speed
        self._info = PlatformInfo(name=name, cli_name=cli_name, axes_count=4, dimensions=dimensions)
        self._listeners: Listeners[[str, Vec4, bool]] = Listeners("manipulator position listener")
        self._publisher: asyncio.Task[None] | None = None
        self._closed = False

    # ---------------------------------------------------------------- helpers
    def _motion(self, manipulator_id: Any) -> _Motion:
        if self._closed:
            raise ManipulatorError("manipulator driver is closed")
        if not isinstance(manipulator_id, str):
            raise ManipulatorError(f"manipulator id must be a string, got {type(manipulator_id).__name__}")
        try:
            return self._motions[manipulator_id]
        except KeyError:
            raise ManipulatorError(
                f"unknown manipulator {manipulator_id!r} (known: {', '.join(self._ids)})"
            ) from None

    def _check_range(self, pos: Vec4, what: str = "target") -> None:
        for axis, value, limit in zip("xyzw", pos.as_tuple(), self.dimensions.as_tuple(), strict=True):
            if not (-1e-9 <= value <= limit + 1e-9):
                raise ManipulatorError(f"{what} {axis}={value:g} mm is outside the travel range 0..{limit:g} mm")

    def _check_speed(self, speed: Any) -> float:
        value = check_speed(speed)
        if self.max_speed is not None and value > self.max_speed:
            raise ManipulatorError(f"speed {value:g} mm/s exceeds the maximum {self.max_speed:g} mm/s")
        return value

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def _halt(self, manipulator_id: str, motion: _Motion, now: float) -> None:
        """Freeze a motion where it is now and release its waiter."""
        if motion.done is None:
            return
        here = motion.at(now)
        motion.origin = motion.target = here
        motion.t0 = motion.t1 = now
        if motion.timer is not None:
            motion.timer.cancel()
            motion.timer = None
        done, motion.done = motion.done, None
        if not done.done():
            done.set_result(here)

    def _finish(self, manipulator_id: str) -> None:
        motion = self._motions[manipulator_id]
        motion.timer = None
        self._halt(manipulator_id, motion, max(self._now(), motion.t1))
        self._listeners.notify(manipulator_id, motion.target, False)

    async def _move(self, manipulator_id: str, motion: _Motion, target: Vec4, speed: float) -> Vec4:
        now = self._now()
        was_moving = motion.done is not None
        self._halt(manipulator_id, motion, now)  # a newer command supersedes a running move
        start = motion.target
        duration = start.distance(target) / speed
        loop = asyncio.get_running_loop()
        motion.origin, motion.target, motion.t0, motion.t1 = start, target, now, now + duration
        motion.done = done = loop.create_future()
        if duration <= 0:
            self._halt(manipulator_id, motion, now)
            if was_moving:
                self._listeners.notify(manipulator_id, target, False)
            return await done
        motion.timer = loop.call_at(motion.t1, self._finish, manipulator_id)
        self._listeners.notify(manipulator_id, start, True)
        self._ensure_publisher()
        # shield: a cancelled caller must not leave the future cancelled for others (the move goes on)
        return await asyncio.shield(done)

    def _ensure_publisher(self) -> None:
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.get_running_loop().create_task(self._publish())

    async def _publish(self) -> None:
        """While anything moves, push every moving manipulator's position at ``update_hz``."""
        while not self._closed:
            await asyncio.sleep(self.update_interval)
            now = self._now()
            moving = [(i, m) for i, m in self._motions.items() if m.done is not None and now < m.t1]
            if not moving:
                if not any(m.done is not None for m in self._motions.values()):
                    return
                continue
            for manipulator_id, motion in moving:
                self._listeners.notify(manipulator_id, motion.at(now), True)

    # ---------------------------------------------------------------- the interface
    async def platform_info(self) -> PlatformInfo:
        return self._info

    async def list_ids(self) -> list[str]:
        return list(self._ids)

    async def position(self, manipulator_id: str) -> Vec4:
        return self._motion(manipulator_id).at(self._now())

    async def angles(self, manipulator_id: str) -> Vec3:
        self._motion(manipulator_id)
        return self._angles.get(manipulator_id, Vec3(90.0, 60.0, 0.0))

    async def shank_count(self, manipulator_id: str) -> int:
        self._motion(manipulator_id)
        return self._shanks.get(manipulator_id, 1)

    async def set_position(self, manipulator_id: str, pos: Vec4, speed: float) -> Vec4:
        motion = self._motion(manipulator_id)
        target = check_position(pos)
        speed = self._check_speed(speed)
        if motion.inside_brain:
            raise ManipulatorError(INSIDE_BRAIN_TEXT)
        self._check_range(target)
        return await self._move(manipulator_id, motion, target, speed)

    async def set_depth(self, manipulator_id: str, depth: float, speed: float) -> float:
        motion = self._motion(manipulator_id)
        value = _number(depth, "depth")
        if not math.isfinite(value):
            raise ManipulatorError(f"depth must be a finite number, got {value}")
        speed = self._check_speed(speed)
        target = motion.at(self._now()).replace(w=value)
        self._check_range(target, "depth")
        return (await self._move(manipulator_id, motion, target, speed)).w

    async def set_inside_brain(self, manipulator_id: str, inside: bool) -> bool:
        motion = self._motion(manipulator_id)
        if not isinstance(inside, bool):
            raise ManipulatorError(f"inside must be true or false, got {inside!r}")
        motion.inside_brain = inside
        return inside

    async def stop(self, manipulator_id: str) -> None:
        motion = self._motion(manipulator_id)
        self._stop_one(manipulator_id, motion, self._now())

    def _stop_one(self, manipulator_id: str, motion: _Motion, now: float) -> None:
        if motion.done is not None:
            self._halt(manipulator_id, motion, now)
            self._listeners.notify(manipulator_id, motion.target, False)

    async def stop_all(self) -> None:
        if self._closed:
            return
        now = self._now()
        for manipulator_id, motion in self._motions.items():
            self._stop_one(manipulator_id, motion, now)

    async def close(self) -> None:
        if self._closed:
            return
        await self.stop_all()
        self._closed = True
        if self._publisher is not None:
            self._publisher.cancel()
            self._publisher = None
        self._listeners.clear()

    def is_moving(self, manipulator_id: str) -> bool:
        motion = self._motion(manipulator_id)
        return motion.done is not None

    def is_inside_brain(self, manipulator_id: str) -> bool:
        return self._motion(manipulator_id).inside_brain

    def subscribe(self, listener: PositionListener) -> Callable[[], None]:
        return self._listeners.add(listener)
