"""Socket.IO manipulator server (``rigdeck serve`` with 8 simulated manipulators, its own process) over loopback.

Figures, measured from this process the way the console and Pinpoint see them:

- ``get_position`` round trip (median, p99): a plain python-socketio AsyncClient on the websocket
  transport sending the raw id string, as Pinpoint does; ephys-link 2.3.6 measured 0.367 ms median on
  2 vCPUs (shared/reference/ephys-link-api.md), the goal is to be no slower;
- position updates per second delivered to an observing :class:`SioManipulatorClient` while a controller
  moves all 8 manipulators (pushes/s and per-manipulator updates/s; the server pushes at up to 50 Hz);
- STOP ALL under that load (8 moving, an observer streaming): from the call to the server's
  acknowledgement (sent once the driver has halted every manipulator) and to the moment the observer
  sees all 8 halted; goal p99 < 10 ms.

Controls, each in its own process and measured in blocks alternating with RigDeck's server: a bare
python-socketio server answering a constant (the stack's floor), and the real ephys-link (fake platform)
when ``$RIGDECK_EPHYS_LINK_PYTHON`` names an interpreter that has it.

Prints a table, then one JSON line with the figures (``make bench`` gathers it). The server runs in a
separate process so the client's work does not share its event loop or its core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import socketio  # noqa: E402
import yaml  # noqa: E402

from app.demo_rigs import RigProcess  # noqa: E402
from transports.sio.client import SioManipulatorClient  # noqa: E402

IDS = [str(i) for i in range(8)]
GOAL_GET_POSITION_MEDIAN_MS = 0.37
GOAL_STOP_ALL_P99_MS = 10.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def write_rig(directory: Path) -> Path:
    rig = {"name": "bench-manipulators", "uris": ["sio://127.0.0.1:0"],
           "drivers": {"manipulator": {"type": "simulated", "ids": IDS, "dimensions": [20, 20, 20, 20]}}}
    path = directory / "bench_sio.rig.yaml"
    path.write_text(yaml.safe_dump(rig, sort_keys=False), encoding="utf-8")
    return path


async def raw_client(url: str) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    await client.connect(url, transports=["websocket"])
    return client


def move_body(manipulator_id: str, to: float, speed: float) -> str:
    return json.dumps({"ManipulatorId": manipulator_id, "Position": {"x": to, "y": to, "z": to, "w": to},
                       "Speed": speed})


async def get_position_figures(urls: dict[str, str], n: int, block: int = 200) -> dict[str, float]:
    """Sequential get_position calls, one at a time as a Pinpoint poll does, to RigDeck's server in blocks
    alternating with the same calls to the controls: a bare python-socketio server (what the library stack
    alone costs) and, when available, the real ephys-link. On a shared machine the load changes from second
    to second; alternating blocks lets every server see the same moments."""
    clients = {name: await raw_client(address) for name, address in urls.items()}
    times: dict[str, list[float]] = {name: [] for name in urls}
    try:
        for client in clients.values():
            for _ in range(200):
                await client.call("get_position", "0")
        while len(times["rigdeck"]) < n:
            for name, client in clients.items():
                for _ in range(block):
                    t0 = time.perf_counter()
                    reply = await client.call("get_position", "0")
                    times[name].append((time.perf_counter() - t0) * 1e3)
                assert json.loads(reply)["Error"] == "", reply
    finally:
        for client in clients.values():
            await client.disconnect()
    ours = times.pop("rigdeck")
    figures = {"get_position_median_ms": statistics.median(ours), "get_position_p99_ms": pct(ours, 0.99),
               "get_position_calls_per_s": 1e3 / statistics.mean(ours)}
    for name, control in times.items():
        figures[f"{name}_get_position_median_ms"] = statistics.median(control)
        figures[f"{name}_get_position_p99_ms"] = pct(control, 0.99)
    return figures


async def serve_bare() -> None:
    """The control: python-socketio on aiohttp answering every event with a constant position reply, the
    least any ephys-link-compatible server built on this stack (ephys-link included) can do per call."""
    from aiohttp import web

    sio = socketio.AsyncServer(async_mode="aiohttp")
    app = web.Application()
    sio.attach(app)

    async def answer(event: str, sid: str, *args: Any) -> str:
        return '{"Position":{"x":0.0,"y":0.0,"z":0.0,"w":0.0},"Error":""}'

    sio.on("*", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()  # until SIGTERM


def start_control(argv: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """A control server in a process of its own, announcing ``PORT n`` (bare) or ``READY n`` (ephys-link
    launcher) on its first lines; returns it and its URL."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        words = line.split()
        if len(words) == 2 and words[0] in ("PORT", "READY") and words[1].isdigit():
            return proc, f"http://127.0.0.1:{words[1]}"
    proc.kill()
    raise RuntimeError(f"control server {argv[1:]} did not start (exit {proc.wait()})")


def start_controls() -> tuple[list[subprocess.Popen[str]], dict[str, str]]:
    """The bare python-socketio control, and the real ephys-link when $RIGDECK_EPHYS_LINK_PYTHON names an
    interpreter that has it (see tests/interop/test_ephys_link.py)."""
    procs, urls = [], {}
    proc, urls["bare_socketio"] = start_control([sys.executable, __file__, "--serve-bare"])
    procs.append(proc)
    python = os.environ.get("RIGDECK_EPHYS_LINK_PYTHON")
    if python:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        launcher = Path(__file__).resolve().parents[1] / "interop" / "ephys_link_launcher.py"
        proc, urls["ephys_link"] = start_control([python, str(launcher), str(port)],
                                                 env=dict(os.environ, PYTHONUNBUFFERED="1"))
        procs.append(proc)
    return procs, urls


