"""Driver kinds: the built-in ones and plugins found through the ``rigdeck.drivers`` entry-point group.

A plugin is any installed distribution that declares, in its ``pyproject.toml``::

    [project.entry-points."rigdeck.drivers"]
    mylab-laser = "mylab_laser:LaserDriver"

The entry point's name is the ``kind`` a rig file uses; its object is a driver class: a subclass of
:class:`~core.drivers.recorder.Recorder` (named under ``drivers.recorders``) or of
:class:`~core.drivers.manipulator.Manipulator` (``drivers.manipulator: {kind: ...}``), following the
:class:`~core.drivers.base.Configurable` contract. Plugins are imported only when a rig file names them,
so a broken plugin never stops a rig that does not use it. A built-in kind cannot be replaced.
``resources/example_driver/`` is a complete example; ``docs/drivers.md`` explains the contract.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from core.drivers.manipulator import Manipulator
from core.drivers.recorder import KINDS as SIMULATED_KINDS
from core.drivers.recorder import Recorder
from core.drivers.video import VideoRecorder

log = logging.getLogger(__name__)

GROUP = "rigdeck.drivers"
ROLES = {"recorder": Recorder, "manipulator": Manipulator}


class KindError(LookupError):
    """A kind that is unknown, cannot be imported, or is not the right role; the text says which."""


@dataclass(frozen=True)
class DriverKind:
    """A kind a rig file can name, with the class that implements it and where it comes from."""

    name: str
    role: str
    cls: Any
    origin: str = "built-in"


BUILT_IN: dict[str, DriverKind] = {"video": DriverKind("video", "recorder", VideoRecorder)}
#: names a plugin may not take: the simulated recorder kinds and the manipulator types
RESERVED = frozenset(BUILT_IN) | frozenset(SIMULATED_KINDS) | {"simulated", "ephys_link", "command"}


def plugin_entry_points() -> dict[str, metadata.EntryPoint]:
    """Installed plugin entry points by kind name (nothing is imported)."""
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=GROUP):
        if ep.name in RESERVED:
            log.warning("driver plugin %s (%s) ignored: %r is a built-in kind", ep.name, ep.value, ep.name)
        elif ep.name not in found:
            found[ep.name] = ep
    return found


def known_kinds(role: str) -> list[str]:
    built = [n for n, k in BUILT_IN.items() if k.role == role]
    if role == "recorder":
        built += sorted(SIMULATED_KINDS)
    return sorted(built) + sorted(plugin_entry_points())


def find_kind(name: str, role: str) -> DriverKind:
    """The kind ``name`` for ``role`` ("recorder" | "manipulator"); imports a plugin when needed."""
    if name in BUILT_IN:
        kind = BUILT_IN[name]
        if kind.role != role:
            raise KindError(f"kind {name!r} is a {kind.role}, not a {role}")
        return kind
    ep = plugin_entry_points().get(name)
    if ep is None:
        raise KindError(f"kind must be one of {known_kinds(role)}, not {name!r} "
                        f"(plugins register in the {GROUP!r} entry-point group)")
    dist = getattr(ep, "dist", None)
    origin = f"plugin {dist.name} {dist.version}" if dist is not None else f"plugin {ep.value}"
    try:
        cls = ep.load()
    except Exception as ex:  # any import-time error of third-party code
        raise KindError(f"kind {name!r}: {origin} ({ep.value}) cannot be imported: "
                        f"{type(ex).__name__}: {ex}") from None
    base = ROLES[role]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        other = [r for r, b in ROLES.items() if isinstance(cls, type) and issubclass(cls, b)]
        what = f"a {other[0]}" if other else f"{cls!r}, not a {base.__name__} subclass"
        raise KindError(f"kind {name!r} ({origin}, {ep.value}) is {what}; it cannot be used as a {role}")
    return DriverKind(name, role, cls, origin)


def validate_options(kind: DriverKind, options: dict[str, Any], context: Any, extra_keys: frozenset[str]) -> dict:
    """Refuse unknown keys (naming them and the allowed ones), then let the class check the values."""
    allowed = set(getattr(kind.cls, "options", {}) or {})
    unknown = sorted(set(map(str, options)) - allowed - extra_keys)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} for kind {kind.name!r}; allowed: {sorted(allowed | extra_keys)}")
    return dict(kind.cls.validate_options({k: v for k, v in options.items() if k not in extra_keys}, context))
