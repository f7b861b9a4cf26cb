"""iblutil's TCP variant (scheme ``tcp://``): the same JSON messages on a plain stream, with no framing.

iblutil writes each message's bytes and reads whatever arrives, so two messages sent back to back reach
it as one undecodable chunk, and its server shares one protocol object between all connections. Here
a :class:`StreamSplitter` cuts the stream into messages with a JSON scanner (whitespace between
messages is skipped; the exact bytes of each message are kept so echoes stay byte-identical), and every
connection has its own :class:`~transports.ibl_conversation.Conversation`.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import itertools
import json
import logging
import time
from typing import Any

from core.config import RigSpec
from core.link import LinkClosed, LinkState, MessageHandler, RemoteError, RequestTimeout, RigError, RigLink
from core.protocol import ExpMessage, RigAddress
from transports.ibl_conversation import Tuning
from transports.ibl_endpoint import IblEndpoint

log = logging.getLogger(__name__)

#: a single message larger than this on a stream is refused and the connection dropped
MAX_STREAM_MESSAGE = 1 << 20
DEFAULT_TIMEOUT = 5.0

_decoder = json.JSONDecoder()


class StreamError(ValueError):
    """The stream cannot be cut into JSON messages (garbage, or a message over the size limit)."""


class StreamSplitter:
    """Cuts a byte stream into the exact bytes of each JSON message it carries."""

    def __init__(self, limit: int = MAX_STREAM_MESSAGE) -> None:
        self.limit = limit
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._text = ""

    def feed(self, data: bytes) -> list[bytes]:
        """Return the complete messages now available; raises :class:`StreamError` on garbage."""
        try:
            self._text += self._utf8.decode(data)
        except UnicodeDecodeError as ex:
            raise StreamError(f"stream is not UTF-8: {ex.reason}") from None
        out: list[bytes] = []
        while True:
            stripped = self._text.lstrip()
            self._text = stripped
            if not stripped:
                return out
            try:
                _, end = _decoder.raw_decode(stripped)
            except json.JSONDecodeError as ex:
                if ex.pos >= len(stripped) - 5 or "Unterminated" in ex.msg:  # may complete with more data
                    if len(stripped.encode()) > self.limit:
                        raise StreamError(f"message over {self.limit} bytes without an end") from None
                    return out  # incomplete: wait for more
                raise StreamError(f"not JSON at {stripped[:40]!r}: {ex.msg}") from None
            if end == len(stripped) and stripped[-1].isdigit():
                return out  # a bare number may continue in the next chunk
            out.append(stripped[:end].encode())
            self._text = stripped[end:]


class TcpEndpoint(IblEndpoint):
    """Connections speaking iblutil over TCP; each connection is one peer."""

    _ids = itertools.count(1)

    def __init__(self, name: str, service: MessageHandler | None = None, tuning: Tuning | None = None) -> None:
        super().__init__(name, service, tuning, limit=MAX_STREAM_MESSAGE)
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self.peers: dict[int, str] = {}
        self.client_conn: int | None = None

    def _send_to(self, addr: Any, raw: bytes) -> None:
        writer = self.writers.get(addr)
        if writer is not None and not writer.is_closing():
            writer.write(raw)

    def _default_addr(self) -> Any:
        return self.client_conn

    def _describe(self, addr: Any) -> str:
        return self.peers.get(addr, f"connection {addr}")

    async def run_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        """Register a connection and start reading it in the background; returns its id."""
        conn = next(self._ids)
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.writers[conn] = writer
        self.peers[conn] = f"{peer[0]}:{peer[1]}"
        self._spawn(self._read(conn, reader, writer))
        return conn

    async def _read(self, conn: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        splitter = StreamSplitter()
        try:
            while not self.closed:
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
        from transports.udp import tuning_from

        self.endpoint = TcpEndpoint(self.name, tuning=tuning_from(spec.options))

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

    def __init__(self, server: asyncio.Server, endpoint: TcpEndpoint) -> None:
        self.server = server
        self.endpoint = endpoint

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
    """Serve ``service`` on ``address`` with iblutil's TCP variant (one conversation per connection)."""
    from transports.udp import tuning_from

    name = getattr(service, "name", None) or "rig"
    endpoint = TcpEndpoint(f"{name} tcp", service=service, tuning=tuning_from(dict(options or {})))

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await endpoint.run_connection(reader, writer)

    server = await asyncio.start_server(accept, address.host, address.port)
    log.info("tcp: rig %s listens on %s:%s", name, address.host, server.sockets[0].getsockname()[1])
    return TcpServer(server, endpoint)
