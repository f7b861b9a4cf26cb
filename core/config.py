"""``remote_rigs.yaml``: which rigs the console talks to, and how.

Two forms, mixable in one file:

- iblrig's flat form, ``name: uri`` (any form :func:`core.protocol.validate_uri` accepts);
- the extended form, ``name: {uri: ..., role: main_sync | aux | manipulator, ...}``.

A bad file raises :class:`ConfigError` naming the file, the rig and the problem, and nothing is
half-loaded: :func:`load_rigs` either returns every rig or raises.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.checks import is_int, is_number
from core.protocol import RigAddress, parse_uri

#: Schemes a rigs file may use. ``transports.registry`` maps each to its link class (a test checks both
#: lists agree). Schemes that address a target inside a server take a path (``rpc://host:port/target``).
DEFAULT_SCHEMES: frozenset[str] = frozenset({"udp", "tcp", "zmq", "sio", "rpc"})
PATH_SCHEMES: frozenset[str] = frozenset({"rpc"})
#: schemes whose console URI may carry a path: ``sio://relay:port/PINPOINT_ID`` reaches a manipulator
#: server through a ``rigdeck relay`` (listen URIs of rig files never take one)
OPTIONAL_PATH_SCHEMES: frozenset[str] = frozenset({"sio"})
#: what a Pinpoint ID at a relay may be (the relay, the CLI and rigs files share this one rule)
PINPOINT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,31}$")
DEFAULT_PORTS: dict[str, int] = {"udp": 11001, "tcp": 11001, "zmq": 11002, "sio": 3000, "rpc": 3251}


class Role(enum.StrEnum):
    MAIN_SYNC = "main_sync"
    AUX = "aux"
    MANIPULATOR = "manipulator"


#: Keys the extended form accepts, and what each is for. Transports read their own from ``options``.
EXTENDED_KEYS: dict[str, str] = {
    "uri": "where the rig listens (required)",
    "role": "main_sync | aux | manipulator (default aux)",
    "timeout": "per-request timeout in seconds",
    "poll_interval": "EXPSTATUS polling period in seconds for rigs that don't push state",
    "description": "free text shown in the console",
    "token": "shared secret for Socket.IO manipulator servers (never logged)",
    "notifier": "sync_struct notifier name to watch, for rpc:// controllers",
    "server_key": "path of the rig's CURVE public key file, for zmq://",
    "enabled": "false keeps the rig in the file but out of sessions",
    "echo_timeout": "udp/tcp: seconds to wait for the echo of a non-idempotent message (default 1)",
    "retry_after": "udp/tcp: first resend interval of EXPSTATUS/EXPINFO in seconds (default 0.2, doubles)",
    "late_window": "udp/tcp: seconds a late reply is expected after a timeout (default 3)",
    "write_gap": "tcp: seconds between two writes on the connection, so iblutil reads them apart (0.005)",
    "client_key": "zmq: path of the console's CURVE secret key file",
    "heartbeat": "zmq: heartbeat interval in seconds",
    "liveness": "zmq: heartbeats missed before the rig counts as unreachable",
    "retry_initial": "zmq: first resend interval in seconds",
    "retry_max": "zmq: longest resend interval in seconds",
    "hwm": "zmq: socket high-water mark (messages)",
    "stream": "zmq: false takes commands only, no state stream",
}

#: options that only mean something for some schemes (a udp:// rig with a notifier is a mistake)
OPTION_SCHEMES: dict[str, frozenset[str]] = {
    **dict.fromkeys(("echo_timeout", "retry_after", "late_window"), frozenset({"udp", "tcp"})),
    **dict.fromkeys(("server_key", "client_key", "heartbeat", "liveness", "retry_initial", "retry_max", "hwm",
                     "stream"), frozenset({"zmq"})),
    "write_gap": frozenset({"tcp"}),
    "token": frozenset({"sio"}),
    "notifier": frozenset({"rpc"}),
}


def _positive_number(value: Any) -> str | None:
    if not is_number(value) or not value > 0 or value != value:
        return f"must be a positive number, not {value!r}"
    return None


def _non_negative_number(value: Any) -> str | None:
    if not is_number(value) or not value >= 0:
        return f"must be a number of seconds >= 0, not {value!r}"
    return None


def _positive_int(value: Any) -> str | None:
    if not is_int(value) or value <= 0:
        return f"must be a positive whole number, not {value!r}"
    return None


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, not {value!r}"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else f"must be a non-empty string, not {value!r}"


def _notifier(value: Any) -> str | None:
    try:
        parse_notifier(value, 1)
    except ValueError as ex:
        return str(ex).removeprefix(f"notifier {value!r}: ")
    return None


#: how each option's value is checked when the file is loaded, so a bad value never reaches a transport
OPTION_CHECKS: dict[str, Callable[[Any], str | None]] = {
    **dict.fromkeys(("timeout", "poll_interval", "echo_timeout", "retry_after", "late_window", "heartbeat",
                     "liveness", "retry_initial", "retry_max"), _positive_number),
    "hwm": _positive_int,
    "write_gap": _non_negative_number,
    **dict.fromkeys(("enabled", "stream"), _boolean),
    **dict.fromkeys(("token", "server_key", "client_key"), _text),
    "description": lambda v: None if isinstance(v, str) else f"must be a string, not {v!r}",
    "notifier": _notifier,
}


def parse_notifier(value: Any, rpc_port: int) -> tuple[int, str]:
    """An rpc:// rig's ``notifier`` option: ``"name"`` -> (rpc_port + 1, name); ``"port/name"`` -> (port, name)."""
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


