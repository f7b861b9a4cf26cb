"""The rig side of ``sio://``: serve a rig's manipulator to Pinpoint or any ephys-link 2.x client.

Either by listening (:func:`transports.sio.server.serve_listening`) or, with ``relay: true``, by
connecting out to a ``rigdeck relay`` that clients reach by Pinpoint ID
(:func:`transports.sio.relay.serve_through_relay`). The choice is made here, above both, so the server
and the relay need not know of each other.
"""

from __future__ import annotations

from typing import Any

from transports.sio.relay import serve_through_relay
from transports.sio.server import serve_listening


async def serve_sio(address: Any, service_or_driver: Any, options: dict[str, Any] | None = None) -> Any:
    """Serve ``service.manipulator`` (or a bare Manipulator) on ``address``; see the module docstring.

    Listening options: ``token``, ``allow``, ``push_hz`` (50), ``tolerance`` (0.001 mm), ``api_version``; relay options:
    ``relay: true``, ``pinpoint_id``, ``token``. Returns a handle with ``async close()``.
    """
    options = dict(options or {})
    if options.get("relay"):
        return await serve_through_relay(address, service_or_driver, options)
    return await serve_listening(address, service_or_driver, options)
