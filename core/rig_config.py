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
  and ``manipulator: {type: simulated, ids, dimensions, ...}`` (or ``{ephys_link: URI}``, a proxy).
- ``fsync`` (default false): fsync every recorder chunk (slower; survives power loss, not just kill -9).
- ``alyx``: ``{base_url, user, token}`` this rig can hand to the others (the token is never logged or
  published).
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

from core.checks import is_finite, is_int, is_number
from core.config import ConfigError, load_yaml_mapping
from core.drivers.recorder import KINDS, MAX_FRAME_SIZE, MAX_RATE
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
    "drivers": "recorders and manipulator",
    "fsync": "fsync every recorder chunk",
    "alyx": "{base_url, user, token} to share with other rigs",
    "description": "free text",
    "fail_on": "test hook: events answered with an error",
    "delay_on": "test hook: {EVENT: seconds} to wait before answering",
}
RECORDER_KEYS = {"kind", "rate", "frame_size", "chunk_interval"}
MANIPULATOR_KEYS = {"type", "ids", "dimensions", "home", "update_hz", "max_speed", "ephys_link", "name"}
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
class RecorderSpec:
    name: str
    kind: str
    rate: float | None = None
    frame_size: int | None = None
    chunk_interval: float = 0.05


@dataclass(frozen=True)
class RigConfig:
    """A validated rig file."""

    name: str
    listen: tuple[ListenSpec, ...]
    main_sync: bool = False
    data_dir: Path | None = None
    recorders: tuple[RecorderSpec, ...] = ()
    manipulator: Mapping[str, Any] | None = None
    fsync: bool = False
    alyx: Mapping[str, Any] | None = None
    fail_on: frozenset[str] = frozenset()
    delay_on: Mapping[str, float] = field(default_factory=dict)
    description: str = ""
    source: str = "<rig>"

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


def _number(value: Any, what: str, low: float, high: float) -> float:
    if not is_finite(value):
        raise ValueError(f"{what} must be a number, not {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{what} {value!r} out of range {low:g}..{high:g}")
    return float(value)


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
                     base_dir: Path | None = None) -> RigConfig:
    """Validate a rig mapping (what the YAML file holds) against the ``transports`` this rig has
    (``transports.registry.TRANSPORTS``). Raises ConfigError naming ``source``."""

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

    drivers = data.get("drivers") or {}
    if not isinstance(drivers, Mapping):
        raise fail(f"'drivers' must be a mapping (recorders, manipulator), not {type(drivers).__name__}")
    bad = sorted(set(map(str, drivers)) - {"recorders", "manipulator"})
    if bad:
        raise fail(f"drivers: unknown key(s) {bad}; allowed: ['manipulator', 'recorders']")
    recorders: list[RecorderSpec] = []
    raw_recorders = drivers.get("recorders") or {}
    if not isinstance(raw_recorders, Mapping):
        raise fail("drivers.recorders must be a mapping of name: {kind, rate, ...}")
    for rname, spec in raw_recorders.items():
        where = f"drivers.recorders.{rname}"
        if not isinstance(rname, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", rname):
            raise fail(f"{where}: recorder names are letters, digits, '_', '-', '.'")
        if isinstance(spec, str):
            spec = {"kind": spec}
        if not isinstance(spec, Mapping):
            raise fail(f"{where}: expected {{kind, rate, ...}}, not {spec!r}")
        extra = sorted(set(map(str, spec)) - RECORDER_KEYS)
        if extra:
            raise fail(f"{where}: unknown key(s) {extra}; allowed: {sorted(RECORDER_KEYS)}")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise fail(f"{where}: kind must be one of {sorted(KINDS)}, not {kind!r}")
        try:
            rate = None if spec.get("rate") is None else _number(spec["rate"], "rate", 1e-3, MAX_RATE)
            size = spec.get("frame_size")
            if size is not None and (not is_int(size) or not 1 <= size <= MAX_FRAME_SIZE):
                raise ValueError(f"frame_size must be an integer 1..{MAX_FRAME_SIZE}, not {size!r}")
            interval = _number(spec.get("chunk_interval", 0.05), "chunk_interval", 0.001, 5)
        except ValueError as ex:
            raise fail(f"{where}: {ex}") from None
        recorders.append(RecorderSpec(rname, kind, rate, size, interval))

    manipulator = drivers.get("manipulator")
    if manipulator is not None:
        manipulator = _check_manipulator(manipulator, fail)

    alyx = data.get("alyx")
    if alyx is not None:
        if not isinstance(alyx, Mapping) or not all(isinstance(alyx.get(k), str) for k in ("base_url", "user")):
            raise fail("'alyx' must be {base_url: URL, user: NAME, token: TOKEN}")
        if not isinstance(alyx.get("token"), str | type(None)):
            raise fail("alyx.token must be a string")
        alyx = dict(alyx)

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
                     recorders=tuple(recorders), manipulator=manipulator, fsync=fsync, alyx=alyx,
                     fail_on=fail_on, delay_on=delay_on, description=description, source=source)


def _check_manipulator(spec: Any, fail: Any) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise fail("drivers.manipulator must be a mapping ({type: simulated, ...} or {ephys_link: URI})")
    extra = sorted(set(map(str, spec)) - MANIPULATOR_KEYS)
    if extra:
        raise fail(f"drivers.manipulator: unknown key(s) {extra}; allowed: {sorted(MANIPULATOR_KEYS)}")
    out = dict(spec)
    if "ephys_link" in out:
        if not isinstance(out["ephys_link"], str):
            raise fail("drivers.manipulator.ephys_link must be a URI string")
        out.setdefault("type", "ephys_link")
        return out
    kind = out.setdefault("type", "simulated")
    if kind != "simulated":
        raise fail(f"drivers.manipulator.type must be 'simulated' (or give ephys_link: URI), not {kind!r}")
    ids = out.get("ids", ["1", "2"])
    if isinstance(ids, str | int):
        ids = [ids]
    if not isinstance(ids, list) or not ids or len(set(map(str, ids))) != len(ids):
        raise fail(f"drivers.manipulator.ids must be a non-empty list of unique ids, not {ids!r}")
    out["ids"] = [str(i) for i in ids]
    for key in ("dimensions", "home"):
        if key in out:
            value = out[key]
            if is_number(value):
                value = [value] * 4
            if not isinstance(value, list) or len(value) != 4:
                raise fail(f"drivers.manipulator.{key} must be [x, y, z, w] in mm, not {value!r}")
            try:
                out[key] = [_number(v, key, 0 if key == "home" else 1e-3, 1000) for v in value]
            except ValueError as ex:
                raise fail(f"drivers.manipulator.{key}: {ex}") from None
    for key in ("update_hz", "max_speed"):
        if key in out:
            try:
                out[key] = _number(out[key], key, 1e-3, 10000)
            except ValueError as ex:
                raise fail(f"drivers.manipulator: {ex}") from None
    return out


def load_rig_config(path: str | os.PathLike[str], transports: Collection[TransportSpec]) -> RigConfig:
    """Read and validate a rig file (ConfigError names the file and the problem)."""
    data = load_yaml_mapping(path, "rig file")
    if not data:
        raise ConfigError(f"{path}: empty rig file (needs at least name and uris)")
    return parse_rig_config(data, transports, str(path), Path(path).resolve().parent)
