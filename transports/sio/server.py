"""ephys-link 2.x compatible Socket.IO server hosting a core Manipulator driver (python-socketio on aiohttp).

An unmodified ephys-link client (Pinpoint) sees the same events, payload forms and reply strings. Where
ephys-link misbehaves this server does better: unknown ids (``"-1"`` included) are errors, NaN/Infinity and
non-string payloads are malformed requests, a missing or extra payload gets a reply instead of silence.

Beyond ephys-link:

- ``position`` push: a JSON string ``{"Positions": {id: {"Position": {x,y,z,w}, "Moving": b, "InsideBrain": b}}}``
  broadcast while anything moves (at most ``push_hz`` per second, default 50) and at once when a move
  starts or ends or the inside-brain flag changes;
- several clients: the first is the controller, the others are observers (they read, receive pushes and
  may STOP — stopping is a safety command — but their move commands are refused with
  ``NotInControl: ...``). ``take_control`` makes the sender the controller (the old one gets a ``control``
  event); when the controller leaves, the oldest observer is promoted;
- ``get_rigdeck_info`` tells a RigDeck client it may rely on pushes (an ephys-link server answers
  ``Unknown event.``, so clients fall back to polling);
- an optional shared token (``auth={"token": ...}`` or ``?token=`` in the URL), refused and logged (without
  the token) when missing or wrong; an optional ``allow`` list of peer addresses (others are refused).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import socketio
from aiohttp import web

from core.drivers.manipulator import Manipulator, ManipulatorError, Vec4
from transports.access import AllowList, allow_list
from transports.conn_limits import ConnectionGuard, established, guard_factory
from transports.rate_log import RateLimitedLog
from transports.read_size import read_at_most
from transports.sio import wire
from transports.sio.api import DEFAULT_TOLERANCE, LOG_INTERVAL, ManipulatorApi, error_of
from transports.sio.packet_guard import BAD_PACKET, GuardedPacket

log = logging.getLogger(__name__)

DEFAULT_PORT = 3000
DEFAULT_PUSH_HZ = 50.0
#: seconds without a byte from a client before its connection is closed: a live Socket.IO client answers
#: the server's ping every 25 s (python-socketio's ping interval), and a long poll lasts as long
IDLE_TIMEOUT = 60.0


class NotInControl(ManipulatorError):
    """An observer sent a move command."""


def peer_address(environ: dict[str, Any]) -> str:
    request = environ.get("aiohttp.request")
    remote = getattr(request, "remote", None)
    return str(remote or environ.get("REMOTE_ADDR", "?"))


def offered_token(environ: dict[str, Any], auth: Any) -> str | None:
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return auth["token"]
    values = parse_qs(environ.get("QUERY_STRING", "")).get("token")
    return values[0] if values else None


class PositionPusher:
    """Coalesces driver position callbacks into ``position`` pushes: at most ``hz`` per second while
    moving, immediately when a manipulator starts or stops moving or its inside-brain flag changes."""

    def __init__(self, driver: Manipulator, send: Callable[[str], Awaitable[None]], hz: float) -> None:
        self.driver = driver
        self._send = send
        self.interval = 1.0 / hz
        self._pending: dict[str, tuple[Vec4, bool]] = {}
        self._moving: dict[str, bool] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._last = 0.0
        self._unsubscribe = driver.subscribe(self._on_position)
        self._rlog = RateLimitedLog(log, LOG_INTERVAL)
        self.pushes = 0

    def _on_position(self, manipulator_id: str, pos: Vec4, moving: bool) -> None:
        self._pending[manipulator_id] = (pos, moving)
        loop = asyncio.get_running_loop()
        if self._moving.get(manipulator_id) != moving or not moving:
            self._schedule(loop, 0.0)
        else:
            self._schedule(loop, max(0.0, self._last + self.interval - loop.time()))

    def touch(self, manipulator_id: str) -> None:
        """Something other than position changed (inside-brain): push the current state now."""
        loop = asyncio.get_running_loop()
        loop.create_task(self._touch(manipulator_id))

    async def _touch(self, manipulator_id: str) -> None:
        try:
            pos = await self.driver.position(manipulator_id)
        except ManipulatorError:
            return
        self._pending[manipulator_id] = (pos, self.driver.is_moving(manipulator_id))
        self._schedule(asyncio.get_running_loop(), 0.0)

    def _schedule(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        if self._timer is not None:
            if delay > 0:
                return
            self._timer.cancel()
        self._timer = loop.call_later(delay, self._flush) if delay > 0 else loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._timer = None
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        positions = {}
        for manipulator_id, (pos, moving) in pending.items():
            self._moving[manipulator_id] = moving
            try:
                inside = self.driver.is_inside_brain(manipulator_id)
            except ManipulatorError:
                inside = False
            entry = {"Position": wire.vec4(pos), "Moving": moving, "InsideBrain": inside}
            if not wire.finite(entry):  # left out, so the others (and its next finite position) still go
                self._rlog.warning(f"nan {manipulator_id}", "sio: manipulator %s reported a position that is not "
                                   "finite (%s); left out of the position push", manipulator_id, entry["Position"])
                continue
            positions[manipulator_id] = entry
        if not positions:
            return
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        self.pushes += 1
        loop.create_task(self._send(wire.dumps({"Positions": positions, "Time": time.time()})))

    def snapshot_entry(self, manipulator_id: str, pos: Vec4) -> dict[str, Any]:
        return {"Position": wire.vec4(pos), "Moving": self.driver.is_moving(manipulator_id),
                "InsideBrain": self.driver.is_inside_brain(manipulator_id)}

    def close(self) -> None:
        self._unsubscribe()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@web.middleware
async def _lean_reads(request: web.Request, handler: Callable[..., Awaitable[Any]]) -> Any:
    """Every connection (the websocket's included: its upgrade request passes here) reads 64 KiB at most
    per call instead of asyncio's 256 KiB (see :mod:`transports.read_size`); a complete request ends the
    connection's handshake time (see :mod:`transports.conn_limits`): a half-sent one is closed."""
    read_at_most(request.transport)
    established(request.transport)
    return await handler(request)


def sio_app(connect: Callable[..., Awaitable[Any]], disconnect: Callable[..., Awaitable[Any]],
            event: Callable[..., Awaitable[Any]], rlog: RateLimitedLog) -> tuple[socketio.AsyncServer, web.Application]:
    """A Socket.IO server on an aiohttp app, with one catch-all event handler (as ephys-link has).

    python-socketio hands a client's *event* named ``connect`` or ``disconnect`` to the same handlers as the
    real connection and disconnection; a client could so fake its own departure (and hand over control) or
    crash the handler with a payload where the environ should be. The real calls come while the client is
    not (or no longer) connected in python-socketio's books, an event only while it is: that tells them
    apart, and such an event is answered ``Unknown event.``. Packets python-socketio could not decode
    arrive as :data:`BAD_PACKET` events (see :mod:`transports.sio.packet_guard`), answered ``Malformed
    request.``."""
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False,
                               serializer=GuardedPacket)
    app = web.Application(middlewares=[_lean_reads])
    sio.attach(app)

    def emitted(name: str, sid: str) -> bool:
        if not sio.manager.is_connected(sid, "/"):
            return False
        rlog.warning(f"reserved {name}", "sio: refused an event named %r emitted by client %s", name, sid)
        return True

    async def on_connect(sid: str, environ: Any = None, auth: Any = None, *_: Any) -> Any:
        return wire.UNKNOWN_EVENT if emitted("connect", sid) else await connect(sid, environ, auth)

    async def on_disconnect(sid: str, reason: Any = None, *_: Any) -> Any:
        return wire.UNKNOWN_EVENT if emitted("disconnect", sid) else await disconnect(sid, reason)

    async def on_event(name: str, sid: str, *args: Any) -> Any:
        if name == BAD_PACKET:
            rlog.warning("bad packet", "sio: malformed packet from client %s: %s", sid, args[0] if args else "?")
            return wire.MALFORMED
        return await event(name, sid, *args)

    sio.on("connect", on_connect)
    sio.on("disconnect", on_disconnect)
    sio.on("*", on_event)
    return sio, app


