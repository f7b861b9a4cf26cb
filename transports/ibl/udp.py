"""IBL iblutil ``io.net`` over UDP (scheme ``udp://``), wire-compatible with iblutil in both roles.

- Console side, :class:`UdpLink`: one socket *connected* to the rig (as iblutil's client, so only the
  rig's listening address can answer), request/reply with echo confirmation, copies never echoed twice,
  late-reply protection, and with a rig known to be RigDeck, request ids and resends
  (:mod:`transports.ibl.conversation`).
- Rig side, :func:`serve_udp`: binds the rig's URI, answers from the listening socket, keys peers by
  ``(host, port)``, hands each message to the rig service; an optional ``allow`` list of peer hosts
  drops (and logs) everyone else.

Options (remote_rigs.yaml for links, rig.yaml for servers): ``timeout`` (request seconds, default 5),
``echo_timeout`` (1), ``retry_after`` (0.2), ``late_window`` (3), and for servers ``allow`` (addresses,
networks, hostnames: :class:`transports.access.AllowList`) and ``max_peers`` (1024); declared in
:mod:`transports.ibl.descriptor`. The TCP variant lives in :mod:`transports.ibl.tcp` (extra option
``write_gap``).

Alyx token deliveries (``[128, base_url, {user: token}]``) are one-way, as in iblutil: confirmed by their
echo and never answered (see :func:`transports.ibl_wire.is_one_way`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from typing import Any

from core.config import RigSpec
from core.link import LinkClosed, LinkState, MessageHandler, RemoteError, RequestTimeout, RigError, RigLink
from core.peers import peer_text
from core.protocol import ExpMessage, RigAddress
from transports.access import AllowList, allow_list
from transports.ibl import wire as ibl_wire
from transports.ibl.conversation import Tuning, tuning_from
from transports.ibl.endpoint import IblEndpoint
from transports.read_size import read_at_most

__all__ = ["UdpEndpoint", "UdpLink", "UdpServer", "serve_udp"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
#: at most this many waiting datagrams are read per wake-up of a socket, before other work gets a turn
READ_BATCH = 32



def _family(host: str) -> int:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return 0  # a hostname: let getaddrinfo choose


class UdpEndpoint(IblEndpoint, asyncio.DatagramProtocol):
    """A UDP socket speaking iblutil, in the client role (connected) or the server role (bound).

    Build with ``await UdpEndpoint.client(uri)`` or ``await UdpEndpoint.server(uri, service=...)``.
    """

    rigdeck_wire = True  # datagrams get lost, duplicated and reordered: two RigDeck peers tag theirs

    def __init__(self, name: str, service: MessageHandler | None = None, tuning: Tuning | None = None,
                 remote: tuple[str, int] | None = None, allow: AllowList | None = None,
                 max_peers: int = 1024) -> None:
        super().__init__(name, service, tuning)
        self.remote = remote
        self.transport: asyncio.DatagramTransport | None = None
        self.allow = allow
        self.max_peers = max_peers
        self.on_error: Any = None  # called with OSError (e.g. ICMP port unreachable)
        self.sock: socket.socket | None = None  # the socket :meth:`open` made (a client drains it)
        self.refused = 0

    # ---------------------------------------------------------------- construction
    @classmethod
    async def client(cls, uri: str, name: str | None = None, **kwargs: Any) -> UdpEndpoint:
        """Connect to ``uri`` (any validate_uri form); like iblutil's ``EchoProtocol.client``."""
        address = _parse(uri)
        endpoint = cls(name or str(address), remote=(address.host, address.port), **kwargs)
        await endpoint.open(address.host, address.port)
        return endpoint

    @classmethod
    async def server(cls, uri: str, name: str | None = None, **kwargs: Any) -> UdpEndpoint:
        """Bind ``uri``; like iblutil's ``EchoProtocol.server``."""
        address = _parse(uri)
        endpoint = cls(name or str(address), **kwargs)
        await endpoint.open(address.host, address.port)
        return endpoint

    async def open(self, host: str, port: int) -> None:
        """Open the socket: connected to ``(host, port)`` in the client role (``remote`` set), bound to it
        in the server role. Like asyncio, every address the host resolves to is tried in turn. We make the
        socket ourselves, as asyncio's transport does not lend it, so that one wake-up reads every
        datagram waiting (:meth:`datagram_received`)."""
        loop = asyncio.get_running_loop()
        client = self.remote is not None
        flags = 0 if client else socket.AI_PASSIVE
        try:  # an IP address needs no lookup (and no executor thread, which a Qt loop would have to join)
            infos = socket.getaddrinfo(host, port, _family(host), socket.SOCK_DGRAM, 0, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            infos = await loop.getaddrinfo(host, port, family=_family(host), type=socket.SOCK_DGRAM, flags=flags)
        error: OSError = OSError(f"{host} resolves to no address")
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                if client:
                    sock.connect(sockaddr)
                else:
                    sock.bind(sockaddr)
                await loop.create_datagram_endpoint(lambda: self, sock=sock)
            except OSError as ex:
                sock.close()
                error = ex
                continue
            except BaseException:
                sock.close()
                raise
            self.sock = sock
            return
        raise error

    # ---------------------------------------------------------------- asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        read_at_most(transport, ibl_wire.MAX_DATAGRAM + 1)  # no datagram we accept is larger

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        """Handle this datagram; a client then reads the others already waiting, up to
        :data:`READ_BATCH`: a request's echo and reply come together, so one loop turn takes both (a
        server's datagrams come one by one from each console: an extra read would mostly find nothing)."""
        self._take(data, addr)
        sock = self.sock
        if sock is None or self.remote is None:
            return
        for _ in range(READ_BATCH):
            if self.closed:
                return
            try:
                data = sock.recv(ibl_wire.MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as ex:
                self.error_received(ex)
                return
            self._take(data, addr)

    def _take(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self.closed:
            return
        if self.remote is not None and len(data) <= ibl_wire.MAX_DATAGRAM:
            # a connected socket: the kernel lets only the rig's address in (the console's hot path)
            peer = self.remote
        else:
            peer = (addr[0], addr[1])
            if self.allow is not None and not self.allow.admits(peer[0], self.name):
                self.refused += 1
                return
            if len(data) > ibl_wire.MAX_DATAGRAM:
                self._rlog.warning(f"large {peer}", "%s: dropped a %d-byte datagram from %s:%s (over %d bytes)",
                                   self.name, len(data), *peer, ibl_wire.MAX_DATAGRAM)
                return
            if peer not in self.conversations and len(self.conversations) >= self.max_peers:
                self._forget_idle_peer()
        try:
            self.conversation(peer).receive(data)
        except Exception:  # a bug must not take the socket down
            log.exception("%s: failed to process a datagram from %s", self.name, self._describe(peer))

    def _forget_idle_peer(self) -> None:
        idle = min(self.conversations, key=lambda a: self.conversations[a].last_activity)
        if self.conversations[idle].pending is None:
            self.conversations.pop(idle).close()
            self._serve_locks.pop(idle, None)

    def error_received(self, exc: Exception) -> None:
        log.debug("%s: socket error %s", self.name, exc)
        if self.on_error is not None:
            self.on_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    # ---------------------------------------------------------------- IblEndpoint interface
    def _send_to(self, addr: Any, raw: bytes) -> None:
        if self.remote is not None:
            self._send_to_rig(raw)
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(raw, addr)

    def _sender(self, addr: Any) -> Any:
        if self.remote is not None:  # a client's one conversation: its rig (see _take)
            return self._send_to_rig  # one call less per datagram on the console's hot path
        return super()._sender(addr)

    def _send_to_rig(self, raw: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.sendto(raw)  # connected socket

    def _default_addr(self) -> Any:
        return self.remote

    def _describe(self, addr: Any) -> str:
        host, port = addr
        return peer_text(host, port)

    @property
    def port(self) -> int:
        return self.transport.get_extra_info("sockname")[1] if self.transport else 0

    @property
    def is_connected(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        super().close()
        if self.transport is not None:
            self.transport.close()


def _parse(uri: Any) -> RigAddress:
    from core.protocol import parse_uri

    return parse_uri(uri, resolve_host=False) if not isinstance(uri, RigAddress) else uri


# ============================================================================ console side

class UdpLink(RigLink):
    """A rig reached over iblutil UDP (see the module docstring for options)."""

    def __init__(self, spec: RigSpec) -> None:
        super().__init__(spec.name, spec.uri)
        self.spec = spec
        self.address = spec.address
        self.timeout = float(spec.options.get("timeout", DEFAULT_TIMEOUT))
        self.tuning = tuning_from(spec.options)
        self.endpoint: UdpEndpoint | None = None

    async def connect(self) -> None:
        if self.endpoint is not None and self.endpoint.is_connected:
            return
        self.set_state(LinkState.CONNECTING)
        try:
            self.endpoint = UdpEndpoint(self.name, tuning=self.tuning, remote=(self.address.host, self.address.port))
            await self.endpoint.open(self.address.host, self.address.port)
        except OSError as ex:  # e.g. a hostname that does not resolve
            self.endpoint = None
            self.set_state(LinkState.UNREACHABLE, f"cannot open a UDP socket to {self.address.netloc}: {ex}")
            return
        self.endpoint.on_error = self._socket_error

    def _socket_error(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionRefusedError):
            self.set_state(LinkState.UNREACHABLE, f"nothing listens on {self.address.netloc} (port unreachable)")

    async def request(self, event: ExpMessage, *data: Any, timeout: float | None = None) -> list[Any]:
        if self.state is LinkState.CLOSED:
            raise LinkClosed(f"{self.name}: link closed")
        if self.endpoint is None or not self.endpoint.is_connected:
            await self.connect()
            if self.endpoint is None:
                raise RigError(f"{self.name}: {self.last_error}")
        start = time.monotonic()
        try:
            reply = await self.endpoint.request(event, *data, timeout=timeout or self.timeout)
        except RemoteError:
            self.note_reply(time.monotonic() - start)
            raise
        except RequestTimeout as ex:
            self.set_state(LinkState.UNREACHABLE, str(ex))
            raise
        self.note_reply(time.monotonic() - start)
        return reply

    async def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None
        self.set_state(LinkState.CLOSED)


# ============================================================================ rig side

class UdpServer:
    """Handle of :func:`serve_udp`: the bound endpoint (which also offers iblutil's Communicator API)."""

    def __init__(self, endpoint: UdpEndpoint) -> None:
        self.endpoint = endpoint

    @property
    def port(self) -> int:
        return self.endpoint.port

    async def close(self) -> None:
        self.endpoint.close()
        await self.endpoint.wait_closed()


async def serve_udp(address: RigAddress, service: MessageHandler, options: dict[str, Any] | None = None) -> UdpServer:
    """Serve ``service`` (a rig service) on ``address`` over iblutil UDP."""
    options = dict(options or {})
    name = getattr(service, "name", None) or "rig"
    endpoint = UdpEndpoint(f"{name} udp", service=service, tuning=tuning_from(options),
                           allow=allow_list(options.get("allow")), max_peers=int(options.get("max_peers", 1024)))
    await endpoint.open(address.host, address.port)
    log.info("udp: rig %s listens on %s:%s%s", name, address.host, endpoint.port,
             f" (allow: {endpoint.allow})" if endpoint.allow else "")
    return UdpServer(endpoint)
