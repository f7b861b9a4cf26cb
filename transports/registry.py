"""Scheme registry: the URI scheme of a rig picks its transport. Adding a transport = one module + one line.

Entries are ``"module:attribute"`` strings imported on first use, so the console starts without loading
ZeroMQ or Socket.IO unless a rig needs them.

- link classes are constructed as ``cls(spec: core.config.RigSpec)`` and are :class:`core.link.RigLink`;
- server starters are ``async def serve(address, service, options) -> handle`` where ``service`` is a rig
  service (a :class:`core.link.MessageHandler` that may also carry drivers and live state) and the handle
  has ``async close()``.
"""

from __future__ import annotations

import importlib
from typing import Any

from core.config import RigSpec
from core.link import RigLink

LINKS: dict[str, str] = {
    "udp": "transports.ibl.udp:UdpLink",
    "tcp": "transports.ibl.tcp:TcpLink",
    "zmq": "transports.zmq:ZmqLink",
    "sio": "transports.sio:SioLink",
    "rpc": "transports.rpc.link:RpcLink",
}

SERVERS: dict[str, str] = {
    "udp": "transports.ibl.udp:serve_udp",
    "tcp": "transports.ibl.tcp:serve_tcp",
    "zmq": "transports.zmq:serve_zmq",
    "sio": "transports.sio:serve_sio",
    "rpc": "transports.rpc.rig_server:serve_rpc",
}


class UnknownScheme(ValueError):
    """No transport is registered for a URI scheme."""


def _resolve(table: dict[str, str], scheme: str) -> Any:
    try:
        target = table[scheme.lower()]
    except KeyError:
        raise UnknownScheme(f"no transport for scheme {scheme!r}; known: {sorted(table)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def make_link(spec: RigSpec) -> RigLink:
    """The console-side link for one rig of the rigs file."""
    return _resolve(LINKS, spec.scheme)(spec)


def server_factory(scheme: str) -> Any:
    """The ``serve`` coroutine function that hosts a rig service on a URI of this scheme."""
    return _resolve(SERVERS, scheme)
