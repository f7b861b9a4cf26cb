"""Remote reach for manipulator servers: a relay they connect out to, found by a short Pinpoint ID.

ephys-link up to 2.0 had a "proxy mode": a rig behind a firewall connected out to a public proxy and printed
a Pinpoint ID; Pinpoint reached the rig through the proxy by that ID. RigDeck does the same with two parts:

- :class:`SioRelay` (``rigdeck relay``): a Socket.IO server that only pairs and forwards. A manipulator
  server connects with ``auth={"role": "server", "pinpoint_id": ID, "token": ...}``; a client (Pinpoint-style
  emits, ``rigdeck manipulators sio://relay:port/ID``, :class:`~transports.sio_client.SioManipulatorClient`)
  connects with ``?pinpoint_id=ID`` in the URL (or ``auth={"pinpoint_id": ID}``). Each client request is
  forwarded to its server and the server's reply comes back as the acknowledgement; pushes and control
  notices go the other way. A client naming an ID no server holds is refused with a message saying so;
  with a token set, servers and clients alike are refused without it (logged, the token never).
- :class:`RelayedSioServer`: RigDeck's Socket.IO server (same events, controller/observers, pushes) whose
  clients arrive through the relay instead of a listening socket. ``get_pinpoint_id`` answers
  ``{"PinpointId": "...", "IsRequester": false}`` as ephys-link did. In a rig file::

      uris:
        - {uri: sio://relay.example.org:3000, relay: true, pinpoint_id: rig2-probes, token: ...}

  ``rigdeck serve`` then prints ``READY <rig> sio://relay.example.org:3000/<ID>``: the URI clients use.

Relay <-> server messages (RigDeck's own, not ephys-link's): ``relay_open`` / ``relay_close``
``{"Client": sid, "Peer": addr}`` (relay -> server, acknowledged), ``relay_request`` ``(client, event, args)``
(relay -> server, the acknowledgement is the reply string), ``relay_emit`` ``(client or None, event, data)``
(server -> relay: to one client, or to all of the server's clients).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from typing import Any
from urllib.parse import parse_qs

import socketio
from aiohttp import web

from core.link import error_text
from transports.conn_limits import ConnectionGuard
from transports.rate_log import RateLimitedLog
from transports.sio import wire
from transports.sio.server import (
    DEFAULT_PUSH_HZ,
    DEFAULT_TOLERANCE,
    LOG_INTERVAL,
    SioServer,
    listen,
    listen_guard,
    offered_token,
    peer_address,
    resolve_driver,
    shut_down,
    sio_app,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 3000
#: a move can take minutes; the client's own timeout is what bounds a request, not the relay
FORWARD_TIMEOUT = 3600.0
REFUSED = "Connection rejected by server"


def new_pinpoint_id() -> str:
    """Short and unguessable enough to name a rig for a session (ephys-link used 8 hex characters)."""
    return secrets.token_hex(4)


def _query(environ: dict[str, Any], key: str) -> str | None:
    values = parse_qs(environ.get("QUERY_STRING", "")).get(key)
    return values[0] if values else None


class SioRelay:
    """Pairs manipulator servers (by Pinpoint ID) with their clients and forwards between them."""

    def __init__(self, token: str | None = None, forward_timeout: float = FORWARD_TIMEOUT,
                 guard: ConnectionGuard | None = None) -> None:
        self.token = token or None
        #: connection limits of its listener (Socket.IO's: see :func:`transports.sio.server.listen_guard`)
        self.guard = guard or listen_guard("relay")
        self.forward_timeout = forward_timeout
        self.rlog = RateLimitedLog(log, LOG_INTERVAL)
        self.sio, self.app = sio_app(self._connect, self._disconnect, self._event, self.rlog)
        self.servers: dict[str, str] = {}  # pinpoint id -> server sid
        self.server_ids: dict[str, str] = {}  # server sid -> pinpoint id
        self.client_of: dict[str, str] = {}  # client sid -> pinpoint id
        self.refused = 0
        self._forwards: dict[str, set[asyncio.Task[Any]]] = {}  # server sid -> requests in flight
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def port(self) -> int:
        return self._port

    async def start(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        self._runner, self._port = await listen(self.app, host, port, self.guard)
        log.info("relay: listening on %s:%d%s (%s)", host, self._port, " (token required)" if self.token else "",
                 self.guard.describe())

    async def close(self) -> None:
        await shut_down(self.sio, self._runner, [*self.client_of, *self.server_ids])
        self._runner = None

    # ------------------------------------------------------------------------------ pairing
    def _refuse(self, peer: str, why: str) -> None:
        self.refused += 1
        log.warning("relay: refused %s: %s", peer, why)
        raise socketio.exceptions.ConnectionRefusedError(f"{REFUSED}: {why}")

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        peer = peer_address(environ)
        auth = auth if isinstance(auth, dict) else {}
        if self.token is not None:
            offered = offered_token(environ, auth)
            if offered is None or not hmac.compare_digest(offered.encode(), self.token.encode()):
                self._refuse(peer, f"{'missing' if offered is None else 'wrong'} token; token required")
        pinpoint_id = auth.get("pinpoint_id") if isinstance(auth.get("pinpoint_id"), str) else None
        pinpoint_id = pinpoint_id or _query(environ, "pinpoint_id")
        if auth.get("role") == "server":
            if pinpoint_id is None or not wire.PINPOINT_ID.match(pinpoint_id):
                self._refuse(peer, "a manipulator server must offer a Pinpoint ID of 3-32 letters, digits, - or _")
            if pinpoint_id in self.servers:
                self._refuse(peer, f"Pinpoint ID {pinpoint_id!r} is already in use on this relay")
            self.servers[pinpoint_id] = sid
            self.server_ids[sid] = pinpoint_id
            self._forwards[sid] = set()
            log.info("relay: manipulator server %s registered as %s", peer, pinpoint_id)
            return True
        if not pinpoint_id:
            self._refuse(peer, "no Pinpoint ID given (connect to sio://relay:port/PINPOINT_ID)")
        server = self.servers.get(pinpoint_id or "")
        if server is None:
            self._refuse(peer, f"unknown Pinpoint ID {pinpoint_id!r}: no manipulator server is connected "
                               "to this relay under it")
        try:
            await self.sio.call("relay_open", wire.dumps({"Client": sid, "Peer": peer}), to=server, timeout=5)
        except Exception:
            self._refuse(peer, f"the manipulator server {pinpoint_id} did not answer")
        self.client_of[sid] = str(pinpoint_id)
        await self.sio.enter_room(sid, str(pinpoint_id))
        log.info("relay: %s paired with %s", peer, pinpoint_id)
        return True

    async def _disconnect(self, sid: str, reason: Any = None) -> None:
        pinpoint_id = self.server_ids.pop(sid, None)
        if pinpoint_id is not None:
            self.servers.pop(pinpoint_id, None)
            for task in self._forwards.pop(sid, set()):
                task.cancel()
            clients = [c for c, i in self.client_of.items() if i == pinpoint_id]
            log.info("relay: manipulator server %s left; dropping its %d clients", pinpoint_id, len(clients))
            for client in clients:
                self.client_of.pop(client, None)
                try:
                    await self.sio.disconnect(client)
                except Exception:
                    log.debug("relay: disconnect %s failed", client, exc_info=True)
            return
        pinpoint_id = self.client_of.pop(sid, None)
        server = self.servers.get(pinpoint_id or "")
        if server is not None:
            try:
                await self.sio.emit("relay_close", wire.dumps({"Client": sid}), to=server)
            except Exception:
                log.debug("relay: relay_close to %s failed", pinpoint_id, exc_info=True)

    # ------------------------------------------------------------------------------ forwarding
    async def _event(self, event: str, sid: str, *args: Any) -> Any:
        if sid in self.server_ids:
            if event == "relay_emit" and len(args) == 3:
                await self._emit_for(sid, *args)
            return None
        server = self.servers.get(self.client_of.get(sid, ""))
        if server is None:
            return wire.dumps({"error": "relay: the manipulator server is not connected."})
        task = asyncio.current_task()
        forwards = self._forwards.setdefault(server, set())
        if task is not None:
            forwards.add(task)
        try:
            return await self.sio.call("relay_request", (sid, event, list(args)), to=server,
                                       timeout=self.forward_timeout)
        except socketio.exceptions.TimeoutError:
            return wire.dumps({"error": "relay: the manipulator server did not answer."})
        except (socketio.exceptions.SocketIOError, ValueError, TypeError, RecursionError) as ex:
            # the server left meanwhile, or the arguments cannot be forwarded (too deep to encode again)
            self.rlog.warning("forward", "relay: %.40r from %s not forwarded: %s", event, sid, error_text(ex))
            return wire.dumps({"error": "relay: the request could not be forwarded."})
        finally:
            forwards.discard(task)  # type: ignore[arg-type]

    async def _emit_for(self, server: str, target: Any, event: Any, data: Any) -> None:
        """A server's push (target None: all its clients) or notice to one of its own clients."""
        pinpoint_id = self.server_ids[server]
        if not isinstance(event, str) or not (target is None or isinstance(target, str)):
            return
        if target is None:
            await self.sio.emit(event, data, to=pinpoint_id)
        elif self.client_of.get(target) == pinpoint_id:
            await self.sio.emit(event, data, to=target)


