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
- ``FILES`` ``{"prefix": str, "sha256": bool}`` / ``FETCH`` ``{"path", "offset", "length", "crc": bool}``: file
  transfer (idempotent, so never cached for deduplication). Each file listed has ``path``, ``size``,
  ``mtime``, ``sha256`` and ``xxh128`` (XXH3-128, what the console checks its copy with; an earlier rig
  gives none). ``"sha256": false`` lists at once, with only the checksums the rig already knows (``null``
  for the others). A ``FETCH`` reply carries the chunk as a binary
  frame, with its CRC-32 unless ``"crc": false``. ``FETCH`` with ``"crcs": piece_size`` answers the CRC-32
  of each piece of the range instead (a console finding the pieces of a file that arrived damaged).
- ``MARK`` ``{"prefix": str, "files": {path: sha256}, "by": str}``: the console verified these files of a
  session folder; the rig records that in ``_rigdeck_transferred.json`` there (it deletes nothing).
- ``BYE`` ``null``: the console is closing (the rig stops streaming to it at once).

Keys, rig -> console:

- ``ACK`` ``{"re": id}``: the command arrived and is running (sent when the reply takes longer than a
  moment, and for every duplicate of a command still running).
- ``REPLY`` ``{"re": id, "data": [...]}`` or ``{"re": id, "error": "Type: message"}``.
- ``HB`` ``null`` or ``{"seq": n}``: heartbeat, only when nothing else went to that console for one interval;
  ``seq`` (when streaming) is the last state change sent, so a lost final ``MODS`` batch is noticed.
- ``SNAPSHOT`` ``{"seq": n, "struct": {...}, "dropped": n}``: the rig's whole published tree at ``seq``.
- ``MODS`` ``{"first": n, "mods": [...], "dropped": n}``: consecutive changes ``first .. first+len-1``.

