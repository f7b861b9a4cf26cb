"""What a transport declares about itself, so core can validate rigs files and rig files it knows nothing of.

Each protocol package (``transports/ibl``, ``zmq``, ``sio``, ``rpc``) builds one :class:`TransportSpec`
per URI scheme: its default port, what a URI path means, the options a console's rigs file may give a
rig of that scheme, the options a rig file may give a listen URI of that scheme, its link class and its
server starter. ``transports.registry`` lists them; :mod:`core.config` and :mod:`core.rig_config` take
that list as an argument and keep no per-scheme knowledge of their own, so adding a transport touches
one package and one registry line.

Option values are checked by small parsers (:func:`positive_number`, :func:`host_list`, ...) that return
the value to keep or raise :class:`OptionError` with a phrase that completes ``"<key> ..."``
(``"must be a positive number, not -1"``), so every file error reads the same way.

The binding rule lives here too (:func:`binding_problem`): a listen URI on a non-loopback address needs
an access control the transport offers (a token, an allow list, CURVE keys) or an explicit ``open: true``.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.checks import is_int, is_number

#: an option's parser: the value to keep, or OptionError("must be ..., not ...")
Parser = Callable[[Any], Any]


class OptionError(ValueError):
    """An option's value is unusable; the message completes ``"<option name> ..."``."""


@dataclass(frozen=True)
class Option:
    """One key a file may give: its parser and the one line the README's table shows."""

    name: str
    parse: Parser
    doc: str
    #: an access control (token, allow list, CURVE keys): a URI with one set may listen beyond loopback
    guards: bool = False


class PathRule(enum.Enum):
    """Whether a URI of a scheme may carry a ``/path`` (what it means is the descriptor's ``path_doc``)."""

    NONE = "no path"
    OPTIONAL = "optional path"
    REQUIRED = "path required"


@dataclass(frozen=True)
class TransportSpec:
    """A transport's descriptor for one URI scheme (see the module docstring).

    ``link`` is called as ``link(spec: core.config.RigSpec)`` and returns a :class:`core.link.RigLink`;
    ``serve`` is ``async serve(address, service, options) -> handle`` (``handle.port``, ``async close()``).
    """

    scheme: str
    title: str
    default_port: int
    link: Callable[[Any], Any]
    serve: Callable[..., Awaitable[Any]]
    #: rigs file (console side): may the URI carry a path, and what it must look like
    console_path: PathRule = PathRule.NONE
    #: rig file (listen side): may the URI carry a path
    listen_path: PathRule = PathRule.NONE
    path_doc: str = ""
    #: checks a console URI's path (when there is one): None or the problem
    path_check: Callable[[str], str | None] | None = None
    console_options: tuple[Option, ...] = ()
    listen_options: tuple[Option, ...] = ()
    #: rules between a listen URI's options (e.g. sio's ``relay: true`` connects out, so ``allow`` is moot)
    listen_check: Callable[[Mapping[str, Any]], str | None] | None = None
    #: whether a listen URI with these options binds a socket (sio's relay mode connects out instead)
    listens: Callable[[Mapping[str, Any]], bool] = field(default=lambda options: True)

    def options(self, side: str) -> tuple[Option, ...]:
        """The rigs file's options (``side="console"``) or a listen URI's (``side="listen"``)."""
        return self.console_options if side == "console" else self.listen_options


def by_scheme(transports: Collection[TransportSpec]) -> dict[str, TransportSpec]:
    """``{scheme: descriptor}``; two descriptors claiming one scheme is a programming error."""
    table: dict[str, TransportSpec] = {}
    for transport in transports:
        if transport.scheme in table:
            raise ValueError(f"two transports claim the scheme {transport.scheme!r}")
        table[transport.scheme] = transport
    return table


def parse_options(raw: Mapping[str, Any], common: Collection[Option], transport: TransportSpec,
                  transports: Collection[TransportSpec], side: str) -> dict[str, Any]:
    """One rig's (``side="console"``) or one listen URI's (``side="listen"``) options, each parsed by its
    declaration; OptionError says what is wrong: another scheme's option, or ``"<key> must be ..."``.

    Keys no transport knows are the caller's to refuse first (its message lists what it allows).
    """
    misplaced = misplaced_options(raw, transport.scheme, transports, side)
    if misplaced:
        raise OptionError(misplaced)
    declared = {o.name: o for o in (*common, *transport.options(side))}
    options: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            options[key] = declared[key].parse(value)
        except OptionError as ex:
            raise OptionError(f"{key} {ex}") from None
    problem = transport.listen_check(options) if side == "listen" and transport.listen_check else None
    if problem:
        raise OptionError(problem)
    return options


def misplaced_options(keys: Collection[str], scheme: str, transports: Collection[TransportSpec],
                      side: str) -> str | None:
    """Keys that other schemes take but ``scheme`` does not, as one sentence (None when there are none).

    ``side`` is ``"console"`` or ``"listen"``. A key no transport knows is the caller's "unknown key".
    """
    def owners(key: str) -> list[str]:
        return sorted(t.scheme for t in transports if any(o.name == key for o in t.options(side)))

    misplaced = sorted(k for k in keys if owners(k) and scheme not in owners(k))
    if not misplaced:
        return None
    what = "rigs" if side == "console" else "URIs"
    where = "; ".join(f"{k} is for {' and '.join(f'{s}://' for s in owners(k))} {what}" for k in misplaced)
    return f"option(s) {misplaced} do not apply to {scheme}:// {what} ({where})"