class RelayedSioServer(SioServer):
    """RigDeck's manipulator server reached through a relay: the same events and policies, with the relay's
    connection standing in for the listening socket (``relay_open``/``relay_close`` are its clients)."""

    def __init__(self, driver: Any, relay_url: str, *, token: str | None = None, pinpoint_id: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(driver, token=None, **kwargs)  # the relay checks the token, for servers and clients
        self.relay_url = relay_url
        self.pinpoint_id = pinpoint_id or new_pinpoint_id()
        if not wire.PINPOINT_ID.match(self.pinpoint_id):
            raise ValueError(f"pinpoint_id {self.pinpoint_id!r}: use 3-32 letters, digits, - or _")
        self._relay_token = token or None
        self._refusal: str | None = None
        #: what clients connect to: sio://relay:port/PINPOINT_ID (set once registered)
        self.public_uri = ""
        self.link = socketio.AsyncClient(reconnection=True, reconnection_delay=0.5, reconnection_delay_max=5,
                                         logger=False, engineio_logger=False, handle_sigint=False)
        self.link.on("relay_open", self._open)
        self.link.on("relay_close", self._close)
        self.link.on("relay_request", self._request)
        self.link.on("disconnect", self._relay_lost)
        self.link.on("connect_error", self._connect_error)

    @property
    def port(self) -> int:
        return int(self.relay_url.rsplit(":", 1)[1])

    async def start_relayed(self, timeout: float = 10.0) -> None:
        """Connect out and register the Pinpoint ID; ValueError if the relay refuses, OSError if unreachable."""
        self._start_pusher()
        auth = {"role": "server", "pinpoint_id": self.pinpoint_id}
        if self._relay_token:
            auth["token"] = self._relay_token
        try:
            await self.link.connect(self.relay_url, auth=auth, transports=["websocket"], wait_timeout=timeout)
        except socketio.exceptions.ConnectionError as ex:
            self.close_pusher()
            if self._refusal:
                raise ValueError(f"relay {self.relay_url} refused: {self._refusal}") from None
            raise OSError(f"relay {self.relay_url} unreachable: {ex}") from None
        self.public_uri = f"sio://{self.relay_url.split('://', 1)[1]}/{self.pinpoint_id}"
        log.info("sio: rig %s reachable through the relay as %s (Pinpoint ID %s)", self.name, self.public_uri,
                 self.pinpoint_id)

    async def close(self) -> None:
        self.close_pusher()
        await self.link.disconnect()

    # ------------------------------------------------------------------------ from the relay
    async def _connect_error(self, data: Any = None) -> None:
        if isinstance(data, dict):
            self._refusal = str(data.get("message") or "refused")

    async def _open(self, payload: Any = None) -> bool:
        data = wire.load_reply(payload)
        client = str(data.get("Client")) if isinstance(data, dict) else ""
        if client:
            await self._connect(client, {"REMOTE_ADDR": f"{data.get('Peer', '?')} via relay"}, None)
        return True

    async def _close(self, payload: Any = None) -> None:
        data = wire.load_reply(payload)
        if isinstance(data, dict) and data.get("Client") in self.clients:
            await self._disconnect(str(data["Client"]))

    async def _relay_lost(self, reason: Any = None) -> None:
        """The relay dropped every client with us; they reconnect (and are re-opened) after we do."""
        self.clients.clear()
        self.controller = None

    async def _request(self, client: Any = None, event: Any = None, args: Any = None) -> str:
        if not isinstance(event, str) or not isinstance(args, list) or client not in self.clients:
            return wire.MALFORMED
        if event == "get_pinpoint_id":
            return wire.dumps({"PinpointId": self.pinpoint_id, "IsRequester": False})
        return await self._event(event, client, *args)

    # ------------------------------------------------------------------------ to the relay
    async def _broadcast(self, payload: str) -> None:
        if self.clients and self.link.connected:
            try:
                await self.link.emit("relay_emit", (None, wire.POSITION_EVENT, payload))
            except Exception:
                log.debug("sio: relayed position push failed", exc_info=True)

    async def _tell_control(self, sid: str, controller: bool, why: str) -> None:
        try:
            await self.link.emit("relay_emit", (sid, wire.CONTROL_EVENT,
                                                wire.dumps({"Controller": controller, "Reason": why})))
        except Exception:
            log.debug("sio: relayed control notice to %s failed", sid, exc_info=True)


async def serve_through_relay(address: Any, service_or_driver: Any, options: dict[str, Any]) -> RelayedSioServer:
    """``serve_sio`` with ``relay: true``: connect out to the relay at ``address``; the handle's ``uri`` is
    ``sio://relay:port/PINPOINT_ID``, what clients use."""
    host = getattr(address, "host", None) or "127.0.0.1"
    port = int(getattr(address, "port", None) or DEFAULT_PORT)
    if port == 0:
        raise ValueError("a relay address needs the relay's port, not 0")
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server = RelayedSioServer(
        resolve_driver(service_or_driver), f"http://{netloc}",
        token=options.get("token"), pinpoint_id=options.get("pinpoint_id"),
        push_hz=float(options.get("push_hz", DEFAULT_PUSH_HZ)),
        tolerance=float(options.get("tolerance", DEFAULT_TOLERANCE)),
        name=str(getattr(service_or_driver, "name", "rig")),
        api_version=str(options.get("api_version", wire.API_VERSION)),
    )
    await server.start_relayed()
    return server


__all__ = ["RelayedSioServer", "SioRelay", "new_pinpoint_id", "serve_through_relay"]
