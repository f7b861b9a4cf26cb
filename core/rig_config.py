"""``rig.yaml``: what one rig service is (name, where it listens, its role and its drivers).

``rigdeck serve RIG.yaml`` reads it; ``resources/rig_example.yaml`` documents every key. A bad file
raises :class:`core.config.ConfigError` naming the file, the key and the problem, before anything is
started. Keys:

- ``name`` (required): the rig's name, as the console's rigs file calls it.
- ``uris`` (required): where to listen, a list of ``scheme://host:port`` (the schemes of the transports
  handed in), each either a string or a mapping ``{uri: ..., <transport options>}`` (e.g. ``token``,
  ``allow``; each transport declares its own, an unknown or misplaced one is refused). Port 0 picks a free
  port (``rigdeck serve`` prints the real one). ``uri: ...`` (one) is accepted too. A URI beyond loopback
  needs an access control or ``open: true`` (:func:`core.transport_spec.binding_problem`).
- ``main_sync`` (default false): this rig owns the session clock and hands out exp_refs.
- ``data_dir``: where sessions are filed (relative paths are relative to the rig file; ``--data-dir``
  on the command line wins; default: the platform data directory, see :mod:`core.paths`).
- ``drivers``: ``recorders: {name: {kind: camera|ephys|microphone, rate, frame_size, chunk_interval}}``
  (simulated), ``{kind: video, source: ...}`` (an FFmpeg camera) or a plugin's kind;
  ``manipulator: {type: simulated, ids, dimensions, ...}`` (or ``{ephys_link: URI}``, a proxy, or
  ``{kind: PLUGIN, ...}``); ``commands: {name: {run: [...], start_on, stop, cwd, env, ready}}``
  (external programs). See :mod:`core.drivers.spec` and ``docs/drivers.md``.
- ``fsync`` (default false): fsync every recorder chunk (slower; survives power loss, not just kill -9).
- ``alyx``: ``{base_url, user, token, allow}`` this rig can hand to the others (the token is never logged or
  published); ``allow`` says who may read it (default ``[loopback, session]``: :mod:`core.alyx_access`).
- Test hooks, for partial-failure tests with real processes: ``fail_on`` (event names the rig answers
  with an error report) and ``delay_on`` (``{EVENT: seconds}`` before answering).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.alyx_access import check_allow
from core.config import ConfigError, load_yaml_mapping
from core.drivers.base import DriverContext
from core.drivers.command import CommandSpec
from core.drivers.spec import MANIPULATOR_KEYS, RecorderSpec, parse_drivers
from core.drivers.spec import number as _number
from core.protocol import ExpMessage, RigAddress, parse_uri
from core.transport_spec import (
    OPEN,
    PathRule,
    TransportSpec,
    binding_problem,
    by_scheme,
    parse_options,
)

TOP_KEYS: dict[str, str] = {
    "name": "the rig's name (required)",
    "uris": "list of URIs to listen on (required; or 'uri' for one)",
    "uri": "one URI to listen on (shorthand for uris: [uri])",
    "main_sync": "true: this rig owns the session clock and hands out exp_refs",
    "data_dir": "where sessions are filed (relative to this file)",
    "drivers": "recorders, manipulator and commands (external programs)",
    "fsync": "fsync every recorder chunk",
    "alyx": "{base_url, user, token, allow} to share with other rigs (allow: who may read the token; "
            "default [loopback, session])",
    "description": "free text",
    "fail_on": "test hook: events answered with an error",
    "delay_on": "test hook: {EVENT: seconds} to wait before answering",
}
__all__ = ["MANIPULATOR_KEYS", "CommandSpec", "ListenSpec", "RecorderSpec", "RigConfig", "load_rig_config",
           "parse_rig_config"]
_PORT0 = re.compile(r":0(?=$|/)")


@dataclass(frozen=True)
class ListenSpec:
    """One address a rig serves on, with that transport's options."""

    address: RigAddress
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return self.address.scheme

    @property
    def uri(self) -> str:
        return str(self.address)


