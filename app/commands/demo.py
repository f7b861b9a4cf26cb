"""``rigdeck demo [--no-gui] [--data-dir DIR]``: start the simulated rigs of ``resources/demo_rigs.yaml``.

Each rig is a real ``rigdeck serve`` process on free loopback ports (a main-sync rig, two recorder
rigs, a manipulator rig). The command prints, and writes to ``<data-dir>/demo/remote_rigs.yaml``, the
rigs file a console uses to reach them (``rigdeck run --rigs <that file> --subject S``), then waits
until Ctrl-C (or SIGTERM) and stops every rig cleanly. Without ``--no-gui`` it opens the console
window on those rigs when the GUI is installed, and falls back to headless when it is not.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from app.demo_rigs import DEMO_RIGS, DemoRigs, RigProcessError, start_demo_rigs
from core.paths import resolve_data_dir


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="start simulated rigs on loopback (and the console window)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-gui", action="store_true", help="headless: start the rigs and wait for Ctrl-C")
    parser.add_argument("--data-dir", help="data directory (rigs file in <dir>/demo, rig data in <dir>/rigs)")
    parser.add_argument("--rigs-yaml", default=str(DEMO_RIGS), help="which demo rigs to start")
    parser.set_defaults(func=run)


def gui_demo() -> Any:
    """The GUI's demo entry point, ``app.commands.gui:run_demo(args, demo)``, if the GUI is installed."""
    from app.cli import COMMANDS

    if "gui" not in COMMANDS:
        return None
    try:
        module = importlib.import_module("app.commands.gui")
    except ImportError:
        return None
    return getattr(module, "run_demo", None)


def wait_for_signal(demo: DemoRigs) -> None:
    """Block until SIGINT/SIGTERM (or every rig has died), reporting rigs that exit on their own."""
    done = threading.Event()
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, lambda *_: done.set())
    try:
        reported: set[str] = set()
        while not done.wait(0.5):
            for name, proc in demo.procs.items():
                if name not in reported and not proc.alive():
                    reported.add(name)
                    print(f"rig {name} exited (code {proc.proc.returncode})", flush=True)
            if demo.procs and len(reported) == len(demo.procs):
                break
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    gui = None if args.no_gui else gui_demo()
    if not args.no_gui and gui is None:
        print("rigdeck demo: the GUI is not available here; running headless (Ctrl-C stops the rigs)",
              file=sys.stderr, flush=True)
    try:
        demo = start_demo_rigs(data_dir, Path(args.rigs_yaml))
    except RigProcessError as ex:
        print(f"rigdeck demo: {ex}", file=sys.stderr, flush=True)
        return 1
    try:
        for name, why in demo.skipped.items():
            print(f"skipped rig {name}: {why}", flush=True)
        print(f"started {len(demo.procs)} simulated rig(s):", flush=True)
        for name, entry in demo.rigs.items():
            print(f"  {name:10s} {entry['uri']:28s} {entry.get('role', 'aux')}", flush=True)
        print(f"RIGS {demo.rigs_file}", flush=True)
        print(demo.rigs_file.read_text(encoding="utf-8"), flush=True)
        if gui is not None:
            return int(gui(args, demo) or 0)
        print(f"run a session:  rigdeck run --rigs {demo.rigs_file} --subject KS001 --duration 5", flush=True)
        print("Ctrl-C stops the rigs.", flush=True)
        wait_for_signal(demo)
        return 0
    finally:
        demo.stop()
        print("demo rigs stopped", flush=True)
