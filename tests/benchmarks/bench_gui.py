"""The console window under load, and how fast it comes up.

1. **Start-up** (5 runs): process start of ``rigdeck gui`` on the demo rigs (already running) to the first
   painted window, and to every rig online. Goals: window < 1 s, every rig online < 2 s.
2. **Load** (10 s): the window (offscreen) on 32 UDP rig services (one helper process, polled every 1 s)
   and 2 manipulator rigs with 8 simulated manipulators each (``rigdeck serve`` processes pushing positions
   at 100 Hz), all 16 moving the whole time. Measured in the console process: event-loop lag (lateness of
   a 1 ms precise timer, median/p99; goal p99 < 8 ms), repaints per second of the rigs and manipulator
   tables (at most one per frame by design), and position mods per second arriving in the live state.

Prints a table, then one JSON line. ``python tests/benchmarks/bench_gui.py [--seconds 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml  # noqa: E402

from app.demo_rigs import start_demo_rigs, start_rig_processes  # noqa: E402

N_RIGS = 32
MANIPULATOR_RIGS = 2
PER_RIG = 8


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


# ------------------------------------------------------------------------------------------ start-up
def startup(runs: int, base: Path) -> dict[str, float]:
    demo = start_demo_rigs(base / "startup")
    shown, online = [], []
    try:
        for i in range(runs):
            env = dict(os.environ, RIGDECK_STARTUP_PROBE="1", QT_QPA_PLATFORM="offscreen",
                       XDG_CONFIG_HOME=str(base / f"cfg{i}"))
            t0 = time.time()
            proc = subprocess.run([sys.executable, "-m", "app.cli", "gui", "--rigs", str(demo.rigs_file),
                                   "--data-dir", str(base / "console")], capture_output=True, text=True,
                                  timeout=60, cwd=str(ROOT), env=env)
            marks = {ln.split()[0]: float(ln.split()[1]) for ln in proc.stdout.splitlines()
                     if ln.startswith(("SHOWN", "ONLINE"))}
            if "SHOWN" in marks:
                shown.append(marks["SHOWN"] - t0)
            if "ONLINE" in marks:
                online.append(marks["ONLINE"] - t0)
    finally:
        demo.stop()
    return {"window_shown_s_median": statistics.median(shown), "window_shown_s_max": max(shown),
            "all_online_s_median": statistics.median(online), "all_online_s_max": max(online), "runs": runs}


# ------------------------------------------------------------------------------------------ load
def start_udp_rigs(base: Path) -> tuple[subprocess.Popen, list[int]]:
    code = ("import asyncio, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            "from bench_session import serve_rigs; asyncio.run(serve_rigs(int(sys.argv[2]), Path(sys.argv[3])))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).resolve().parent), str(N_RIGS),
                             str(base / "udp")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout is not None
    ports = json.loads(proc.stdout.readline())
    return proc, ports


def start_manipulator_rigs(base: Path) -> tuple[dict, dict[str, str]]:
    files = {}
    for r in range(MANIPULATOR_RIGS):
        name = f"probes{r}"
        body = {"name": name, "uris": [{"uri": "sio://127.0.0.1:0", "push_hz": 100}],
                "drivers": {"manipulator": {"type": "simulated", "ids": [str(i) for i in range(1, PER_RIG + 1)],
                                            "update_hz": 100, "max_speed": 5.0}}}
        path = base / f"{name}.rig.yaml"
        path.write_text(yaml.safe_dump(body), encoding="utf-8")
        files[name] = path
    procs = start_rig_processes(files, {n: base / n for n in files}, log_dir=base)
    return procs, {n: p.uris[0] for n, p in procs.items()}


async def keep_moving(console, stop: asyncio.Event) -> None:
    from core.drivers.manipulator import Vec4

    async def shuttle(rig: str, mid: str) -> None:
        client = console.client(rig)
        far = True
        while not stop.is_set():
            x = 18.0 if far else 2.0
            try:
                await client.set_position(mid, Vec4(x, 20.0 - x, 10.0, 5.0), 4.0, timeout=30)
            except Exception:
                await asyncio.sleep(0.1)
            far = not far

    rigs = list(console.manipulator_links())
    await asyncio.gather(*(shuttle(r, str(i)) for r in rigs for i in range(1, PER_RIG + 1)))


def load(seconds: float, base: Path) -> dict[str, float]:
    import qasync
    from PySide6.QtCore import QSettings, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from app.console import Console
    from app.gui.window import MainWindow

    udp_proc, ports = start_udp_rigs(base)
    procs, sio = start_manipulator_rigs(base)
    rigs_file = base / "load_rigs.yaml"
    entries = {f"rig{i:02d}": f"udp://127.0.0.1:{port}" for i, port in enumerate(ports)}
    entries.update({name: {"uri": uri, "role": "manipulator"} for name, uri in sio.items()})
    rigs_file.write_text(yaml.safe_dump(entries, sort_keys=False), encoding="utf-8")

    app = QApplication.instance() or QApplication(sys.argv[:1])
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    console = Console(base / "console", timeout=2.0, poll_interval=1.0)
    window = MainWindow(console, QSettings(str(base / "s.ini"), QSettings.Format.IniFormat))
    window.resize(1400, 900)
    window.show()
    lateness: list[float] = []
    last = [0.0]
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(1)

    def fired() -> None:
        now = time.perf_counter()
        if last[0]:
            lateness.append(max(0.0, (now - last[0]) * 1e3 - 1.0))
        last[0] = now

    timer.timeout.connect(fired)
    out: dict[str, float] = {}

    async def main() -> None:
        await console.load(rigs_file)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rows = window.manipulators.model.rows
            rigs = console.state.get(["rigs"]) or {}
            if len(rows) == MANIPULATOR_RIGS * PER_RIG and all(r.get("link") == "online" for r in rigs.values()):
                break
            await asyncio.sleep(0.05)
        stop = asyncio.Event()
        mover = asyncio.ensure_future(keep_moving(console, stop))
        await asyncio.sleep(1.0)  # moves under way
        seq0, rig0, man0 = console.state.seq, window.rigs.model.repaints, window.manipulators.model.repaints
        cpu0, t0 = time.process_time(), time.perf_counter()
        timer.start()
        await asyncio.sleep(seconds)
        timer.stop()
        elapsed = time.perf_counter() - t0
        out.update({
            "lag_ms_median": statistics.median(lateness), "lag_ms_p99": pct(lateness, 0.99),
            "lag_samples": len(lateness),
            "rigs_table_repaints_per_s": (window.rigs.model.repaints - rig0) / elapsed,
            "manipulator_table_repaints_per_s": (window.manipulators.model.repaints - man0) / elapsed,
            "live_state_mods_per_s": (console.state.seq - seq0) / elapsed,
            "console_cpu_percent": 100 * (time.process_time() - cpu0) / elapsed,
        })
        stop.set()
        await console.stop_all()
        mover.cancel()
        await asyncio.gather(mover, return_exceptions=True)
        await console.close()

    try:
        with loop:
            loop.run_until_complete(main())
    finally:
        window.close()
        for p in procs.values():
            p.stop()
        udp_proc.stdin.close()  # type: ignore[union-attr]
        udp_proc.wait(10)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        up = startup(args.runs, base)
        print(f"start-up ({up['runs']} runs): window shown median {up['window_shown_s_median']:.3f} s "
              f"(max {up['window_shown_s_max']:.3f}; goal < 1 s), every rig online median "
              f"{up['all_online_s_median']:.3f} s (max {up['all_online_s_max']:.3f}; goal < 2 s)")
        lo = load(args.seconds, base)
    print(f"load: {N_RIGS} UDP rigs + {MANIPULATOR_RIGS * PER_RIG} manipulators moving, pushed at 100 Hz, "
          f"{args.seconds:g} s")
    print(f"  event-loop lag (1 ms timer lateness): median {lo['lag_ms_median']:.2f} ms, p99 "
          f"{lo['lag_ms_p99']:.2f} ms (goal p99 < 8 ms; {lo['lag_samples']} samples)")
    print(f"  repaints/s: rigs table {lo['rigs_table_repaints_per_s']:.1f}, manipulators table "
          f"{lo['manipulator_table_repaints_per_s']:.1f} (at most one per 16 ms frame)")
    print(f"  live-state mods/s {lo['live_state_mods_per_s']:.0f}; console CPU {lo['console_cpu_percent']:.0f}%")
    print(json.dumps({"startup": up, "load": lo, "goals": {"lag_p99_ms": 8, "window_shown_s": 1,
                                                          "all_online_s": 2}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
