"""The bytes of IBL's iblutil ``io.net`` protocol: how a message is encoded, decoded and checked.

One message is one JSON array ``[event, *data]``, encoded exactly as Python's ``json.dumps`` does by
default (``", "`` / ``": "`` separators, ASCII-escaped) so that an iblutil peer comparing an echo byte
for byte sees what it sent. ``[0, "ExcType: message", event]`` is an error report. Decoding is strict
where iblutil is lax: a message RigDeck cannot act on is classified (:class:`Malformed`) with a reason
that names the problem, and never raises: not on invalid UTF-8, not on JSON nested 10,000 deep (which
makes ``json.loads`` raise RecursionError), not on a huge integer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from core.checks import is_int
from core.protocol import ExpMessage

#: deeper JSON nesting than this is refused: no iblutil message nests more than a few levels, and a deep
#: one would make every later repr / json.dumps of it (logs, journal) recurse as deep
MAX_DEPTH = 64

#: the largest UDP payload IPv4 can carry (65535 - 8 byte UDP header - 20 byte IP header)
MAX_DATAGRAM = 65_507


class MessageTooLarge(ValueError):
    """An encoded message does not fit in one datagram (iblutil has no fragmentation)."""


def encode(event: int, *data: Any, limit: int | None = MAX_DATAGRAM) -> bytes:
    """``[event, *data]`` as iblutil encodes it. Raises :class:`MessageTooLarge` over ``limit`` bytes."""
    raw = json.dumps([int(event), *data]).encode()
    if limit is not None and len(raw) > limit:
        raise MessageTooLarge(
            f"{ExpMessage(int(event)).name if event else 'error report'} message is {len(raw)} bytes, "
            f"over the UDP limit of {limit} bytes"
        )
    return raw


def error_report(text: str, event: int | None) -> bytes:
    """``[0, "ExcType: message", event]``: what a peer sends when handling a message failed."""
    return json.dumps([0, text, int(event) if event else 0]).encode()[:MAX_DATAGRAM]


# ---------------------------------------------------------------------------- the RigDeck tail
# iblutil has no message ids, so on a network that duplicates, delays or drops datagrams it cannot tell a
# resend from a new request or a late reply from a fresh one. Two RigDeck peers add what is missing after
# the JSON, where an iblutil peer never looks:
#
#   <json>\t\n               a RigDeck rig's reply to a plain request. JSON allows trailing whitespace, so
#                             an iblutil console decodes it as it always did (and echoes it byte for byte);
#                             a RigDeck console learns from it that this rig understands the rest.
#   <json>\t\nq<nonce>.<seq>  a request from a RigDeck console to a rig it knows is RigDeck: the id makes
#                             every request's bytes unique, so a byte-identical copy is a resend or a dup.
#   <json>\t\nr<nonce>.<seq>  the rig's reply (or error report) to that request.
#
# json.dumps never ends a message with whitespace, so no iblutil peer sends the tail, and it never receives
# a tagged request (a console only tags requests to a rig whose replies carried the tail).

#: what a RigDeck peer puts after the JSON of a message (whitespace, so it is invisible to JSON decoders)
TAIL = b"\t\n"
_TAGGED = re.compile(rb"([qr])([0-9a-f]{8}\.[0-9]{1,18})")


@dataclass(frozen=True)
class Tag:
    """What followed the JSON of a message: ``kind`` ``""`` (the bare tail), ``"q"`` (a request with an id)
    or ``"r"`` (the reply to the request with that id)."""

    kind: str
    rid: str = ""


BARE = Tag("")


def split_tail(raw: bytes) -> tuple[bytes, Tag | None]:
    """The JSON part of ``raw`` and its RigDeck tag (None: a plain iblutil message, or not one of ours)."""
    if raw[-1:] == b"]":  # the common case, an iblutil message: no search
        return raw, None
    at = raw.rfind(TAIL)
    if at < 0:
        return raw, None
    rest = raw[at + len(TAIL):]
    if not rest:
        return raw[:at], BARE
    tagged = _TAGGED.fullmatch(rest)
    if tagged is None:
        return raw, None  # someone else's bytes: decode judges them whole
    return raw[:at], Tag(tagged.group(1).decode(), tagged.group(2).decode())


def with_tail(raw: bytes, kind: str = "", rid: str = "") -> bytes:
    """``raw`` with the RigDeck tail: bare, or carrying a request (``q``) or reply (``r``) id."""
    return raw + TAIL + (kind.encode() + rid.encode() if kind else b"")


@dataclass(frozen=True)
class Message:
    """A well-formed message: an event with its data (the array without its first element); ``tag`` is
    its RigDeck tail, if it had one."""

    event: ExpMessage
    data: list[Any]
    tag: Tag | None = None


@dataclass(frozen=True)
class ErrorReport:
    """A peer's ``[0, text, event]``: handling one of our messages failed over there."""

    text: str
    event: int | None
    tag: Tag | None = None


