"""Qt <-> asyncio glue: run a coroutine from a click, ask a question without blocking, repaint once per frame.

Every click handler schedules a coroutine on the qasync loop with :func:`spawn` and returns at once, so
the GUI thread never waits on the network. Errors a user can act on come back as a message box naming
the problem (never a traceback). :func:`ask` shows a non-modal-blocking dialog (``open()``, not
``exec()``: a nested event loop under qasync is asking for trouble) and returns a future of the answer.
:class:`FrameCoalescer` turns a burst of live-state mods into one repaint per frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Hashable
from typing import Any

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QMessageBox, QWidget

from app.wording import plain
from core.config import ConfigError
from core.drivers.manipulator import ManipulatorError
from core.link import RigError
from core.session import SessionError

log = logging.getLogger(__name__)

#: errors that are the user's or a rig's, shown as one line in a box; anything else is a bug (logged in full)
EXPECTED_ERRORS = (ConfigError, SessionError, RigError, ManipulatorError, ValueError, OSError, TimeoutError)

FRAME_MS = 16

_tasks: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], parent: QWidget | None = None, what: str = "",
          on_done: Callable[[Any], None] | None = None) -> asyncio.Task[Any]:
    """Run ``coro`` on the qasync loop; show its failure in a box titled ``what``; keep a reference."""
    task = asyncio.ensure_future(coro)
    _tasks.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        _tasks.discard(t)
        if t.cancelled():
            return
        ex = t.exception()
        if ex is None:
            if on_done is not None:
                on_done(t.result())
            return
        if not isinstance(ex, EXPECTED_ERRORS):
            log.error("%s failed", what or "action", exc_info=ex)
        show_error(parent, what or "RigDeck", str(ex) or type(ex).__name__)

    task.add_done_callback(done)
    return task


def pending_tasks() -> set[asyncio.Task[Any]]:
    return set(_tasks)


def show_error(parent: QWidget | None, title: str, text: str, detail: str = "") -> QMessageBox:
    """A box with the problem in plain words; protocol detail (if any) behind Qt's "Show Details…"."""
    sentence, extra = plain(text)
    box = QMessageBox(QMessageBox.Icon.Warning, title, sentence, QMessageBox.StandardButton.Ok, parent)
    box.setObjectName("errorBox")
    detail = "\n".join(d for d in (detail, extra) if d)
    if detail:
        box.setDetailedText(detail)
    box.open()
    return box


def ask(box: QMessageBox) -> asyncio.Future[QMessageBox.StandardButton | Any]:
    """Open ``box`` without blocking; the future gets the clicked button (standard or custom)."""
    fut: asyncio.Future[Any] = asyncio.get_event_loop().create_future()

    def finished(_code: int) -> None:
        if not fut.done():
            clicked = box.clickedButton()
            standard = box.standardButton(clicked) if clicked is not None else QMessageBox.StandardButton.NoButton
            fut.set_result(clicked if standard == QMessageBox.StandardButton.NoButton else standard)

    box.finished.connect(finished)
    box.open()
    return fut


class FrameCoalescer(QObject):
    """Collect keys marked dirty; call ``flush(keys)`` once, at most one frame later (a single-shot timer,
    started by a change, never a polling timer)."""

    def __init__(self, flush: Callable[[set[Hashable]], None], parent: QObject | None = None,
                 interval_ms: int = FRAME_MS) -> None:
        super().__init__(parent)
        self._flush = flush
        self._dirty: set[Hashable] = set()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._fire)
        self.flushes = 0

    def mark(self, key: Hashable) -> None:
        self._dirty.add(key)
        if not self._timer.isActive():
            self._timer.start()

    def _fire(self) -> None:
        dirty, self._dirty = self._dirty, set()
        self.flushes += 1
        try:
            self._flush(dirty)
        except Exception:
            log.exception("repaint failed")
