"""The transports this build has: a plain list of descriptors. Adding a transport = one package + one line.

Each entry is a :class:`core.transport_spec.TransportSpec` declared in its protocol package (scheme,
default port, URI path rule, rigs-file and rig-file options, link class, server starter). Pass
:data:`TRANSPORTS` to :func:`core.config.load_rigs` and :func:`core.rig_config.load_rig_config`; build
links and find server starters with :func:`make_link` and :func:`server_factory`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from core.config import COMMON_OPTIONS, RigSpec
from core.link import RigLink
from core.transport_spec import OPEN, TransportSpec, by_scheme, options_table
from transports.ibl.descriptor import TCP, UDP
from transports.rpc.descriptor import RPC
from transports.sio.descriptor import SIO
from transports.zmq.descriptor import ZMQ

TRANSPORTS: tuple[TransportSpec, ...] = (
    UDP,
    TCP,
    ZMQ,
    SIO,
    RPC,
)

_BY_SCHEME = by_scheme(TRANSPORTS)


class UnknownScheme(ValueError):
    """No transport is registered for a URI scheme."""


def transport(scheme: str) -> TransportSpec:
    """The descriptor of ``scheme`` (UnknownScheme when this build has none)."""
    try:
        return _BY_SCHEME[scheme.lower()]
    except KeyError:
        raise UnknownScheme(f"no transport for scheme {scheme!r}; known: {sorted(_BY_SCHEME)}") from None


def make_link(spec: RigSpec) -> RigLink:
    """The console-side link for one rig of the rigs file."""
    return transport(spec.scheme).link(spec)


def server_factory(scheme: str) -> Callable[..., Awaitable[Any]]:
    """The ``serve`` coroutine function that hosts a rig service on a URI of this scheme."""
    return transport(scheme).serve


def options_markdown() -> str:
    """The README's option tables, from the descriptors (a test keeps the README equal to this)."""
    return options_table(TRANSPORTS, COMMON_OPTIONS, (OPEN,))
