"""sipyco pc_rpc + sync_struct as a RigDeck transport (scheme ``rpc://host:port/target``).

Console side, :class:`RpcLink`: a pc_rpc controller becomes a rig. Its public methods are listed
(``await link.methods()``) and callable by name (``await link.call(name, *args, **kwargs)``); nothing
else is — there is no remote code execution (sipyco's ``remote_exec``), only named methods. Options in
remote_rigs.yaml:

- ``timeout``: seconds per call (default 5);
- ``notifier``: a sync_struct notifier to mirror into the live state, ``"name"`` (published on
  ``port + 1``, RigDeck's own convention: sipyco servers use separate ports, e.g. ARTIQ's master
  publishes on 3250 and serves RPC on 3251) or ``"port/name"`` (an explicit port on the same host).

Session messages: ``request(event, *data)`` is sent as a call of the target's ``handle(event, data)``
method when the target has one (a RigDeck rig served with :func:`serve_rpc` has); other controllers
take no session messages and ``request`` raises a clear :class:`core.link.RigError`.

Rig side, :func:`serve_rpc`: exposes a rig service as pc_rpc targets (``rig`` — or the URI's path —,
``manipulator`` when the rig has one, ``recorders`` (read-only) when it has recorders) and its live
state as a sync_struct notifier, so ARTIQ tools can use RigDeck rigs. Options: ``notify_port``
(default port+1, also for port 0 when that is free; ``false`` turns it off), ``notifier`` (name,
default ``"state"``), ``allow_parallel`` (default false), ``queue_limit`` (mods per subscriber,
default 1000), ``description``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from core.config import RigSpec, parse_notifier
from core.link import LinkState, RemoteError, RigError, RigLink, error_text
from core.protocol import ExpMessage, RigAddress
from core.state import Mod
from transports.rpc_client import AUTO_TARGET, IncompatibleServer, RpcClient, RpcUnavailable
from transports.rpc_server import RpcServer
from transports.rpc_targets import ManipulatorTarget, RecordersTarget, RigTarget
from transports.rpc_wire import RemoteException
from transports.sync_struct import Notifier, Publisher, Subscriber

__all__ = [
    "AUTO_TARGET", "IncompatibleServer", "RemoteException", "RpcClient", "RpcLink", "RpcServer",
    "RpcUnavailable", "Notifier", "Publisher", "Subscriber", "parse_notifier", "serve_rpc",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
DEFAULT_NOTIFIER = "state"


class RpcLink(RigLink):
    """A sipyco pc_rpc controller as a rig (see the module docstring for the options)."""

    def __init__(self, spec: RigSpec) -> None:
        super().__init__(spec.name, spec.uri)
        self.spec = spec
        self.host, self.port, self.target = spec.address.host, spec.address.port, spec.address.path
        self.timeout = float(spec.options.get("timeout", DEFAULT_TIMEOUT))
        self.notifier: tuple[int, str] | None = None
        if spec.options.get("notifier"):
            self.notifier = parse_notifier(spec.options["notifier"], self.port)
        self.pushes_status = False
        self.published: Any = None  # our copy of the controller's published structure
        self._client = RpcClient(self.host, self.port, self.target, timeout=self.timeout,
                                 connect_timeout=self.timeout, reconnect=True)
        self._client.on_connection(self._on_connection)
        self._subscriber: Subscriber | None = None

    # ------------------------------------------------------------------------------- lifecycle
    async def connect(self) -> None:
        self.set_state(LinkState.CONNECTING)
        await self._client.connect()  # never raises: reconnects in the background
        if self.notifier is not None and self._subscriber is None:
            port, name = self.notifier
            self._subscriber = Subscriber(name, notify_cb=self._on_mod, disconnect_cb=self._on_notifier_lost)
            self._subscriber.start(self.host, port)

    async def close(self) -> None:
        if self._subscriber is not None:
            await self._subscriber.close()
            self._subscriber = None
        await self._client.close()
        self.set_state(LinkState.CLOSED)

    def _on_connection(self, up: bool, error: str | None) -> None:
        if up:
            self.set_state(LinkState.ONLINE)
        else:
            self.set_state(LinkState.UNREACHABLE, error)

    def _on_mod(self, mod: Mod) -> None:
        if mod.get("action") == "init":
            struct = mod.get("struct")
            self.pushes_status = isinstance(struct, dict) and "status" in struct
        self.published = self._subscriber.struct if self._subscriber else None
        self.emit_update(mod)

    def _on_notifier_lost(self, why: str) -> None:
        log.info("%s: notifier %s lost (%s); reconnecting", self.name, self.notifier, why)

    # ----------------------------------------------------------------------------------- calls
    async def methods(self) -> dict[str, dict[str, Any]]:
        """``{name: {"argspec": {...} | None, "doc": str | None}}`` of the controller's public methods."""
        listing = await self._guarded("method list", self._client.method_list(self.timeout))
        out = {}
        for name, entry in (listing.get("methods") or {}).items():
            spec, doc = (list(entry) + [None, None])[:2] if isinstance(entry, list | tuple) else (None, None)
            out[str(name)] = {"argspec": spec, "doc": doc}
        return out

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call one public method by name. Remote built-in exceptions are raised as themselves,
        others as RemoteException (a RemoteError); network trouble as RigError subclasses."""
        if not isinstance(name, str) or not name or name.startswith("_"):
            raise RigError(f"{self.name}: {name!r} is not a public method name")
        return await self._guarded(f"{name}()", self._client.call_ex(name, args, kwargs, self.timeout))

    async def _guarded(self, what: str, coro: Any) -> Any:
        start = time.monotonic()
        try:
            result = await coro
        except RigError as ex:  # timeouts, not connected, RemoteException
            if isinstance(ex, RemoteError):
                self.note_reply(time.monotonic() - start)
            raise
        except Exception as ex:
            if hasattr(ex, "parent_traceback"):  # a built-in exception raised by the remote method
                self.note_reply(time.monotonic() - start)
                raise
            raise RpcUnavailable(f"{self.name}: {what}: {error_text(ex)}") from ex  # protocol or socket trouble
        self.note_reply(time.monotonic() - start)
        return result

    async def request(self, event: ExpMessage, *data: Any, timeout: float | None = None) -> list[Any]:
        if "handle" not in self._client.methods:
            if not self._client.connected:
                raise RpcUnavailable(f"{self.name}: not connected ({self._client.last_error or 'connecting'})")
            raise RigError(f"{self.name}: pc_rpc target {self.target!r} has no handle(event, data) method, "
                           "so it takes no session messages")
        start = time.monotonic()
        try:
            reply = await self._client.call_ex("handle", [int(event), list(data)], None, timeout or self.timeout)
        except RemoteException as ex:
            raise RemoteError(ex.text, int(event)) from ex
        except RigError:
            raise
        except Exception as ex:
            if hasattr(ex, "parent_traceback"):  # a built-in exception raised by the rig
                raise RemoteError(error_text(ex), int(event)) from ex
            raise RpcUnavailable(f"{self.name}: {error_text(ex)}") from ex
        self.note_reply(time.monotonic() - start)
        if reply is None:
            return []
        return list(reply) if isinstance(reply, list | tuple) else [reply]


# ------------------------------------------------------------------------------------------ server

@dataclass
class RpcService:
    """Handle of :func:`serve_rpc`: the pc_rpc server and (maybe) the sync_struct publisher."""

    server: RpcServer
    publisher: Publisher | None
    notifier_name: str | None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def notify_port(self) -> int | None:
        return self.publisher.port if self.publisher is not None else None

    async def close(self) -> None:
        if self.publisher is not None:
            await self.publisher.close()
        await self.server.close()


async def _start_publisher(publisher: Publisher, address: RigAddress, rpc_port: int, notify_port: Any) -> None:
    """Bind the notifier: on ``notify_port``, or by default on ``rpc_port + 1`` (the port an RpcLink with
    ``notifier: name`` looks at). A rig asked for port 0 takes port+1 when it is free, any free port
    otherwise (``rigdeck serve`` announces it on its NOTIFIER line)."""
    if notify_port is not True:
        await publisher.start(address.host, int(notify_port))
        return
    if address.port or rpc_port >= 65535:
        await publisher.start(address.host, rpc_port + 1 if rpc_port < 65535 else 0)
        return
    try:
        await publisher.start(address.host, rpc_port + 1)
    except OSError:  # port+1 is taken: any free port will do, it is announced
        await publisher.start(address.host, 0)


async def serve_rpc(address: RigAddress, service: Any, options: dict[str, Any] | None = None) -> RpcService:
    """Expose ``service`` over pc_rpc on ``address`` (and its live state over sync_struct)."""
    options = dict(options or {})
    targets: dict[str, Any] = {address.path or str(options.get("target", "rig")): RigTarget(service)}
    manipulator = getattr(service, "manipulator", None)
    if manipulator is not None:
        targets["manipulator"] = ManipulatorTarget(manipulator)
    recorders = getattr(service, "recorders", None)
    if recorders:
        targets["recorders"] = RecordersTarget(recorders)
    name = getattr(service, "name", "rig")
    server = RpcServer(
        targets,
        description=str(options.get("description", f"RigDeck rig {name}")),
        allow_parallel=bool(options.get("allow_parallel", False)),
    )
    await server.start(address.host, address.port)
    publisher = None
    notifier = None
    state = getattr(service, "state", None)
    notify_port = options.get("notify_port", True)
    if state is not None and notify_port is not False and notify_port is not None:
        notifier = str(options.get("notifier", DEFAULT_NOTIFIER))
        publisher = Publisher({notifier: state}, queue_limit=int(options.get("queue_limit", 1000)))
        try:
            await _start_publisher(publisher, address, server.port, notify_port)
        except BaseException:
            await server.close()
            raise
    log.info("pc_rpc: rig %s serves %s on %s:%s%s", name, sorted(targets), address.host, server.port,
             f", notifier {notifier!r} on port {publisher.port}" if publisher else "")
    return RpcService(server, publisher, notifier)
