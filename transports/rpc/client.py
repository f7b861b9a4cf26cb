"""Async pc_rpc client, wire-compatible with sipyco servers (ARTIQ controllers, ``artiq_master``).

The protocol has no request ids, so one connection carries one call at a time (a lock) and a call
that times out leaves its reply in flight: the client then drops the connection rather than read a
stale reply as the answer to the next call. What happens next depends on the mode:

- plain (default): the next call opens a new connection;
- ``reconnect=True``: a background task reconnects with backoff (up to ``retry`` s between attempts);
  calls made while disconnected raise :class:`RpcUnavailable` at once (they never wait for the server);
- ``best_effort=True`` (implies reconnect): like sipyco's BestEffortClient, calls that fail because
  of the *network* return ``None``; exceptions raised by the remote method are still raised.

Urgent calls (``stop``, ``stop_all``) never wait behind a call in flight: they take a connection of
their own while this one is busy.

Remote exceptions: built-in classes are raised as themselves with ``parent_traceback`` (the server's
traceback lines); anything else is a :class:`~transports.rpc_wire.RemoteException`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from core.link import RequestTimeout, RigError
from core.listeners import Listeners, Unsubscribe
from transports.read_size import read_at_most
from transports.rpc import pyon
from transports.rpc.wire import (
    CLIENT_LINE_LIMIT,
    FEATURE_PYON_V2,
    RPC_BANNER,
    URGENT_NAMES,
    ProtocolError,
    decode_line,
    encode_line,
    read_line,
    unpack_exception,
)

log = logging.getLogger(__name__)


class _AutoTarget:
    def __repr__(self) -> str:
        return "AUTO_TARGET"


#: select the server's only target, whatever its name
AUTO_TARGET: Any = _AutoTarget()


class IncompatibleServer(ConnectionError):
    """The server does not offer the target (or the PYON v2 feature) we need."""


class RpcUnavailable(RigError, ConnectionError):
    """A reconnecting client is not connected right now (its background task keeps trying)."""


ConnectionListener = Callable[[bool, str | None], None]


class RpcClient:
    def __init__(
        self,
        host: str,
        port: int,
        target: Any = AUTO_TARGET,
        timeout: float | None = None,
        connect_timeout: float = 5.0,
        reconnect: bool = False,
        best_effort: bool = False,
        retry: float = 5.0,
    ) -> None:
        self.host, self.port = host, port
        self.wanted_target = target
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.best_effort = best_effort
        self.reconnect = reconnect or best_effort
        self.retry = retry
        self.targets: list[str] = []
        self.description: str | None = None
        self.features: list[str] = []
        self.selected_target: str | None = None
        self.methods: set[str] = set()
        self.last_error: str | None = None
        self.last_rtt: float | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._closed = False
        self._listeners: Listeners[[bool, str | None]] = Listeners("pc_rpc connection listener")

    # ------------------------------------------------------------------------------- connection
    @property
    def connected(self) -> bool:
        return self._writer is not None

    def on_connection(self, listener: ConnectionListener) -> Unsubscribe:
        """``listener(connected, error_text)`` on every connect and disconnect; returns its unsubscribe."""
        return self._listeners.add(listener)

    def _tell(self, up: bool, error: str | None) -> None:
        self._listeners.notify(up, error)

    async def connect(self) -> None:
        """Open and handshake now. Plain mode raises on failure; reconnecting modes try once (logging
        the failure) and keep trying in the background."""
        self._closed = False
        if not self.reconnect:
            await self._open()
            return
        try:
            await self._open()
        except (TimeoutError, OSError, ProtocolError) as ex:
            log.info("pc_rpc %s:%s not reachable yet (%s); retrying in the background", self.host, self.port, ex)
            self._tell(False, self.last_error)
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def _open(self) -> None:
        try:
            await asyncio.wait_for(self._handshake(), self.connect_timeout)
        except TimeoutError:
            self._drop(f"no answer to the pc_rpc handshake within {self.connect_timeout} s", tell=False)
            raise
        except (OSError, ProtocolError) as ex:
            self._drop(f"{type(ex).__name__}: {ex}", tell=False)
            raise
        self.last_error = None
        self._tell(True, None)

    async def _handshake(self) -> None:
        """Open and identify; the connection is published to callers only once it is ready."""
        self._reader, self._writer = await self._open_stream()

    async def _open_stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=CLIENT_LINE_LIMIT)
        read_at_most(writer.transport)
        try:
            await self._identify(reader, writer)
        except BaseException:
            writer.close()
            raise
        return reader, writer

    async def _identify(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(RPC_BANNER)
        ident = decode_line(await read_line(reader, "the server identification"), "server identification")
        if (not isinstance(ident, dict) or not isinstance(ident.get("targets"), list)
                or not isinstance(ident.get("features") or [], list)):
            raise ProtocolError(f"not a pc_rpc server identification: {pyon.brief(ident)}")
        self.targets = [str(t) for t in ident["targets"]]
        self.description = ident.get("description")
        self.features = [str(f) for f in ident.get("features") or []]
        target = self.wanted_target
        if target is None:
            return  # list-targets only: no selection
        if target is AUTO_TARGET:
            if len(self.targets) != 1:
                raise IncompatibleServer(f"server has targets {pyon.brief(self.targets)}: name the one to use")
            target = self.targets[0]
        if target not in self.targets:
            raise IncompatibleServer(f"server has no target {target!r} (it has {pyon.brief(self.targets)})")
        if not target or any(c.isspace() for c in target):  # it goes on one line with the features
            raise IncompatibleServer(f"target name {pyon.brief(target)} cannot be selected (empty or with spaces)")
        if FEATURE_PYON_V2 not in self.features:
            raise IncompatibleServer("server does not speak PYON v2 (sipyco older than 1.10?); v1 needs eval")
        writer.write(f"{target} {FEATURE_PYON_V2}\n".encode())
        methods = decode_line(await read_line(reader, "the method list"), "method list")
        self.methods = {str(m) for m in methods} if isinstance(methods, set | list | tuple) else set()
        self.selected_target = target

    def _drop(self, why: str, tell: bool = True) -> None:
        """Forget the connection (its stream may hold a stale reply)."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
        self.last_error = why
        if tell:
            log.info("pc_rpc %s:%s: connection dropped: %s", self.host, self.port, why)
            self._tell(False, why)
            self._lost.set()

    async def _supervise(self) -> None:
        """Reconnect with backoff; notice a server that closed the idle connection."""
        delay = min(0.2, self.retry)
        while not self._closed:
            if self._writer is None:
                try:
                    await self._open()
                    delay = min(0.2, self.retry)
                except (TimeoutError, OSError, ProtocolError):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry)
                    continue
            reader = self._reader
            if reader is not None and not self._lock.locked() and (reader.at_eof() or reader.exception()):
                self._drop("server closed the connection")
                continue
            self._lost.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._lost.wait(), 0.5)

    async def close(self) -> None:
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
            self._supervisor = None
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def __aenter__(self) -> RpcClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------------------ calls
    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call a remote method with the client's default timeout."""
        return await self.call_ex(name, args, kwargs)

    async def call_ex(
        self, name: str, args: Any = (), kwargs: dict[str, Any] | None = None, timeout: Any = "default"
    ) -> Any:
        """Call with an explicit ``timeout`` (seconds or None); raises RequestTimeout when it expires."""
        request = {"action": "call", "name": name, "args": list(args), "kwargs": dict(kwargs or {})}
        return await self._exchange(request, self.timeout if timeout == "default" else timeout, f"{name}()")

    async def method_list(self, timeout: float | None = None) -> dict[str, Any]:
        """``{"docstring": ..., "methods": {name: (argspec, doc)}}`` of the selected target."""
        ret = await self._exchange({"action": "get_rpc_method_list"}, timeout or self.timeout, "method list")
        return ret if isinstance(ret, dict) else {"docstring": None, "methods": {}}

    async def _exchange(self, request: dict[str, Any], timeout: float | None, what: str) -> Any:
        line = encode_line(request)  # before the lock: an unencodable argument fails here, cleanly
        if self._lock.locked() and request.get("name") in URGENT_NAMES and self.selected_target is not None:
            return await self._urgent_exchange(line, timeout, what)
        async with self._lock:
            if self._writer is None:
                if self.reconnect and self._closed:
                    raise RpcUnavailable(f"pc_rpc client for {self.host}:{self.port} is closed")
                if self.reconnect:
                    if self.best_effort:
                        return None
                    raise RpcUnavailable(
                        f"{self.host}:{self.port} not connected ({self.last_error or 'connecting'}); retrying"
                    )
                await self._open()
            reader, writer = self._reader, self._writer
            assert reader is not None and writer is not None
            start = time.monotonic()
            try:
                writer.write(line)
                reply = await asyncio.wait_for(self._read_reply(reader, writer), timeout)
            except TimeoutError:
                self._drop(f"{what} timed out after {timeout} s")
                raise RequestTimeout(f"{what} got no reply within {timeout} s") from None
            except (OSError, ProtocolError) as ex:
                self._drop(f"{type(ex).__name__}: {ex}")
                if self.best_effort:
                    return None
                if self.reconnect:
                    raise RpcUnavailable(f"{what}: connection lost ({ex})") from None
                raise
            self.last_rtt = time.monotonic() - start
        return self._result(reply, what)

    async def _urgent_exchange(self, line: bytes, timeout: float | None, what: str) -> Any:
        """A stop while this connection waits for another call's reply (a move): the protocol has no
        request ids, so the stop goes out at once on a connection of its own, opened for it."""
        try:
            reader, writer = await asyncio.wait_for(self._open_stream(), self.connect_timeout)
        except TimeoutError:
            raise RequestTimeout(f"{what}: no answer to the pc_rpc handshake within {self.connect_timeout} s") from None
        try:
            writer.write(line)
            reply = await asyncio.wait_for(self._read_reply(reader, writer), timeout)
        except TimeoutError:
            raise RequestTimeout(f"{what} got no reply within {timeout} s") from None
        finally:
            writer.close()
        return self._result(reply, what)

    @staticmethod
    def _result(reply: Any, what: str) -> Any:
        if not isinstance(reply, dict) or reply.get("status") not in ("ok", "failed"):
            raise ProtocolError(f"malformed reply to {what}: {pyon.brief(reply)}")
        if reply["status"] == "ok":
            return reply.get("ret")
        raise unpack_exception(reply.get("exception"))

    @staticmethod
    async def _read_reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
        await writer.drain()
        return decode_line(await read_line(reader, "a reply"), "reply")

    def __getattr__(self, name: str) -> Callable[..., Any]:
        """``await client.echo(1)`` calls the remote ``echo``; private names are never proxied."""
        if name.startswith("_"):
            raise AttributeError(name)

        async def proxy(*args: Any, **kwargs: Any) -> Any:
            return await self.call(name, *args, **kwargs)

        proxy.__name__ = name
        return proxy