class _GuardedSite(web.SockSite):
    """aiohttp's site on a bound socket, with a :class:`ConnectionGuard` in front of every connection."""

    def __init__(self, runner: web.AppRunner, sock: socket.socket, guard: ConnectionGuard) -> None:
        super().__init__(runner, sock)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner (which stops it on cleanup)
        assert self._runner.server is not None
        self._server = await asyncio.get_running_loop().create_server(
            guard_factory(self.guard, self._runner.server), sock=self._sock, backlog=self._backlog)


def listen_guard(name: str, options: dict[str, Any] | None = None) -> ConnectionGuard:
    """The connection limits of a Socket.IO listener (options of its URI; idle timeout 60 s by default)."""
    return ConnectionGuard.from_options(name, options or {}, idle_timeout=IDLE_TIMEOUT)


async def listen(app: web.Application, host: str, port: int,
                 guard: ConnectionGuard | None = None) -> tuple[web.AppRunner, int]:
    """Serve an aiohttp app on host:port from a socket bound here, so that port 0 yields the real port,
    behind ``guard`` (default limits when None)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await _GuardedSite(runner, sock, guard or listen_guard(f"http {host}:{port}")).start()
    return runner, sock.getsockname()[1]


async def shut_down(sio: socketio.AsyncServer, runner: web.AppRunner | None, sids: list[str]) -> None:
    """Disconnect these clients (they learn at once instead of by ping timeout), then stop serving."""
    for sid in sids:
        try:
            await sio.disconnect(sid)
        except Exception:  # already gone
            log.debug("sio: disconnect %s failed", sid, exc_info=True)
    await sio.shutdown()
    if runner is not None:
        await runner.cleanup()


class SioServer:
    """The Socket.IO server: connection policy (token, controller/observers) around :class:`ManipulatorApi`."""

    def __init__(self, driver: Manipulator, *, token: str | None = None, push_hz: float = DEFAULT_PUSH_HZ,
                 tolerance: float = DEFAULT_TOLERANCE, name: str = "rig", api_version: str = wire.API_VERSION,
                 rigdeck_version: str = "0.1.0", allow: AllowList | None = None,
                 guard: ConnectionGuard | None = None) -> None:
        if not (math.isfinite(push_hz) and push_hz > 0):
            raise ValueError(f"push_hz must be > 0, got {push_hz}")
        self.driver = driver
        self.name = name
        self.token = token or None
        self.allow = allow
        self.guard = guard or listen_guard(f"sio: rig {name}")
        self.push_hz = push_hz
        self.rigdeck_version = rigdeck_version
        self.api = ManipulatorApi(driver, tolerance=tolerance, api_version=api_version)
        self.rlog = RateLimitedLog(log, LOG_INTERVAL)
        self.sio, self.app = sio_app(self._connect, self._disconnect, self._event, self.rlog)
        self.clients: dict[str, str] = {}  # sid -> peer, in connection order
        self.controller: str | None = None
        self.refused = 0
        self._runner: web.AppRunner | None = None
        self._port = 0
        self.pusher: PositionPusher | None = None

    @property
    def port(self) -> int:
        return self._port

    def _start_pusher(self) -> None:
        """Pushes start with serving (listening here, connecting out in ``sio_relay``)."""
        self.pusher = PositionPusher(self.driver, self._broadcast, self.push_hz)
        self.api.on_inside_brain = self.pusher.touch

    async def start(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        self._start_pusher()
        try:
            self._runner, self._port = await listen(self.app, host, port, self.guard)
        except OSError:
            self.close_pusher()
            raise
        log.info("sio: rig %s serves manipulators on %s:%d%s%s (%s)", self.name, host, self._port,
                 " (token required)" if self.token else "", f" (allow: {self.allow})" if self.allow else "",
                 self.guard.describe())

    def close_pusher(self) -> None:
        if self.pusher is not None:
            self.pusher.close()
            self.pusher = None

    async def close(self) -> None:
        self.close_pusher()
        await shut_down(self.sio, self._runner, list(self.clients))
        self._runner = None

    # ------------------------------------------------------------------------- connections
    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        peer = peer_address(environ)
        if self.allow is not None and not self.allow.admits(peer, f"sio: rig {self.name}"):
            self.refused += 1
            raise socketio.exceptions.ConnectionRefusedError("Connection rejected by server: address not allowed")
        if self.token is not None:
            offered = offered_token(environ, auth)
            if offered is None or not hmac.compare_digest(offered.encode(), self.token.encode()):
                self.refused += 1
                log.warning("sio: refused %s: %s token", peer, "missing" if offered is None else "wrong")
                raise socketio.exceptions.ConnectionRefusedError("Connection rejected by server: token required")
        self.clients[sid] = peer
        if self.controller is None:
            self.controller = sid
        log.info("sio: %s connected as %s", peer, "controller" if self.controller == sid else "observer")
        return True

    async def _disconnect(self, sid: str, reason: Any = None) -> None:
        peer = self.clients.pop(sid, "?")
        log.info("sio: %s disconnected", peer)
        if self.controller == sid:
            self.controller = next(iter(self.clients), None)
            if self.controller is not None:
                await self._tell_control(self.controller, True, "promoted: the controller left")

    async def _tell_control(self, sid: str, controller: bool, why: str) -> None:
        try:
            await self.sio.emit(wire.CONTROL_EVENT, wire.dumps({"Controller": controller, "Reason": why}), to=sid)
        except Exception:
            log.debug("sio: control notice to %s failed", sid, exc_info=True)

    async def _broadcast(self, payload: str) -> None:
        if self.clients:
            try:
                await self.sio.emit(wire.POSITION_EVENT, payload)
            except Exception:
                log.debug("sio: position push failed", exc_info=True)

    # ------------------------------------------------------------------------- events
    async def _event(self, event: str, sid: str, *args: Any) -> str:
        try:
            return await self._answer(event, sid, *args)
        except Exception as ex:  # never a traceback for a client: an error reply, one log line
            self.rlog.warning(f"event {event!r:.40}", "sio: %r from %s failed: %s", event, self.clients.get(sid, "?"),
                         error_of(ex))
            return self.api.failure(event, ex) if isinstance(event, str) else wire.UNKNOWN_EVENT

    async def _answer(self, event: str, sid: str, *args: Any) -> str:
        if event in wire.MOVE_EVENTS and sid != self.controller:
            return self.api.failure(event, NotInControl(
                "this client is an observer; send take_control to move manipulators"))
        if self.api.knows(event):
            return await self.api.call(event, args)
        if event == "get_rigdeck_info":
            return await self._rigdeck_info(sid)
        if event == "take_control":
            return await self._take_control(sid)
        if event == "get_control":
            return wire.dumps({"Controller": sid == self.controller, "Clients": len(self.clients), "Error": ""})
        self.rlog.info("unknown", "sio: unknown event %.80r from %s", event, self.clients.get(sid, "?"))
        return wire.UNKNOWN_EVENT

    async def _rigdeck_info(self, sid: str) -> str:
        positions = {}
        if self.pusher is not None:
            for manipulator_id in await self.driver.list_ids():
                entry = self.pusher.snapshot_entry(manipulator_id, await self.driver.position(manipulator_id))
                if wire.finite(entry):  # as in pushes: one manipulator's NaN does not cost the others
                    positions[manipulator_id] = entry
        return wire.dumps({
            "Server": "RigDeck", "Version": self.rigdeck_version, "ApiVersion": self.api.api_version,
            "Rig": self.name, "Push": True, "PushRate": self.push_hz, "Controller": sid == self.controller,
            "Positions": positions, "Error": "",
        })

    async def _take_control(self, sid: str) -> str:
        previous, self.controller = self.controller, sid
        if previous is not None and previous != sid:
            log.info("sio: %s took control from %s", self.clients.get(sid, "?"), self.clients.get(previous, "?"))
            await self._tell_control(previous, False, f"control taken by {self.clients.get(sid, '?')}")
        return wire.dumps({"Controller": True, "Error": ""})


def resolve_driver(service_or_driver: Any) -> Manipulator:
    if isinstance(service_or_driver, Manipulator):
        return service_or_driver
    driver = getattr(service_or_driver, "manipulator", None)
    if not isinstance(driver, Manipulator):
        name = getattr(service_or_driver, "name", type(service_or_driver).__name__)
        raise ValueError(f"rig {name} has no manipulator driver to serve over Socket.IO")
    return driver


async def serve_listening(address: Any, service_or_driver: Any, options: dict[str, Any] | None = None) -> SioServer:
    """Serve ``service.manipulator`` (or a bare Manipulator) on ``address`` (a RigAddress; loopback and
    port 3000 when not given). Options: ``token``, ``allow``, ``push_hz`` (50), ``tolerance`` (0.001 mm),
    ``api_version``.
    Returns the started server (``.port``, ``async close()``). :func:`transports.sio.rig_server.serve_sio`
    picks this or a connection out to a relay."""
    options = dict(options or {})
    driver = resolve_driver(service_or_driver)
    host = getattr(address, "host", None) or "127.0.0.1"
    port = getattr(address, "port", None)
    port = DEFAULT_PORT if port is None else int(port)
    server = SioServer(
        driver,
        token=options.get("token"),
        push_hz=float(options.get("push_hz", DEFAULT_PUSH_HZ)),
        tolerance=float(options.get("tolerance", DEFAULT_TOLERANCE)),
        name=str(getattr(service_or_driver, "name", "rig")),
        api_version=str(options.get("api_version", wire.API_VERSION)),
        allow=allow_list(options.get("allow")),
        guard=listen_guard(f"sio: rig {getattr(service_or_driver, 'name', 'rig')}", options),
    )
    await server.start(host, port)
    return server


__all__ = ["DEFAULT_TOLERANCE", "ManipulatorApi", "NotInControl", "PositionPusher", "SioServer", "error_of",
           "serve_listening"]
