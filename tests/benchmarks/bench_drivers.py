"""Drivers: how long EXPSTART and EXPEND take with an external program or an FFmpeg camera, and a camera's CPU.

- **program**: a rig service (in this process) with one external program (tests/programs/
  fake_acquisition.py, a Python start-up): EXPSTART returns once the process runs; EXPEND until it
  exited on SIGINT.
- **video**: one ``kind: video`` recorder on a 320x240 30 fps test pattern: EXPSTART returns once the
  first frame's timestamp arrived; EXPEND until ffmpeg finished the file after ``q``.
- **CPU**: ffmpeg's own CPU time (``RUSAGE_CHILDREN``) per second of recording, as a percentage of one
  core, for 320x240 and 640x480 H.264 and 640x480 MJPEG (drawing the test pattern included: a real
  camera costs its decoding instead).

Prints a table, then one JSON line.

    python tests/benchmarks/bench_drivers.py [--rounds 5] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from core.drivers.video import VideoRecorder  # noqa: E402
from core.protocol import ExpMessage as M  # noqa: E402
from core.rig_config import parse_rig_config  # noqa: E402
from core.service import RigService  # noqa: E402
from transports.registry import TRANSPORTS  # noqa: E402

PROGRAM = ROOT / "tests" / "programs" / "fake_acquisition.py"
PATTERN = "lavfi:testsrc=size={size}:rate=30"


def drivers_for(kind: str) -> dict:
    if kind == "video":
        return {"recorders": {"left": {"kind": "video", "source": PATTERN.format(size="320x240")}}}
    return {"commands": {"acq": {"run": [sys.executable, str(PROGRAM), "--record", "{session_path}/c.jsonl"]}}}


async def round_trip(base: Path, kind: str, i: int) -> tuple[float, float]:
    config = parse_rig_config({"name": "bench", "uris": ["udp://127.0.0.1:0"], "data_dir": str(base / kind),
                               "drivers": drivers_for(kind)}, TRANSPORTS, "bench.yaml", base)
    svc = RigService.from_config(config)
    await svc.start()
    ref = f"2026-11-30_{i + 1}_BENCH"
    await svc.handle(M.EXPINIT, [{"exp_ref": ref}], "bench")
    t0 = time.perf_counter()
    await svc.handle(M.EXPSTART, [ref], "bench")
    started = time.perf_counter() - t0
    await asyncio.sleep(1.0)
    t0 = time.perf_counter()
    await svc.handle(M.EXPEND, [], "bench")
    ended = time.perf_counter() - t0
    await svc.close()
    return started * 1e3, ended * 1e3


async def camera_cpu(base: Path, size: str, codec: str, seconds: float) -> dict:
    recorder = VideoRecorder(f"cpu-{size}-{codec}", PATTERN.format(size=size), codec=codec)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    await recorder.start(base / "cpu")
    t0 = time.time()
    await asyncio.sleep(seconds)
    await recorder.stop()
    elapsed = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert recorder.path is not None
    return {"size": size, "codec": codec, "cpu_pct": round(100 * cpu / elapsed, 1), "frames": recorder.frames,
            "kB_per_s": round(recorder.path.stat().st_size / 1024 / elapsed, 1)}


async def main(rounds: int, seconds: float) -> dict:
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for kind in ("program", "video"):
            times = [await round_trip(base, kind, i) for i in range(rounds)]
            out[kind] = {"expstart_ms_median": round(statistics.median(t[0] for t in times), 1),
                         "expend_ms_median": round(statistics.median(t[1] for t in times), 1)}
            print(f"{kind:8} EXPSTART median {out[kind]['expstart_ms_median']:7.1f} ms   "
                  f"EXPEND median {out[kind]['expend_ms_median']:7.1f} ms   ({rounds} rounds)")
        out["camera_cpu"] = [await camera_cpu(base, size, codec, seconds)
                             for size, codec in (("320x240", "h264"), ("640x480", "h264"), ("640x480", "mjpeg"))]
        for row in out["camera_cpu"]:
            print(f"camera {row['size']:8} {row['codec']:6} {row['cpu_pct']:5.1f} % of one core, "
                  f"{row['kB_per_s']:7.1f} kB/s, {row['frames']} frames in {seconds:g} s")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps({"drivers": asyncio.run(main(args.rounds, args.seconds))}))
