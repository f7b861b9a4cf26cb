"""Limits on a stream listener's connections: how many at once, how long to say hello, how long silent.

Every accepted connection holds a file descriptor. A process has a fixed number of them (often 1024), and
the same pool serves the rig's recordings, its other listeners and its own outgoing sockets: a thousand idle
connections to one port made a rig's EXPSTART fail with "Too many open files". So each listener of a rig:

- takes at most ``max_connections`` at once; one more is closed as soon as it is accepted (its descriptor is
  back at once), and that the cap was reached is logged once, not once per connection;
- closes a connection that has not finished its protocol's *handshake* within ``handshake_timeout``
  seconds. What a handshake is belongs to the protocol: the first byte for iblutil TCP (it has none),
  the banner and target/notifier name for pc_rpc and sync_struct, the first complete HTTP request for
  Socket.IO; the server says when it is done (:func:`established`) unless the first byte is enough;
- closes a connection silent for ``idle_timeout`` seconds only where silence means a dead peer. That is
  the protocol's call too: a Socket.IO client answers the server's ping every 25 s, so 60 s of silence
  is a dead one; an iblutil console, a pc_rpc client or a sync_struct subscriber may rightly say nothing
  for hours between sessions, so those listeners have no idle timeout unless the rig file sets one.
  Dead peers there are found by TCP keepalive (switched on, with short probe intervals where the
  platform allows), and the cap bounds how many live-but-idle ones can pile up.

:class:`ConnectionGuard` does this below the protocol, by wrapping the protocol object asyncio creates
for each connection, so the same code serves ``asyncio.start_server`` users (:func:`start_stream_server`)
and aiohttp (:func:`guard_factory` around its request handler factory).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any

from core.transport_spec import Option, non_negative_number, positive_int, positive_number
from transports.rate_log import RateLimitedLog

log = logging.getLogger(__name__)

#: connections one listener takes at once unless its URI says otherwise (a rig has a few consoles) ...
DEFAULT_MAX_CONNECTIONS = 128
#: ... and at most this share of the process's open-file limit, so a flood of every listener of a rig
#: at once still leaves descriptors for its recordings (1024 -> 128 each, 256 -> 32 each)
SHARE_OF_OPEN_FILES = 8
#: seconds a new connection has to complete its protocol's handshake
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: seconds between two log lines about one listener's refusals or timeouts
LOG_EVERY = 30.0
#: TCP keepalive on accepted connections: first probe after this many idle seconds, then every
#: KEEPALIVE_INTERVAL, given up after KEEPALIVE_PROBES (a vanished peer is dropped in ~2 min, not ~2 h)
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 10
KEEPALIVE_PROBES = 6

MAX_CONNECTIONS = Option("max_connections", positive_int,
                         f"connections this listener takes at once; more are closed on arrival, logged once "
                         f"(default {DEFAULT_MAX_CONNECTIONS}, less under an open-file limit below "
                         f"{DEFAULT_MAX_CONNECTIONS * SHARE_OF_OPEN_FILES})")
HANDSHAKE_TIMEOUT = Option("handshake_timeout", positive_number,
                           f"seconds a new connection has to complete its handshake before it is closed "
                           f"(default {DEFAULT_HANDSHAKE_TIMEOUT:g})")
IDLE_TIMEOUT = Option("idle_timeout", non_negative_number,
                      "seconds of silence after which a connection is closed (0: never; default per scheme, "
                      "see the README)")
#: the listen-URI options of every stream listener
LIMIT_OPTIONS = (MAX_CONNECTIONS, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT)


def default_max_connections() -> int:
    """:data:`DEFAULT_MAX_CONNECTIONS`, or less where the open-file limit is low (see
    :data:`SHARE_OF_OPEN_FILES`; read when a listener starts, after start-up raised the limit)."""
    try:
        import resource
    except ImportError:  # Windows: no per-process descriptor limit for sockets
        return DEFAULT_MAX_CONNECTIONS
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(4, min(DEFAULT_MAX_CONNECTIONS, soft // SHARE_OF_OPEN_FILES))


class ConnectionGuard:
    """One listener's limits (see the module docstring); ``open``, ``refused``, ``timed_out`` count."""

    def __init__(self, name: str, max_connections: int | None = None,
                 handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT, idle_timeout: float | None = None,
                 first_byte_is_handshake: bool = False) -> None:
        self.max_connections = default_max_connections() if max_connections is None else max_connections
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.name = name
        self.handshake_timeout = handshake_timeout or None
        self.idle_timeout = idle_timeout or None
        self.first_byte_is_handshake = first_byte_is_handshake
        self.open = 0
        self.refused = 0
        self.timed_out = 0
        self._full = False
        self._rlog = RateLimitedLog(log, LOG_EVERY)

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any], idle_timeout: float | None = None,
                     first_byte_is_handshake: bool = False) -> ConnectionGuard:
        """A guard from a listen URI's options; ``idle_timeout`` is the scheme's default."""
        cap = options.get("max_connections")
        return cls(name, None if cap is None else int(cap),
                   float(options.get("handshake_timeout", DEFAULT_HANDSHAKE_TIMEOUT)),
                   float(options.get("idle_timeout", idle_timeout or 0)),
                   first_byte_is_handshake)

    def describe(self) -> str:
        idle = f"{self.idle_timeout:g} s" if self.idle_timeout else "none"
        return (f"at most {self.max_connections} connections, handshake within {self.handshake_timeout or 0:g} s, "
                f"idle timeout {idle}")

    # ------------------------------------------------------------------------------ bookkeeping
    def _admit(self) -> bool:
        if self.open < self.max_connections:
            self.open += 1
            return True
        self.refused += 1
        if not self._full:  # once per time the cap is reached, not once per refused connection
            self._full = True
            self._rlog.warning("full", "%s: %d connections open, its max_connections: refusing new ones until "
                               "some close", self.name, self.open)
        return False

    def _left(self) -> None:
        self.open -= 1
        if self._full and self.open < self.max_connections:
            self._full = False
            self._rlog.info("free", "%s: below max_connections again (%d refused so far)", self.name, self.refused)

    def _timed_out(self, why: str) -> None:
        self.timed_out += 1
        self._rlog.info(why, "%s: closed a connection: %s (%d closed so far)", self.name, why, self.timed_out)


