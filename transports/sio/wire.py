"""ephys-link 2.x Socket.IO payloads: request parsing and reply shapes, shared by server, client and relay.

The wire facts (see shared/reference/ephys-link-api.md): every request is one emit with one payload and an
acknowledgement whose single argument is a string. ID events take the raw id string; body events take a
JSON-encoded *string* whose keys may be PascalCase or snake_case (PascalCase wins). Replies are compact
PascalCase JSON with lowercase vector components and an ``"Error"`` text that clients must check first.

Stricter than ephys-link on purpose: NaN/Infinity, non-string ids, list bodies, ``Speed <= 0`` and
non-boolean ``Inside`` are malformed requests.

Non-finite numbers never leave either: :func:`dumps` refuses them with :class:`NotFinite`, naming the field.
Why refuse rather than send the ``NaN`` token: the other end is Pinpoint or another ephys-link client whose
JSON parser rejects the whole message, so one NaN would silence every later push to it; a ``null`` would be
read as 0.0 (a position that is wrong, not unknown). So the server answers that request with an error text
saying which value was not finite, and a push leaves out only the manipulator whose position is not finite
(logged), so every later change still arrives.

Hostile requests (nesting thousands deep, integers of thousands of digits, huge strings) are
:class:`Malformed`, never another exception.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from core.checks import is_number
from core.drivers.manipulator import Vec3, Vec4

#: ephys-link API level this server speaks (Pinpoint requires major 2, >= 2.1.3)
API_VERSION = "2.3.6"

UNKNOWN_EVENT = json.dumps({"error": "Unknown event."})
MALFORMED = json.dumps({"error": "Malformed request."})

#: events whose payload is ignored (ephys-link still requires one; we accept none as well)
NO_PAYLOAD_EVENTS = frozenset({"get_version", "get_platform_info", "get_manipulators", "stop_all",
                               "get_rigdeck_info", "take_control", "get_control", "get_pinpoint_id"})
ID_EVENTS = frozenset({"get_position", "get_angles", "get_shank_count", "stop"})
BODY_EVENTS = frozenset({"set_position", "set_depth", "set_inside_brain"})
MOVE_EVENTS = BODY_EVENTS  # refused for observers; stop/stop_all are safety commands anyone may send

#: RigDeck's own events (an ephys-link server answers "Unknown event." to them)
POSITION_EVENT = "position"  # server -> clients push
CONTROL_EVENT = "control"  # server -> one client: your control changed
#: what a Pinpoint ID at a relay may be (the relay, the CLI and rigs files share this one rule)
PINPOINT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,31}$")

#: vector placeholders in error replies, as ephys-link sends
ZERO4 = Vec4()
ZERO3 = Vec3()


#: longest body payload we parse; ephys-link's largest request is a few hundred bytes
MAX_BODY = 64 * 1024
#: longest manipulator id (they are short names: "1", "A", "left-probe")
MAX_ID = 200


class Malformed(ValueError):
    """A request that cannot be parsed; answered with ``{"error": "Malformed request."}``."""


class NotFinite(ValueError):
    """A reply or push would carry NaN or an infinity, which ephys-link's JSON cannot (see the module notes)."""


#: one encoder for every reply: json.dumps with non-default options builds a new encoder per call
#: (1-3 us of a get_position's ~5 us of handling, measured)
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _non_finite(obj: Any, path: str = "") -> tuple[str, float] | None:
    """The first NaN/infinity in ``obj`` as (dotted path, value), or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return path or "value", obj
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list | tuple) else ()
    for key, value in items:
        found = _non_finite(value, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def dumps(obj: Any) -> str:
    """Compact JSON as ephys-link's pydantic models print it; :class:`NotFinite` names a NaN or infinity."""
    try:
        return _encode(obj)
    except ValueError:
        found = _non_finite(obj)
        if found is None:
            raise
        raise NotFinite(f"{found[0]} is {found[1]}, which ephys-link's JSON cannot carry") from None


def finite(obj: Any) -> bool:
    """True when ``obj`` holds no NaN or infinity (what :func:`dumps` would refuse)."""
    return _non_finite(obj) is None


def vec4(v: Vec4) -> dict[str, float]:
    return {"x": float(v.x), "y": float(v.y), "z": float(v.z), "w": float(v.w)}


def vec3(v: Vec3) -> dict[str, float]:
    return {"x": float(v.x), "y": float(v.y), "z": float(v.z)}


def _reject_constant(name: str) -> Any:
    raise Malformed(f"{name} is not a number JSON allows")


