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

The rig side (:func:`transports.rpc.rig_server.serve_rpc`) lives in ``rig_server``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from core.checks import is_int
from core.config import RigSpec
from core.link import LinkClosed, LinkState, RemoteError, RigError, RigLink, error_text
from core.protocol import ExpMessage
from core.state import Mod
from transports.rpc.client import RpcClient, RpcUnavailable
from transports.rpc.sync_struct import Subscriber
from transports.rpc.wire import RemoteException

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0


def parse_notifier(value: Any, rpc_port: int) -> tuple[int, str]:
    """The ``notifier`` option: ``"name"`` -> (rpc_port + 1, name); ``"port/name"`` -> (port, name)."""
    if not (isinstance(value, str) or is_int(value)):
        raise ValueError(f"notifier {value!r}: expected 'name' or 'port/name'")
    text = str(value).strip()
    port_text, sep, name = text.partition("/")
    if not sep:
        port_text, name = "", text
    if not name or any(c.isspace() for c in name):
        raise ValueError(f"notifier {value!r}: expected 'name' or 'port/name'")
    if not port_text:
        return rpc_port + 1, name
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"notifier {value!r}: {port_text!r} is not a TCP port")
    return int(port_text), name


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
        #: set first thing in close(): a call the closing connection fails is then LinkClosed, not "lost"
        self._closing = False

    # ------------------------------------------------------------------------------- lifecycle
    async def connect(self) -> None:
        self.set_state(LinkState.CONNECTING)
        await self._client.connect()  # never raises: reconnects in the background
        if self.notifier is not None and self._subscriber is None:
            port, name = self.notifier
            self._subscriber = Subscriber(name, notify_cb=self._on_mod, disconnect_cb=self._on_notifier_lost)
            self._subscriber.start(self.host, port)

    async def close(self) -> None:
        self._closing = True
        if self._subscriber is not None:
            await self._subscriber.close()
            self._subscriber = None
        await self._client.close()
        self.set_state(LinkState.CLOSED)

    def _on_connection(self, up: bool, error: str | None) -> None:
        if self._closing:  # a call our close() cut short reports the lost connection after CLOSED
            return
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
        if self._closing:
            raise LinkClosed(f"{self.name}: link closed")
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
        except RigError as ex:
            if self._closing:  # our close() cut the connection under this call
                raise LinkClosed(f"{self.name}: link closed") from ex
            raise
        except Exception as ex:
            if hasattr(ex, "parent_traceback"):  # a built-in exception raised by the rig
                raise RemoteError(error_text(ex), int(event)) from ex
            raise RpcUnavailable(f"{self.name}: {error_text(ex)}") from ex
        self.note_reply(time.monotonic() - start)
        if reply is None:
            return []
        return list(reply) if isinstance(reply, list | tuple) else [reply]
