"""Peers as a rig's handler sees them: one text per peer that every transport spells the same way.

A server passes :meth:`core.link.MessageHandler.handle` a peer text: ``HOST:PORT`` (``[V6]:PORT`` for an
IPv6 address), or ``HOST`` when the transport knows no port, optionally after ``label@`` (a zmq
console's own name: ``console-1f2e@127.0.0.1``; the host after the last ``@`` is always the socket's).
:func:`peer_host` reads the host back, so a rule about *who* asked (the Alyx token goes only to some
hosts) holds on every transport alike. Address lists (``allow``) are matched
here too, so the listeners' allow lists and the rig's Alyx allow list mean the same thing.
"""

from __future__ import annotations

import ipaddress

from core.protocol import host_addresses

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def peer_text(host: str, port: int | None = None, label: str | None = None) -> str:
    """The peer text of ``host`` (and ``port``, ``label``) as every transport passes it to the handler."""
    host = str(host)
    text = host if port is None else (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return text if not label else f"{label}@{text}"


def peer_host(peer: str) -> str | None:
    """The host of a peer text (see the module docstring), or None when it names no address."""
    text = str(peer).rsplit("@", 1)[-1].strip()
    if text.startswith("["):
        host = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        host = text.split(":", 1)[0]
    else:
        host = text
    return host if address(host) is not None else None


def address(host: str) -> Address | None:
    """``host`` as an IP address (an IPv4-mapped IPv6 peer as its IPv4 address), or None if it is not one."""
    try:
        parsed = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8 and ::1 (this machine)."""
    parsed = address(host) if host is not None else None
    return parsed is not None and parsed.is_loopback


def networks(entry: str) -> list[Network]:
    """An allow-list entry (address, network or hostname, resolved now) as networks; ValueError if none."""
    try:
        return [ipaddress.ip_network(entry, strict=False)]
    except ValueError:
        pass
    try:
        return [ipaddress.ip_network(host) for host in host_addresses(entry)]
    except OSError as ex:
        raise ValueError(f"allow: {entry!r} is neither an address nor a name that resolves ({ex})") from None


def in_networks(host: str | None, nets: list[Network]) -> bool:
    """True when ``host`` is an address inside one of ``nets``."""
    parsed = address(host) if host is not None else None
    return parsed is not None and any(parsed in net for net in nets)
