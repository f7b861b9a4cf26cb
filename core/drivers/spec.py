"""The ``drivers`` section of ``rig.yaml``, validated: recorders, a manipulator, external programs.

:func:`parse_drivers` raises ``ValueError("drivers.<section>.<name>: problem")``; the rig-file loader
(:mod:`core.rig_config`) puts the file's name in front. Every entry is checked before anything starts,
built-in kinds and plugin kinds alike (unknown keys are refused, naming the key and the allowed ones).

With ``strict=False`` (``rigdeck serve --check``) a plugin that cannot be imported does not fail the
whole file: its spec carries the ``problem``, so the check can report each driver on its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.checks import is_finite, is_int, is_number
from core.drivers.base import DriverContext
from core.drivers.command import CommandSpec, parse_command
from core.drivers.kinds import KindError, find_kind, known_kinds, validate_options
from core.drivers.recorder import KINDS, MAX_FRAME_SIZE, MAX_RATE

SECTIONS = ("recorders", "manipulator", "commands")
SIMULATED_KEYS = frozenset({"kind", "rate", "frame_size", "chunk_interval"})
MANIPULATOR_KEYS = frozenset({"type", "ids", "dimensions", "home", "update_hz", "max_speed", "ephys_link", "name"})
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class RecorderSpec:
    """One ``drivers.recorders.<name>``: a simulated kind (rate, frame_size, ...) or another kind's options."""

    name: str
    kind: str
    rate: float | None = None
    frame_size: int | None = None
    chunk_interval: float = 0.05
    options: Mapping[str, Any] = field(default_factory=dict)
    problem: str | None = None  # only with strict=False: why the kind cannot be used


@dataclass(frozen=True)
class DriverSpecs:
    recorders: tuple[RecorderSpec, ...] = ()
    manipulator: Mapping[str, Any] | None = None
    commands: tuple[CommandSpec, ...] = ()


def number(value: Any, what: str, low: float, high: float) -> float:
    """``value`` as a float if it is a finite number in ``low..high``; else ValueError naming ``what``."""
    if not is_finite(value):
        raise ValueError(f"{what} must be a number, not {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{what} {value!r} out of range {low:g}..{high:g}")
    return float(value)


def parse_drivers(drivers: Any, context: DriverContext, strict: bool = True) -> DriverSpecs:
    """Validate the ``drivers`` mapping (see the module docstring)."""
    if drivers is None:
        return DriverSpecs()
    if not isinstance(drivers, Mapping):
        raise ValueError(f"'drivers' must be a mapping ({', '.join(SECTIONS)}), not {type(drivers).__name__}")
    bad = sorted(set(map(str, drivers)) - set(SECTIONS))
    if bad:
        raise ValueError(f"drivers: unknown key(s) {bad}; allowed: {sorted(SECTIONS)}")
    names: set[str] = set()

    def entries(section: str) -> list[tuple[str, Any]]:
        raw = drivers.get(section) or {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"drivers.{section} must be a mapping of name: {{...}}")
        out = []
        for name, spec in raw.items():
            where = f"drivers.{section}.{name}"
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise ValueError(f"{where}: {section[:-1]} names are letters, digits, '_', '-', '.'")
            if name in names or name == "manipulator":
                raise ValueError(f"{where}: the name {name!r} is used twice in drivers (names are shared by "
                                 "recorders, commands and the manipulator)")
            names.add(name)
            out.append((name, spec))
        return out

    recorders = [_recorder(name, spec, context, strict) for name, spec in entries("recorders")]
    commands = []
    for name, spec in entries("commands"):
        try:
            commands.append(parse_command(name, spec, context.base_dir))
        except ValueError as ex:
            raise ValueError(f"drivers.commands.{name}: {ex}") from None
    manipulator = drivers.get("manipulator")
    if manipulator is not None:
        manipulator = _manipulator(manipulator, context, strict)
    return DriverSpecs(tuple(recorders), manipulator, tuple(commands))