def parse_body(payload: Any) -> dict[str, Any]:
    """A body payload: a JSON string holding an object (a dict payload is malformed, as in ephys-link)."""
    if not isinstance(payload, str) or not payload:
        raise Malformed("payload must be a JSON-encoded string")
    if len(payload) > MAX_BODY:
        raise Malformed(f"payload of {len(payload)} characters (at most {MAX_BODY})")
    try:
        data = json.loads(payload, parse_constant=_reject_constant)
    except RecursionError:
        raise Malformed("JSON nested too deeply") from None
    except ValueError as ex:  # JSONDecodeError, an integer too long to convert, our NaN refusal
        raise Malformed(f"not JSON: {str(ex)[:120]}") from None
    if not isinstance(data, dict):
        raise Malformed(f"expected a JSON object, got {type(data).__name__}")
    return data


def field(data: dict[str, Any], pascal: str, snake: str, required: bool = True, default: Any = None) -> Any:
    if pascal in data:
        return data[pascal]
    if snake in data:
        return data[snake]
    if required:
        raise Malformed(f"missing {pascal}")
    return default


def _float(value: Any, what: str) -> float:
    if not (isinstance(value, str) or is_number(value)):
        raise Malformed(f"{what} must be a number")
    try:
        number = float(value)
    except (ValueError, OverflowError):  # "abc"; an integer past float's range
        raise Malformed(f"{what} must be a number within float's range") from None
    if not math.isfinite(number):
        raise Malformed(f"{what} must be finite")
    return number


def _id(data: dict[str, Any]) -> str:
    value = field(data, "ManipulatorId", "manipulator_id")
    if not isinstance(value, str) or len(value) > MAX_ID:
        raise Malformed(f"ManipulatorId must be a string of at most {MAX_ID} characters")
    return value


def _speed(data: dict[str, Any]) -> float:
    speed = _float(field(data, "Speed", "speed"), "Speed")
    if speed <= 0:
        raise Malformed("Speed must be > 0")
    return speed


def parse_id(payload: Any) -> str:
    if not isinstance(payload, str) or not payload or len(payload) > MAX_ID:
        raise Malformed(f"payload must be a manipulator id string of 1-{MAX_ID} characters")
    return payload


@dataclass(frozen=True)
class SetPosition:
    manipulator_id: str
    position: Vec4
    speed: float


@dataclass(frozen=True)
class SetDepth:
    manipulator_id: str
    depth: float
    speed: float


@dataclass(frozen=True)
class SetInsideBrain:
    manipulator_id: str
    inside: bool


def parse_set_position(payload: Any) -> SetPosition:
    data = parse_body(payload)
    raw = field(data, "Position", "position")
    if not isinstance(raw, dict):
        raise Malformed("Position must be an object")
    pos = Vec4(*(_float(raw.get(axis, 0.0), f"Position.{axis}") for axis in "xyzw"))
    return SetPosition(_id(data), pos, _speed(data))


def parse_set_depth(payload: Any) -> SetDepth:
    data = parse_body(payload)
    return SetDepth(_id(data), _float(field(data, "Depth", "depth"), "Depth"), _speed(data))


def parse_set_inside_brain(payload: Any) -> SetInsideBrain:
    data = parse_body(payload)
    inside = field(data, "Inside", "inside")
    if not isinstance(inside, bool):
        raise Malformed("Inside must be true or false")
    return SetInsideBrain(_id(data), inside)


# ------------------------------------------------------------------------------ reply parsing (clients)

def load_reply(reply: Any) -> Any:
    """A reply string as JSON when it is JSON; other strings (get_version, stop) as themselves."""
    if not isinstance(reply, str):
        return reply
    try:
        return json.loads(reply)
    except ValueError:
        return reply


def reply_error(data: Any) -> str | None:
    """The error text of a decoded reply (``"Error"`` or the lowercase ``"error"`` form), or None."""
    if isinstance(data, dict):
        text = data.get("Error") or data.get("error")
        return str(text) if text else None
    return None


def read_vec4(data: Any) -> Vec4:
    if not isinstance(data, dict):
        raise ValueError(f"expected a position object, got {data!r}")
    return Vec4(*(float(data.get(axis) or 0.0) for axis in "xyzw"))


def read_vec3(data: Any) -> Vec3:
    if not isinstance(data, dict):
        raise ValueError(f"expected an angles object, got {data!r}")
    return Vec3(*(float(data.get(axis) or 0.0) for axis in "xyz"))
