"""IBL's iblutil ``io.net`` protocol (schemes ``udp://`` and ``tcp://``), wire-compatible in both roles.

- ``wire``: every byte of a message is encoded, decoded and checked here;
- ``conversation``: one peer's side of the echo protocol as a sans-I/O state machine (timers, resends);
- ``endpoint``: conversations with peers, a rig service behind them, iblutil's Communicator API;
- ``udp`` / ``tcp``: the sockets, each with its console link and its rig server.
"""

from transports.ibl.tcp import TcpLink, serve_tcp
from transports.ibl.udp import UdpLink, serve_udp

__all__ = ["TcpLink", "UdpLink", "serve_tcp", "serve_udp"]
