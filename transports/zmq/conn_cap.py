"""``max_connections`` for a ZeroMQ listener, which libzmq does not offer.

libzmq accepts TCP connections on its own I/O thread and has no limit on how many; each holds a file
descriptor until the peer leaves or, for one that never completes ZMTP's greeting, until the handshake
interval has passed. A flood of idle connections could so take every descriptor of the rig (see
:mod:`transports.conn_limits`). The socket's monitor reports each accepted connection with its descriptor
(``EVENT_ACCEPTED``) and each end (``EVENT_DISCONNECTED``), so :class:`ZmqConnectionCap` counts them with a
:class:`~transports.conn_limits.ConnectionGuard` and shuts down (``shutdown(2)``, never ``close``: the
descriptor stays libzmq's, which then closes it as for any peer that left) a connection over the cap.

Descriptor numbers are reused, and the monitor reports after the fact; so every pending event is read
before acting (a connection that already left is not touched), and a descriptor is only shut down when
it is a TCP socket on this listener's port: a mistake can at worst end another connection to this same
listener, never a recording file or another listener's peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import Any

import zmq
import zmq.asyncio

from transports.conn_limits import ConnectionGuard

log = logging.getLogger(__name__)

_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED


class ZmqConnectionCap:
    """Counts a zmq listener's TCP connections and shuts down those over ``guard.max_connections``."""

    def __init__(self, sock: zmq.asyncio.Socket, port: int, guard: ConnectionGuard) -> None:
        self.guard = guard
        self.port = port
        self._sock = sock
        self._open: set[int] = set()
        self._monitor = sock.get_monitor_socket(_EVENTS)
        self._poll = zmq.Socket.shadow(self._monitor.underlying)  # for reads that must not wait
        self._task: asyncio.Task[Any] | None = asyncio.get_running_loop().create_task(
            self._watch(), name=f"{guard.name} connections")

    async def _watch(self) -> None:
        while True:
            batch = [await self._monitor.recv_multipart()]
            while self._poll.getsockopt(zmq.EVENTS) & zmq.POLLIN:  # everything already known, before acting
                batch.append(self._poll.recv_multipart(zmq.NOBLOCK))
            self._apply(batch)

    def _apply(self, batch: list[list[bytes]]) -> None:
        refused: list[int] = []
        for frames in batch:
            if len(frames) != 2 or len(frames[0]) != 6:
                continue
            event, fd = struct.unpack("=hi", frames[0])
            if event == zmq.EVENT_ACCEPTED:
                if self.guard._admit():
                    self._open.add(fd)
                else:
                    refused.append(fd)
            elif event == zmq.EVENT_DISCONNECTED:
                if fd in self._open:
                    self._open.discard(fd)
                    self.guard._left()
                elif fd in refused:  # gone already: leave its (maybe reused) number alone
                    refused.remove(fd)
        for fd in refused:
            self._shut(fd)

    def _shut(self, fd: int) -> None:
        try:
            sock = socket.socket(fileno=fd)
        except OSError:  # closed meanwhile (or not a socket any more)
            return
        try:
            if sock.type == socket.SOCK_STREAM and sock.getsockname()[1] == self.port:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.detach()  # the descriptor is libzmq's: it closes it when it sees the connection end

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        self._monitor.close(0)
