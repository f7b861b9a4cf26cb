"""Session engine fan-out: time from ``start`` to every rig RUNNING, and from ``stop`` to every rig STOPPED.

For 4, 16 and 64 rig services on loopback. The rigs are real :class:`core.service.RigService` handlers
(the ExpStatus state machine, exp_ref hand-out by the main-sync rig, session folders on disk; no
recorders, so what is timed is the engine and the wire, not simulated cameras) served over iblutil UDP
by :func:`transports.udp.serve_udp`, all in one helper process. The console side — :class:`core.session.
Session` over real :class:`transports.udp.UdpLink` objects, built by :class:`app.rigset.RigSet` as
``rigdeck run`` does — runs here, in another process, so the engine's time is not shared with the
servers' (both still share the machine's cores).

Each round is a whole session (info, init, start, stop, cleanup) over the first N rigs. Two figures per
step:

- **all RUNNING / all STOPPED**: from calling ``start()`` (``stop()``) to the moment the last rig's reply
  arrived, as the engine's progress reports see it. This includes the main-sync rig going first (its own
  round trip) and every rig's journal lines; it is the number the issue's goal is about.
- **step**: until ``start()`` (``stop()``) returned, i.e. also the journal fsync and the atomic rewrite of the
  experiment description that end every step (disk-bound, and what the next step waits for).
- **CPU**: the console process's CPU time over the step (``time.process_time``): the engine's own cost,
  without the time spent waiting for the rigs' process and the wire.

Prints a table with median and p99 per N, then one JSON line.

    python tests/benchmarks/bench_session.py [--rounds 40] [--sizes 4 16 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SIZES = (4, 16, 64)
GOAL_MS = 20.0  # issue 3: 16 rigs started in under 20 ms of engine time


# ------------------------------------------------------------------------------------- rig side
async def serve_rigs(n: int, data_dir: Path) -> None:
    """Host ``n`` rig services on UDP port 0, print their ports as one JSON line, serve until stdin closes."""
    from core.protocol import RigAddress
    from core.service import RigService
    from transports.ibl.udp import serve_udp

    servers = []
    for i in range(n):
        service = RigService(f"rig{i:02d}", data_dir=data_dir / f"rig{i:02d}", main_sync=i == 0)
        await service.start()
        servers.append(await serve_udp(RigAddress("udp", "127.0.0.1", 0), service))
    print(json.dumps([s.port for s in servers]), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for server in servers:
        await server.close()


# ----------------------------------------------------------------------------------- console side
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def one_size(ports: list[int], n: int, rounds: int, warmup: int, data_dir: Path) -> dict[str, list[float]]:
    """``rounds`` whole sessions over the first ``n`` rigs; the timings of start and stop in ms."""
    from app.rigset import RigSet
    from core.config import parse_rig
    from core.session import Progress, Session
    from transports.registry import TRANSPORTS

    specs = {f"rig{i:02d}": parse_rig(f"rig{i:02d}", f"udp://127.0.0.1:{port}", TRANSPORTS)
             for i, port in enumerate(ports[:n])}
    rigset = RigSet(specs)
    links = await rigset.open()
    times: dict[str, list[float]] = {key: [] for key in (
        "start_all", "start_step", "start_cpu", "stop_all", "stop_step", "stop_cpu")}
    last_reply: dict[str, float] = {}

    def on_progress(p: Progress) -> None:
        if p.kind == "reply" and p.rig is not None:
            last_reply[p.step] = time.perf_counter()

    try:
        for r in range(warmup + rounds):
            session = Session(links, rigset.specs, subject="BENCH", data_dir=data_dir / f"n{n}",
                              monitor=rigset.monitor)
            session.on_progress(on_progress)
            await session.open()
            try:
                for name in ("info", "init"):
                    result = await getattr(session, name)()
                    assert result.ok, (name, result.error)
                sample = {}
                for name in ("start", "stop"):
                    last_reply.pop(name, None)
                    t0, c0 = time.perf_counter(), time.process_time()
                    result = await getattr(session, name)()
                    t1, c1 = time.perf_counter(), time.process_time()
                    assert result.ok and len(result.outcomes) == n, (name, result.error)
                    assert all(o.status == (20 if name == "start" else 30) for o in result.outcomes.values())
                    sample[f"{name}_all"] = (last_reply[name] - t0) * 1e3
                    sample[f"{name}_step"] = (t1 - t0) * 1e3
                    sample[f"{name}_cpu"] = (c1 - c0) * 1e3
                assert (await session.cleanup()).ok
            finally:
                await session.close()
            if r >= warmup:
                for key, value in sample.items():
                    times[key].append(value)
    finally:
        await rigset.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_rigs(args.serve, Path(args.data_dir)))
        return 0

    with tempfile.TemporaryDirectory(prefix="rigdeck-bench-session-") as tmp:
        base = Path(tmp)
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(max(args.sizes)), "--data-dir", str(base / "rigs")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            assert server.stdout is not None
            ports = json.loads(server.stdout.readline())
            results: dict[str, dict[str, float]] = {}
            print(f"session engine, UDP rigs on loopback (RigService x N in one helper process), "
                  f"{args.rounds} rounds after {args.warmup} warm-up; ms")
            print(f"{'rigs':>5}  {'start->all RUNNING':>22}  {'start step':>18}  {'stop->all STOPPED':>22}  "
                  f"{'stop step':>18}  {'CPU start/stop':>15}")
            print(f"{'':>5}  {'median':>10} {'p99':>11}  {'median':>8} {'p99':>9}  {'median':>10} {'p99':>11}  "
                  f"{'median':>8} {'p99':>9}  {'median':>15}")
            for n in args.sizes:
                times = asyncio.run(one_size(ports, n, args.rounds, args.warmup, base / "console"))
                row = {}
                for key, values in times.items():
                    row[f"{key}_median_ms"] = round(statistics.median(values), 3)
                    row[f"{key}_p99_ms"] = round(percentile(values, 0.99), 3)
                results[str(n)] = row
                print(f"{n:>5}  {row['start_all_median_ms']:>10.2f} {row['start_all_p99_ms']:>11.2f}  "
                      f"{row['start_step_median_ms']:>8.2f} {row['start_step_p99_ms']:>9.2f}  "
                      f"{row['stop_all_median_ms']:>10.2f} {row['stop_all_p99_ms']:>11.2f}  "
                      f"{row['stop_step_median_ms']:>8.2f} {row['stop_step_p99_ms']:>9.2f}  "
                      f"{row['start_cpu_median_ms']:>7.2f} / {row['stop_cpu_median_ms']:<5.2f}", flush=True)
        finally:
            if server.stdin is not None:
                server.stdin.close()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    goal = results.get("16", {}).get("start_all_median_ms")
    if goal is not None:
        verdict = "met" if goal < GOAL_MS else "NOT met"
        print(f"goal: 16 rigs started in under {GOAL_MS:g} ms of engine time: {verdict} (median {goal:.2f} ms)")
    print(json.dumps({"benchmark": "session", "rounds": args.rounds, "unit": "ms", "goal_16_start_ms": GOAL_MS,
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
