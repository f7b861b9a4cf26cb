"""iblutil's TCP variant (scheme ``tcp://``): the same JSON messages on a plain stream, with no framing.

iblutil writes each message's bytes and reads whatever arrives, so two messages sent back to back reach
it as one undecodable chunk, and its server shares one protocol object between all connections. Here
a :class:`StreamSplitter` cuts the stream into messages by their brackets (whitespace between
messages is skipped; the exact bytes of each message are kept so echoes stay byte-identical), and every
connection has its own :class:`~transports.ibl_conversation.Conversation`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import re
import time
from typing import Any

from core.config import RigSpec
from core.link import LinkClosed, LinkState, MessageHandler, RemoteError, RequestTimeout, RigError, RigLink
from core.peers import peer_text
from core.protocol import ExpMessage, RigAddress
from transports.access import allow_list
from transports.conn_limits import ConnectionGuard, start_stream_server
from transports.ibl.conversation import Tuning, tuning_from
from transports.ibl.endpoint import IblEndpoint
from transports.read_size import read_at_most

log = logging.getLogger(__name__)

#: a single message larger than this on a stream is refused and the connection dropped
MAX_STREAM_MESSAGE = 1 << 20
DEFAULT_TIMEOUT = 5.0
#: seconds between two writes on one connection, so an iblutil peer reads them apart (see TcpEndpoint)
DEFAULT_WRITE_GAP = 0.005
#: bytes waiting to go out to one peer (paced queue + transport buffer) above which its reading pauses
MAX_BACKLOG = 256 * 1024
#: a peer whose backlog passes this, or stays over MAX_BACKLOG this many seconds, is dropped
DROP_BACKLOG = 8 * 1024 * 1024
STALL_TIMEOUT = 30.0
#: how often a paused connection looks again whether its writes have drained
_ROOM_POLL = 0.02

class StreamError(ValueError):
    """The stream cannot be cut into messages any more (a message over the size limit)."""


_OUTSIDE = re.compile(rb'[\[\]{}"]')  # what matters inside a message but outside its strings
_IN_STRING = re.compile(rb'["\\]')  # what ends a string, or escapes the next byte
_OPENERS = re.compile(rb"[\[{]")
_SPACE = b" \t\r\n"


class StreamSplitter:
    """Cuts a byte stream into the exact bytes of each message it carries.

    iblutil messages are JSON arrays, so a message is a balanced run of brackets, strings skipped (with
    their escapes). Scanning bytes, not decoding JSON, never has to guess whether a chunk that fails to
    parse is incomplete or wrong: a message split anywhere (inside ``Infinity``, a string, a multi-byte
    character) waits for the rest, a complete but malformed one (``[32, x]``) is cut and handed on like
    any datagram (the conversation answers it with an error report), and text between messages (a
    stray ``]``, an HTTP request) comes out as a piece of its own, so the stream always resynchronises
    on the next ``[``. Only a message over ``limit`` bytes is an error (the connection is dropped).
    """

    def __init__(self, limit: int = MAX_STREAM_MESSAGE) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._pos = 0  # scanned up to here
        self._depth = 0  # open brackets of the current message (0: between messages)
        self._in_string = False

    def feed(self, data: bytes) -> list[bytes]:
        """Return the complete messages (and pieces of junk) now available, in stream order."""
        self._buf += data
        out: list[bytes] = []
        start = 0  # first byte of the current message, or of what is left to cut
        buf, pos = self._buf, self._pos
        while pos < len(buf):
            if self._depth == 0:
                while pos < len(buf) and buf[pos] in _SPACE:
                    pos += 1
                start = pos
                if pos == len(buf):
                    break
                if buf[pos] not in b"[{":  # junk up to the next message
                    found = _OPENERS.search(buf, pos)
                    pos = found.start() if found else len(buf)
                    out.append(bytes(buf[start:pos]).rstrip(_SPACE))
                    start = pos
                    continue
            if self._in_string:
                found = _IN_STRING.search(buf, pos)
                if found is None:
                    pos = len(buf)
                elif buf[found.start()] == ord("\\"):
                    if found.start() + 1 >= len(buf):
                        pos = found.start()  # the escaped byte is still to come
                        break
                    pos = found.start() + 2
                else:
                    self._in_string = False
                    pos = found.start() + 1
                continue
            found = _OUTSIDE.search(buf, pos)
            if found is None:
                pos = len(buf)
                continue
            byte, pos = buf[found.start()], found.start() + 1
            if byte == ord('"'):
                self._in_string = True
            elif byte in b"[{":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    out.append(bytes(buf[start:pos]))
                    start = pos
        if self._depth and pos - start > self.limit:
            raise StreamError(f"message over {self.limit} bytes without an end")
        del buf[:start]
        self._pos = pos - start
        return [piece for piece in out if piece]


class TcpEndpoint(IblEndpoint):
    """Connections speaking iblutil over TCP; each connection is one peer.

    ``write_gap``: iblutil reads whatever the stream holds and cannot split it, so an echo and the reply
    right behind it (or our echo of a reply and the next request) reach an iblutil peer as one chunk it
    rejects, closing itself. Writes on one connection are therefore spaced by at least ``write_gap``
    seconds (0 turns pacing off: RigDeck peers split streams themselves).

    Backpressure: every message read is echoed (and a request answered), so a peer that writes and never
    reads would have us buffer without end (a rig grew by 2 GB in 23 s). When the bytes waiting to go
    to a peer (``backlog``) pass ``max_backlog``, we stop reading from it until they drain to half; its
    own writes then block in its kernel buffers. A peer whose backlog passes ``drop_backlog``, or stays
    over ``max_backlog`` for ``stall_timeout`` seconds, is dropped (logged once).
    """

    _ids = itertools.count(1)

    def __init__(self, name: str, service: MessageHandler | None = None, tuning: Tuning | None = None,
                 write_gap: float = DEFAULT_WRITE_GAP, max_backlog: int = MAX_BACKLOG,
                 drop_backlog: int = DROP_BACKLOG, stall_timeout: float = STALL_TIMEOUT) -> None:
        super().__init__(name, service, tuning, limit=MAX_STREAM_MESSAGE)
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self.peers: dict[int, str] = {}
        self.client_conn: int | None = None
        self.write_gap = write_gap
        self.max_backlog = max_backlog
        self.drop_backlog = max(drop_backlog, max_backlog)
        self.stall_timeout = stall_timeout
        self.dropped = 0  # peers dropped for not reading
        self._next_write: dict[int, float] = {}
        self._queued: dict[int, collections.deque[bytes]] = {}
        self._queued_bytes: dict[int, int] = {}

    def backlog(self, addr: Any) -> int:
        """Bytes waiting to go out to this connection: the paced queue and the transport's buffer."""
        writer = self.writers.get(addr)
        buffered = writer.transport.get_write_buffer_size() if writer is not None else 0
        return buffered + self._queued_bytes.get(addr, 0)

    def _drop(self, addr: Any, why: str) -> None:
        """Close a connection that does not read what we write (once: it leaves ``writers`` here)."""
        writer = self.writers.pop(addr, None)
        if writer is None:
            return
        self.dropped += 1
        log.warning("%s: dropping %s: %s", self.name, self._describe(addr), why)
        self._queued.pop(addr, None)
        self._queued_bytes.pop(addr, None)
        writer.transport.abort()  # what is buffered for it is discarded, not flushed

    async def _room_to_read(self, addr: Any) -> bool:
        """Wait while this connection's backlog is over ``max_backlog`` (until it is under half); False
        if the connection is gone or was dropped for stalling meanwhile."""
        if self.backlog(addr) <= self.max_backlog:
            return addr in self.writers
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.stall_timeout
        while addr in self.writers and self.backlog(addr) > self.max_backlog // 2:
            if loop.time() >= give_up:
                self._drop(addr, f"it has not read {self.backlog(addr)} bytes for {self.stall_timeout:g} s")
                return False
            await asyncio.sleep(_ROOM_POLL)  # (only while a peer is stalled)
        return addr in self.writers

    def _send_to(self, addr: Any, raw: bytes) -> None:
        writer = self.writers.get(addr)
        if writer is None or writer.is_closing():
            return
        if self.backlog(addr) + len(raw) > self.drop_backlog:
            self._drop(addr, f"over {self.drop_backlog} bytes written to it are waiting (it does not read)")
            return
        if self.write_gap <= 0:
            writer.write(raw)
            return
        queue = self._queued.get(addr)
        if queue is not None:  # already pacing this connection: keep the order
            queue.append(raw)
            self._queued_bytes[addr] = self._queued_bytes.get(addr, 0) + len(raw)
            return
        loop = asyncio.get_running_loop()
        due = self._next_write.get(addr, 0.0)
        if loop.time() >= due:
            writer.write(raw)
            self._next_write[addr] = loop.time() + self.write_gap
        else:
            self._queued[addr] = collections.deque([raw])
            self._queued_bytes[addr] = len(raw)
            loop.call_at(due, self._write_queued, addr)

    def _write_queued(self, addr: Any) -> None:
        queue = self._queued.get(addr)
        writer = self.writers.get(addr)
        if not queue or writer is None or writer.is_closing():
            self._queued.pop(addr, None)
            self._queued_bytes.pop(addr, None)
            return
        raw = queue.popleft()
        self._queued_bytes[addr] -= len(raw)
        writer.write(raw)
        loop = asyncio.get_running_loop()
        self._next_write[addr] = loop.time() + self.write_gap
        if queue:
            loop.call_later(self.write_gap, self._write_queued, addr)
        else:
            del self._queued[addr]
            self._queued_bytes.pop(addr, None)

    def _default_addr(self) -> Any:
        return self.client_conn

    def _describe(self, addr: Any) -> str:
        return self.peers.get(addr, f"connection {addr}")

    async def run_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        """Register a connection and start reading it in the background; returns its id."""
        conn = next(self._ids)
        read_at_most(writer.transport)
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.writers[conn] = writer
        self.peers[conn] = peer_text(peer[0], peer[1])
        self._spawn(self._read(conn, reader, writer))
        return conn

    async def _read(self, conn: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        splitter = StreamSplitter()
        try:
            while not self.closed and await self._room_to_read(conn):
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    messages = splitter.feed(data)
                except StreamError as ex:
                    log.warning("%s: dropping %s: %s", self.name, self._describe(conn), ex)
                    break
                for raw in messages:
                    try:
                        self.conversation(conn).receive(raw)
                    except Exception:
                        log.exception("%s: failed to process a message from %s", self.name, self._describe(conn))
        except (ConnectionError, OSError) as ex:
            log.info("%s: %s: %s", self.name, self._describe(conn), ex)
        finally:
            self.writers.pop(conn, None)
            self._queued.pop(conn, None)
            self._queued_bytes.pop(conn, None)
            self._next_write.pop(conn, None)
            conv = self.conversations.pop(conn, None)
            if conv is not None:
                conv.close()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class TcpLink(RigLink):
    """A rig reached over iblutil TCP; reconnects on the next request after the connection drops."""

    def __init__(self, spec: RigSpec) -> None:
        super().__init__(spec.name, spec.uri)
        self.address = spec.address
        self.timeout = float(spec.options.get("timeout", DEFAULT_TIMEOUT))

        self.endpoint = TcpEndpoint(self.name, tuning=tuning_from(spec.options),
                                    write_gap=float(spec.options.get("write_gap", DEFAULT_WRITE_GAP)))

    @property
    def connected(self) -> bool:
        return self.endpoint.client_conn in self.endpoint.writers

    async def connect(self) -> None:
        if self.connected:
            return
        self.set_state(LinkState.CONNECTING)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.address.host, self.address.port), self.timeout)
        except (OSError, TimeoutError) as ex:
            self.set_state(LinkState.UNREACHABLE, f"cannot connect to {self.address.netloc}: {ex or 'timeout'}")
            return
        self.endpoint.client_conn = await self.endpoint.run_connection(reader, writer)
        self.set_state(LinkState.ONLINE)

    async def request(self, event: ExpMessage, *data: Any, timeout: float | None = None) -> list[Any]:
        if self.state is LinkState.CLOSED:
            raise LinkClosed(f"{self.name}: link closed")
        if not self.connected:
            await self.connect()
            if not self.connected:
                raise RigError(f"{self.name}: {self.last_error}")
        start = time.monotonic()
        try:
            reply = await self.endpoint.request(event, *data, timeout=timeout or self.timeout)
        except RemoteError:
            self.note_reply(time.monotonic() - start)
            raise
        except (RequestTimeout, LinkClosed) as ex:
            self.set_state(LinkState.UNREACHABLE, str(ex))
            raise
        self.note_reply(time.monotonic() - start)
        return reply

    async def close(self) -> None:
        self.endpoint.close()
        for writer in list(self.endpoint.writers.values()):
            writer.close()
        await self.endpoint.wait_closed()
        self.set_state(LinkState.CLOSED)


