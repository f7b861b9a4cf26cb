"""``sio://host:port`` rigs (role manipulator) as RigLinks: online state, position mods, move/stop access.

Manipulator rigs take no session messages (``RigSpec.in_sessions`` is false for them). So that an engine
or a status view can still treat them like any rig, ``request`` answers harmlessly:

- ``EXPSTATUS`` -> ``[0]`` (ExpStatus.CONNECTED) after a real ``get_version`` round trip (a liveness probe
  that also measures the rtt);
- ``EXPINFO`` -> ``[0, {"main_sync": False, "role": "manipulator", "exp_ref": None, "manipulators": [...],
  "server": "RigDeck 0.1.0" | "ephys-link 2.3.6"}]``, so a session engine can include it or skip it;
- ``ALYX`` -> ``[None, {}]`` (no token is ever sent to a manipulator server);
- every other session message raises :class:`core.link.RigError` saying manipulator rigs take none.

Live state: the link pushes (``pushes_status``) sync_struct mods relative to the rig's own tree: an
``init`` with ``{"status": 0, "role": "manipulator", "main_sync": False, "manipulators": {...}}`` on each
(re)connection, then ``setitem`` on ``["manipulators"]`` per position change. ``link.manipulators`` is the
:class:`SioManipulatorClient` the GUI and CLI use to move and stop.

Options in remote_rigs.yaml: ``token`` (shared secret, never logged), ``timeout`` (seconds per call, default 2).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from core.config import RigSpec
from core.drivers.manipulator import Vec4
from core.link import LinkClosed, LinkState, RigError, RigLink
from core.protocol import ExpMessage, ExpStatus
from transports.sio.client import DEFAULT_TIMEOUT, SioManipulatorClient, SioUnavailable, sio_url

log = logging.getLogger(__name__)


class SioLink(RigLink):
    """A Socket.IO manipulator server (RigDeck or ephys-link 2.x) as a rig."""

    pushes_status = True

    def __init__(self, spec: RigSpec) -> None:
        super().__init__(spec.name, spec.uri)
        self.spec = spec
        self.timeout = float(spec.options.get("timeout", DEFAULT_TIMEOUT))
        token = spec.options.get("token")
        self.manipulators = SioManipulatorClient(
            sio_url(spec.address.host, spec.address.port, spec.address.path or None),  # a path: ID at a relay
            token=str(token) if token else None,
            timeout=self.timeout,
        )
        self.manipulators.on_connection(self._on_connection)
        self._unsubscribe = self.manipulators.subscribe(self._on_position)
        #: set first thing in close(): a call still waiting for its ack then fails at once with LinkClosed
        #: (python-socketio would keep it waiting until its own timeout)
        self._closing = asyncio.Event()

    async def connect(self) -> None:
        self.set_state(LinkState.CONNECTING)
        await self.manipulators.start()  # never raises: retries with backoff in the background

    async def close(self) -> None:
        self._closing.set()
        self._unsubscribe()
        await self.manipulators.close()
        self.set_state(LinkState.CLOSED)

    # ---------------------------------------------------------------------- state
    def _entry(self, manipulator_id: str, pos: Vec4, moving: bool) -> dict[str, Any]:
        return {"x": pos.x, "y": pos.y, "z": pos.z, "w": pos.w, "moving": moving,
                "inside_brain": self.manipulators.inside_brain.get(manipulator_id, False)}

    def server_text(self) -> str:
        info = self.manipulators.server_info
        if info:
            return f"RigDeck {info.get('Version', '?')}"
        return "ephys-link"

    def _on_connection(self, up: bool, error: str | None) -> None:
        if not up:
            self.set_state(LinkState.UNREACHABLE, error)
            return
        client = self.manipulators
        manipulators = {
            i: self._entry(i, client.positions[i], client.moving.get(i, False))
            for i in client.ids if i in client.positions
        }
        self.emit_update({"action": "init", "struct": {
            "status": int(ExpStatus.CONNECTED), "role": "manipulator", "main_sync": False,
            "server": self.server_text(), "manipulators": manipulators,
        }})
        self.set_state(LinkState.ONLINE)

    def _on_position(self, manipulator_id: str, pos: Vec4, moving: bool) -> None:
        self.emit_update({"action": "setitem", "path": ["manipulators"], "key": manipulator_id,
                          "value": self._entry(manipulator_id, pos, moving)})

    async def _unless_closed(self, call: Any) -> Any:
        """Await ``call``, or fail with LinkClosed as soon as close() begins."""
        task = asyncio.ensure_future(call)
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({task, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
        if not task.done():
            task.cancel()
            raise LinkClosed(f"{self.name}: link closed")
        return task.result()

    # ---------------------------------------------------------------------- session messages
    async def request(self, event: ExpMessage, *data: Any, timeout: float | None = None) -> list[Any]:
        event = ExpMessage(event)
        if event is ExpMessage.ALYX:
            return [None, {}]
        if event not in (ExpMessage.EXPSTATUS, ExpMessage.EXPINFO):
            raise RigError(f"{self.name}: manipulator rigs take no session messages ({event.name})")
        if self._closing.is_set():
            raise LinkClosed(f"{self.name}: link closed")
        start = time.monotonic()
        try:
            version = await self._unless_closed(self.manipulators.version()) if self.manipulators.connected else None
        except SioUnavailable:
            version = None
        if version is None:
            raise SioUnavailable(f"{self.name}: not connected ({self.manipulators.last_error or 'connecting'})")
        self.note_reply(time.monotonic() - start)
        status = int(ExpStatus.CONNECTED)
        if event is ExpMessage.EXPSTATUS:
            return [status]
        server = self.server_text() if self.manipulators.server_info else f"ephys-link {version}"
        return [status, {"main_sync": False, "role": "manipulator", "exp_ref": None,
                         "manipulators": list(self.manipulators.ids), "server": server}]
