"""What pc_rpc and sync_struct share on the wire: banners, line framing, packed exceptions.

Every message of both protocols is one ``\\n``-terminated line; a server reads with a bounded buffer
(4 MiB, as sipyco's server does) so one giant line cannot exhaust memory; clients allow more because
they read replies from a server they chose to trust.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import traceback
from typing import Any

from core.link import RemoteError
from core.peers import peer_host as host_of
from core.peers import peer_text
from transports.access import AllowList
from transports.conn_limits import ConnectionGuard, start_stream_server
from transports.read_size import read_at_most
from transports.rpc import pyon

log = logging.getLogger(__name__)

RPC_BANNER = b"ARTIQ pc_rpc\n"
SYNC_BANNER = b"ARTIQ sync_struct\n"
FEATURE_PYON_V2 = "pyon_v2"
SERVER_FEATURES = (FEATURE_PYON_V2,)

#: methods that run at once on a server and take their own connection on a busy client (a stop must never
#: wait behind the move it stops); a server also honours methods marked ``@urgent``
URGENT_NAMES = frozenset({"stop", "stop_all"})

SERVER_LINE_LIMIT = 4 * 1024 * 1024
CLIENT_LINE_LIMIT = 100 * 1024 * 1024


class ProtocolError(ConnectionError):
    """The peer broke the protocol (bad banner, unknown target, malformed line); the connection is dropped."""


async def read_line(reader: asyncio.StreamReader, what: str) -> bytes:
    """One line, without its ``\\n``. EOF or an over-long line raise :class:`ProtocolError`/ConnectionError."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as ex:
        if ex.partial:
            raise ProtocolError(f"connection closed in the middle of {what}") from None
        raise ConnectionResetError(f"connection closed while waiting for {what}") from None
    except asyncio.LimitOverrunError as ex:
        raise ProtocolError(f"{what} longer than the line limit ({ex.consumed} bytes buffered)") from ex
    return line[:-1]


def decode_line(line: bytes, what: str) -> Any:
    try:
        return pyon.decode(line)
    except pyon.PyonError as ex:
        raise ProtocolError(f"{what} is not PYON: {ex} (line starts {line[:60]!r})") from None


def encode_line(obj: Any) -> bytes:
    return (pyon.encode(obj) + "\n").encode("ascii")


def peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return peer_text(peer[0], peer[1])
    return str(peer)


def peer_host(peer: str) -> str:
    """The rate-limit key of a peer (``host:port``): its host, as a peer reconnecting for every line
    changes port."""
    return host_of(peer) or peer


class LineServer:
    """Base of the pc_rpc server and the sync_struct publisher: a TCP server reading bounded lines.

    Its :attr:`guard` caps its connections and closes those that have not finished the handshake (banner and
    target or notifier name) in time; subclasses call :func:`transports.conn_limits.established` after it.
    """

    _server: asyncio.base_events.Server | None = None
    #: peers let in (the rig file's ``allow``); None lets everyone in
    allow: AllowList | None = None
    #: the longest line read; parsing a line holds the event loop for a time proportional to its length
    line_limit: int = SERVER_LINE_LIMIT
    #: connection limits (:mod:`transports.conn_limits`); the defaults when not set before :meth:`start`
    guard: ConnectionGuard | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def _hang_up_all(self) -> None:
        """Close every open connection (the server is closing)."""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self.guard is None:
            self.guard = ConnectionGuard(type(self).__name__)
        self._server = await start_stream_server(self._accept, host, port, self.guard, limit=self.line_limit)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.allow is not None:
            peer = writer.get_extra_info("peername")
            if not self.allow.admits(str(peer[0]) if peer else "?", type(self).__name__):
                writer.close()  # before the banner: a refused peer learns nothing
                return
        read_at_most(writer.transport)
        await self._handle(reader, writer)

    @property
    def port(self) -> int:
        assert self._server is not None, f"{type(self).__name__} not started"
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self._hang_up_all()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)
        self._server = None

    async def stop(self) -> None:
        await self.close()


# ------------------------------------------------------------------------------- packed exceptions

class RemoteException(RemoteError):
    """A remote call raised an exception class that is not a Python built-in.

    ``text`` is ``"Qualified.Name: message"``; ``remote_traceback`` holds the server's formatted traceback
    lines (also shown by ``str()`` of the parent traceback attribute ``parent_traceback``).
    """

    def __init__(self, text: str, remote_traceback: list[str] | None = None) -> None:
        super().__init__(text)
        self.remote_traceback = list(remote_traceback or [])
        self.parent_traceback = self.remote_traceback


#: the class name sipyco uses for non-built-in exceptions on the wire
GENERIC_CLASS = "GenericRemoteException"


def pack_exception(exc: BaseException) -> dict[str, Any]:
    """``{"class", "message", "traceback"}`` as sipyco servers send it."""
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    cls = type(exc)
    if getattr(builtins, cls.__name__, None) is cls:
        return {"class": cls.__name__, "message": str(exc), "traceback": tb}
    return {"class": GENERIC_CLASS, "message": f"{cls.__qualname__}: {exc}", "traceback": tb}


def unpack_exception(packed: Any) -> Exception:
    """The exception a client raises for a ``"failed"`` reply: the built-in class itself when it is one
    (with ``parent_traceback`` attached), :class:`RemoteException` otherwise. Never anything outside
    ``builtins``, and never BaseException-only classes such as SystemExit.
    """
    if not isinstance(packed, dict):
        return RemoteException(f"malformed exception report: {packed!r}")
    name = str(packed.get("class", ""))
    message = str(packed.get("message", ""))
    tb = packed.get("traceback") or []
    tb = [str(x) for x in tb] if isinstance(tb, list) else [str(tb)]
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and name != GENERIC_CLASS:
        try:
            exc = cls(message)
        except Exception:  # e.g. UnicodeDecodeError needs 5 arguments
            exc = RemoteException(f"{name}: {message}", tb)
        exc.parent_traceback = tb  # type: ignore[attr-defined]
        return exc
    text = message if name == GENERIC_CLASS else f"{name}: {message}"
    return RemoteException(text, tb)
