"""Python's cyclic garbage collector, run on the GUI thread only.

CPython runs the collector in whichever thread happens to allocate past the threshold. When that is a
worker thread (the console reads journals and rigs files in one) and the garbage holds Qt objects (a
closed dialog, a window of an earlier session), Qt destroys them on the wrong thread: the worker takes
Qt's object mutex and waits for the GIL, while the GUI thread holds the GIL and waits for that mutex — a
deadlock that froze the whole window (seen in the GUI tests with a journal scan running). So the
automatic collector is switched off and the same thresholds are checked from a timer on the GUI thread.
Reference counting, which frees almost everything, is untouched.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

#: how often the GUI thread looks at the collector's counts (ms); cheap when there is nothing to do
CHECK_MS = 500


class MainThreadCollector(QObject):
    """Owns the collection timer; keep a reference for as long as the application runs."""

    def __init__(self, parent: QObject | None = None, interval_ms: int = CHECK_MS) -> None:
        super().__init__(parent)
        self.thresholds = gc.get_threshold()
        self.was_enabled = gc.isenabled()
        gc.disable()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.check)
        self.timer.start(interval_ms)

    def check(self) -> None:
        """Collect the generations whose counts passed their thresholds, as CPython itself would."""
        counts = gc.get_count()
        for generation in (2, 1, 0):
            if counts[generation] > self.thresholds[generation]:
                gc.collect(generation)
                return

    def stop(self) -> None:
        """Give collection back as it was found (the application is closing)."""
        self.timer.stop()
        if self.was_enabled:
            gc.enable()
