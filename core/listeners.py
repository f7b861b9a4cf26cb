"""The one listener list every observable in RigDeck uses (links, live state, drivers, sessions, log).

Two rules make it worth one place: adding returns the function that removes the listener again (so a
short-lived observer, a session over long-lived links, leaves nothing behind), and a listener that raises
is logged and the others still run (one broken view must never break the writer that notifies it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, ParamSpec

log = logging.getLogger(__name__)

P = ParamSpec("P")

Unsubscribe = Callable[[], None]


class Listeners(Generic[P]):
    """``Listeners[[str, int]]``: callables taking ``(str, int)``. ``what`` names them in the log."""

    def __init__(self, what: str = "listener") -> None:
        self.what = what
        self._items: list[Callable[P, object]] = []

    def add(self, listener: Callable[P, object]) -> Unsubscribe:
        """Call ``listener`` on every :meth:`notify` from now on; returns its unsubscribe (safe to call twice)."""
        self._items.append(listener)

        def unsubscribe() -> None:
            if listener in self._items:
                self._items.remove(listener)

        return unsubscribe

    def notify(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Call every listener (a copy of the list: a listener may unsubscribe itself); log and skip failures."""
        for listener in list(self._items):
            try:
                listener(*args, **kwargs)
            except Exception:
                log.exception("%s %r failed", self.what, listener)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)
