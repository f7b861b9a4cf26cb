"""A fault-injecting UDP relay for tests: it drops, duplicates and delays datagrams, each way.

A console sends to the relay's port; the relay forwards from one socket per console (so the rig sees one
peer per console, as without it) and sends the rig's datagrams back from its own port (a console's
socket is connected, so only that address may answer it). Faults are drawn from a seeded generator,
per datagram and per direction: dropped with ``drop``, else sent twice with ``duplicate``, and each copy
held back a uniform 0..``max_delay`` seconds with ``delay`` (so copies overtake each other).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Faults:
    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    max_delay: float = 0.2


@dataclass
class Counts:
    received: int = 0
    dropped: int = 0
    duplicated: int = 0
    delayed: int = 0
    sent: int = 0
    log: list[bytes] = field(default_factory=list)  # what arrived, in order (to count copies)


class _Side(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Any) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(data, addr)


class FaultyRelay:
    """Relay between consoles and the UDP rig at ``target`` (``(host, port)``); see the module docstring.
    ``to_rig`` / ``to_console`` are the faults of each direction (change them at any time)."""

    def __init__(self, target: tuple[str, int], to_rig: Faults | None = None, to_console: Faults | None = None,
                 seed: int = 1) -> None:
        self.target = target
        self.to_rig = to_rig or Faults()
        self.to_console = to_console or Faults()
        self.random = random.Random(seed)
        self.rig_counts = Counts()
        self.console_counts = Counts()
        self._front: _Side | None = None
        self._backs: dict[Any, _Side] = {}

    async def start(self) -> int:
        """Bind the relay's port on loopback and return it."""
        loop = asyncio.get_running_loop()
        _, self._front = await loop.create_datagram_endpoint(
            lambda: _Side(self._from_console), local_addr=("127.0.0.1", 0))
        return self.port

    @property
    def port(self) -> int:
        assert self._front is not None and self._front.transport is not None
        return self._front.transport.get_extra_info("sockname")[1]

    def _from_console(self, data: bytes, addr: Any) -> None:
        back = self._backs.get(addr)
        if back is None:
            asyncio.ensure_future(self._open_back(addr, data))
            return
        self._pass(data, self.to_rig, self.rig_counts, lambda raw: back.transport.sendto(raw))

    async def _open_back(self, addr: Any, first: bytes) -> None:
        if addr not in self._backs:
            _, back = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _Side(lambda data, _: self._from_rig(data, addr)), remote_addr=self.target)
            self._backs.setdefault(addr, back)
        self._from_console(first, addr)

    def _from_rig(self, data: bytes, console: Any) -> None:
        front = self._front
        self._pass(data, self.to_console, self.console_counts, lambda raw: front.transport.sendto(raw, console))

    def _pass(self, data: bytes, faults: Faults, counts: Counts, send: Any) -> None:
        counts.received += 1
        counts.log.append(data)
        draw = self.random.random
        if draw() < faults.drop:
            counts.dropped += 1
            return
        copies = 1
        if draw() < faults.duplicate:
            counts.duplicated += 1
            copies = 2
        loop = asyncio.get_running_loop()
        for _ in range(copies):
            if draw() < faults.delay:
                counts.delayed += 1
                loop.call_later(self.random.uniform(0, faults.max_delay), self._send, send, data, counts)
            else:
                self._send(send, data, counts)

    @staticmethod
    def _send(send: Any, data: bytes, counts: Counts) -> None:
        counts.sent += 1
        send(data)

    def close(self) -> None:
        for side in [self._front, *self._backs.values()]:
            if side is not None and side.transport is not None:
                side.transport.close()
