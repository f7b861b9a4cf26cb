"""The experiment protocol every transport speaks: event codes, rig status, rig URIs, exp refs.

The numbers and the accepted forms are those of IBL's ``iblutil.io.net.base`` (protocol 1.0.0), so a
RigDeck console and an iblrig/iblutil rig agree on the wire. Where iblutil is vague or wrong (port 0
reported as "Invalid port number: 11001", no IPv6, no dotted hostnames without DNS), we accept more and
say exactly what is wrong.
"""

from __future__ import annotations

import datetime as _dt
import enum
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any

from core.checks import is_int

PROTOCOL_VERSION = "1.0.0"
LISTEN_PORT = 11001


class ExpMessage(enum.IntFlag):
    """Session events. A flag so a callback can listen to several at once (``EXPEND | EXPINTERRUPT``)."""

    EXPINIT = 1
    EXPSTART = 2
    EXPEND = 4
    EXPCLEANUP = 8
    EXPINTERRUPT = 16
    EXPSTATUS = 32
    EXPINFO = 64
    ALYX = 128

    @classmethod
    def any(cls) -> ExpMessage:
        """Every event at once (255): what a rig that handles everything listens to."""
        value = 0
        for member in cls:
            value |= member.value
        return cls(value)

    @classmethod
    def validate(cls, event: Any, allow_bitwise: bool = True) -> ExpMessage:
        """Turn a name (any case), an int or a member into an ExpMessage.

        Raises TypeError for values of the wrong type (float, bytes, None, ...) and ValueError for unknown
        names or codes, and for compound codes when ``allow_bitwise`` is False.
        """
        if isinstance(event, ExpMessage):
            result = event
        elif isinstance(event, str):
            name = event.strip().upper()
            if name not in cls.__members__:
                raise ValueError(
                    f'Unrecognized event "{event}". Choices: {tuple(cls.__members__)}'
                )
            result = cls.__members__[name]
        elif isinstance(event, int):  # bool included, as in iblutil: JSON true is EXPINIT
            value = int(event)
            if value <= 0 or value & ~cls.any().value:
                raise ValueError(f"{value} is not a valid ExpMessage code (1..255, bitwise of {list(map(int, cls))})")
            result = cls(value)
        else:
            raise TypeError(f"Unknown event type {type(event).__name__}: {event!r}")
        if not allow_bitwise and result.value.bit_count() != 1:
            raise ValueError(f"Compound events not allowed here: {int(result)} ({result!r})")
        return result


class ExpStatus(enum.IntEnum):
    """A rig's place in the session lifecycle; the order is the order a session walks through."""

    CONNECTED = 0
    INITIALIZED = 10
    RUNNING = 20
    STOPPED = 30

    @classmethod
    def coerce(cls, status: Any) -> ExpStatus:
        """Accept a member, an int code or a name (any case), as iblutil's ``status()`` does."""
        if isinstance(status, ExpStatus):
            return status
        if isinstance(status, str):
            try:
                return cls[status.strip().upper()]
            except KeyError:
                raise ValueError(f"Unknown ExpStatus name {status!r}; choices: {[s.name for s in cls]}") from None
        if is_int(status):
            try:
                return cls(status)
            except ValueError:
                raise ValueError(f"{status} is not a valid ExpStatus ({[int(s) for s in cls]})") from None
        raise TypeError(f"ExpStatus must be a name or an int, not {type(status).__name__}")


# --------------------------------------------------------------------------------------------- URIs

_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)


@dataclass(frozen=True)
class RigAddress:
    """A parsed rig URI: ``scheme://host:port[/path]``. ``host`` is bare (no IPv6 brackets)."""

    scheme: str
    host: str
    port: int
    path: str = ""

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}" + (f"/{self.path}" if self.path else "")


