"""Live state: one observable tree that links, the session engine and state streams write into.

Every write goes through :class:`LiveState` and becomes a *mod* in sipyco's sync_struct format
(``{"action": "setitem", "path": [...], "key": k, "value": v}`` and friends), so the same mods can be
applied to a Qt model, published to a remote subscriber, or replayed onto a copy with
:func:`process_mod`. Each mod gets a sequence number, which the ZeroMQ state stream uses to detect gaps.

Conventional layout (writers keep to it so readers can find things; each subtree has one writer):

- ``rigs/<name>`` (the :class:`~core.monitor.RigMonitor`): ``uri``, ``transport``, ``role``, ``in_session``,
  ``link`` (connecting / online / unreachable), ``status`` (ExpStatus int or None), ``last_reply`` (epoch s)
  and ``rtt_ms`` of the last answered request, ``last_heard`` (epoch s of any message), ``last_error``,
  ``last_reply_data`` and ``service`` (the rig's own published tree, when its transport streams one).
- ``manipulators/<rig>/<id>``: ``x y z w`` (mm), ``moving``, ``inside_brain``.
- ``session`` (the current :class:`~core.session.Session`): ``exp_ref``, ``subject``, ``phase``, ``started``,
  ``policy``, ``degraded``..., and ``rigs/<name>/{main_sync, progress}`` (the rig's part in the session).
- ``console`` (the console): ``main_sync``, ``active``, ``rigs_file``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from core.listeners import Listeners, Unsubscribe

log = logging.getLogger(__name__)

Mod = dict[str, Any]
Listener = Callable[[Mod], None]
Path = Sequence[Any]

MOD_ACTIONS = ("init", "setitem", "delitem", "append", "insert", "pop")


def _walk(target: Any, path: Iterable[Any]) -> Any:
    for key in path:
        target = target[key]
    return target


def process_mod(target: Any, mod: Mod) -> Any:
    """Apply one sync_struct mod to a plain structure; return the (possibly new) root.

    ``init`` replaces the root, so callers must use the return value.
    """
    action = mod.get("action")
    if action == "init":
        return mod["struct"]
    node = _walk(target, mod.get("path", ()))
    if action == "setitem":
        node[mod["key"]] = mod["value"]
    elif action == "delitem":
        del node[mod["key"]]
    elif action == "append":
        node.append(mod["x"])
    elif action == "insert":
        node.insert(mod["i"], mod["x"])
    elif action == "pop":
        node.pop(mod["i"])
    else:
        raise ValueError(f"Unknown mod action {action!r} (expected one of {MOD_ACTIONS})")
    return target


class LiveState:
    """An observable nested dict/list. Read with :meth:`get`; write with the mutators below.

    Listeners are called synchronously after each mod is applied; a listener that raises is logged and
    kept (one broken view must not stop the session engine).
    """

    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        self._root: dict[str, Any] = initial if initial is not None else {}
        self._listeners: Listeners[[Mod]] = Listeners("live-state listener")
        self.seq = 0

    # ------------------------------------------------------------------ reading
    @property
    def raw(self) -> dict[str, Any]:
        """The live tree itself. Read only: writes that bypass the mutators notify nobody."""
        return self._root

    def get(self, path: Path, default: Any = None) -> Any:
        try:
            return _walk(self._root, path)
        except (KeyError, IndexError, TypeError):
            return default

    def snapshot(self) -> dict[str, Any]:
        """A deep copy, e.g. to send a late joiner (with :attr:`seq` as its version)."""
        return copy.deepcopy(self._root)

    # ------------------------------------------------------------------ listening
    def subscribe(self, listener: Listener) -> Unsubscribe:
        """Call ``listener(mod)`` after every change; returns a function that unsubscribes."""
        return self._listeners.add(listener)

    def _emit(self, mod: Mod) -> None:
        self.seq += 1
        self._listeners.notify(mod)  # a broken view is logged and never breaks the writer

    # ------------------------------------------------------------------ writing
    def apply(self, mod: Mod) -> None:
        """Apply a mod from elsewhere (a remote sync_struct, a state stream) and notify.

        Containers are copied into the tree, so a listener that keeps the mod (a publisher's queue)
        never sees later changes leak into it.
        """
        applied = mod
        for field in ("value", "x", "struct"):
            if isinstance(mod.get(field), dict | list):
                applied = {**mod, field: copy.deepcopy(mod[field])}
        self._root = process_mod(self._root, applied)
        self._emit(mod)

    def reset(self, struct: dict[str, Any]) -> None:
        self.apply({"action": "init", "struct": struct})

    def set(self, path: Path, value: Any) -> None:
        """Set ``path[-1]`` inside ``path[:-1]``, creating missing dicts on the way (each a mod)."""
        if not path:
            raise ValueError("set() needs a non-empty path; use reset() to replace the root")
        parent = self._ensure(path[:-1])
        key = path[-1]
        if isinstance(parent, dict) and key in parent and parent[key] == value and type(parent[key]) is type(value):
            return  # no change, no mod: views repaint only on real changes
        self.apply({"action": "setitem", "path": list(path[:-1]), "key": key, "value": value})

    def update(self, path: Path, values: dict[str, Any]) -> None:
        """Set several keys of the dict at ``path``; only changed keys make mods."""
        self._ensure(path)
        for key, value in values.items():
            self.set([*path, key], value)

    def delete(self, path: Path) -> None:
        parent = self.get(path[:-1])
        if isinstance(parent, dict) and path[-1] not in parent:
            return
        self.apply({"action": "delitem", "path": list(path[:-1]), "key": path[-1]})

    def append(self, path: Path, x: Any) -> None:
        self.apply({"action": "append", "path": list(path), "x": x})

    def insert(self, path: Path, i: int, x: Any) -> None:
        self.apply({"action": "insert", "path": list(path), "i": i, "x": x})

    def pop(self, path: Path, i: int = -1) -> None:
        self.apply({"action": "pop", "path": list(path), "i": i})

    def _ensure(self, path: Path) -> Any:
        node: Any = self._root
        for depth, key in enumerate(path):
            if isinstance(node, dict) and key not in node:
                self.apply({"action": "setitem", "path": list(path[:depth]), "key": key, "value": {}})
            node = node[key]
        return node
