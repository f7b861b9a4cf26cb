"""A RigDeck rig served over sipyco pc_rpc + sync_struct (the rig side of ``rpc://``).

:func:`serve_rpc` exposes a rig service as pc_rpc targets (``rig`` — or the URI's path —, ``manipulator``
when the rig has one, ``recorders`` (read-only) when it has recorders) and its live state as a sync_struct
notifier, so ARTIQ tools can use RigDeck rigs. Options: ``notify_port`` (default port+1, also for port 0
when that is free; ``false`` turns it off), ``notifier`` (name, default ``"state"``), ``allow_parallel``
(default false), ``queue_limit`` (mods per subscriber, default 1000), ``description``, ``allow`` (peers let
in, to pc_rpc and to the notifier alike), ``line_limit``
(bytes per request line, default 256 KiB: a rig's calls are small, and the time one line holds the event
loop grows with its length, so a rig reads far less than the 4 MiB a generic sipyco server accepts),
and the connection limits of :mod:`transports.conn_limits` (``max_connections`` and ``handshake_timeout``
for each of the two listeners; ``idle_timeout`` for pc_rpc only and off by default: a pc_rpc client may
hold its connection silently for hours between calls, and a sync_struct subscriber never sends anything
after its handshake, so silence there is normal, never a reason to hang up).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from core.protocol import RigAddress
from transports.access import allow_list
from transports.conn_limits import ConnectionGuard
from transports.rpc.server import RpcServer
from transports.rpc.sync_struct import Publisher
from transports.rpc.targets import ManipulatorTarget, RecordersTarget, RigTarget

log = logging.getLogger(__name__)

DEFAULT_NOTIFIER = "state"
RIG_LINE_LIMIT = 256 * 1024

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
        line_limit=int(options.get("line_limit", RIG_LINE_LIMIT)),
    )
    allow = allow_list(options.get("allow"))
    server.allow = allow
    server.guard = ConnectionGuard.from_options(f"pc_rpc: rig {name}", options)
    await server.start(address.host, address.port)
    publisher = None
    notifier = None
    state = getattr(service, "state", None)
    notify_port = options.get("notify_port", True)
    if state is not None and notify_port is not False and notify_port is not None:
        notifier = str(options.get("notifier", DEFAULT_NOTIFIER))
        publisher = Publisher({notifier: state}, queue_limit=int(options.get("queue_limit", 1000)))
        publisher.allow = allow
        publisher.guard = ConnectionGuard.from_options(f"sync_struct: rig {name}",
                                                       {k: v for k, v in options.items() if k != "idle_timeout"})
        try:
            await _start_publisher(publisher, address, server.port, notify_port)
        except BaseException:
            await server.close()
            raise
    log.info("pc_rpc: rig %s serves %s on %s:%s%s", name, sorted(targets), address.host, server.port,
             f", notifier {notifier!r} on port {publisher.port}" if publisher else "")
    return RpcService(server, publisher, notifier)