class TcpServer:
    """Handle of :func:`serve_tcp`."""

    def __init__(self, server: asyncio.Server, endpoint: TcpEndpoint, guard: ConnectionGuard) -> None:
        self.server = server
        self.endpoint = endpoint
        self.guard = guard

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.server.close()
        self.endpoint.close()
        for writer in list(self.endpoint.writers.values()):
            writer.close()
        await self.endpoint.wait_closed()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)


async def serve_tcp(address: RigAddress, service: MessageHandler, options: dict[str, Any] | None = None) -> TcpServer:
    """Serve ``service`` on ``address`` with iblutil's TCP variant (one conversation per connection).

    Connection limits (:mod:`transports.conn_limits`): iblutil has no handshake, so a connection that has
    not sent its first byte within ``handshake_timeout`` is closed; there is no idle timeout by default, as
    an iblutil console may stay connected and silent between sessions for hours (``idle_timeout`` sets one).
    """

    name = getattr(service, "name", None) or "rig"
    options = dict(options or {})
    endpoint = TcpEndpoint(f"{name} tcp", service=service, tuning=tuning_from(options),
                           write_gap=float(options.get("write_gap", DEFAULT_WRITE_GAP)))
    allow = allow_list(options.get("allow"))

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if allow is not None and not allow.admits(str(peer[0]) if peer else "?", endpoint.name):
            writer.close()  # before a byte is read: a refused peer reaches no conversation
            return
        await endpoint.run_connection(reader, writer)

    guard = ConnectionGuard.from_options(f"tcp: rig {name}", options, first_byte_is_handshake=True)
    server = await start_stream_server(accept, address.host, address.port, guard)
    log.info("tcp: rig %s listens on %s:%s%s (%s)", name, address.host, server.sockets[0].getsockname()[1],
             f" (allow: {allow})" if allow else "", guard.describe())
    return TcpServer(server, endpoint, guard)
