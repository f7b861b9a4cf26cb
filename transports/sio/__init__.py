"""ephys-link Socket.IO as a RigDeck transport (scheme ``sio://host:port``, default port 3000).

The two roles: :class:`SioLink` (console side, a manipulator rig) and :func:`serve_sio` (rig side, serves
``service.manipulator`` to Pinpoint or any ephys-link 2.x client). The pieces live in small modules:
``wire`` (payloads), ``api`` (the ephys-link event table), ``server`` (listening), ``relay`` (reach by
Pinpoint ID), ``rig_server`` (picks one of the two), ``client``, ``link`` and ``proxy`` (a core Manipulator
driver forwarding to an ephys-link server).

Options of both sides: :data:`transports.sio.descriptor.SIO` (what the registry lists).
"""

from __future__ import annotations

from transports.sio.client import (
    SioError,
    SioManipulatorClient,
    SioRemoteError,
    SioTimeout,
    SioUnavailable,
    stop_everything,
)
from transports.sio.link import SioLink
from transports.sio.rig_server import serve_sio
from transports.sio.server import ManipulatorApi, SioServer

__all__ = [
    "ManipulatorApi", "SioError", "SioLink", "SioManipulatorClient", "SioRemoteError", "SioServer",
    "SioTimeout", "SioUnavailable", "serve_sio", "stop_everything",
]
