"""Async manipulator client for ephys-link 2.x servers and RigDeck's own Socket.IO server.

- Against a RigDeck server (it answers ``get_rigdeck_info``) positions arrive as ``position`` pushes;
  against a real ephys-link the client polls ``get_position`` (default 20 Hz per manipulator) while anyone
  is subscribed, and infers ``moving`` from successive positions.
- Every call has a timeout (moves: the timeout plus distance/speed); an ephys-link ``"Error"`` text (or
  ``Malformed request.`` / ``Unknown event.``) is raised as :class:`SioRemoteError` carrying that text.
- :meth:`start` keeps the connection up in the background, reconnecting with exponential backoff;
  :meth:`connect` is one attempt (for the command line), raising :class:`SioUnavailable` on failure.
- ``stop``/``stop_all`` are emitted at once on their own: nothing in this client queues them behind
  moves or polls (each call is its own emit; the server answers them concurrently).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import socketio

from core.checks import is_finite
from core.drivers.manipulator import (
    ManipulatorError,
    PlatformInfo,
    PositionListener,
    Vec3,
    Vec4,
    check_position,
    check_speed,
)
from core.link import RemoteError, RequestTimeout, RigError
from core.listeners import Listeners, Unsubscribe
from transports.sio import wire

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 2.0  # Pinpoint's
DEFAULT_POLL_HZ = 20.0
BACKOFF_MIN = 0.2
BACKOFF_MAX = 5.0

ConnectionListener = Callable[[bool, str | None], None]


class SioError(RigError, ManipulatorError):
    """Base of this client's errors: a RigError for links, a ManipulatorError for drivers."""


class SioUnavailable(SioError, ConnectionError):
    """Not connected (or the connection attempt failed / was refused)."""


class SioTimeout(RequestTimeout, SioError):
    """No acknowledgement within the call's timeout."""


class SioRemoteError(RemoteError, SioError):
    """The server answered with an error text (``data`` is the decoded reply, e.g. the halted Position)."""

    def __init__(self, text: str, event: str | None = None, data: Any = None) -> None:
        RemoteError.__init__(self, text)
        self.sio_event = event
        self.data = data


def sio_url(host: str, port: int, pinpoint_id: str | None = None) -> str:
    """The Socket.IO URL of a server, or of the server a relay at host:port knows by ``pinpoint_id``."""
    host = f"[{host}]" if ":" in host else host
    url = f"http://{host}:{port}"
    return f"{url}?pinpoint_id={pinpoint_id}" if pinpoint_id else url