def _check_hostname(host: str) -> None:
    if len(host) > 253 or not all(_LABEL_RE.match(label) for label in host.rstrip(".").split(".")):
        raise ValueError(f"Invalid hostname {host!r}: labels must be letters, digits or '-' (1-63 chars)")


def parse_uri(
    uri: Any,
    resolve_host: bool = True,
    default_port: int = LISTEN_PORT,
    default_scheme: str = "udp",
    allow_path: bool = False,
) -> RigAddress:
    """Parse any form iblutil's ``validate_uri`` accepts, plus IPv6 literals and dotted hostnames.

    Forms: ``host``, ``host:port``, ``scheme://host[:port]``, an ``ipaddress`` object, ``[v6]:port``,
    bare ``::1``. With ``allow_path`` a trailing ``/path`` is kept (``rpc://host:port/target``).
    As in iblutil, ``host:`` takes the default port and, when resolving, an empty host (``''``,
    ``:port``) is this machine. Every error message names the offending part.
    """
    if isinstance(uri, ipaddress.IPv4Address | ipaddress.IPv6Address):
        uri = str(uri)
    if not isinstance(uri, str):
        raise TypeError(f"URI must be a str or an IP address, not {type(uri).__name__}")
    text = uri.strip()
    if not text and not resolve_host:
        raise ValueError("Empty URI")
    scheme = default_scheme
    match = _SCHEME_RE.match(text)
    if match:
        scheme = match.group(1)
        text = text[match.end():]
    elif "://" in text:
        raise ValueError(f"Invalid scheme in URI {uri!r}")
    path = ""
    if "/" in text:
        text, _, path = text.partition("/")
        path = path.strip("/")
        if not allow_path:
            raise ValueError(f"URI {uri!r} has a path ('/{path}'); only scheme://host:port is allowed")
    if "?" in text or "#" in text or "@" in text:
        raise ValueError(f"URI {uri!r} has a query, fragment or user part, which rig URIs don't take")
    port_text: str | None = None
    if text.startswith("["):  # [v6]:port
        end = text.find("]")
        if end < 0:
            raise ValueError(f"Unclosed '[' in IPv6 address of URI {uri!r}")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"Unexpected {rest!r} after IPv6 address in URI {uri!r}")
            port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"Invalid IPv6 address {host!r} in URI {uri!r}") from None
    elif text.count(":") > 1:  # bare IPv6 literal, no port
        host = text
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"Invalid address {host!r} in URI {uri!r} (IPv6 with a port needs [brackets])") from None
    else:
        host, sep, port_text_ = text.partition(":")
        port_text = port_text_ if sep else None
    port = _port(port_text, default_port, uri)
    if not host:
        if not resolve_host:
            raise ValueError(f"No host in URI {uri!r}")
        host = socket.gethostname()  # iblutil: an empty host is this machine (hostname2ip(None))
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if host.rstrip(".").rpartition(".")[2].isdigit():  # dotted digits: meant as an IPv4 address
            host = _numeric_host(host, resolve_host, uri)
        else:
            _check_hostname(host)
            host = _resolve(host, uri) if resolve_host else host.lower()
    return RigAddress(scheme, host, port, path)


def _port(port_text: str | None, default_port: int, uri: Any) -> int:
    """The port of a URI: iblutil's ``int(port or default_port)``, with errors that name the port."""
    if port_text is None or not port_text.strip():  # 'host' and 'host:' both take the default
        if not 1 <= int(default_port) <= 65535:
            raise ValueError(f"Invalid default port number {default_port} for URI {uri!r}: must be 1-65535")
        return int(default_port)
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"Invalid port {port_text!r} in URI {uri!r}: not a number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"Invalid port number {port} in URI {uri!r}: must be 1-65535")
    return port


def host_addresses(name: str) -> list[str]:
    """Every address ``name`` resolves to (IPv4 and IPv6, scope ids dropped): allow lists name hosts too.
    Raises OSError when it does not resolve."""
    infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