class ConfigError(ValueError):
    """A rigs file (or rig file) that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class RigSpec:
    """One rig of the rigs file."""

    name: str
    address: RigAddress
    role: Role = Role.AUX
    options: Mapping[str, Any] = field(default_factory=dict)
    #: what the file said, so saving back keeps the user's form (flat string vs mapping)
    raw: Any = None
    #: the file this rig came from: relative paths in its options (key files) are relative to it
    source: str | None = field(default=None, compare=False)

    def path_option(self, key: str) -> Path | None:
        """An option naming a file, resolved against the rigs file's folder (not the working directory)."""
        value = self.options.get(key)
        if not value:
            return None
        path = Path(str(value)).expanduser()
        if not path.is_absolute() and self.source and Path(self.source).is_file():
            path = Path(self.source).resolve().parent / path
        return path

    @property
    def uri(self) -> str:
        return str(self.address)

    @property
    def scheme(self) -> str:
        return self.address.scheme

    @property
    def enabled(self) -> bool:
        return bool(self.options.get("enabled", True))

    @property
    def in_sessions(self) -> bool:
        """Manipulator rigs are watched and moved, but take no session messages."""
        return self.enabled and self.role is not Role.MANIPULATOR

    def to_yaml(self) -> Any:
        if self.role is Role.AUX and not self.options:
            return self.uri
        out: dict[str, Any] = {"uri": self.uri}
        if self.role is not Role.AUX:
            out["role"] = self.role.value
        out.update(self.options)
        return out


