"""GUI tests: synchronous pytest-qt tests over one qasync loop, real rig services as subprocesses.

The qasync loop is installed once per session (``already_running=True``: pytest-qt drives Qt's loop) and
never stopped (stopping it quits the QApplication). Each test gets its own QSettings file and data dir.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import qasync  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402

from app.console import Console  # noqa: E402
from app.demo_rigs import start_demo_rigs  # noqa: E402
from app.gui import qtasync  # noqa: E402
from app.gui.main_thread_gc import MainThreadCollector  # noqa: E402
from app.gui.window import MainWindow  # noqa: E402

DEFAULT_WAIT = 15_000


@pytest.fixture(scope="session")
def loop(qapp):
    collector = MainThreadCollector(qapp)  # as the application does: Qt garbage is freed on the GUI thread
    loop = qasync.QEventLoop(qapp, already_running=True)
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    collector.stop()


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The bundled demo rigs (main sync, cameras, ephys, a manipulator rig), started once."""
    base = tmp_path_factory.mktemp("demo")
    rigs = start_demo_rigs(base)
    yield rigs
    rigs.stop()


def run(qtbot, loop, coro, timeout=DEFAULT_WAIT):
    """Run a coroutine on the qasync loop from a synchronous test and return its result."""
    task = loop.create_task(coro)
    qtbot.waitUntil(task.done, timeout=timeout)
    return task.result()


def wait_for(qtbot, condition, timeout=DEFAULT_WAIT):
    """waitUntil for a plain boolean condition."""
    qtbot.waitUntil(lambda: bool(condition()), timeout=timeout)


async def stand_down(console: Console) -> None:
    """End a session a failed test left running (the demo rigs are shared: the next test needs them ready),
    then close the console."""
    try:
        if console.active:
            await console.abort("the test ended")
        if console.session is not None and console.can("cleanup"):
            await console.cleanup()
    finally:
        await console.close()


def wait_in_control(qtbot, loop, console: Console, rig: str = "probes") -> None:
    """Make ``console`` the controller of ``rig``'s manipulators, as an operator taking over would. The demo
    rigs are shared by every test: an earlier test's console may still hold control of the manipulator
    server (it promotes the next client only once it has seen the controller leave)."""
    wait_for(qtbot, lambda: rig in console.links and console.links[rig].manipulators.controller is not None)
    assert run(qtbot, loop, console.links[rig].manipulators.take_control())


@pytest.fixture
def make_window(qtbot, loop, tmp_path):
    """``make_window(rigs_file)`` -> an open MainWindow over a fresh Console (closed after the test)."""
    made = []

    def make(rigs_file: Path | None = None, timeout: float = 2.0, poll: float = 0.25) -> MainWindow:
        settings = QSettings(str(tmp_path / f"settings{len(made)}.ini"), QSettings.Format.IniFormat)
        console = Console(tmp_path / "data", timeout=timeout, poll_interval=poll)
        window = MainWindow(console, settings)

        def before_close(_widget) -> None:
            window._quitting = True  # the harness closing the window is not an operator: no quit question
            for task in qtasync.pending_tasks():
                task.cancel()

        qtbot.addWidget(window, before_close_func=before_close)
        window.show()
        qtbot.waitExposed(window)
        if rigs_file is not None:
            window.open_rigs(rigs_file)
        made.append(window)
        return window

    yield make
    for window in made:
        task = loop.create_task(stand_down(window.console))
        deadline = time.monotonic() + 10
        while not task.done() and time.monotonic() < deadline:
            qtbot.wait(20)
