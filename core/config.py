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
from core.transport_spec import (
    Option,
    OptionError,
    PathRule,
    TransportSpec,
    boolean,
    by_scheme,
    free_text,
    parse_options,
    positive_number,
)


class Role(enum.StrEnum):
    MAIN_SYNC = "main_sync"
    AUX = "aux"
    MANIPULATOR = "manipulator"


#: Keys every rig of a rigs file may have, whatever its scheme. Each transport declares its own on top
#: (``TransportSpec.console_options``); the transports are handed in by the caller (``transports.registry``).
COMMON_OPTIONS: tuple[Option, ...] = (
    Option("timeout", positive_number, "per-request timeout in seconds"),
    Option("poll_interval", positive_number, "EXPSTATUS polling period in seconds for rigs that don't push state"),
    Option("description", free_text, "free text shown in the console"),
    Option("enabled", boolean, "false keeps the rig in the file but out of sessions"),
    Option("files", lambda value: files_uri(value), "zmq://host:port where the rig serves its session files "
           "(a rig reached over udp/tcp/rpc; a zmq:// rig serves them on its own URI)"),
    Option("transfer", boolean, "false: the console does not gather this rig's session files after a session"),
)


def files_uri(value: Any) -> str:
    """The ``files`` option: a ``zmq://host:port`` file endpoint (the only scheme that serves files)."""
    if not isinstance(value, str) or not value.strip().lower().startswith("zmq://"):
        raise OptionError(f"must be a zmq://host:port URI (the rig's file endpoint), not {value!r:.60}")
    try:
        address = parse_uri(value.strip(), resolve_host=False, default_port=0)
    except (TypeError, ValueError) as ex:
        raise OptionError(f"must be a zmq://host:port URI: {ex}") from None
    if not address.port:
        raise OptionError(f"must name the port of the file endpoint (zmq://host:port), not {value!r:.60}")
    return str(address)
#: the keys of the extended form that are not options
FORM_KEYS: dict[str, str] = {
    "uri": "where the rig listens (required)",
    "role": "main_sync | aux | manipulator (default aux)",
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


def parse_rig(name: Any, value: Any, transports: Collection[TransportSpec], source: str = "<rigs>") -> RigSpec:
    """Validate one entry against the ``transports`` this console has; raise ConfigError naming
    ``source`` and the rig."""

    def fail(problem: str) -> ConfigError:
        return ConfigError(f"{source}: rig {name!r}: {problem}")

    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{source}: rig name {name!r} must be a non-empty string")
    schemes = by_scheme(transports)
    options: dict[str, Any] = {}
    role = Role.AUX
    if isinstance(value, Mapping):
        known = {*FORM_KEYS, *(o.name for o in COMMON_OPTIONS),
                 *(o.name for t in transports for o in t.console_options)}
        unknown = sorted(set(map(str, value)) - known)
        if unknown:
            raise fail(f"unknown key(s) {unknown}; allowed: {sorted(known)}")
        if "uri" not in value:
            raise fail("missing 'uri'")
        uri = value["uri"]
        if "role" in value:
            try:
                role = Role(str(value["role"]).strip().lower())
            except ValueError:
                raise fail(f"unknown role {value['role']!r}; expected one of {[r.value for r in Role]}") from None
        options = {k: v for k, v in value.items() if k not in FORM_KEYS}
    elif isinstance(value, str):
        uri = value
    elif value is None:
        raise fail("no URI given")
    else:
        raise fail(f"expected a URI string or a mapping with 'uri', got {type(value).__name__}")
    if not isinstance(uri, str):
        raise fail(f"uri must be a string, not {type(uri).__name__}")
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else "udp"
    transport = schemes.get(scheme)
    if transport is None:
        raise fail(f"unknown scheme {scheme!r} in {uri!r}; known: {sorted(schemes)}")
    try:
        options = parse_options(options, COMMON_OPTIONS, transport, transports, "console")
    except OptionError as ex:
        raise fail(str(ex)) from None
    try:
        address = parse_uri(uri, resolve_host=False, default_port=transport.default_port,
                            allow_path=transport.console_path is not PathRule.NONE)
    except (TypeError, ValueError) as ex:
        raise fail(str(ex)) from None
    address = dataclasses.replace(address, scheme=scheme)
    if transport.console_path is PathRule.REQUIRED and not address.path:
        raise fail(f"{scheme}:// URIs name a {transport.path_doc}: {scheme}://host:port/{transport.path_doc}")
    if address.path and transport.path_check is not None:
        problem = transport.path_check(address.path)
        if problem:
            raise fail(f"the path of {uri!r} {problem}")
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


def load_rigs(path: str | os.PathLike[str], transports: Collection[TransportSpec]) -> dict[str, RigSpec]:
    """Load a rigs file into ``{name: RigSpec}`` (file order kept), checked against the ``transports`` this
    console has (``transports.registry.TRANSPORTS``). All or nothing."""
    data = load_yaml_mapping(path, "rigs file")
    rigs: dict[str, RigSpec] = {}
    for name, value in data.items():
        spec = parse_rig(name, value, transports, str(path))
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