def parse_rig(
    name: Any, value: Any, source: str = "<rigs>", schemes: Collection[str] = DEFAULT_SCHEMES
) -> RigSpec:
    """Validate one entry; raise ConfigError naming ``source`` and the rig."""

    def fail(problem: str) -> ConfigError:
        return ConfigError(f"{source}: rig {name!r}: {problem}")

    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{source}: rig name {name!r} must be a non-empty string")
    options: dict[str, Any] = {}
    role = Role.AUX
    if isinstance(value, Mapping):
        unknown = sorted(set(map(str, value)) - set(EXTENDED_KEYS))
        if unknown:
            raise fail(f"unknown key(s) {unknown}; allowed: {sorted(EXTENDED_KEYS)}")
        if "uri" not in value:
            raise fail("missing 'uri'")
        uri = value["uri"]
        if "role" in value:
            try:
                role = Role(str(value["role"]).strip().lower())
            except ValueError:
                raise fail(f"unknown role {value['role']!r}; expected one of {[r.value for r in Role]}") from None
        options = {k: v for k, v in value.items() if k not in ("uri", "role")}
        for key, option in options.items():
            problem = OPTION_CHECKS[key](option) if key in OPTION_CHECKS else None
            if problem:
                raise fail(f"{key} {problem}")
    elif isinstance(value, str):
        uri = value
    elif value is None:
        raise fail("no URI given")
    else:
        raise fail(f"expected a URI string or a mapping with 'uri', got {type(value).__name__}")
    if not isinstance(uri, str):
        raise fail(f"uri must be a string, not {type(uri).__name__}")
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else "udp"
    if scheme not in schemes:
        raise fail(f"unknown scheme {scheme!r} in {uri!r}; known: {sorted(schemes)}")
    try:
        address = parse_uri(
            uri,
            resolve_host=False,
            default_port=DEFAULT_PORTS.get(scheme, 11001),
            allow_path=scheme in PATH_SCHEMES | OPTIONAL_PATH_SCHEMES,
        )
    except (TypeError, ValueError) as ex:
        raise fail(str(ex)) from None
    address = dataclasses.replace(address, scheme=scheme)
    if scheme in PATH_SCHEMES and not address.path:
        raise fail(f"{scheme}:// URIs name a target: {scheme}://host:port/target")
    if scheme in OPTIONAL_PATH_SCHEMES and address.path and not PINPOINT_ID.match(address.path):
        raise fail(f"the path of {uri!r} must be a Pinpoint ID (3-32 letters, digits, - or _)")
    misplaced = sorted(k for k in options if k in OPTION_SCHEMES and scheme not in OPTION_SCHEMES[k])
    if misplaced:
        where = "; ".join(f"{k} is for {' and '.join(f'{s}://' for s in sorted(OPTION_SCHEMES[k]))} rigs"
                          for k in misplaced)
        raise fail(f"option(s) {misplaced} do not apply to {scheme}:// rigs ({where})")
    return RigSpec(name=name.strip(), address=address, role=role, options=options, raw=value, source=source)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (plain YAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *defaults' merges; explicit keys override it
            continue
        key = loader.construct_object(key_node, deep=True)  # (keys are small: build them whole)
        line = key_node.start_mark.line + 1
        try:
            duplicate = key in seen
        except TypeError:  # a list or mapping used as a key
            raise ConfigError(f"name {key!r} (line {line}) must be a string, not a {type(key).__name__}") from None
        if duplicate:
            raise ConfigError(f"duplicate name {key!r} (line {line})")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


#: PyYAML's problem texts, said as what to look at in the file
YAML_PROBLEMS: dict[str, str] = {
    "mapping values are not allowed here": "a ':' where none can be; check this line's indentation",
    "could not find expected ':'": "a line that is not 'name: value'; check its indentation",
    "found character '\\t' that cannot start any token": "a tab; indent with spaces",
    "expected <block end>, but found": "the indentation does not line up with the lines above",
    "found undefined alias": "an '*alias' with no '&anchor' before it",
    "found unexpected end of stream": "the file ends inside a quoted text or a bracket",
}


def yaml_error_text(source: str, ex: yaml.YAMLError) -> str:
    """``<file>, line L, column C: <one sentence>`` for a YAML syntax error (PyYAML's own message is several
    lines with ``"<unicode string>"`` and carets, which a one-line error box flattens into noise)."""
    if not isinstance(ex, yaml.MarkedYAMLError):
        return f"{source}: not valid YAML ({type(ex).__name__})"
    mark = ex.problem_mark or ex.context_mark
    where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
    problem = (ex.problem or ex.context or "not valid YAML").strip()
    for known, sentence in YAML_PROBLEMS.items():
        if problem.startswith(known):
            problem = sentence
            break
    return f"{where}: not valid YAML: {problem}."


def load_yaml_mapping(path: str | os.PathLike[str], what: str = "file") -> dict[Any, Any]:
    """Read a YAML file that must be one mapping with unique keys; ConfigError otherwise."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as ex:
        raise ConfigError(f"{source}: cannot read {what}: {ex}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except ConfigError as ex:
        raise ConfigError(f"{source}: {ex}") from None
    except yaml.YAMLError as ex:
        raise ConfigError(yaml_error_text(source, ex)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of name: uri, got {type(data).__name__}")
    return data


def load_rigs(path: str | os.PathLike[str], schemes: Collection[str] = DEFAULT_SCHEMES) -> dict[str, RigSpec]:
    """Load a rigs file into ``{name: RigSpec}`` (file order kept). All or nothing."""
    data = load_yaml_mapping(path, "rigs file")
    rigs: dict[str, RigSpec] = {}
    for name, value in data.items():
        spec = parse_rig(name, value, str(path), schemes)
        if spec.name in rigs:
            raise ConfigError(f"{path}: rig {spec.name!r}: duplicate name")
        rigs[spec.name] = spec
    main = [n for n, s in rigs.items() if s.role is Role.MAIN_SYNC]
    if len(main) > 1:
        raise ConfigError(f"{path}: several rigs have role main_sync: {main}; at most one may")
    return rigs


def save_rigs(path: str | os.PathLike[str], rigs: Mapping[str, RigSpec], header: str = "") -> None:
    """Write the rigs back atomically (temp file + rename), so a crash never leaves half a file."""
    body = yaml.safe_dump({name: spec.to_yaml() for name, spec in rigs.items()}, sort_keys=False)
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(header + body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
