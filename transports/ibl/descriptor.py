"""The ``udp://`` and ``tcp://`` descriptors: iblutil's protocol over its two sockets.

What a rigs file and a rig file may say about an iblutil rig, and which classes serve it; the registry
lists :data:`UDP` and :data:`TCP`.
"""

from __future__ import annotations

from core.transport_spec import ALLOW, Option, TransportSpec, non_negative_number, positive_int, positive_number
from transports.conn_limits import LIMIT_OPTIONS
from transports.ibl.tcp import TcpLink, serve_tcp
from transports.ibl.udp import UdpLink, serve_udp

#: iblutil's port (both sockets)
DEFAULT_PORT = 11001

#: the echo protocol's timing (:class:`transports.ibl.conversation.Tuning`), on either side
TUNING = (
    Option("echo_timeout", positive_number, "seconds to wait for the echo of a non-idempotent message (default 1)"),
    Option("retry_after", positive_number, "first resend interval of a request to a RigDeck rig "
                                           "(never resent to iblutil rigs), in seconds (default 0.2, doubles)"),
    Option("late_window", positive_number, "seconds a late reply is expected after a timeout (default 3)"),
)
WRITE_GAP = Option("write_gap", non_negative_number,
                   "seconds between two writes on the connection, so iblutil reads them apart (default 0.005)")

UDP = TransportSpec(
    scheme="udp",
    title="iblutil UDP (what iblrig speaks)",
    default_port=DEFAULT_PORT,
    link=UdpLink,
    serve=serve_udp,
    console_options=TUNING,
    listen_options=(ALLOW, Option("max_peers", positive_int, "consoles remembered at once (default 1024)"),
                    *TUNING),
)

TCP = TransportSpec(
    scheme="tcp",
    title="iblutil TCP",
    default_port=DEFAULT_PORT,
    link=TcpLink,
    serve=serve_tcp,
    console_options=(*TUNING, WRITE_GAP),
    listen_options=(ALLOW, *TUNING, WRITE_GAP, *LIMIT_OPTIONS),
)
