"""pc_rpc server, wire-compatible with sipyco clients (``sipyco_rpctool``, ARTIQ controllers' users).

Differences from sipyco's server, on purpose:

- only *public* methods are reachable: names starting with ``_`` are neither listed nor callable
  (sipyco lists ``__init__`` and friends and lets a client call any attribute);
- PYON v1 (Python literals decoded with ``eval``) is refused: a client must select ``pyon_v2``;
- a bad banner, an unknown target or feature, or a line over the 4 MiB limit closes *that* connection;
  a request that is not PYON (or breaks its bounds, see :mod:`transports.rpc.pyon`) or not a well-formed
  call gets a ``"failed"`` reply and the connection goes on. Either way: one rate-limited warning line
  per peer, and the server keeps serving everyone else.

Calls are serialised by one lock across all connections unless ``allow_parallel``, except *urgent*
methods (``stop``, ``stop_all`` and any method marked with :func:`urgent`): they run at once, whatever
else is running, so a stop is never queued behind the move it must stop. Coroutine methods are awaited,
plain methods run on the loop (keep them short, or make them coroutines).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from transports.conn_limits import established
from transports.rate_log import RateLimitedLog
from transports.rpc import pyon
from transports.rpc.wire import (
    FEATURE_PYON_V2,
    RPC_BANNER,
    SERVER_FEATURES,
    SERVER_LINE_LIMIT,
    URGENT_NAMES,
    LineServer,
    ProtocolError,
    encode_line,
    pack_exception,
    peer_host,
    peer_name,
    read_line,
)

log = logging.getLogger(__name__)

TERMINATE = "terminate"
F = TypeVar("F", bound=Callable[..., Any])


#: the peer (``host:port``) of the connection whose call is running: each connection is served by its
#: own task, so a target method reads who called it here (the rig hands its Alyx token only to some hosts)
CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("pc_rpc_caller", default="pc_rpc")


def urgent(method: F) -> F:
    """Mark a target method to run at once, never queued behind other calls (a stop, an abort)."""
    method.rigdeck_urgent = True  # type: ignore[attr-defined]
    return method


def is_urgent(name: str, method: Any) -> bool:
    return name in URGENT_NAMES or bool(getattr(method, "rigdeck_urgent", False))


def public_methods(target: Any) -> list[str]:
    """Names a client may call: public, callable, not classes; properties are never evaluated."""
    names = []
    for name in dir(target):
        if name.startswith("_"):
            continue
        try:
            static = inspect.getattr_static(target, name)
        except AttributeError:
            continue
        if isinstance(static, property | type):
            continue
        value = getattr(target, name, None)
        if callable(value) and not isinstance(value, type):
            names.append(name)
    return sorted(names)


def _json_safe(value: Any) -> Any:
    try:
        pyon.encode(value)
        return value
    except pyon.PyonError:
        return repr(value)


def argspec(function: Any) -> dict[str, Any] | None:
    """sipyco's method-list shape: getfullargspec fields without annotations (and without ``self``)."""
    try:
        spec = inspect.getfullargspec(function)
    except TypeError:
        return None
    args = list(spec.args)
    if inspect.ismethod(function) and args:
        args = args[1:]
    defaults = tuple(_json_safe(d) for d in spec.defaults) if spec.defaults else None
    kwdefaults = {k: _json_safe(v) for k, v in spec.kwonlydefaults.items()} if spec.kwonlydefaults else None
    return {
        "args": args,
        "varargs": spec.varargs,
        "varkw": spec.varkw,
        "defaults": defaults,
        "kwonlyargs": list(spec.kwonlyargs),
        "kwonlydefaults": kwdefaults,
    }


def describe(target: Any, names: list[str]) -> dict[str, Any]:
    methods = {}
    for name in names:
        function = getattr(target, name, None)
        methods[name] = (argspec(function), inspect.getdoc(function))
    return {"docstring": inspect.getdoc(target), "methods": methods}