Non-finite numbers (NaN, Infinity, -Infinity) travel as the bare JSON tokens ``NaN``, ``Infinity`` and
``-Infinity`` (what Python's json writes and reads), in both directions, and decode back to the same floats.
Why not refuse them: the rig's live state is the truth and the console's mirror must equal it. A sensor that
reads NaN is data. Refusing it at encode would leave that change unsendable, then every snapshot carrying it
too, so the console would never get back in step; turning it into ``null`` or a string would make the mirror
differ from the rig and break a later mod that touches it. Both ends are ours, so the tokens are safe here
(``ts`` and the envelope's integers are still checked: they must be finite and in range).

Hostile input: :func:`decode` raises :class:`WireError` and nothing else, whatever the bytes (deep nesting,
integers of thousands of digits, huge strings, bad UTF-8); the receiving end logs one rate-limited line.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from core.checks import is_int, is_number

#: console -> rig
HELLO, CMD, PING, SYNC, FILES, FETCH, MARK, BYE = "HELLO", "CMD", "PING", "SYNC", "FILES", "FETCH", "MARK", "BYE"
#: rig -> console
ACK, REPLY, HB, SNAPSHOT, MODS = "ACK", "REPLY", "HB", "SNAPSHOT", "MODS"

CONSOLE_KEYS = frozenset({HELLO, CMD, PING, SYNC, FILES, FETCH, MARK, BYE})
RIG_KEYS = frozenset({ACK, REPLY, HB, SNAPSHOT, MODS})

#: hard limit of one JSON frame; a bigger frame is refused without parsing (libzmq also caps whole messages)
MAX_JSON_BYTES = 8 * 1024 * 1024
MAX_SENDER_LEN = 200
#: deepest nesting of a value we accept: far above any real message, far below what would exhaust the stack
#: of whoever walks the value later (deepcopy, the state tree)
MAX_DEPTH = 100
#: ``ts`` is seconds since 1970; beyond this it is not a time (and a huge int would not even make a float)
MAX_TS = 1e12


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
    #: a binary frame; a memoryview of libzmq's buffer when the link receives large frames by reference
    blob: bytes | memoryview | None = None

    def frames(self) -> list[bytes]:
        return encode(self)


def _state_default(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


#: one encoder each, built once: json.dumps with non-default options builds a new encoder per call
_strict = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=True).encode
_lenient = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=True, default=_state_default).encode


def encode(env: Envelope) -> list[bytes]:
    """Frames for one message. Raises WireError (not TypeError) for a value JSON cannot carry."""
    body: dict[str, Any] = {"id": env.id, "sender": env.sender, "key": env.key, "value": env.value, "ts": env.ts}
    if env.to is not None:
        body["to"] = env.to
    try:
        text = _strict(body)
    except (TypeError, ValueError, RecursionError) as ex:
        raise WireError(f"{env.key} value is not JSON-serialisable: {type(ex).__name__}: {ex}"[:300]) from None
    frames = [text.encode("utf-8")]
    if env.blob is not None:
        frames.append(env.blob if isinstance(env.blob, bytes) else bytes(env.blob))
    return frames


def state_json(value: Any) -> str:
    """Published state (a mod, a snapshot's tree) as JSON text, to be spliced by :func:`encode_mods` or
    :func:`encode_snapshot`. Values JSON has no type for become strings (tuples and sets lists, bytes hex):
    the state of a rig must always go out, never raise here. Non-finite floats follow the module rule."""
    try:
        return _lenient(value)
    except (ValueError, RecursionError) as ex:  # a circular or absurdly deep tree: a bug on the rig
        raise WireError(f"state cannot be encoded: {type(ex).__name__}: {ex}"[:300]) from None


def _spliced(msg_id: int, sender: str, key: str, value_text: str, ts: float) -> list[bytes]:
    """An envelope whose value is JSON text already: state is encoded once for every console."""
    return [f'{{"id":{int(msg_id)},"sender":{_strict(sender)},"key":"{key}","value":{value_text},'
            f'"ts":{float(ts)!r}}}'.encode()]


def encode_mods(msg_id: int, sender: str, first: int, mods: list[str], dropped: int, ts: float) -> list[bytes]:
    """A ``MODS`` message from mods already encoded with :func:`state_json`."""
    return _spliced(msg_id, sender, MODS,
                    f'{{"first":{int(first)},"mods":[{",".join(mods)}],"dropped":{int(dropped)}}}', ts)


def encode_snapshot(msg_id: int, sender: str, seq: int, struct: Any, dropped: int, ts: float) -> list[bytes]:
    """A ``SNAPSHOT`` message carrying the rig's whole published tree."""
    return _spliced(msg_id, sender, SNAPSHOT,
                    f'{{"seq":{int(seq)},"struct":{state_json(struct)},"dropped":{int(dropped)}}}', ts)


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True if containers nest deeper than ``limit`` (iterative: a deep value cannot exhaust our stack)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def _show(value: Any) -> str:
    """A short, safe rendering of a bad field for an error text (a huge int has no cheap repr)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, str | bytes | list | dict):
        return f"{type(value).__name__} of length {len(value)}" if len(value) > 40 else repr(value)
    return repr(value)[:40]


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
        body = json.loads(bytes(head).decode("utf-8"))
    except UnicodeDecodeError as ex:
        raise WireError(f"frame is not UTF-8: {ex.reason} at byte {ex.start}") from None
    except RecursionError:
        raise WireError("JSON nested too deeply") from None
    except json.JSONDecodeError as ex:
        raise WireError(f"frame is not JSON: {ex.msg} at char {ex.pos}") from None
    except ValueError as ex:  # e.g. an integer of more digits than Python converts
        raise WireError(f"frame is not acceptable JSON: {str(ex)[:120]}") from None
    if not isinstance(body, dict):
        raise WireError(f"message must be a JSON object, not {type(body).__name__}")
    missing = [f for f in ("id", "sender", "key") if f not in body]
    if missing:
        raise WireError(f"message lacks field(s) {missing}")
    msg_id, sender, key = body["id"], body["sender"], body["key"]
    if not is_int(msg_id) or msg_id < 0 or msg_id >= 2**63:
        raise WireError(f"id must be a non-negative integer below 2**63, not {_show(msg_id)}")
    if not isinstance(sender, str) or not sender or len(sender) > MAX_SENDER_LEN:
        raise WireError(f"sender must be a non-empty string of at most {MAX_SENDER_LEN} chars")
    if not isinstance(key, str):
        raise WireError(f"key must be a string, not {type(key).__name__}")
    if allowed_keys is not None and key not in allowed_keys:
        raise WireError(f"unknown key {_show(key)}; expected one of {sorted(allowed_keys)}")
    ts = body.get("ts", 0.0)
    if not is_number(ts) or not -MAX_TS <= ts <= MAX_TS:
        raise WireError(f"ts must be a finite number of seconds, not {_show(ts)}")  # NaN fails the range too
    to = body.get("to")
    if to is not None and not isinstance(to, str):
        raise WireError(f"to must be a string, not {type(to).__name__}")
    value = body.get("value")
    # a cheap count first: only a frame with that many brackets can nest that deep
    if isinstance(value, dict | list) and head.count(b"[") + head.count(b"{") > MAX_DEPTH and _too_deep(value):
        raise WireError(f"value nested deeper than {MAX_DEPTH}")
    blob = None if len(frames) < 2 else frames[1] if isinstance(frames[1], bytes | memoryview) else bytes(frames[1])
    return Envelope(msg_id, sender, key, value, float(ts), to, blob)


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
        raise WireError(f"{what} must be an integer in [{minimum}, {maximum}], not {_show(value)}")
    return value