def _resolve(host: str, uri: Any) -> str:
    try:
        return socket.gethostbyname(host)
    except OSError as ex:
        raise ValueError(f"Cannot resolve host {host!r} in URI {uri!r}: {ex}") from None


def _numeric_host(host: str, resolve_host: bool, uri: Any) -> str:
    """``300.1.1.1`` or ``1.2.3``: not a hostname (no top-level domain is all digits). With resolution,
    the C library's short forms are accepted as iblutil accepts them (``1.2.3`` is 1.2.0.3)."""
    if resolve_host:
        try:
            return socket.gethostbyname(host)
        except OSError:
            pass
    raise ValueError(f"Invalid IPv4 address {host!r} in URI {uri!r}: expected four numbers 0-255 (a.b.c.d)")


def validate_uri(
    uri: Any,
    resolve_host: bool = True,
    default_port: int = LISTEN_PORT,
    default_scheme: str = "udp",
    default_proc: str | None = None,
) -> str:
    """iblutil-compatible: return ``'<scheme>://<host>:<port>'`` (``default_proc`` is iblutil's name)."""
    scheme = default_proc or default_scheme
    return str(parse_uri(uri, resolve_host, default_port, scheme))


# ---------------------------------------------------------------------------------- experiment refs

_REF_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})_(\d+)_(.+)$")


@dataclass(frozen=True, order=True)
class ExpRef:
    """``YYYY-MM-DD_N_subject``: the one name every rig files a session under."""

    date: _dt.date
    sequence: int
    subject: str

    def __str__(self) -> str:
        return f"{self.date:%Y-%m-%d}_{self.sequence:d}_{self.subject}"

    def to_dict(self) -> dict[str, Any]:
        return {"date": self.date.isoformat(), "sequence": self.sequence, "subject": self.subject}


def parse_exp_ref(ref: Any) -> ExpRef:
    """Accept ``'2026-11-22_1_KS001'``, an ExpRef, or ``{date, sequence, subject}`` (date str or date)."""
    if isinstance(ref, ExpRef):
        return ref
    if isinstance(ref, dict):
        missing = {"date", "sequence", "subject"} - ref.keys()
        if missing:
            raise ValueError(f"Experiment reference dict is missing {sorted(missing)}: {ref!r}")
        date, seq, subject = ref["date"], ref["sequence"], ref["subject"]
        if isinstance(date, str):
            try:
                date = _dt.date.fromisoformat(date)
            except ValueError:
                raise ValueError(f"Experiment reference date {date!r} is not YYYY-MM-DD") from None
        elif isinstance(date, _dt.datetime):
            date = date.date()
        elif not isinstance(date, _dt.date):
            raise ValueError(f"Experiment reference date must be a date or YYYY-MM-DD, not {date!r}")
        if not (isinstance(seq, str) or is_int(seq)) or not str(seq).isdigit():
            raise ValueError(f"Experiment reference sequence must be a non-negative integer, not {seq!r}")
        if not isinstance(subject, str) or not subject or "/" in subject or "\\" in subject:
            raise ValueError(f"Experiment reference subject must be a non-empty name, not {subject!r}")
        return ExpRef(date, int(seq), subject)
    if not isinstance(ref, str):
        raise ValueError(f"Experiment reference must be a str or dict, not {type(ref).__name__}")
    match = _REF_RE.match(ref)
    if not match:
        raise ValueError(f"Malformed experiment reference {ref!r}: expected YYYY-MM-DD_N_subject")
    try:
        date = _dt.date.fromisoformat(match.group(1))
    except ValueError:
        raise ValueError(f"Malformed experiment reference {ref!r}: {match.group(1)} is not a date") from None
    return parse_exp_ref({"date": date, "sequence": int(match.group(2)), "subject": match.group(3)})


def format_exp_ref(ref: Any) -> str:
    """The string form of any accepted reference (what goes on the wire)."""
    return str(parse_exp_ref(ref))