# ----------------------------------------------------------------------------------------- parsers

def positive_number(value: Any) -> Any:
    if not is_number(value) or not value > 0 or value != value:
        raise OptionError(f"must be a positive number, not {value!r}")
    return value


def non_negative_number(value: Any) -> Any:
    if not is_number(value) or not value >= 0:
        raise OptionError(f"must be a number of seconds >= 0, not {value!r}")
    return value


def positive_int(value: Any) -> Any:
    if not is_int(value) or value <= 0:
        raise OptionError(f"must be a positive whole number, not {value!r}")
    return value


def boolean(value: Any) -> Any:
    if not isinstance(value, bool):
        raise OptionError(f"must be true or false, not {value!r}")
    return value


def text(value: Any) -> Any:
    """A non-empty string (a secret, a file name, a name)."""
    if not isinstance(value, str) or not value.strip():
        raise OptionError(f"must be a non-empty string, not {value!r}")
    return value


def free_text(value: Any) -> Any:
    if not isinstance(value, str):
        raise OptionError(f"must be a string, not {value!r}")
    return value


def host_list(value: Any) -> list[str]:
    """An allow list: one address or a list of addresses, networks (``10.0.0.0/24``) or hostnames."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items or not all(isinstance(i, str) and i.strip() for i in items):
        raise OptionError(f"must be a list of addresses, not {value!r}")
    return [i.strip() for i in items]


#: the listen-URI option of every scheme whose server can see its peers' addresses (enforced by
#: ``transports.access.AllowList``)
ALLOW = Option("allow", host_list, "peer addresses, networks (10.0.0.0/24) or hostnames let in; others are refused "
                                   "and logged", guards=True)


# ------------------------------------------------------------------------------------ binding rule

#: the listen-URI option every scheme takes: bind beyond loopback with no access control, knowingly
OPEN = Option("open", boolean, "true: listen on a non-loopback address with no access control (warned)")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback literals; any other name or address counts as reachable."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def guards_set(transport: TransportSpec, options: Mapping[str, Any]) -> list[str]:
    """The access controls among ``options`` (names of guard options given a value)."""
    return [o.name for o in transport.listen_options if o.guards and options.get(o.name)]


def binding_problem(host: str, options: Mapping[str, Any], transport: TransportSpec) -> str | None:
    """Why this listen URI may not start (None when it may): the one binding rule of every scheme.

    Loopback is always fine; beyond it the URI needs an access control the transport offers, or
    ``open: true`` (then :func:`open_warning` is logged at start-up).
    """
    if is_loopback(host) or not transport.listens(options) or guards_set(transport, options):
        return None
    if options.get("open") is True:
        return None
    offered = [o.name for o in transport.listen_options if o.guards]
    how = f"set {' or '.join(offered)}, or " if offered else ""
    return (f"listening on {host or 'every interface'} (not loopback) with no access control: anyone who can "
            f"reach it could drive this rig; {how}say open: true to accept anyone")


def open_warning(host: str, options: Mapping[str, Any], transport: TransportSpec) -> str | None:
    """The loud line a URI allowed only by ``open: true`` gets at start-up (None for any other URI)."""
    if is_loopback(host) or not transport.listens(options) or guards_set(transport, options):
        return None
    return (f"!!! {transport.scheme}://{host} listens OPENLY with no access control (open: true): anyone who "
            f"can reach this port can drive the rig !!!")


# ------------------------------------------------------------------------------------ documentation

def options_table(transports: Collection[TransportSpec], common_console: Collection[Option],
                  common_listen: Collection[Option]) -> str:
    """The README's option tables (Markdown), written from the descriptors so the two never disagree."""
    lines = ["| scheme | transport | default port | URI path |", "|---|---|---|---|"]
    for t in transports:
        path = t.console_path.value if t.console_path is t.listen_path else (
            f"rigs file: {t.console_path.value}; rig file: {t.listen_path.value}")
        lines.append(f"| `{t.scheme}://` | {t.title} | {t.default_port} | {path}"
                     f"{' — ' + t.path_doc if t.path_doc else ''} |")

    def table(title: str, common: Collection[Option], side: str) -> None:
        lines.extend(["", title, "", "| option | schemes | meaning |", "|---|---|---|"])
        for option in common:
            lines.append(f"| `{option.name}` | all | {option.doc} |")
        rows: dict[tuple[str, str], tuple[list[str], bool]] = {}  # one row per (name, meaning)
        for t in transports:
            for option in t.options(side):
                rows.setdefault((option.name, option.doc), ([], option.guards))[0].append(t.scheme)
        for (name, doc), (schemes, guards) in rows.items():
            mark = " (access control)" if guards else ""
            lines.append(f"| `{name}` | {', '.join(schemes)} | {doc}{mark} |")

    table("Rigs file (`remote_rigs.yaml`, the console side), per rig:", common_console, "console")
    table("Rig file (`rig.yaml`, the rig side), per listen URI in `uris:`:", common_listen, "listen")
    return "\n".join(lines) + "\n"
