"""Socket set-up shared by both ends of ``zmq://``: bounded queues, no lingering, never a blocking send.

Why each option:

- ``SNDHWM``/``RCVHWM``: a dead or slow peer can hold at most this many messages per pipe; beyond it a
  ROUTER drops and a DEALER refuses (``EAGAIN``), so memory stays bounded;
- ``LINGER 0``: closing never waits for a peer that is gone;
- ``IMMEDIATE`` (DEALER): nothing is queued for a connection that is not up, so a command never sits
  in a buffer while the rig is down and then runs minutes later; the sender's resend timer owns retries;
- ZMTP heartbeats: libzmq tears down a TCP connection whose peer host vanished (no FIN), so the pipe
  and its queue go away; our JSON heartbeats (see ``zmq_client``) still detect a hung *application*;
- ``MAXMSGSIZE``: a peer cannot make us allocate an arbitrarily large message;
- ``RECONNECT_IVL``/``_MAX``: libzmq's automatic reconnect, with exponential backoff from 100 ms to 2 s.

Every send is ``DONTWAIT``: :func:`send_now` returns False instead of blocking or raising.

Both ends read their socket with a :class:`Pump`, not with pyzmq's asyncio futures: profiling a command's
round trip showed the future per receive, the task woken by it and the asyncio bookkeeping around each send
costing more than the JSON and the exactly-once logic together. The pump drains every message waiting in one
wake-up of the event loop and hands each to a plain callback; sends go straight to libzmq.

The liveness defaults both ends share live here too (:data:`HEARTBEAT`, :data:`LIVENESS`): the rig and the
console must agree on them, or one would call the other lost while it is only quiet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

log = logging.getLogger(__name__)

DEFAULT_HWM = 1000
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: seconds between heartbeats when nothing else is sent, on both ends
HEARTBEAT = 0.5
#: heartbeats missed before the other end counts as lost: 0.5 s x 3 = 1.5 s
LIVENESS = 3
#: messages read per wake-up of the event loop at most, and seconds spent on them at most (a state batch
#: can carry hundreds of changes for the listeners): a flood cannot hold the loop, or a GUI's repaint
PUMP_BATCH = 64
PUMP_BUDGET = 0.004
#: frames larger than this are sent by reference, and received by reference by a pump that asks for it
BY_REFERENCE_BYTES = 64 * 1024


def tune(sock: zmq.Socket, hwm: int = DEFAULT_HWM, heartbeat_ms: int = int(HEARTBEAT * 1000),
         dealer: bool = False) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    sock.setsockopt(zmq.HEARTBEAT_IVL, heartbeat_ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, heartbeat_ms * 3)
    sock.setsockopt(zmq.HEARTBEAT_TTL, heartbeat_ms * 3)
    if dealer:
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)


class Pump:
    """Moves messages between a zmq socket and plain callbacks on the running event loop.

    libzmq's file descriptor is edge-triggered: it only says "look at the socket's events again", and a send
    can consume that signal while a message is waiting. So the pump reads until libzmq says nothing is left,
    and after each send looks at the socket's events and schedules a read if one is waiting.
    """

    def __init__(self, sock: zmq.Socket, on_frames: Callable[[list[bytes]], None], name: str = "zmq",
                 peer_address: bool = False, by_reference: bool = False) -> None:
        self.sock = zmq.Socket.shadow(sock.underlying)  # a plain view: no futures, whatever ``sock`` is
        self.on_frames = on_frames
        self.name = name
        #: with ``peer_address``: the IP address the message being handled came from (libzmq's
        #: "Peer-Address" frame property; None when the transport has none), for rules about who asks
        self.peer_address = peer_address
        #: with ``by_reference``: frames above :data:`BY_REFERENCE_BYTES` are handed on as memoryviews of
        #: libzmq's own buffer instead of copied into ``bytes`` (a file link's megabyte chunks: the copy
        #: cost the event loop ~0.5 ms per chunk)
        self.by_reference = by_reference
        self.last_peer: str | None = None
        self.running = False
        self._fd = self.sock.getsockopt(zmq.FD)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watcher: Any = None
        self._read_soon: asyncio.Handle | None = None

    def start(self) -> None:
        self._loop = self._watcher = asyncio.get_running_loop()
        try:
            self._loop.add_reader(self._fd, self._read)
        except NotImplementedError:  # Windows' proactor loop: use the selector thread pyzmq's asyncio runs beside it
            from zmq.asyncio import _get_selector

            self._watcher = _get_selector(self._loop)
            self._watcher.add_reader(self._fd, self._read)
        self.running = True
        self._schedule_read()  # whatever arrived before we watched the descriptor

    def stop(self) -> None:
        """Stop reading (before the socket closes); sends still work until it does."""
        if self.running and self._watcher is not None:
            self._watcher.remove_reader(self._fd)
        self.running = False
        if self._read_soon is not None:
            self._read_soon.cancel()
            self._read_soon = None

    def send(self, frames: list[bytes]) -> bool:
        """Send without waiting: True if libzmq took the message, False if refused (HWM, no peer, closed)."""
        try:
            # a file chunk goes out from its own buffer (libzmq frees it when sent): copying a megabyte
            # held the rig's event loop ~0.4 ms per chunk
            self.sock.send_multipart(frames, zmq.DONTWAIT, copy=len(frames[-1]) <= BY_REFERENCE_BYTES)
        except zmq.ZMQError as ex:  # Again (HWM / no connected peer), EHOSTUNREACH, ETERM, closed socket
            if ex.errno != zmq.EAGAIN:
                log.debug("%s: send refused: %s", self.name, ex)
            return False
        if self.running and self._read_soon is None and self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._schedule_read()
        return True

    def _receive(self, sock: zmq.Socket) -> list[bytes]:
        if self.by_reference:
            return [part.buffer if len(part) > BY_REFERENCE_BYTES else part.bytes
                    for part in sock.recv_multipart(zmq.DONTWAIT, copy=False)]
        if not self.peer_address:
            return sock.recv_multipart(zmq.DONTWAIT)
        parts = sock.recv_multipart(zmq.DONTWAIT, copy=False)
        try:
            self.last_peer = parts[0].get("Peer-Address") if parts else None
        except zmq.ZMQError:  # (not a TCP peer)
            self.last_peer = None
        return [part.bytes for part in parts]

    def _schedule_read(self) -> None:
        if self._read_soon is None and self._loop is not None:
            self._read_soon = self._loop.call_soon(self._read)

    def _read(self) -> None:
        self._read_soon = None
        sock, on_frames = self.sock, self.on_frames
        until = time.monotonic() + PUMP_BUDGET
        for _ in range(PUMP_BATCH):
            try:
                # asking first is cheaper than the exception a receive on an empty socket raises
                if not self.running or not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    return
                frames = self._receive(sock)
            except zmq.Again:
                return
            except zmq.ZMQError as ex:
                log.debug("%s: receive failed: %s", self.name, ex)
                return
            try:
                on_frames(frames)
            except Exception:  # never let one message stop the pump
                log.exception("%s: unexpected error handling a message", self.name)
            if time.monotonic() > until:
                break
        self._schedule_read()  # more may be waiting: read them after the loop has run its other work


def send_now(sock: zmq.asyncio.Socket, frames: list[bytes]) -> bool:
    """Send without ever waiting: True if libzmq took the message, False if it was refused (HWM, no peer)."""
    try:
        future = sock.send_multipart(frames, flags=zmq.DONTWAIT)
    except zmq.ZMQError as ex:  # closed socket, bad state
        log.debug("send refused: %s", ex)
        return False
    if not future.done():  # cannot happen with DONTWAIT and no queued sends; never leave it unobserved
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return True
    if future.cancelled():
        return False
    exc = future.exception()
    if exc is None:
        return True
    if isinstance(exc, zmq.ZMQError):  # Again (HWM / no connected peer), EHOSTUNREACH, ETERM...
        return False
    raise exc


def tcp_endpoint(host: str, port: int) -> str:
    if host in ("", "0.0.0.0", "*"):  # noqa: S104 - explicit "listen on all interfaces" spelled by the user
        return f"tcp://*:{port}"
    if ":" in host and not host.startswith("["):
        return f"tcp://[{host}]:{port}"
    return f"tcp://{host}:{port}"
