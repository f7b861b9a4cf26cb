"""The ephys-link 2.x event table: event name + payload -> a driver call -> the reply string.

Socket-free, so the server, the relay's servers and test doubles of an ephys-link server share it, and so the
whole table reads in one place. Each event is one :class:`Route`: how its payload is parsed, what it asks of
the driver, how the result is written, and the reply shape its errors take (ephys-link answers an error in
the event's own shape, with the values zeroed).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from core.drivers.manipulator import INSIDE_BRAIN_TEXT, Manipulator, ManipulatorError
from core.link import error_text
from transports.rate_log import RateLimitedLog
from transports.sio import wire

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 0.001  # mm, as ephys-link's fake and uMp platforms
#: the server, relay and event table log one line per kind of bad input per this many seconds
LOG_INTERVAL = 5.0


def error_of(exc: BaseException) -> str:
    """ephys-link's error text: ``"ExcType: message"``, except its inside-brain refusal, which is bare."""
    if isinstance(exc, ManipulatorError) and str(exc) == INSIDE_BRAIN_TEXT:
        return INSIDE_BRAIN_TEXT
    return error_text(exc)


@dataclass(frozen=True)
class Route:
    """One event: ``parse`` the payload (raises :class:`wire.Malformed`), ``act`` on the driver, ``render``
    the reply from the request and the result; ``shape`` is the error reply's body (None: a bare text)."""

    parse: Callable[[Any], Any]
    act: Callable[[ManipulatorApi, Any], Awaitable[Any]]
    render: Callable[[ManipulatorApi, Any, Any], str]
    shape: dict[str, Any] | None


def _nothing(_: Any) -> None:
    return None


def _ok(**fields: Any) -> str:
    return wire.dumps({**fields, "Error": ""})


def _reached_position(api: ManipulatorApi, req: wire.SetPosition, final: Any) -> str:
    """A move that stopped short is answered with where it stopped and why (ephys-link's bare text)."""
    error = ""
    for axis, got, want in zip("xyzw", final.as_tuple(), req.position.as_tuple(), strict=True):
        if not math.isfinite(got) or abs(got - want) > api.tolerance:
            error = (f"Manipulator {req.manipulator_id} did not reach target position on axis {axis}. "
                     f"Requested: {wire.vec4(req.position)}, got: {wire.vec4(final)}.")
            break
    return wire.dumps({"Position": wire.vec4(final), "Error": error})


def _reached_depth(api: ManipulatorApi, req: wire.SetDepth, final: float) -> str:
    error = ""
    if not math.isfinite(final) or abs(final - req.depth) > api.tolerance:
        error = f"Manipulator {req.manipulator_id} did not reach target depth. Requested: {req.depth}, got: {final}."
    return wire.dumps({"Depth": float(final), "Error": error})


async def _set_inside_brain(api: ManipulatorApi, req: wire.SetInsideBrain) -> bool:
    state = await api.driver.set_inside_brain(req.manipulator_id, req.inside)
    if api.on_inside_brain is not None:
        api.on_inside_brain(req.manipulator_id)
    return state


async def _version(api: ManipulatorApi, _: Any) -> str:
    return api.api_version


def _platform(api: ManipulatorApi, _: Any, info: Any) -> str:
    return wire.dumps({"Name": info.name, "CliName": info.cli_name, "AxesCount": info.axes_count,
                       "Dimensions": wire.vec4(info.dimensions)})


ZERO_POSITION = {"Position": wire.vec4(wire.ZERO4)}

#: the events ephys-link 2.x answers, in its order
ROUTES: dict[str, Route] = {
    "get_version": Route(_nothing, _version, lambda api, req, version: version, {}),
    "get_platform_info": Route(_nothing, lambda api, req: api.driver.platform_info(), _platform, {}),
    "get_manipulators": Route(_nothing, lambda api, req: api.driver.list_ids(),
                              lambda api, req, ids: _ok(Manipulators=list(ids)), {"Manipulators": []}),
    "get_position": Route(wire.parse_id, lambda api, req: api.driver.position(req),
                          lambda api, req, pos: _ok(Position=wire.vec4(pos)), ZERO_POSITION),
    "get_angles": Route(wire.parse_id, lambda api, req: api.driver.angles(req),
                        lambda api, req, angles: _ok(Angles=wire.vec3(angles)), {"Angles": wire.vec3(wire.ZERO3)}),
    "get_shank_count": Route(wire.parse_id, lambda api, req: api.driver.shank_count(req),
                             lambda api, req, count: _ok(ShankCount=int(count)), {"ShankCount": 0}),
    "set_position": Route(wire.parse_set_position,
                          lambda api, req: api.driver.set_position(req.manipulator_id, req.position, req.speed),
                          _reached_position, ZERO_POSITION),
    "set_depth": Route(wire.parse_set_depth,
                       lambda api, req: api.driver.set_depth(req.manipulator_id, req.depth, req.speed),
                       _reached_depth, {"Depth": 0.0}),
    "set_inside_brain": Route(wire.parse_set_inside_brain, _set_inside_brain,
                              lambda api, req, state: _ok(State=bool(state)), {"State": False}),
    "stop": Route(wire.parse_id, lambda api, req: api.driver.stop(req), lambda api, req, _: "", None),
    "stop_all": Route(_nothing, lambda api, req: api.driver.stop_all(), lambda api, req, _: "", None),
}


class ManipulatorApi:
    """Socket-free core of the server: event name + payload -> reply string, by :data:`ROUTES`."""

    def __init__(self, driver: Manipulator, tolerance: float = DEFAULT_TOLERANCE,
                 api_version: str = wire.API_VERSION) -> None:
        self.driver = driver
        self.tolerance = tolerance
        self.api_version = api_version
        self.on_inside_brain: Callable[[str], None] | None = None
        self._rlog = RateLimitedLog(log, LOG_INTERVAL)

    @staticmethod
    def knows(event: str) -> bool:
        return event in ROUTES

    async def call(self, event: str, args: tuple[Any, ...]) -> str:
        """Answer one request; never raises (bad input is a reply, not a crash)."""
        route = ROUTES.get(event)
        if route is None:
            return wire.UNKNOWN_EVENT
        if len(args) > 1 or (not args and event not in wire.NO_PAYLOAD_EVENTS):
            self._rlog.info(f"args {event}", "sio: malformed %s: %d payload arguments", event, len(args))
            return wire.MALFORMED
        try:
            request = route.parse(args[0] if args else "")
        except wire.Malformed as ex:
            self._rlog.info(f"malformed {event}", "sio: malformed %s: %s", event, ex)
            return wire.MALFORMED
        try:
            return route.render(self, request, await route.act(self, request))
        except ManipulatorError as ex:  # the driver's refusal (or a target not reached) is the reply's error
            return self.failure(event, ex)
        except wire.NotFinite as ex:
            self._rlog.warning(f"nan {event}", "sio: %s reply not sent as is: %s", event, ex)
            return self.failure(event, ex)
        except Exception as ex:  # a driver bug must not take the server down
            log.exception("sio: %s failed", event)
            return self.failure(event, ex)

    def failure(self, event: str, exc: BaseException) -> str:
        """The event's own reply shape carrying an error (ephys-link zeroes the values)."""
        text = error_of(exc)
        route = ROUTES.get(event)
        if route is not None and route.shape is None:
            return text
        return wire.dumps({**(route.shape if route is not None else {}), "Error": text})