@dataclass(frozen=True)
class Malformed:
    """Something that is not a usable message; ``reason`` says exactly what is wrong with it."""

    reason: str
    event: int | None = None  # the event code, when one could be read (for the error report)


Decoded = Message | ErrorReport | Malformed

_EVENTS = {int(member): member for member in ExpMessage}


def _preview(raw: bytes, width: int = 60) -> str:
    text = repr(raw[:width])
    return text + (f"... ({len(raw)} bytes)" if len(raw) > width else "")


_NESTING = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')  # a JSON string (skipped whole) or a bracket


def nesting_depth(raw: bytes) -> int:
    """How deep the brackets of ``raw`` nest, strings ignored (no recursion, whatever the input)."""
    depth = deepest = 0
    for token in _NESTING.finditer(raw):
        first = token.group()[:1]
        if first in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif first in (b"]", b"}"):
            depth -= 1
    return deepest


def decode(raw: bytes) -> Decoded:
    """Classify one received message. Never raises."""
    if not raw:
        return Malformed("empty datagram")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as ex:
        return Malformed(f"not UTF-8 ({ex.reason} at byte {ex.start}): {_preview(raw)}")
    # the bracket count is a cheap upper bound of the depth: most messages never pay for the scan
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and nesting_depth(raw) > MAX_DEPTH:
        return Malformed(f"JSON nested deeper than {MAX_DEPTH} levels: {_preview(raw)}")
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as ex:  # ValueError: bad JSON, or an integer over 4300 digits
        return Malformed(f"not JSON ({ex}): {_preview(raw)}")
    if not isinstance(msg, list):
        return Malformed(f"expected a JSON array [event, data...], got {type(msg).__name__}: {_preview(raw)}")
    if not msg:
        return Malformed("empty array: expected [event, data...]")
    head = msg[0]
    if type(head) is int and len(msg) > 1:  # the common case, checked first: an event code with data
        event = _EVENTS.get(head)
        if event is not None:
            return Message(event, msg[1:])
    if head in (0, None, "") and not isinstance(head, float):  # 0, false, null, "": an error report
        if len(msg) < 2 or not isinstance(msg[1], str):
            return Malformed(f"error report without a message text: {_preview(raw)}")
        code = msg[2] if len(msg) > 2 and is_int(msg[2]) else None
        return ErrorReport(msg[1], code)
    if isinstance(head, bool):
        return Malformed(f"event must be an event code or name, got JSON {json.dumps(head)}")
    if isinstance(head, int):
        if head < 0 or head > 255 or head.bit_count() != 1:
            kind = "compound" if 0 < head <= 255 else "unknown"
            return Malformed(f"{kind} event code {head} (expected one of {[int(m) for m in ExpMessage]})",
                             head if 0 < head <= 255 else None)
        event = ExpMessage(head)
    elif isinstance(head, str):
        try:
            event = ExpMessage.validate(head, allow_bitwise=False)
        except ValueError:
            return Malformed(f"unknown event name {head!r}")
    else:
        return Malformed(f"event must be an int code or a name, got {type(head).__name__} {head!r}")
    if len(msg) < 2:
        return Malformed(f"{event.name} message carries no data (expected [event, data...])", int(event))
    return Message(event, msg[1:])


def is_error_report_text(raw: bytes) -> bool:
    """iblutil's own test for "do not echo this": the second character is ``0`` (``[0, ...]``)."""
    return len(raw) >= 2 and raw[1:2] == b"0"


def is_one_way(event: int, data: list[Any]) -> bool:
    """An ALYX message that carries a token (``[128, base_url, {user: token}]``) is a delivery: iblutil
    confirms it by its echo and never answers it, and an answer it did not wait for arriving while it
    awaits its next echo makes it close itself. So RigDeck neither sends nor awaits a reply to one."""
    return int(event) == ExpMessage.ALYX and len(data) > 1 and isinstance(data[1], dict) and bool(data[1])
