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
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.protocol import RigAddress, parse_uri

#: Schemes a rigs file may use. ``transports.registry`` maps each to its link class (a test checks both
#: lists agree). Schemes that address a target inside a server take a path (``rpc://host:port/target``).
DEFAULT_SCHEMES: frozenset[str] = frozenset({"udp", "tcp", "zmq", "sio", "rpc"})
PATH_SCHEMES: frozenset[str] = frozenset({"rpc"})
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
}


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
        for key in ("timeout", "poll_interval"):
            if key in options and (
                isinstance(options[key], bool) or not isinstance(options[key], int | float) or options[key] <= 0
            ):
                raise fail(f"{key} must be a positive number of seconds, not {options[key]!r}")
        if "enabled" in options and not isinstance(options["enabled"], bool):
            raise fail(f"enabled must be true or false, not {options['enabled']!r}")
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
            allow_path=scheme in PATH_SCHEMES,
        )
    except (TypeError, ValueError) as ex:
        raise fail(str(ex)) from None
    address = dataclasses.replace(address, scheme=scheme)
    if scheme in PATH_SCHEMES and not address.path:
        raise fail(f"{scheme}:// URIs name a target: {scheme}://host:port/target")
    return RigSpec(name=name.strip(), address=address, role=role, options=options, raw=value)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (plain YAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"duplicate name {key!r} (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


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
        raise ConfigError(f"{source}: not valid YAML: {ex}".replace("\n", " ")) from None
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
