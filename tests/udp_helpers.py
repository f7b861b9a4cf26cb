"""Test peers for the iblutil transport: a scripted raw-socket rig and a tiny rig-like handler."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from core.config import parse_rig
from core.protocol import ExpMessage, ExpStatus
from transports.registry import TRANSPORTS


class EchoRig:
    """A rig-like handler with iblutil's reply shapes, counting what it executed."""

    def __init__(self, name: str = "rig", delay: float = 0.0, gate: asyncio.Event | None = None) -> None:
        self.name = name
        self.delay = delay
        #: when given, every reply waits for it: a test holds replies to see what is in flight at once
        self.gate = gate
        self.status = ExpStatus.CONNECTED
        self.calls: list[tuple[str, list[Any]]] = []

    async def handle(self, event: ExpMessage, data: list[Any], peer: str) -> list[Any]:
        self.calls.append((event.name, data))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.gate is not None:
            await self.gate.wait()
        if event is ExpMessage.EXPINFO:
            return [int(self.status), {"exp_ref": "2026-11-22_1_KS001", "main_sync": True}]
        if event is ExpMessage.EXPINIT:
            self.status = ExpStatus.INITIALIZED
            return [{"status": 10, "exp_ref": data[0]["exp_ref"]}]
        if event is ExpMessage.EXPSTART:
            if data[0] == "boom":
                1 / 0  # noqa: B018 - a handler bug the transport must report, not die of
            self.status = ExpStatus.RUNNING
            return [data[0], {"status": 20}]
        if event is ExpMessage.EXPSTATUS:
            return [int(self.status)]
        if event is ExpMessage.ALYX:
            return ["https://alyx.example.org", {"user": {"token": "s3cret"}}]
        if event in (ExpMessage.EXPEND, ExpMessage.EXPINTERRUPT):
            self.status = ExpStatus.STOPPED
            return [{"status": 30}]
        return [{"status": int(self.status)}]


class Mirror:
    """A rig handler that answers every message with the data it carried (for size tests)."""

    name = "mirror"

    async def handle(self, event: Any, data: list[Any], peer: str) -> list[Any]:
        return data


class RawPeer(asyncio.DatagramProtocol):
    """A plain UDP socket whose behaviour a test scripts with ``on_datagram(raw, addr)``."""

    def __init__(self, on_datagram: Callable[[RawPeer, bytes, Any], None] | None = None) -> None:
        self.on_datagram = on_datagram
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.arrived = asyncio.Event()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        self.arrived.set()
        if self.on_datagram is not None:
            self.on_datagram(self, data, addr)

    def send(self, raw: bytes, addr: Any) -> None:
        self.transport.sendto(raw, addr)

    def send_later(self, delay: float, raw: bytes, addr: Any) -> None:
        asyncio.get_running_loop().call_later(delay, self.send, raw, addr)

    @property
    def port(self) -> int:
        return self.transport.get_extra_info("sockname")[1]

    @classmethod
    async def bind(cls, on_datagram: Any = None) -> RawPeer:
        _, peer = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: cls(on_datagram), local_addr=("127.0.0.1", 0))
        return peer


def dumps(*msg: Any) -> bytes:
    return json.dumps(list(msg)).encode()


def udp_spec(port: int, name: str = "rig", scheme: str = "udp", **options: Any):
    uri = f"{scheme}://127.0.0.1:{port}"
    return parse_rig(name, {"uri": uri, **options} if options else uri, TRANSPORTS)


async def assert_still_serves_then_close(server: Any, spec: Any = None) -> None:
    """A fresh link still gets an EXPSTATUS answer from ``server`` (an idle EchoRig); then close it."""
    from transports.ibl.udp import UdpLink

    link = UdpLink(spec or udp_spec(server.port))
    await link.connect()
    assert await link.request(ExpMessage.EXPSTATUS, 0) == [0]
    await link.close()
    await server.close()