class SioManipulatorClient:
    """One connection to one manipulator server (see the module docstring)."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 poll_hz: float = DEFAULT_POLL_HZ, transports: Iterable[str] = ("websocket",),
                 backoff: tuple[float, float] = (BACKOFF_MIN, BACKOFF_MAX)) -> None:
        if not (math.isfinite(poll_hz) and poll_hz > 0):
            raise ValueError(f"poll_hz must be > 0, got {poll_hz}")
        self.url = url
        self.timeout = float(timeout)
        self.poll_interval = 1.0 / poll_hz
        self.backoff = backoff
        self._token = token
        self._transports = list(transports)
        self._sio: socketio.AsyncClient | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._up = asyncio.Event()
        self._closed = False
        self._refusal: str | None = None
        self._connection_listeners: Listeners[[bool, str | None]] = Listeners("sio connection listener")
        self._control_listeners: Listeners[[bool]] = Listeners("sio control listener")
        self.listeners: Listeners[[str, Vec4, bool]] = Listeners("manipulator position listener")
        #: what the server is: {"Server": "RigDeck", ...} from get_rigdeck_info, or None for ephys-link
        self.server_info: dict[str, Any] | None = None
        self.ids: list[str] = []
        self.positions: dict[str, Vec4] = {}
        self.moving: dict[str, bool] = {}
        self.inside_brain: dict[str, bool] = {}
        self.controller: bool | None = None
        self.connected = False
        self.last_error: str | None = None
        self.updates = 0  # position updates received (pushed or polled)

    # ------------------------------------------------------------------------------ state
    @property
    def push(self) -> bool:
        """True when the server pushes positions (a RigDeck server)."""
        return bool(self.server_info and self.server_info.get("Push"))

    def on_connection(self, listener: ConnectionListener) -> Unsubscribe:
        return self._connection_listeners.add(listener)

    def on_control(self, listener: Callable[[bool], None]) -> Unsubscribe:
        return self._control_listeners.add(listener)

    def subscribe(self, listener: PositionListener) -> Callable[[], None]:
        """``listener(id, pos, moving)`` for every pushed or polled change; polling runs only while
        someone is subscribed."""
        unsubscribe = self.listeners.add(listener)
        self._ensure_poller()
        return unsubscribe

    def _tell(self, up: bool, error: str | None) -> None:
        self.connected = up
        if up:
            self._up.set()
        else:
            self._up.clear()
        if error is not None:
            self.last_error = error
        self._connection_listeners.notify(up, error)

    # ------------------------------------------------------------------------------ connecting
    async def connect(self) -> None:
        """One attempt: connect, identify the server, learn the manipulator ids. Raises SioUnavailable."""
        if self._closed:
            raise SioUnavailable(f"{self.url}: client is closed")
        await self._open()
        self._tell(True, None)
        self._ensure_poller()

    async def start(self) -> None:
        """Keep connected in the background (backoff between attempts); returns at once."""
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def wait_connected(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up.wait(), timeout)
        return self.connected

    async def _supervise(self) -> None:
        delay = self.backoff[0]
        while not self._closed:
            if not self.connected:
                try:
                    await self._open()
                except SioUnavailable as ex:
                    self._tell(False, str(ex))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.backoff[1])
                    continue
                delay = self.backoff[0]
                self._tell(True, None)
                self._ensure_poller()
            await self._lost.wait()
            if not self._closed:
                self._tell(False, f"{self.url}: connection lost")

    async def _open(self) -> None:
        await self._drop_client()
        self._lost.clear()
        self._refusal = None
        # handle_sigint=False: python-socketio's own SIGINT handler would disconnect every client and cancel
        # every task, so the application could not send a last ``stop`` (the CLI does on Ctrl-C)
        sio = socketio.AsyncClient(reconnection=False, logger=False, engineio_logger=False, handle_sigint=False)
        sio.on("disconnect", self._on_disconnect)
        sio.on("connect_error", self._on_connect_error)
        sio.on(wire.POSITION_EVENT, self._on_push)
        sio.on(wire.CONTROL_EVENT, self._on_control)
        auth = {"token": self._token} if self._token else None
        try:
            await asyncio.wait_for(
                sio.connect(self.url, auth=auth, transports=self._transports, wait_timeout=self.timeout),
                self.timeout + 1.0,
            )
        except (TimeoutError, socketio.exceptions.ConnectionError, OSError, ValueError) as ex:
            with contextlib.suppress(Exception):
                await sio.disconnect()
            why = self._refusal or str(ex) or type(ex).__name__
            raise SioUnavailable(f"{self.url}: cannot connect: {why}") from None
        self._sio = sio
        try:
            await self._identify()
        except SioError:
            await self._drop_client()
            raise

    async def _identify(self) -> None:
        """RigDeck server or ephys-link? Then the ids (and for RigDeck, a position snapshot)."""
        try:
            info = await self._raw_call("get_rigdeck_info", "", self.timeout)
        except SioRemoteError:  # ephys-link: "Unknown event."
            info = None
        self.server_info = info if isinstance(info, dict) and info.get("Server") == "RigDeck" else None
        reply = await self._raw_call("get_manipulators", "", self.timeout)
        self.ids = [str(i) for i in reply.get("Manipulators", [])]
        if self.server_info is not None:
            self._control_is(bool(self.server_info.get("Controller")))
            self._apply_positions(self.server_info.get("Positions") or {}, notify=False)

    async def _drop_client(self) -> None:
        sio, self._sio = self._sio, None
        if sio is not None:
            with contextlib.suppress(Exception):
                await sio.disconnect()

    async def close(self) -> None:
        self._closed = True
        self._lost.set()
        for task in (self._supervisor, self._poller):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._supervisor = self._poller = None
        await self._drop_client()
        if self.connected:
            self._tell(False, None)

    async def __aenter__(self) -> SioManipulatorClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------------ socket events
    async def _on_disconnect(self, reason: Any = None) -> None:
        self._lost.set()
        self.connected = False

    async def _on_connect_error(self, data: Any = None) -> None:
        if not isinstance(data, dict):  # a string: the transport failed (nothing listens); no refusal
            return
        message = data.get("message")
        self._refusal = f"refused by server: {message}" if message else "refused by server"

    async def _on_push(self, payload: Any = None) -> None:
        data = wire.load_reply(payload)
        if isinstance(data, dict) and isinstance(data.get("Positions"), dict):
            self._apply_positions(data["Positions"])

    async def _on_control(self, payload: Any = None) -> None:
        data = wire.load_reply(payload)
        if isinstance(data, dict) and "Controller" in data:
            self._control_is(bool(data["Controller"]))

    def _control_is(self, in_control: bool) -> None:
        """Whether this client moves the manipulators now; listeners hear of every change (at connect too:
        a console restarted while the old one still held control watches from its first moment)."""
        changed = self.controller is not in_control
        self.controller = in_control
        if changed:
            self._control_listeners.notify(in_control)

    def _apply_positions(self, entries: dict[str, Any], notify: bool = True) -> None:
        for manipulator_id, entry in entries.items():
            try:
                pos = wire.read_vec4(entry.get("Position"))
            except (ValueError, TypeError, AttributeError):
                continue
            moving = bool(entry.get("Moving"))
            self.inside_brain[str(manipulator_id)] = bool(entry.get("InsideBrain"))
            if notify:
                self._update(str(manipulator_id), pos, moving)
            else:
                self.positions[str(manipulator_id)] = pos
                self.moving[str(manipulator_id)] = moving

    def _update(self, manipulator_id: str, pos: Vec4, moving: bool) -> None:
        self.positions[manipulator_id] = pos
        self.moving[manipulator_id] = moving
        self.updates += 1
        self.listeners.notify(manipulator_id, pos, moving)

    # ------------------------------------------------------------------------------ polling fallback
    def _ensure_poller(self) -> None:
        if self.push or not self.listeners or not self.connected or self._closed:
            return
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        """ephys-link has no push: poll every manipulator at poll_hz while subscribed and connected."""
        loop = asyncio.get_running_loop()
        while self.listeners and self.connected and not self.push and not self._closed:
            tick = loop.time()
            results = await asyncio.gather(*(self._poll_one(i) for i in list(self.ids)), return_exceptions=True)
            if all(isinstance(r, SioUnavailable) for r in results) and results:
                return
            await asyncio.sleep(max(0.0, tick + self.poll_interval - loop.time()))

    async def _poll_one(self, manipulator_id: str) -> None:
        reply = await self._raw_call("get_position", manipulator_id, self.timeout)
        pos = wire.read_vec4(reply.get("Position"))
        previous = self.positions.get(manipulator_id)
        changed = previous is None or previous != pos
        if changed or self.moving.get(manipulator_id):
            self._update(manipulator_id, pos, previous is not None and changed)

    # ------------------------------------------------------------------------------ calls
    async def _raw_call(self, event: str, payload: Any, timeout: float | None) -> Any:
        sio = self._sio
        if sio is None or not sio.connected:
            raise SioUnavailable(f"{self.url}: not connected ({self.last_error or 'connecting'})")
        try:
            reply = await sio.call(event, payload, timeout=timeout if timeout is not None else self.timeout)
        except socketio.exceptions.TimeoutError:
            raise SioTimeout(f"{self.url}: no reply to {event} within {timeout or self.timeout:g} s") from None
        except socketio.exceptions.SocketIOError as ex:
            raise SioUnavailable(f"{self.url}: {event}: {type(ex).__name__}: {ex}") from None
        data = wire.load_reply(reply)
        error = wire.reply_error(data)
        if error:
            raise SioRemoteError(error, event, data)
        return data

    async def call(self, event: str, payload: Any = "", timeout: float | None = None) -> Any:
        """Any event, for tools (``rigdeck manipulators ... raw``); the decoded reply."""
        return await self._raw_call(event, payload, timeout)

    async def version(self) -> str:
        return str(await self._raw_call("get_version", "", None))

    async def platform_info(self) -> PlatformInfo:
        data = await self._raw_call("get_platform_info", "", None)
        return PlatformInfo(name=str(data.get("Name", "")), cli_name=str(data.get("CliName", "")),
                            axes_count=int(data.get("AxesCount", 4)),
                            dimensions=wire.read_vec4(data.get("Dimensions") or {}))

    async def list_ids(self) -> list[str]:
        data = await self._raw_call("get_manipulators", "", None)
        self.ids = [str(i) for i in data.get("Manipulators", [])]
        return list(self.ids)

    async def position(self, manipulator_id: str, timeout: float | None = None) -> Vec4:
        data = await self._raw_call("get_position", manipulator_id, timeout)
        return wire.read_vec4(data.get("Position"))

    async def angles(self, manipulator_id: str, timeout: float | None = None) -> Vec3:
        data = await self._raw_call("get_angles", manipulator_id, timeout)
        return wire.read_vec3(data.get("Angles"))

    async def shank_count(self, manipulator_id: str, timeout: float | None = None) -> int:
        data = await self._raw_call("get_shank_count", manipulator_id, timeout)
        return int(data.get("ShankCount", 0))

    def _move_timeout(self, manipulator_id: str, distance: float | None, speed: float, timeout: float | None) -> float:
        if timeout is not None:
            return timeout
        if distance is None:
            known = self.positions.get(manipulator_id)
            distance = 80.0 if known is None else 0.0  # unknown start: allow a full diagonal of a 20 mm stage
        return self.timeout + 1.2 * distance / speed

    async def set_position(self, manipulator_id: str, pos: Vec4, speed: float, timeout: float | None = None) -> Vec4:
        """Move and wait for the final position (raises SioRemoteError if it stopped short)."""
        check_position(pos)
        speed = check_speed(speed)
        known = self.positions.get(manipulator_id)
        distance = known.distance(pos) if known is not None else None
        body = wire.dumps({"ManipulatorId": manipulator_id, "Position": wire.vec4(pos), "Speed": speed})
        data = await self._raw_call("set_position", body, self._move_timeout(manipulator_id, distance, speed, timeout))
        final = wire.read_vec4(data.get("Position"))
        self._settled(manipulator_id, final)
        return final

    async def set_depth(self, manipulator_id: str, depth: float, speed: float, timeout: float | None = None) -> float:
        if not is_finite(depth):
            raise ManipulatorError(f"depth must be a finite number, got {depth!r}")
        speed = check_speed(speed)
        known = self.positions.get(manipulator_id)
        distance = abs(known.w - depth) if known is not None else None
        body = wire.dumps({"ManipulatorId": manipulator_id, "Depth": float(depth), "Speed": speed})
        data = await self._raw_call("set_depth", body, self._move_timeout(manipulator_id, distance, speed, timeout))
        final = float(data.get("Depth", 0.0))
        known = self.positions.get(manipulator_id)
        if known is not None:
            self._settled(manipulator_id, known.replace(w=final))
        return final

    def _settled(self, manipulator_id: str, final: Vec4) -> None:
        """A move's reply may overtake the server's last push: record the end state now."""
        if self.moving.get(manipulator_id) or self.positions.get(manipulator_id) != final:
            self._update(manipulator_id, final, False)

    async def set_inside_brain(self, manipulator_id: str, inside: bool, timeout: float | None = None) -> bool:
        body = wire.dumps({"ManipulatorId": manipulator_id, "Inside": bool(inside)})
        data = await self._raw_call("set_inside_brain", body, timeout)
        state = bool(data.get("State"))
        self.inside_brain[manipulator_id] = state
        return state

    async def stop(self, manipulator_id: str, timeout: float | None = None) -> None:
        _stop_reply("stop", await self._raw_call("stop", manipulator_id, timeout))

    async def stop_all(self, timeout: float | None = None) -> None:
        _stop_reply("stop_all", await self._raw_call("stop_all", "", timeout))

    async def take_control(self, timeout: float | None = None) -> bool:
        """RigDeck servers only: become the controller (ephys-link has one client only, always in control)."""
        data = await self._raw_call("take_control", "", timeout)
        self._control_is(bool(data.get("Controller")))
        return bool(self.controller)


def _stop_reply(event: str, reply: Any) -> None:
    """stop/stop_all answer a bare string: empty on success, ephys-link's ``"ExcType: message"`` otherwise."""
    if reply not in ("", None):
        raise SioRemoteError(str(reply), event, reply)


async def stop_everything(clients: Iterable[SioManipulatorClient], timeout: float = 1.0) -> dict[str, str | None]:
    """STOP ALL on every connected manipulator server at once; {url: None or the error text}."""
    clients = list(clients)
    results = await asyncio.gather(*(c.stop_all(timeout) for c in clients), return_exceptions=True)
    return {c.url: (None if r is None else str(r)) for c, r in zip(clients, results, strict=True)}
