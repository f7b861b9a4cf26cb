"""Rigs on loopback for the RigLink contract: per scheme, a real server and the two ways a rig misbehaves.

Every scheme offers the same three rigs, each bound to a port the test picks (so a rig can be stopped and
started again on the same port, as a rebooted rig PC would be):

- ``serve(port)``: the scheme's real server from :func:`transports.registry.server_factory`, hosting
  :class:`GateRig` (a rig service that answers EXPSTATUS/EXPINFO and can be told to hold its replies);
- ``serve_silent(port)``: a rig that takes requests and never answers them;
- ``serve_garbage(port)``: a rig that answers every request with bytes that are not the protocol.

Where a scheme legitimately differs, it says so here: ``sio://`` is a manipulator link (its server hosts a
Manipulator driver, and ``request(EXPSTATUS)`` is a ``get_version`` round trip), so its silent and garbage
rigs are Socket.IO servers whose ``get_version`` never answers / answers nonsense.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

import socketio
import zmq
import zmq.asyncio
from aiohttp import web
from helpers import wait_until

from core.config import RigSpec
from core.drivers.manipulator import SimulatedManipulator
from core.protocol import ExpMessage, ExpStatus, RigAddress
from transports.registry import server_factory
from transports.sio.server import ManipulatorApi

LOOPBACK = "127.0.0.1"
#: not a protocol in any scheme: not JSON, not ZMTP, not HTTP, not PYON
GARBAGE = b"\x00\xff garbage }{ ]] \xfe\r\n"
#: a request's own timeout in the contract: generous for a loaded machine (nothing here is timed)
TIMEOUT = 2.0

#: options that make each link give up and retry quickly on loopback (the rigs file would use defaults)
LINK_OPTIONS: dict[str, dict[str, Any]] = {
    "udp": {"timeout": TIMEOUT},
    "tcp": {"timeout": TIMEOUT},
    "zmq": {"timeout": TIMEOUT, "retry_initial": 0.03, "retry_max": 0.2},
    "sio": {"timeout": TIMEOUT},
    "rpc": {"timeout": TIMEOUT},
}

SCHEMES = tuple(LINK_OPTIONS)


class Closable(Protocol):
    async def close(self) -> None: ...


class GateRig:
    """A rig service: answers EXPSTATUS ``[0]`` and EXPINFO, fails EXPEND (an error report); while ``gate``
    is clear it holds every reply.

    ``received`` counts the requests that reached it, so a test can tell "held" from "never arrived".
    The sio server hosts ``manipulator`` instead (a manipulator rig takes no session messages).
    """

    name = "contract"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.received = 0
        self.manipulator = SimulatedManipulator(ids=("1",))

    async def handle(self, event: ExpMessage, data: list[Any], peer: str) -> list[Any]:
        self.received += 1
        await self.gate.wait()
        if event is ExpMessage.EXPINFO:  # echoes a ``tag`` it is sent, so replies can be told apart
            tag = data[0].get("tag") if data and isinstance(data[0], dict) else None
            return [int(ExpStatus.CONNECTED), {"main_sync": False, "tag": tag}]
        if event is ExpMessage.EXPEND:
            raise ValueError("no session to end")
        return [int(ExpStatus.CONNECTED)]


def port_is_free(port: int) -> bool:
    """A listening socket could bind ``port`` now (as the rig servers bind: address reuse on)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing listens on now (the rigs are started on it, stopped and started on it again)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------- misbehaving rigs
class _GarbageDatagrams(asyncio.DatagramProtocol):
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.transport: Any = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set_result(None)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.answer:
            self.transport.sendto(GARBAGE, addr)


@dataclass
class _Datagrams:
    transport: Any
    protocol: _GarbageDatagrams

    async def close(self) -> None:
        self.transport.close()
        await self.protocol.closed  # the socket is released a loop turn later: then the port is free again


async def _udp_rig(port: int, answer: bool) -> Closable:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _GarbageDatagrams(answer), local_addr=(LOOPBACK, port))
    return _Datagrams(transport, protocol)


