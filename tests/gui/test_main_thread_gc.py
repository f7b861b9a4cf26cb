"""Cyclic garbage (Qt objects included) is collected on the GUI thread, never on a worker thread."""

from __future__ import annotations

import gc
import threading
import weakref

from PySide6.QtCore import QObject

from app.gui.main_thread_gc import MainThreadCollector


class Cycle:
    """An object kept alive only by a reference cycle, holding a Qt object."""

    def __init__(self) -> None:
        self.me = self
        self.qt = QObject()


def test_cycles_are_collected_by_the_gui_threads_timer_and_not_by_a_busy_worker(qapp, qtbot):
    was_enabled, thresholds = gc.isenabled(), gc.get_threshold()
    collector = MainThreadCollector(interval_ms=20)
    try:
        assert not gc.isenabled()
        cycle = Cycle()
        alive = weakref.ref(cycle)
        freed_on: list[str] = []
        weakref.finalize(cycle, lambda: freed_on.append(threading.current_thread().name))
        del cycle

        def allocate() -> None:  # a worker allocating far past gen-0's threshold, as a journal scan does
            junk = [[] for _ in range(50_000)]
            del junk

        worker = threading.Thread(target=allocate, name="worker")
        worker.start()
        worker.join()
        assert alive() is not None  # the worker's allocations did not run the collector
        gc.set_threshold(1, *gc.get_threshold()[1:])
        collector.thresholds = gc.get_threshold()
        qtbot.waitUntil(lambda: alive() is None, timeout=5000)
        assert freed_on == [threading.main_thread().name]
    finally:
        collector.stop()
        gc.set_threshold(*thresholds)
    assert gc.isenabled() == was_enabled
