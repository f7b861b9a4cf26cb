"""The ``rpc://`` descriptor: sipyco pc_rpc + sync_struct (what a rigs file and a rig file may say)."""

from __future__ import annotations

from typing import Any

from core.checks import is_int
from core.transport_spec import (
    ALLOW,
    Option,
    OptionError,
    PathRule,
    TransportSpec,
    boolean,
    free_text,
    positive_int,
    text,
)
from transports.conn_limits import LIMIT_OPTIONS
from transports.rpc.link import RpcLink, parse_notifier
from transports.rpc.rig_server import serve_rpc

#: ARTIQ's master serves pc_rpc on 3251 (and publishes on 3250)
DEFAULT_PORT = 3251


def _notifier(value: Any) -> Any:
    try:
        parse_notifier(value, 1)
    except ValueError as ex:
        raise OptionError(str(ex).removeprefix(f"notifier {value!r}: ")) from None
    return value


def _notify_port(value: Any) -> Any:
    if value is False or (is_int(value) and 0 <= value <= 65535):
        return value
    raise OptionError(f"must be a TCP port 0..65535 or false, not {value!r}")


RPC = TransportSpec(
    scheme="rpc",
    title="sipyco pc_rpc + sync_struct (ARTIQ controllers)",
    default_port=DEFAULT_PORT,
    link=RpcLink,
    serve=serve_rpc,
    console_path=PathRule.REQUIRED,
    listen_path=PathRule.OPTIONAL,
    path_doc="target",
    console_options=(
        Option("notifier", _notifier, "sync_struct notifier to mirror: 'name' (on port+1) or 'port/name'"),
    ),
    listen_options=(
        ALLOW,
        Option("target", text, "name of the rig's pc_rpc target when the URI has no path (default rig)"),
        Option("notify_port", _notify_port, "port of the sync_struct notifier (default port+1; false: none)"),
        Option("notifier", text, "name the live state is published under (default state)"),
        Option("allow_parallel", boolean, "true: calls from several clients run concurrently"),
        Option("queue_limit", positive_int, "mods queued per subscriber before it is dropped (default 1000)"),
        Option("description", free_text, "what sipyco's get_rpc_id answers"),
        Option("line_limit", positive_int, "longest request line read, in bytes (default 262144)"),
        *LIMIT_OPTIONS,
    ),
)