@dataclass(frozen=True)
class RigConfig:
    """A validated rig file."""

    name: str
    listen: tuple[ListenSpec, ...]
    main_sync: bool = False
    data_dir: Path | None = None
    recorders: tuple[RecorderSpec, ...] = ()
    manipulator: Mapping[str, Any] | None = None
    commands: tuple[CommandSpec, ...] = ()
    fsync: bool = False
    alyx: Mapping[str, Any] | None = None
    fail_on: frozenset[str] = frozenset()
    delay_on: Mapping[str, float] = field(default_factory=dict)
    description: str = ""
    source: str = "<rig>"
    base_dir: Path = Path(".")  # the rig file's folder (relative paths in it are relative to this)

    def driver_context(self) -> DriverContext:
        """What a driver may know about this rig when it is built or checked."""
        return DriverContext(self.name, self.base_dir, self.fsync, self.source)

    def with_data_dir(self, data_dir: str | os.PathLike[str] | None) -> RigConfig:
        return self if data_dir is None else dataclasses.replace(self, data_dir=Path(data_dir).expanduser())


def parse_listen_uri(uri: Any, transports: Collection[TransportSpec]) -> RigAddress:
    """A listening URI; unlike a rigs-file URI it may say port 0 (any free port) and never resolves DNS."""
    schemes = by_scheme(transports)
    if not isinstance(uri, str):
        raise ValueError(f"a URI must be a string, not {type(uri).__name__}")
    if "://" not in uri:
        raise ValueError(f"{uri!r} needs a scheme ({'/'.join(sorted(schemes))}://host:port)")
    scheme = uri.split("://", 1)[0].lower()
    transport = schemes.get(scheme)
    if transport is None:
        raise ValueError(f"unknown scheme {scheme!r} in {uri!r}; known: {sorted(schemes)}")
    any_port = bool(_PORT0.search(uri.split("://", 1)[1]))
    text = _PORT0.sub(":1", uri, count=1) if any_port else uri
    address = parse_uri(text, resolve_host=False, default_port=transport.default_port,
                        allow_path=transport.listen_path is not PathRule.NONE)
    return dataclasses.replace(address, scheme=scheme, port=0 if any_port else address.port)


def parse_listen_options(raw: Mapping[Any, Any], transport: TransportSpec,
                         transports: Collection[TransportSpec]) -> dict[str, Any]:
    """A listen URI's options, each parsed by the transport that declares it; ValueError names the key.

    An option no transport knows, or one another scheme takes, is refused: a misspelt ``tokn`` must not
    start a server with no token.
    """
    options = {str(k): v for k, v in raw.items()}
    known = {OPEN.name, *(o.name for t in transports for o in t.listen_options)}
    unknown = sorted(set(options) - known)
    if unknown:
        allowed = sorted({OPEN.name, *(o.name for o in transport.listen_options)})
        raise ValueError(f"unknown option(s) {unknown} for {transport.scheme}://; allowed: {allowed}")
    return parse_options(options, (OPEN,), transport, transports, "listen")


def _events(value: Any, what: str) -> list[str]:
    items = [value] if isinstance(value, str | int) else value
    if not isinstance(items, list | tuple):
        raise ValueError(f"{what} must be an event name or a list of them, not {value!r}")
    names = []
    for item in items:
        try:
            names.append(ExpMessage.validate(item, allow_bitwise=False).name)
        except (TypeError, ValueError) as ex:
            raise ValueError(f"{what}: {ex}") from None
    return names


