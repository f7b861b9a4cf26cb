"""The ``zmq://`` descriptor: RigDeck's native ZeroMQ transport (what a rigs file and a rig file may say)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.transport_spec import Option, TransportSpec, boolean, positive_int, positive_number, text
from transports.conn_limits import HANDSHAKE_TIMEOUT, MAX_CONNECTIONS
from transports.zmq.link import ZmqLink
from transports.zmq.server import serve_zmq

DEFAULT_PORT = 11002

HEARTBEAT = Option("heartbeat", positive_number, "heartbeat interval in seconds (default 0.5)")
LIVENESS = Option("liveness", positive_number, "heartbeats missed before the peer counts as lost (default 3)")
HWM = Option("hwm", positive_int, "socket high-water mark in messages (default 1000)")


def _key_needs_keys(options: Mapping[str, Any]) -> str | None:
    """``key``/``key_file`` only pick the rig's keypair; CURVE is on only with the ``keys`` folder."""
    stray = [k for k in ("key", "key_file") if k in options]
    if stray and not options.get("keys"):
        return f"{' and '.join(stray)} need keys (the keys folder that turns CURVE on)"
    return None


ZMQ = TransportSpec(
    scheme="zmq",
    title="RigDeck's ZeroMQ (exactly-once commands, state stream, CURVE)",
    default_port=DEFAULT_PORT,
    link=ZmqLink,
    serve=serve_zmq,
    console_options=(
        Option("server_key", text, "path of the rig's CURVE public key file (turns CURVE on)"),
        Option("client_key", text, "path of the console's CURVE secret key file"),
        HEARTBEAT,
        LIVENESS,
        Option("retry_initial", positive_number, "first resend interval in seconds (default 0.1)"),
        Option("retry_max", positive_number, "longest resend interval in seconds (default 1)"),
        HWM,
        Option("stream", boolean, "false takes commands only, no state stream"),
    ),
    listen_options=(
        Option("keys", text, "keys folder: CURVE on, the rig's keypair and the allowed/ console keys", guards=True),
        Option("key", text, "name of the rig's keypair in the keys folder (default rig)"),
        Option("key_file", text, "explicit secret-key file of the rig"),
        Option("data_dir", text, "folder whose sessions are served after EXPEND (default the rig's data_dir)"),
        Option("files_only", boolean, "true: a file endpoint only (session files for a rig reached over "
                                      "udp/tcp/rpc; commands refused)"),
        HEARTBEAT,
        LIVENESS,
        Option("forget_after", positive_number, "seconds after which a lost console is forgotten (default 30)"),
        Option("max_peers", positive_int, "consoles served at once (default 64)"),
        Option("dedupe_limit", positive_int, "replies kept to answer resent commands (default 4096)"),
        Option("ack_after", positive_number, "seconds before a running command is acknowledged (default 0.02)"),
        Option("batch_interval", positive_number, "seconds state changes are batched (default 0.02)"),
        Option("batch_max", positive_int, "state changes per batch at most (default 500)"),
        Option("queue_limit", positive_int, "state changes queued per console before a snapshot (default 10000)"),
        HWM,
        MAX_CONNECTIONS,
        HANDSHAKE_TIMEOUT,
    ),
    listen_check=_key_needs_keys,
)
