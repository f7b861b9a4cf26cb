"""``rigdeck [gui] [--rigs FILE] [--data-dir DIR]``: the console window over a qasync loop.

Without ``--rigs`` the window opens the rigs file used last (remembered in QSettings). With no display
it says how to run it (Xvfb, or QT_QPA_PLATFORM=offscreen) instead of letting Qt abort. ``rigdeck demo``
calls :func:`run_demo` after starting its simulated rigs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from app.process_limits import limit_loop_errors, raise_open_file_limit
from core.paths import resolve_data_dir

#: set by the start-up benchmark: print "SHOWN|ONLINE <epoch s> <s since import>" at first paint, all online; quit
PROBE_ENV = "RIGDECK_STARTUP_PROBE"
PROCESS_START = time.time()


def display_problem(env: dict[str, str] | None = None, platform: str = sys.platform) -> str | None:
    """Why Qt cannot open a window here, or None. Qt's own message for this is a misleading abort."""
    env = dict(os.environ if env is None else env)
    if not platform.startswith("linux") or env.get("QT_QPA_PLATFORM"):
        return None
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return None
    return ("rigdeck: no display found (DISPLAY and WAYLAND_DISPLAY are unset).\n"
            "  On a machine without a screen, run it under a virtual one:  xvfb-run -a rigdeck ...\n"
            "  or draw offscreen (nothing is shown):  QT_QPA_PLATFORM=offscreen rigdeck ...\n"
            "  For sessions without a window use:     rigdeck run --rigs FILE --subject NAME")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("gui", help="open the console window (the default command)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rigs", metavar="FILE", help="remote_rigs.yaml to open (default: the last one used)")
    parser.add_argument("--data-dir", help="where session folders and journals go (default: platform data dir)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per rig request (default 5)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return launch(args.rigs, resolve_data_dir(args.data_dir), timeout=args.timeout)


def run_demo(args: argparse.Namespace, demo: Any) -> int:
    """``rigdeck demo``: the window on the demo rigs (started by the caller, stopped by it afterwards)."""
    return launch(demo.rigs_file, resolve_data_dir(getattr(args, "data_dir", None)))


def launch(rigs: str | os.PathLike[str] | None, data_dir: Path, timeout: float = 5.0) -> int:
    problem = display_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    import qasync
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from app.console import Console
    from app.gui.main_thread_gc import MainThreadCollector
    from app.gui.window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("RigDeck")
    app.setOrganizationName("RigDeck")
    collector = MainThreadCollector(app)  # noqa: F841 - Qt objects must never be collected on a worker thread
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    raise_open_file_limit()  # links, journals and session files share the descriptor pool
    limit_loop_errors(loop)
    console = Console(data_dir, timeout=timeout)
    settings = QSettings("RigDeck", "RigDeck")
    window = MainWindow(console, settings)
    window.show()
    if os.environ.get(PROBE_ENV):
        QTimer.singleShot(0, lambda: _probe(window, console, app))
    path = rigs or settings.value("rigs/last_file")
    if path and Path(str(path)).exists():  # after the first paint: the window is up before any transport loads
        QTimer.singleShot(0, lambda: window.open_rigs(str(path)))
    elif path:
        window.statusBar().showMessage(f"last rigs file {path} is gone; File → Open rigs file…")
    else:
        window.statusBar().showMessage("no rigs file yet: File → Open rigs file… (Ctrl+O)")
    closed = asyncio.Event()
    app.aboutToQuit.connect(closed.set)
    with loop:
        loop.run_until_complete(closed.wait())
        loop.run_until_complete(console.close())
    return 0


def _probe(window: Any, console: Any, app: Any) -> None:
    """Start-up timing for tests and the benchmark: first paint, then every rig online, then quit."""
    print(f"SHOWN {time.time():.4f} {time.time() - PROCESS_START:.4f}", flush=True)

    async def wait_online() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rigs = console.state.get(["rigs"]) or {}
            if rigs and all(isinstance(r, dict) and r.get("link") == "online" for r in rigs.values()):
                print(f"ONLINE {time.time():.4f} {time.time() - PROCESS_START:.4f}", flush=True)
                break
            await asyncio.sleep(0.01)
        window.close()
        app.quit()

    asyncio.ensure_future(wait_online())