def _recorder(name: str, spec: Any, context: DriverContext, strict: bool) -> RecorderSpec:
    where = f"drivers.recorders.{name}"
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected {{kind, ...}}, not {spec!r}")
    kind = spec.get("kind")
    if not isinstance(kind, str):
        raise ValueError(f"{where}: kind must be one of {sorted(KINDS)}, video or a plugin's kind, not {kind!r}")
    if kind in KINDS:
        extra = sorted(set(map(str, spec)) - SIMULATED_KEYS)
        if extra:
            raise ValueError(f"{where}: unknown key(s) {extra}; allowed: {sorted(SIMULATED_KEYS)}")
        try:
            rate = None if spec.get("rate") is None else number(spec["rate"], "rate", 1e-3, MAX_RATE)
            size = spec.get("frame_size")
            if size is not None and (not is_int(size) or not 1 <= size <= MAX_FRAME_SIZE):
                raise ValueError(f"frame_size must be an integer 1..{MAX_FRAME_SIZE}, not {size!r}")
            interval = number(spec.get("chunk_interval", 0.05), "chunk_interval", 0.001, 5)
        except ValueError as ex:
            raise ValueError(f"{where}: {ex}") from None
        return RecorderSpec(name, kind, rate, size, interval)
    try:
        found = find_kind(kind, "recorder")
    except KindError as ex:
        if strict or "cannot be imported" not in str(ex):
            raise ValueError(f"{where}: {ex}") from None
        return RecorderSpec(name, kind, options=dict(spec), problem=str(ex))
    try:
        options = validate_options(found, dict(spec), context, frozenset({"kind"}))
    except ValueError as ex:
        raise ValueError(f"{where}: {ex}") from None
    return RecorderSpec(name, kind, rate=options.get("rate"), options=options)


def _manipulator(spec: Any, context: DriverContext, strict: bool) -> dict[str, Any]:
    where = "drivers.manipulator"
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a mapping ({{type: simulated, ...}}, {{ephys_link: URI}} "
                         "or {kind: PLUGIN, ...})")
    out = dict(spec)
    kind = out.get("kind", out.get("type"))
    if "kind" in out and "type" in out:
        raise ValueError(f"{where}: give 'kind' or 'type', not both")
    if kind not in (None, "simulated", "ephys_link") and "ephys_link" not in out:
        if not isinstance(kind, str):
            raise ValueError(f"{where}.kind must be a name, not {kind!r}")
        try:
            found = find_kind(kind, "manipulator")
        except KindError as ex:
            if "cannot be imported" not in str(ex) and "must be one of" in str(ex):
                raise ValueError(f"{where}: type must be 'simulated' (or ephys_link: URI, or a plugin's kind: "
                                 f"{known_kinds('manipulator')}), not {kind!r}") from None
            if strict or "cannot be imported" not in str(ex):
                raise ValueError(f"{where}: {ex}") from None
            return {"type": kind, "plugin": True, "options": {}, "problem": str(ex)}
        try:
            options = validate_options(found, out, context, frozenset({"kind", "type", "name"}))
        except ValueError as ex:
            raise ValueError(f"{where}: {ex}") from None
        return {"type": kind, "plugin": True, "options": options, "name": out.get("name", "manipulator")}
    out.pop("kind", None)
    if kind is not None:
        out["type"] = kind
    extra = sorted(set(map(str, out)) - MANIPULATOR_KEYS)
    if extra:
        raise ValueError(f"{where}: unknown key(s) {extra}; allowed: {sorted(MANIPULATOR_KEYS | {'kind'})}")
    if "ephys_link" in out:
        if not isinstance(out["ephys_link"], str):
            raise ValueError(f"{where}.ephys_link must be a URI string")
        out.setdefault("type", "ephys_link")
        return out
    out.setdefault("type", "simulated")
    ids = out.get("ids", ["1", "2"])
    if isinstance(ids, str | int):
        ids = [ids]
    if not isinstance(ids, list) or not ids or len(set(map(str, ids))) != len(ids):
        raise ValueError(f"{where}.ids must be a non-empty list of unique ids, not {ids!r}")
    out["ids"] = [str(i) for i in ids]
    for key in ("dimensions", "home"):
        if key in out:
            value = out[key]
            if is_number(value):
                value = [value] * 4
            if not isinstance(value, list) or len(value) != 4:
                raise ValueError(f"{where}.{key} must be [x, y, z, w] in mm, not {value!r}")
            try:
                out[key] = [number(v, key, 0 if key == "home" else 1e-3, 1000) for v in value]
            except ValueError as ex:
                raise ValueError(f"{where}.{key}: {ex}") from None
    for key in ("update_hz", "max_speed"):
        if key in out:
            try:
                out[key] = number(out[key], key, 1e-3, 10000)
            except ValueError as ex:
                raise ValueError(f"{where}: {ex}") from None
    return out