class Load:
    """A controller that keeps all 8 manipulators moving (slowly, between the ends of their range) and an
    observing console client counting the pushed updates."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.controller: socketio.AsyncClient | None = None
        self.observer = SioManipulatorClient(url)
        self.moves: list[asyncio.Future[Any]] = []

    async def start(self) -> None:
        self.controller = await raw_client(self.url)  # first to connect: the controller
        await self.observer.connect()
        self.observer.subscribe(lambda *_: None)

    def all_moving(self) -> bool:
        return all(self.observer.moving.get(i) for i in IDS)

    def all_halted(self) -> bool:
        return not any(self.observer.moving.get(i) for i in IDS)

    async def wait(self, predicate: Any, timeout: float = 10.0) -> None:
        """Until the observer's state satisfies ``predicate``, checked on every update it applies (no
        polling interval adds to the measured time)."""
        if predicate():
            return
        seen = asyncio.Event()

        def check(*_: Any) -> None:
            if predicate():
                seen.set()

        unsubscribe = self.observer.subscribe(check)
        try:
            await asyncio.wait_for(seen.wait(), timeout)
        finally:
            unsubscribe()

    async def move_all(self, speed: float) -> None:
        """Send 8 moves towards the far end of the range without waiting for them to finish."""
        assert self.controller is not None

        def far(manipulator_id: str) -> float:
            here = self.observer.positions.get(manipulator_id)
            return 0.0 if here is not None and here.x > 10 else 20.0

        self.moves = [asyncio.ensure_future(self.controller.call("set_position", move_body(i, far(i), speed),
                                                                 timeout=120)) for i in IDS]
        await self.wait(self.all_moving)

    async def settle(self) -> list[Any]:
        replies = await asyncio.gather(*self.moves)
        self.moves = []
        return replies

    async def close(self) -> None:
        await self.observer.close()
        if self.controller is not None:
            await self.controller.disconnect()


async def push_figures(load: Load, seconds: float) -> dict[str, float]:
    """Pushes/s as a plain client receives them, manipulator updates/s as the console client applies them."""
    counter = await raw_client(load.url)
    pushes = 0

    def count(payload: Any = None) -> None:
        nonlocal pushes
        pushes += 1

    counter.on("position", count)
    await load.move_all(speed=0.5)  # 20 mm at 0.5 mm/s: moving for the whole window
    pushes, updates0, t0 = 0, load.observer.updates, time.perf_counter()
    await asyncio.sleep(seconds)
    received, updates, elapsed = pushes, load.observer.updates - updates0, time.perf_counter() - t0
    assert load.controller is not None
    await load.controller.call("stop_all", "")
    await load.settle()
    await counter.disconnect()
    return {"pushes_per_s": received / elapsed, "position_updates_per_s": updates / elapsed}


async def stop_all_figures(load: Load, trials: int) -> dict[str, float]:
    assert load.controller is not None
    acked, seen = [], []
    for _ in range(trials):
        await load.move_all(speed=2.0)
        await asyncio.sleep(0.02)  # let a push or two stream, as during a real move
        t0 = time.perf_counter()
        reply = await load.controller.call("stop_all", "", timeout=5)
        t1 = time.perf_counter()
        await load.wait(load.all_halted)
        t2 = time.perf_counter()
        assert reply == "", reply
        replies = [json.loads(r) for r in await load.settle()]
        assert all("did not reach target" in r["Error"] for r in replies), replies
        acked.append((t1 - t0) * 1e3)
        seen.append((t2 - t0) * 1e3)
    return {"stop_all_ack_median_ms": statistics.median(acked), "stop_all_ack_p99_ms": pct(acked, 0.99),
            "stop_all_halted_seen_median_ms": statistics.median(seen),
            "stop_all_halted_seen_p99_ms": pct(seen, 0.99)}


async def measure(url: str, controls: dict[str, str], args: argparse.Namespace) -> dict[str, float]:
    figures = await get_position_figures({"rigdeck": url, **controls}, args.calls)
    load = Load(url)
    await load.start()
    try:
        figures.update(await push_figures(load, args.seconds))
        figures.update(await stop_all_figures(load, args.trials))
    finally:
        await load.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="get_position round trips (default 2000)")
    parser.add_argument("--seconds", type=float, default=3.0, help="push counting window (default 3 s)")
    parser.add_argument("--trials", type=int, default=200, help="STOP ALL trials (default 200)")
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        asyncio.run(serve_bare())
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_sio_") as tmp:
        rig = RigProcess("bench-manipulators", write_rig(Path(tmp)), data_dir=Path(tmp) / "data",
                         log_path=Path(tmp) / "serve.log")
        controls, control_urls = start_controls()
        try:
            uri = rig.wait_ready()[0]
            url = "http://" + uri.split("://", 1)[1]
            figures = asyncio.run(measure(url, control_urls, args))
        finally:
            rig.stop()
            for proc in controls:
                proc.terminate()
                proc.wait(10)
    goals = {"get_position_median_ms": GOAL_GET_POSITION_MEDIAN_MS, "stop_all_ack_p99_ms": GOAL_STOP_ALL_P99_MS,
             "stop_all_halted_seen_p99_ms": GOAL_STOP_ALL_P99_MS}
    print(f"{'figure':<32}{'value':>12}  goal")
    for key, value in figures.items():
        goal = goals.get(key)
        verdict = "" if goal is None else f"<= {goal:g}  {'met' if value <= goal else 'MISSED'}"
        print(f"{key:<32}{value:>12.3f}  {verdict}")
    figures_out: dict[str, Any] = {k: round(v, 4) for k, v in figures.items()}
    figures_out["goals_met"] = all(figures[k] <= g for k, g in goals.items())
    print(json.dumps(figures_out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