class RpcServer(LineServer):
    """Serve ``targets`` (name -> object; a class is instantiated once per connection) over pc_rpc."""

    def __init__(
        self,
        targets: Mapping[str, Any],
        description: str | None = None,
        builtin_terminate: bool = False,
        allow_parallel: bool = False,
        line_limit: int = SERVER_LINE_LIMIT,
    ) -> None:
        if not targets:
            raise ValueError("a pc_rpc server needs at least one target")
        bad = [name for name in targets if not name or any(c.isspace() for c in name)]
        if bad:
            raise ValueError(f"target names must be non-empty and without spaces: {bad}")
        self.targets = dict(targets)
        self.description = description
        self.builtin_terminate = builtin_terminate
        self.allow_parallel = allow_parallel
        self.line_limit = line_limit
        self._lock = asyncio.Lock()
        self._connections: set[asyncio.StreamWriter] = set()
        self._terminate = asyncio.Event()
        self.rejected = 0  # connections dropped for protocol errors (tests and diagnostics)
        self.refused = 0  # requests answered "failed" because they were not PYON or not a call
        self._rlog = RateLimitedLog(log)

    # ---------------------------------------------------------------------------------- lifecycle
    async def wait_terminate(self) -> None:
        """Returns once a client called the built-in ``terminate``."""
        await self._terminate.wait()

    def _hang_up_all(self) -> None:
        for writer in list(self._connections):
            writer.close()

    # --------------------------------------------------------------------------------- connection
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_name(writer)
        CALLER.set(peer)
        self._connections.add(writer)
        try:
            target, names = await self._handshake(reader, writer)
            while True:
                try:
                    line = await read_line(reader, "a request")
                except ProtocolError as ex:  # over-long: the framing is lost, say why and hang up
                    writer.write(self._reply_failed(ValueError(str(ex))))
                    raise
                writer.write(await self._answer(target, names, line, peer))
                await writer.drain()
        except ProtocolError as ex:
            self.rejected += 1
            self._rlog.warning(peer_host(peer), "pc_rpc: %s: %s; closing that connection", peer, ex)
        except (ConnectionError, OSError) as ex:
            log.debug("pc_rpc: %s gone: %s", peer, ex)
        except Exception:  # a bug of ours must cost one connection, never the server
            log.exception("pc_rpc: %s: unexpected error; closing that connection", peer)
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, target: Any, names: list[str], line: bytes, peer: str) -> bytes:
        """The reply line to one request line; a request we cannot read is answered ``"failed"``."""
        try:
            request = pyon.decode(line)
            if not isinstance(request, dict) or "action" not in request:
                raise pyon.PyonError(f"request is not an object with an action: {pyon.brief(request)}")
        except pyon.PyonError as ex:
            self.refused += 1
            self._rlog.warning(peer_host(peer), "pc_rpc: %s: request refused: %s", peer, ex)
            return self._reply_failed(ValueError(f"request refused: {ex}"))
        return await self._process(target, names, request, peer)

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[Any, list[str]]:
        banner = await read_line(reader, "the banner")
        if banner + b"\n" != RPC_BANNER:
            raise ProtocolError(f"bad banner {banner[:40]!r} (expected {RPC_BANNER!r})")
        ident = {"targets": list(self.targets), "description": self.description, "features": list(SERVER_FEATURES)}
        writer.write((json.dumps(ident, separators=(",", ":")) + "\n").encode("ascii"))
        words = (await read_line(reader, "the target selection")).decode("utf-8", "replace").split()
        if not words:
            raise ProtocolError("empty target selection")
        name, features = words[0], words[1:]
        if name not in self.targets:
            raise ProtocolError(f"unknown target {name[:60]!r} (serving {sorted(self.targets)})")
        unknown = sorted(set(features) - set(SERVER_FEATURES))
        if unknown:
            raise ProtocolError(f"unknown feature(s) {unknown}")
        if FEATURE_PYON_V2 not in features:
            raise ProtocolError("client wants PYON v1 (Python literals read with eval), which is not supported")
        target = self.targets[name]
        if isinstance(target, type):
            target = target()
        names = public_methods(target)
        if self.builtin_terminate and TERMINATE not in names:
            names.append(TERMINATE)
        # a set on the wire, sorted so the line is the same every time
        writer.write((json.dumps({pyon.MARKER: ["set", [names]]}, separators=(",", ":")) + "\n").encode("ascii"))
        await writer.drain()
        established(writer.transport)
        log.debug("pc_rpc: %s selected %s", peer_name(writer), name)
        return target, names

    async def _process(self, target: Any, names: list[str], request: dict[str, Any], peer: str) -> bytes:
        action = request["action"]
        if action == "get_rpc_method_list":
            return self._reply_ok(describe(target, [n for n in names if n != TERMINATE]))
        if action != "call":
            return self._reply_failed(ValueError(f"unknown action {pyon.brief(action)}"))
        name, args, kwargs = request.get("name"), request.get("args", []), request.get("kwargs", {})
        if not isinstance(name, str) or not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
            return self._reply_failed(TypeError("a call needs a str name, a list of args and a dict of kwargs"))
        if name not in names:
            return self._reply_failed(AttributeError(f"no public method {name[:60]!r} on this target"))
        if name == TERMINATE and self.builtin_terminate:
            self._terminate.set()
            return self._reply_ok(None)
        if not all(isinstance(k, str) for k in kwargs):
            return self._reply_failed(TypeError("keyword argument names must be strings"))
        try:
            method = getattr(target, name)
            at_once = self.allow_parallel or is_urgent(name, method)
            async with contextlib.nullcontext() if at_once else self._lock:
                result = method(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
        except Exception as ex:
            log.info("pc_rpc: %s: %s() raised %s: %s", peer, name, type(ex).__name__, str(ex)[:200])
            return self._reply_failed(ex)
        return self._reply_ok(result, name)

    @staticmethod
    def _reply_ok(ret: Any, name: str = "") -> bytes:
        try:
            return encode_line({"status": "ok", "ret": ret})
        except pyon.PyonError as ex:
            return RpcServer._reply_failed(TypeError(f"{name}() returned a value PYON cannot carry: {ex}"))

    @staticmethod
    def _reply_failed(ex: BaseException) -> bytes:
        return encode_line({"status": "failed", "exception": pack_exception(ex)})
