"""Wire format of RigDeck's native ZeroMQ transport (``zmq://``): JSON envelopes, never pickle.

Every message is one JSON object ``{"id", "sender", "key", "value", "ts"}`` (plus ``"to"`` when a console
addresses one incarnation of a rig), optionally followed by one binary frame (file chunks), so bulk data
is not base64-inflated. ``id`` is an int counted per sender; ``sender`` is the sending instance
(``name#epoch``: a restarted process is a new sender, so a restarted rig is noticed at once); ``ts`` is
the sender's wall clock, informational only (clocks of rig computers are never trusted for ordering).

Keys, console -> rig:

- ``HELLO`` ``{"stream": bool}``: introduce ourselves; the rig answers ``SNAPSHOT`` when ``stream``.
- ``CMD`` ``{"event": int, "data": [...]}``: a session message, executed exactly once per (sender, id).
- ``PING`` ``null``: sent only when nothing else went out for one heartbeat interval.
- ``SYNC`` ``null``: ask for a fresh ``SNAPSHOT`` (after a gap in sequence numbers).
- ``FILES`` ``{"prefix": str}`` / ``FETCH`` ``{"path", "offset", "length"}``: file transfer (idempotent,
  so never cached for deduplication).
- ``BYE`` ``null``: the console is closing (the rig stops streaming to it at once).

Keys, rig -> console:

- ``ACK`` ``{"re": id}``: the command arrived and is running (sent when the reply takes longer than a
  moment, and for every duplicate of a command still running).
- ``REPLY`` ``{"re": id, "data": [...]}`` or ``{"re": id, "error": "Type: message"}``.
- ``HB`` ``null`` or ``{"seq": n}``: heartbeat, only when nothing else went to that console for one interval;
  ``seq`` (when streaming) is the last state change sent, so a lost final ``MODS`` batch is noticed.
- ``SNAPSHOT`` ``{"seq": n, "struct": {...}, "dropped": n}``: the rig's whole published tree at ``seq``.
- ``MODS`` ``{"first": n, "mods": [...], "dropped": n}``: consecutive changes ``first .. first+len-1``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from core.checks import is_finite, is_int

#: console -> rig
HELLO, CMD, PING, SYNC, FILES, FETCH, BYE = "HELLO", "CMD", "PING", "SYNC", "FILES", "FETCH", "BYE"
#: rig -> console
ACK, REPLY, HB, SNAPSHOT, MODS = "ACK", "REPLY", "HB", "SNAPSHOT", "MODS"

CONSOLE_KEYS = frozenset({HELLO, CMD, PING, SYNC, FILES, FETCH, BYE})
RIG_KEYS = frozenset({ACK, REPLY, HB, SNAPSHOT, MODS})

#: hard limit of one JSON frame; a bigger frame is refused without parsing (libzmq also caps whole messages)
MAX_JSON_BYTES = 8 * 1024 * 1024
MAX_SENDER_LEN = 200


class WireError(ValueError):
    """A frame that is not a valid RigDeck ZeroMQ message; the text says what is wrong."""


@dataclass
class Envelope:
    """One decoded message."""

    id: int
    sender: str
    key: str
    value: Any = None
    ts: float = field(default_factory=time.time)
    to: str | None = None
    blob: bytes | None = None

    def frames(self) -> list[bytes]:
        return encode(self)


def _reject_constant(name: str) -> Any:
    raise WireError(f"non-standard JSON constant {name}")


def encode(env: Envelope) -> list[bytes]:
    """Frames for one message. Raises WireError (not TypeError) for a value JSON cannot carry."""
    body: dict[str, Any] = {"id": env.id, "sender": env.sender, "key": env.key, "value": env.value, "ts": env.ts}
    if env.to is not None:
        body["to"] = env.to
    try:
        text = json.dumps(body, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as ex:
        raise WireError(f"{env.key} value is not JSON-serialisable: {ex}") from None
    frames = [text.encode("utf-8")]
    if env.blob is not None:
        frames.append(bytes(env.blob))
    return frames


def decode(frames: list[bytes], allowed_keys: frozenset[str] | None = None) -> Envelope:
    """Parse and validate one message (the frames after any routing id); WireError names the problem."""
    if not frames:
        raise WireError("empty message")
    if len(frames) > 2:
        raise WireError(f"{len(frames)} frames (expected a JSON frame and at most one binary frame)")
    head = frames[0]
    if len(head) > MAX_JSON_BYTES:
        raise WireError(f"JSON frame of {len(head)} bytes exceeds {MAX_JSON_BYTES}")
    try:
        body = json.loads(bytes(head).decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as ex:
        raise WireError(f"frame is not UTF-8: {ex.reason} at byte {ex.start}") from None
    except RecursionError:
        raise WireError("JSON nested too deeply") from None
    except json.JSONDecodeError as ex:
        raise WireError(f"frame is not JSON: {ex.msg} at char {ex.pos}") from None
    if not isinstance(body, dict):
        raise WireError(f"message must be a JSON object, not {type(body).__name__}")
    missing = [f for f in ("id", "sender", "key") if f not in body]
    if missing:
        raise WireError(f"message lacks field(s) {missing}")
    msg_id, sender, key = body["id"], body["sender"], body["key"]
    if not is_int(msg_id) or msg_id < 0 or msg_id >= 2**63:
        raise WireError(f"id must be a non-negative integer, not {msg_id!r:.40}")
    if not isinstance(sender, str) or not sender or len(sender) > MAX_SENDER_LEN:
        raise WireError(f"sender must be a non-empty string of at most {MAX_SENDER_LEN} chars")
    if not isinstance(key, str):
        raise WireError(f"key must be a string, not {type(key).__name__}")
    if allowed_keys is not None and key not in allowed_keys:
        raise WireError(f"unknown key {key!r:.40}; expected one of {sorted(allowed_keys)}")
    ts = body.get("ts", 0.0)
    if not is_finite(ts):
        raise WireError(f"ts must be a number, not {ts!r:.40}")
    to = body.get("to")
    if to is not None and not isinstance(to, str):
        raise WireError(f"to must be a string, not {type(to).__name__}")
    blob = bytes(frames[1]) if len(frames) == 2 else None
    return Envelope(msg_id, sender, key, body.get("value"), float(ts), to, blob)


def require_dict(env: Envelope, *fields: str) -> dict[str, Any]:
    """``env.value`` as a dict holding ``fields``; WireError otherwise."""
    value = env.value
    if not isinstance(value, dict):
        raise WireError(f"{env.key} value must be an object, not {type(value).__name__}")
    missing = [f for f in fields if f not in value]
    if missing:
        raise WireError(f"{env.key} value lacks {missing}")
    return value


def require_int(value: Any, what: str, minimum: int = 0, maximum: int = 2**62) -> int:
    if not is_int(value) or not minimum <= value <= maximum:
        raise WireError(f"{what} must be an integer in [{minimum}, {maximum}], not {value!r:.40}")
    return value
