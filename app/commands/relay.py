"""``rigdeck relay``: pair manipulator servers that connect out with the clients that look for them.

For rigs that cannot be reached directly (a firewall, another network): the rig's manipulator server
connects out to this relay (``{uri: sio://RELAY:PORT, relay: true}`` in its rig file) and ``rigdeck serve``
prints the URI to use, ``sio://RELAY:PORT/PINPOINT_ID``. Clients reach it through the relay by that ID::

    rigdeck manipulators sio://RELAY:PORT/PINPOINT_ID info

The relay only pairs and forwards (ephys-link's former proxy mode, with RigDeck's pushes and observers).
With a token (``--token-file`` or ``$RIGDECK_SIO_TOKEN``) servers and clients alike must present it.
It listens on loopback unless ``--host`` says otherwise; beyond loopback it needs a token, or ``--open`` to
accept anyone (logged loudly): the binding rule of every rig URI.

Connection limits: at most ``--max-connections`` at once (default 128), a connection must send a complete
HTTP request within 10 s and is closed after 60 s without a byte (live clients answer pings every 25 s).

Output, one line each, flushed: ``READY relay sio://HOST:PORT`` once listening, ``STOPPED relay`` after a
clean shutdown (SIGINT/SIGTERM). A port in use or a bad token file: one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from app.commands.manipulators import UsageError, read_token
from app.commands.serve import on_stop_signals
from app.process_limits import limit_loop_errors, raise_open_file_limit
from core.transport_spec import is_loopback
from transports.conn_limits import DEFAULT_MAX_CONNECTIONS
from transports.sio.relay import DEFAULT_PORT, SioRelay
from transports.sio.server import listen_guard

log = logging.getLogger(__name__)

EXIT_USAGE = 2


async def relay(host: str, port: int, token: str | None, stop: asyncio.Event | None = None,
                max_connections: int = DEFAULT_MAX_CONNECTIONS) -> int:
    """Serve until ``stop`` is set or SIGINT/SIGTERM arrives."""
    limit_loop_errors()
    stop = stop or asyncio.Event()
    server = SioRelay(token=token, guard=listen_guard("relay", {"max_connections": max_connections}))
    try:
        await server.start(host, port)
    except OSError as ex:
        print(f"rigdeck relay: cannot listen on {host}:{port}: {ex.strerror or ex}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    remove_signal_handlers = on_stop_signals(stop)
    netloc = f"[{host}]:{server.port}" if ":" in host else f"{host}:{server.port}"
    print(f"READY relay sio://{netloc}", flush=True)
    try:
        await stop.wait()
    finally:
        remove_signal_handlers()
        await server.close()
        print("STOPPED relay", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        token = read_token(args.token_file)
    except UsageError as ex:
        print(f"rigdeck relay: {ex}", file=sys.stderr)
        return EXIT_USAGE
    if not is_loopback(args.host) and not token:
        if not args.open:
            print(f"rigdeck relay: listening on {args.host} (not loopback) with no token: anyone who can reach it "
                  "could drive the manipulators behind it; give --token-file (or $RIGDECK_SIO_TOKEN), or --open "
                  "to accept anyone", file=sys.stderr)
            return EXIT_USAGE
        log.warning("!!! relay on %s listens OPENLY with no token (--open): anyone who can reach this port can "
                    "drive the manipulators behind it !!!", args.host)
    raise_open_file_limit()
    return asyncio.run(relay(args.host, args.port, token, max_connections=args.max_connections))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "relay", help="relay for manipulator servers reached by Pinpoint ID (ephys-link's proxy mode)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free)")
    parser.add_argument("--token-file", metavar="PATH", help="file holding the shared token (default: "
                        "$RIGDECK_SIO_TOKEN; none: no token required)")
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                        help=f"connections taken at once, servers and clients together; more are closed on "
                             f"arrival (default {DEFAULT_MAX_CONNECTIONS})")
    parser.add_argument("--open", action="store_true",
                        help="listen beyond loopback with no token (accept anyone; warned at start-up)")
    parser.set_defaults(func=run)