class GuardedProtocol(asyncio.Protocol):
    """Stands between a transport and the protocol that serves it, counting and timing the connection."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.BaseProtocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.admitted = False
        self.shaken = False  # the handshake is complete
        self._timer: asyncio.TimerHandle | None = None
        self._heard = 0.0  # loop time of the last byte received

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.guard._admit():
            transport.abort()  # the inner protocol never sees it; connection_lost follows, not admitted
            return
        self.admitted = True
        keep_alive(transport)
        loop = asyncio.get_running_loop()
        self._heard = loop.time()
        if self.guard.handshake_timeout:
            self._timer = loop.call_later(self.guard.handshake_timeout, self._handshake_over)
        elif self.guard.idle_timeout:
            self.established()
        self.inner.connection_made(transport)

    def established(self) -> None:
        """The handshake is complete: from now on only the idle timeout applies (if any)."""
        if self.shaken:
            return
        self.shaken = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.guard.idle_timeout and self.transport is not None and not self.transport.is_closing():
            self._timer = asyncio.get_running_loop().call_later(self.guard.idle_timeout, self._idle_check)

    def _handshake_over(self) -> None:
        self._timer = None
        if not self.shaken and self.transport is not None and not self.transport.is_closing():
            self.guard._timed_out(f"no handshake within {self.guard.handshake_timeout:g} s")
            self.transport.abort()

    def _idle_check(self) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing() or not self.guard.idle_timeout:
            return
        loop = asyncio.get_running_loop()
        silent = loop.time() - self._heard
        if silent >= self.guard.idle_timeout:
            self.guard._timed_out(f"silent for {self.guard.idle_timeout:g} s")
            self.transport.abort()
        else:
            self._timer = loop.call_later(self.guard.idle_timeout - silent, self._idle_check)

    def data_received(self, data: bytes) -> None:
        self._heard = asyncio.get_running_loop().time()
        if self.guard.first_byte_is_handshake and not self.shaken:
            self.established()
        self.inner.data_received(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[attr-defined]

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.admitted:
            return
        self.admitted = False
        self.guard._left()
        self.inner.connection_lost(exc)


def established(transport: asyncio.BaseTransport | None) -> None:
    """Tell the guard of ``transport``'s listener (if it has one) that the connection's handshake is done."""
    protocol = transport.get_protocol() if transport is not None else None
    if isinstance(protocol, GuardedProtocol):
        protocol.established()


def keep_alive(transport: asyncio.BaseTransport) -> None:
    """TCP keepalive with short probe intervals where the platform has the knobs: a peer that vanished
    (power cut, cable) is found and closed in minutes even on a listener with no idle timeout."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for knob, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                            ("TCP_KEEPCNT", KEEPALIVE_PROBES)):
            if hasattr(socket, knob):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, knob), value)
    except OSError:  # a socket already reset by its peer: nothing to keep alive
        pass


def guard_factory(guard: ConnectionGuard, factory: Callable[[], asyncio.BaseProtocol]) -> Callable[[], GuardedProtocol]:
    """A protocol factory for ``loop.create_server`` that puts ``guard`` in front of ``factory``'s protocols."""
    return lambda: GuardedProtocol(guard, factory())


async def start_stream_server(client_connected: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
                              host: str | None, port: int, guard: ConnectionGuard,
                              limit: int = 2 ** 16) -> asyncio.Server:
    """``asyncio.start_server`` with ``guard`` in front of every connection."""
    loop = asyncio.get_running_loop()

    def streams() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected, loop=loop)

    return await loop.create_server(guard_factory(guard, streams), host, port)