@dataclass
class _Stream:
    """A TCP server that reads everything and answers garbage to each chunk (or nothing at all)."""

    answer: bool
    server: Any = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        if self.answer:
            writer.write(GARBAGE)  # also before a word arrives: pc_rpc and HTTP clients speak after a greeting
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                if self.answer:
                    writer.write(GARBAGE)
                    await writer.drain()

    async def close(self) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)


async def _stream_rig(port: int, answer: bool) -> Closable:
    rig = _Stream(answer)
    rig.server = await asyncio.start_server(rig._serve, LOOPBACK, port)
    return rig


@dataclass
class _Router:
    """A ZeroMQ ROUTER that speaks ZMTP (so the link connects) but answers frames that are not RigDeck's."""

    answer: bool
    sock: Any = None
    task: Any = None

    async def _serve(self) -> None:
        while True:
            ident, *_ = await self.sock.recv_multipart()
            if self.answer:
                await self.sock.send_multipart([ident, GARBAGE])

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        port = int(self.sock.last_endpoint.rsplit(b":", 1)[1])
        self.sock.close(0)
        # libzmq releases the port in its own I/O thread, a moment later: the next rig binds it then
        await wait_until(lambda: port_is_free(port), what=f"port {port} released")


async def _zmq_rig(port: int, answer: bool) -> Closable:
    rig = _Router(answer, zmq.asyncio.Context.instance().socket(zmq.ROUTER))
    rig.sock.linger = 0
    rig.sock.bind(f"tcp://{LOOPBACK}:{port}")
    rig.task = asyncio.get_running_loop().create_task(rig._serve())
    return rig


@dataclass
class _SioRig:
    """A Socket.IO manipulator server that identifies itself properly but whose ``get_version`` (the sio
    link's EXPSTATUS round trip) never answers, or answers a value that is no version."""

    answer: bool
    runner: Any = None
    received: int = 0

    async def start(self, port: int) -> None:
        api = ManipulatorApi(SimulatedManipulator(ids=("1",)))
        sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)
        app = web.Application()
        sio.attach(app)

        async def on_event(event: str, sid: str, *args: Any) -> Any:
            if event != "get_version":
                return await api.call(event, args)
            self.received += 1
            if self.answer:
                return {"not": ["a", "version"]}
            await asyncio.Event().wait()  # never answers

        sio.on("*", on_event)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.TCPSite(self.runner, LOOPBACK, port).start()

    async def close(self) -> None:
        await self.runner.cleanup()


async def _sio_rig(port: int, answer: bool) -> _SioRig:
    rig = _SioRig(answer)
    await rig.start(port)
    return rig


_MISBEHAVING = {"udp": _udp_rig, "tcp": _stream_rig, "zmq": _zmq_rig, "sio": _sio_rig, "rpc": _stream_rig}


# ------------------------------------------------------------------------------------- one scheme's rigs
@dataclass
class SchemeRigs:
    """The rigs of one scheme on one port, and the link spec that reaches them."""

    scheme: str
    port: int
    service: GateRig = field(default_factory=GateRig)
    silent_sio: _SioRig | None = None

    @property
    def address(self) -> RigAddress:
        return RigAddress(self.scheme, LOOPBACK, self.port, "rig" if self.scheme == "rpc" else "")

    def spec(self, **options: Any) -> RigSpec:
        return RigSpec(name="contract", address=self.address, options={**LINK_OPTIONS[self.scheme], **options})

    async def serve(self) -> Closable:
        """The real server of this scheme hosting :attr:`service`."""
        return await server_factory(self.scheme)(self.address, self.service, {})

    async def serve_silent(self) -> Closable:
        """A rig that takes requests and never answers (its handler blocks; raw for sio, see the module)."""
        if self.scheme == "sio":
            self.silent_sio = await _sio_rig(self.port, answer=False)
            return self.silent_sio
        self.service.gate.clear()
        return await self.serve()

    def held(self) -> int:
        """How many requests reached the silent rig (and are held there)."""
        return self.silent_sio.received if self.silent_sio is not None else self.service.received

    async def serve_garbage(self) -> Closable:
        return await _MISBEHAVING[self.scheme](self.port, answer=True)
