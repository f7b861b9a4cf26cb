"""``make screenshots``: PNGs of the console on the demo rigs: idle, running, a rig's detail, the Move dialog, a STOP
ALL and its on-screen confirmation, the log, after a rig failure, the alarm banner of a lost main-sync rig,
the Data tab gathering the session's files, and the session timeline (File > Open session…).

Saved to ``docs/screenshots/`` (the README shows ``running.png``). Uses ``widget.grab()``, which works
offscreen and under Xvfb alike.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # helpers: the one wait_until

import qasync  # noqa: E402
from helpers import wait_until  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.console import Console  # noqa: E402
from app.demo_rigs import start_demo_rigs  # noqa: E402
from app.gui.window import MainWindow  # noqa: E402
from core.drivers.manipulator import Vec4  # noqa: E402

OUT = ROOT / "docs" / "screenshots"


async def shoot(window: MainWindow, demo, console: Console) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rigs = lambda: console.state.get(["rigs"]) or {}  # noqa: E731
    await wait_until(lambda: rigs() and all(r.get("link") == "online" for r in rigs().values()), 20, "all online")
    await asyncio.sleep(1.2)
    window.grab().save(str(OUT / "idle.png"))
    window.session.subject.setCurrentText("KS001")
    window.session.project.setText("ibl_neuropixel_brainwide_01")
    await console.start("KS001", window.session.details())
    window.manipulators.view.selectRow(0)
    await console.move("probes", "1", Vec4(14.0, 12.0, 9.0, 6.0), 2.0)
    asyncio.ensure_future(console.move("probes", "2", Vec4(4.0, 15.0, 11.0, 12.0), 1.5))
    await asyncio.sleep(2.5)
    window.grab().save(str(OUT / "running.png"))
    # the cameras rig's detail (double-click its row): its two video recorders' health, live
    detail = window.rigs.details("cameras")
    await wait_until(lambda: "frames" in "".join(r.counts for r in detail.drivers.rows), 20, "camera frames")
    await asyncio.sleep(0.5)
    detail.grab().save(str(OUT / "rig-detail.png"))
    detail.close()
    # the Move dialog of a moving probe: named, travel shown, fields following the probe
    panel = window.manipulators
    panel.select("probes", "2")
    panel.move()
    await wait_until(lambda: panel.dialog is not None and panel.dialog.isVisible(), 20, "the move dialog")
    await asyncio.sleep(0.5)
    panel.dialog.grab().save(str(OUT / "move-dialog.png"))
    panel.dialog.reject()
    # STOP ALL while probe 2 moves: the confirmation stays on screen until dismissed
    window.stop_all()
    await wait_until(lambda: window.stop_all_banner.report is not None and window.stop_all_banner.report.done, 20,
                     "the STOP ALL report")
    await asyncio.sleep(0.3)
    window.grab().save(str(OUT / "stop-all.png"))
    window.stop_all_banner.dismiss.click()
    window.docks["log"].raise_()
    await asyncio.sleep(0.3)
    window.grab().save(str(OUT / "log.png"))
    window.docks["manipulators"].raise_()
    demo.procs["ephys"].kill()
    await wait_until(lambda: rigs()["ephys"].get("link") == "unreachable", 20, "ephys unreachable")
    await asyncio.sleep(0.5)
    window.grab().save(str(OUT / "rig-failure.png"))
    demo.procs["sync"].kill()  # the main-sync rig too: the banner names it and what is at risk
    await wait_until(lambda: any(a.rig == "sync" for a in console.alarms.shown()))
    await asyncio.sleep(0.5)
    window.grab().save(str(OUT / "rig-lost.png"))
    await console.stop()
    # the Data tab: the stopped session's files gathered in the background; the killed rig's in plain words
    window.docks["data"].raise_()
    job = console.transfers.jobs[console.session.exp_ref]
    await wait_until(lambda: not console.transfers.running(job.exp_ref), 30, "the transfer to end")
    await asyncio.sleep(0.3)
    window.grab().save(str(OUT / "data.png"))
    # File > Open session…: the session just run as a timeline (ephys lost mid-way), probes' depths below
    window.open_session(console.session.folder)
    await wait_until(lambda: window.timeline is not None and window.timeline.isVisible())
    window.timeline.resize(1200, 460)
    await asyncio.sleep(0.3)
    window.timeline.grab().save(str(OUT / "timeline.png"))


def main() -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with tempfile.TemporaryDirectory() as tmp:
        demo = start_demo_rigs(Path(tmp))
        try:
            console = Console(Path(tmp) / "console", timeout=1.0, poll_interval=0.5)
            window = MainWindow(console, QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat))
            window.resize(1400, 860)
            window.show()
            window.open_rigs(demo.rigs_file)
            with loop:
                loop.run_until_complete(shoot(window, demo, console))
                loop.run_until_complete(console.close())
        finally:
            demo.stop()
    print(f"screenshots in {OUT}: {sorted(p.name for p in OUT.glob('*.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