def parse_rig_config(data: Mapping[Any, Any], transports: Collection[TransportSpec], source: str = "<rig>",
                     base_dir: Path | None = None, strict: bool = True) -> RigConfig:
    """Validate a rig mapping (what the YAML file holds) against the ``transports`` this rig has
    (``transports.registry.TRANSPORTS``). Raises ConfigError naming ``source``.

    ``strict=False`` (``serve --check``): a driver plugin that cannot be imported is kept with its
    ``problem`` instead of failing the file (see :mod:`core.drivers.spec`)."""

    def fail(problem: str) -> ConfigError:
        return ConfigError(f"{source}: {problem}")

    unknown = sorted(set(map(str, data)) - set(TOP_KEYS))
    if unknown:
        raise fail(f"unknown key(s) {unknown}; allowed: {sorted(TOP_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail(f"'name' must be a non-empty string, not {name!r}")
    name = name.strip()
    if "uri" in data and "uris" in data:
        raise fail("give 'uris' (a list) or 'uri' (one), not both")
    raw_uris = data.get("uris", [data["uri"]] if "uri" in data else None)
    if isinstance(raw_uris, str | Mapping):
        raw_uris = [raw_uris]
    if not isinstance(raw_uris, list) or not raw_uris:
        raise fail("'uris' must be a non-empty list of URIs to listen on")
    listen: list[ListenSpec] = []
    schemes = by_scheme(transports)
    for i, entry in enumerate(raw_uris):
        raw_options: Mapping[Any, Any] = {}
        if isinstance(entry, Mapping):
            if "uri" not in entry:
                raise fail(f"uris[{i}]: a mapping needs 'uri'")
            raw_options = {k: v for k, v in entry.items() if k != "uri"}
            entry = entry["uri"]
        try:
            address = parse_listen_uri(entry, transports)
            options = parse_listen_options(raw_options, schemes[address.scheme], transports)
        except (TypeError, ValueError) as ex:
            raise fail(f"uris[{i}]: {ex}") from None
        if any(spec.address == address and address.port for spec in listen):
            raise fail(f"uris[{i}]: {address} is listed twice")
        listen.append(ListenSpec(address, options))

    main_sync = data.get("main_sync", False)
    if not isinstance(main_sync, bool):
        raise fail(f"'main_sync' must be true or false, not {main_sync!r}")
    fsync = data.get("fsync", False)
    if not isinstance(fsync, bool):
        raise fail(f"'fsync' must be true or false, not {fsync!r}")

    data_dir = None
    if data.get("data_dir") is not None:
        if not isinstance(data["data_dir"], str) or not data["data_dir"].strip():
            raise fail(f"'data_dir' must be a path, not {data['data_dir']!r}")
        data_dir = Path(data["data_dir"]).expanduser()
        if not data_dir.is_absolute() and base_dir is not None:
            data_dir = base_dir / data_dir

    try:
        drivers = parse_drivers(data.get("drivers"), DriverContext(name, base_dir or Path("."), fsync, source),
                                strict=strict)
    except ValueError as ex:
        raise fail(str(ex)) from None

    alyx = data.get("alyx")
    if alyx is not None:
        if not isinstance(alyx, Mapping) or not all(isinstance(alyx.get(k), str) for k in ("base_url", "user")):
            raise fail("'alyx' must be {base_url: URL, user: NAME, token: TOKEN}")
        if not isinstance(alyx.get("token"), str | type(None)):
            raise fail("alyx.token must be a string")
        alyx = dict(alyx)
        if "allow" in alyx:
            try:
                alyx["allow"] = check_allow(alyx["allow"])
            except ValueError as ex:
                raise fail(str(ex)) from None

    try:
        fail_on = frozenset(_events(data.get("fail_on", []), "fail_on"))
    except ValueError as ex:
        raise fail(str(ex)) from None
    delay_on: dict[str, float] = {}
    raw_delay = data.get("delay_on") or {}
    if not isinstance(raw_delay, Mapping):
        raise fail("'delay_on' must be a mapping {EVENT: seconds}")
    for event, seconds in raw_delay.items():
        try:
            (event_name,) = _events(event, "delay_on")
            delay_on[event_name] = _number(seconds, f"delay_on.{event}", 0, 3600)
        except ValueError as ex:
            raise fail(str(ex)) from None
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("'description' must be text")
    for i, spec in enumerate(listen):  # last, so that a file's other mistakes are named first
        problem = binding_problem(spec.address.host, spec.options, schemes[spec.scheme])
        if problem:
            raise fail(f"uris[{i}]: {spec.uri}: {problem}")
    return RigConfig(name=name, listen=tuple(listen), main_sync=main_sync, data_dir=data_dir,
                     recorders=drivers.recorders, manipulator=drivers.manipulator, commands=drivers.commands,
                     fsync=fsync, alyx=alyx,
                     fail_on=fail_on, delay_on=delay_on, description=description, source=source,
                     base_dir=base_dir or Path("."))


def load_rig_config(path: str | os.PathLike[str], transports: Collection[TransportSpec],
                    strict: bool = True) -> RigConfig:
    """Read and validate a rig file (ConfigError names the file and the problem)."""
    data = load_yaml_mapping(path, "rig file")
    if not data:
        raise ConfigError(f"{path}: empty rig file (needs at least name and uris)")
    return parse_rig_config(data, transports, str(path), Path(path).resolve().parent, strict=strict)
