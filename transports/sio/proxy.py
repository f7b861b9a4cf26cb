"""A core Manipulator driver that forwards to an ephys-link 2.x (or RigDeck) Socket.IO server.

With it a RigDeck rig service drives any hardware ephys-link supports (Sensapex uMp, New Scale, ...):
the rig file names ``manipulator: {driver: ephys-link, url: http://127.0.0.1:3000}`` (or whatever the
service's config calls it), and the rig serves those manipulators again over ``sio://`` / ``rpc://`` with
RigDeck's pushes, observers and STOP ALL.

Differences from the simulation a user may notice:

- it lives in ``transports`` (it needs a socket) but implements the ``core`` interface, so the service
  never knows; while the ephys-link server is down every call raises a ManipulatorError
  (:class:`~transports.sio_client.SioUnavailable`) and the client keeps reconnecting;
- ephys-link has no inside-brain getter: ``is_inside_brain`` reports what was set through this driver;
- ``is_moving`` comes from the position stream (pushes, or 20 Hz polls against ephys-link);
- a move interrupted by ``stop`` returns the halted position, as the Manipulator contract asks, instead of
  ephys-link's "did not reach target" error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.drivers.manipulator import Manipulator, ManipulatorError, PlatformInfo, PositionListener, Vec3, Vec4
from transports.sio.client import DEFAULT_POLL_HZ, DEFAULT_TIMEOUT, SioManipulatorClient, SioRemoteError


class EphysLinkManipulator(Manipulator):
    """Forward every Manipulator call to a Socket.IO manipulator server at ``url``."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 poll_hz: float = DEFAULT_POLL_HZ, client: SioManipulatorClient | None = None) -> None:
        self.client = client or SioManipulatorClient(url, token=token, timeout=timeout, poll_hz=poll_hz)
        self._info: PlatformInfo | None = None

    async def start(self, wait: float = 0.0) -> bool:
        """Connect in the background (reconnecting with backoff); optionally wait up to ``wait`` s for it."""
        await self.client.start()
        if wait > 0:
            return await self.client.wait_connected(wait)
        return self.client.connected

    # ---------------------------------------------------------------------- helpers
    def _known(self, manipulator_id: Any) -> str:
        if not isinstance(manipulator_id, str):
            raise ManipulatorError(f"manipulator id must be a string, got {type(manipulator_id).__name__}")
        if self.client.ids and manipulator_id not in self.client.ids:
            raise ManipulatorError(f"unknown manipulator {manipulator_id!r} (known: {', '.join(self.client.ids)})")
        return manipulator_id

    @staticmethod
    def _stopped_short(ex: SioRemoteError) -> bool:
        """ "did not reach target": a stop interrupted the move (ephys-link zeroes the reply's Position,
        so the caller asks where the stage really is)."""
        return "did not reach target" in ex.text

    # ---------------------------------------------------------------------- the interface
    async def platform_info(self) -> PlatformInfo:
        if self._info is None:
            self._info = await self.client.platform_info()
        return self._info

    async def list_ids(self) -> list[str]:
        return await self.client.list_ids()

    async def position(self, manipulator_id: str) -> Vec4:
        return await self.client.position(self._known(manipulator_id))

    async def angles(self, manipulator_id: str) -> Vec3:
        return await self.client.angles(self._known(manipulator_id))

    async def shank_count(self, manipulator_id: str) -> int:
        return await self.client.shank_count(self._known(manipulator_id))

    async def set_position(self, manipulator_id: str, pos: Vec4, speed: float) -> Vec4:
        try:
            return await self.client.set_position(self._known(manipulator_id), pos, speed)
        except SioRemoteError as ex:
            if not self._stopped_short(ex):
                raise
            return await self.client.position(manipulator_id)

    async def set_depth(self, manipulator_id: str, depth: float, speed: float) -> float:
        try:
            return await self.client.set_depth(self._known(manipulator_id), depth, speed)
        except SioRemoteError as ex:
            if not self._stopped_short(ex):
                raise
            return (await self.client.position(manipulator_id)).w

    async def set_inside_brain(self, manipulator_id: str, inside: bool) -> bool:
        if not isinstance(inside, bool):
            raise ManipulatorError(f"inside must be true or false, got {inside!r}")
        return await self.client.set_inside_brain(self._known(manipulator_id), inside)

    async def stop(self, manipulator_id: str) -> None:
        await self.client.stop(self._known(manipulator_id))

    async def stop_all(self) -> None:
        await self.client.stop_all()

    async def close(self) -> None:
        await self.client.close()

    def is_moving(self, manipulator_id: str) -> bool:
        return self.client.moving.get(self._known(manipulator_id), False)

    def is_inside_brain(self, manipulator_id: str) -> bool:
        return self.client.inside_brain.get(self._known(manipulator_id), False)

    def subscribe(self, listener: PositionListener) -> Callable[[], None]:
        return self.client.subscribe(listener)
