"""Shared pieces of the Socket.IO tests: a served simulation, a Pinpoint-style raw client, and a stand-in for
a real ephys-link 2.x server (one client only, no push, no RigDeck events) to test the client's fallbacks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import socketio
from aiohttp import web

from core.drivers.manipulator import Manipulator, SimulatedManipulator
from core.protocol import RigAddress
from transports.sio import serve_sio
from transports.sio.relay import SioRelay
from transports.sio.server import ManipulatorApi, SioServer

LOOPBACK = "127.0.0.1"


def url(port: int) -> str:
    return f"http://{LOOPBACK}:{port}"


@contextlib.asynccontextmanager
async def served(ids=("0", "1"), options: dict[str, Any] | None = None, **sim_kwargs: Any
                 ) -> AsyncIterator[tuple[SioServer, SimulatedManipulator]]:
    sim = SimulatedManipulator(ids=ids, **sim_kwargs)
    server = await serve_sio(RigAddress("sio", LOOPBACK, 0), sim, options or {})
    try:
        yield server, sim
    finally:
        await server.close()
        await sim.close()


@contextlib.asynccontextmanager
async def raw_client(port: int, **connect_kwargs: Any) -> AsyncIterator[socketio.AsyncClient]:
    """A plain python-socketio client, speaking as Pinpoint does (websocket, one payload per emit)."""
    client = socketio.AsyncClient(reconnection=False)
    connect_kwargs.setdefault("transports", ["websocket"])
    await client.connect(url(port), **connect_kwargs)
    try:
        yield client
    finally:
        await client.disconnect()


async def ask(client: socketio.AsyncClient, event: str, *payload: Any, timeout: float = 5.0) -> Any:
    """Emit with an ack and return the single ack argument (python-socketio's call takes one data value;
    several payloads go as a tuple, which Socket.IO spreads into several arguments)."""
    if not payload:
        return await client.call(event, timeout=timeout)
    data = payload[0] if len(payload) == 1 else tuple(payload)
    return await client.call(event, data, timeout=timeout)


def body(**fields: Any) -> str:
    return json.dumps(fields)


class FakeEphysLink:
    """What a real ephys-link 2.3.6 looks like from outside: one client at a time (a second gets
    ``Connection rejected by server``), no pushes, ``Unknown event.`` for RigDeck's events. The event
    replies come from :class:`ManipulatorApi`, whose format the event-table test pins down."""

    def __init__(self, driver: Manipulator, answer_delay: float = 0.0) -> None:
        self.api = ManipulatorApi(driver)
        self.answer_delay = answer_delay
        self.sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)
        self.app = web.Application()
        self.sio.attach(self.app)
        self.client_sid = ""
        self.calls: list[str] = []
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)
        self.sio.on("*", self._event)
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _connect(self, sid: str, environ: Any, auth: Any = None) -> bool:
        if self.client_sid:
            return False
        self.client_sid = sid
        return True

    async def _disconnect(self, sid: str, reason: Any = None) -> None:
        if sid == self.client_sid:
            self.client_sid = ""

    async def _event(self, event: str, sid: str, *args: Any) -> str:
        self.calls.append(event)
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)
        return await self.api.call(event, args)

    async def start(self, port: int = 0) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, port))
        self.port = sock.getsockname()[1]
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.SockSite(self.runner, sock).start()

    async def close(self) -> None:
        if self.client_sid:
            with contextlib.suppress(Exception):
                await self.sio.disconnect(self.client_sid)
        await self.sio.shutdown()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None



@contextlib.asynccontextmanager
async def relayed(ids: Any = ("0", "1"), token: str | None = None, server_token: str | None = None,
                  pinpoint_id: str | None = None) -> AsyncIterator[tuple[SioRelay, Any, SimulatedManipulator]]:
    relay = SioRelay(token=token)
    await relay.start(LOOPBACK, 0)
    sim = SimulatedManipulator(ids=ids)
    options: dict[str, Any] = {"relay": True}
    if server_token or token:
        options["token"] = server_token or token
    if pinpoint_id:
        options["pinpoint_id"] = pinpoint_id
    server = None
    try:
        server = await serve_sio(RigAddress("sio", LOOPBACK, relay.port), sim, options)
        yield relay, server, sim
    finally:
        if server is not None:
            await server.close()
        await sim.close()
        await relay.close()


def via(relay: SioRelay, pinpoint_id: str) -> str:
    return f"http://{LOOPBACK}:{relay.port}?pinpoint_id={pinpoint_id}"
