"""The ``sio://`` descriptor: ephys-link Socket.IO manipulator servers (what a rigs file and a rig file may say)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.transport_spec import (
    ALLOW,
    Option,
    OptionError,
    PathRule,
    TransportSpec,
    boolean,
    free_text,
    positive_number,
    text,
)
from transports.conn_limits import LIMIT_OPTIONS
from transports.sio.link import SioLink
from transports.sio.rig_server import serve_sio
from transports.sio.server import DEFAULT_PORT
from transports.sio.wire import PINPOINT_ID

TOKEN = Option("token", text, "shared secret clients must present (never logged)", guards=True)
#: options that only mean something to a server that listens (``relay: true`` connects out instead)
LISTENING_ONLY = ("allow", *(o.name for o in LIMIT_OPTIONS))
#: options that only mean something with ``relay: true``
RELAY_ONLY = ("pinpoint_id",)


def _pinpoint_id(value: Any) -> Any:
    if not isinstance(value, str) or not PINPOINT_ID.match(value):
        raise OptionError(f"must be 3-32 letters, digits, - or _, not {value!r}")
    return value


def _path(path: str) -> str | None:
    return None if PINPOINT_ID.match(path) else "must be a Pinpoint ID (3-32 letters, digits, - or _)"


def _relay_rules(options: Mapping[str, Any]) -> str | None:
    """``allow`` filters who connects to a listening server; through a relay nobody connects to us."""
    if options.get("relay"):
        moot = [k for k in LISTENING_ONLY if k in options]
        return f"{', '.join(moot)} do(es) not apply with relay: true (the server connects out)" if moot else None
    stray = [k for k in RELAY_ONLY if k in options]
    return f"{', '.join(stray)} need(s) relay: true" if stray else None


SIO = TransportSpec(
    scheme="sio",
    title="ephys-link Socket.IO (manipulators; Pinpoint)",
    default_port=DEFAULT_PORT,
    link=SioLink,
    serve=serve_sio,
    console_path=PathRule.OPTIONAL,
    path_doc="Pinpoint ID of a manipulator server at a rigdeck relay",
    path_check=_path,
    console_options=(TOKEN,),
    listen_options=(
        TOKEN,
        ALLOW,
        Option("push_hz", positive_number, "position pushes per second at most while moving (default 50)"),
        Option("tolerance", positive_number, "mm a move may miss its target by before it is an error (0.001)"),
        Option("api_version", free_text, "the ephys-link version get_version answers"),
        Option("relay", boolean, "true: connect out to a rigdeck relay at this URI instead of listening"),
        Option("pinpoint_id", _pinpoint_id, "with relay: the ID clients reach this server by (default: random)"),
        *LIMIT_OPTIONS,
    ),
    listen_check=_relay_rules,
    listens=lambda options: not options.get("relay"),
)
