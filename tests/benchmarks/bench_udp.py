"""EXPSTATUS request/reply to 1, 8 and 32 loopback rigs: RigDeck vs the real iblutil, side by side.

Each implementation's servers run in their own process (one process hosting all N servers, as on a
test bench); both client sides run here, in alternating blocks of rounds so that machine noise hits
both alike. RigDeck: ``UdpLink.request`` to every rig with
``asyncio.gather``. iblutil: ``Services.status`` (its default, ``concurrent=True``). Prints a table with
median and p99 per fan-out and the RigDeck/iblutil ratio, then one JSON line.

    python tests/benchmarks/bench_udp.py [--rounds 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

FANOUTS = (1, 8, 32)
QUIET = logging.getLogger("bench-iblutil")


# ------------------------------------------------------------------------------------- servers
async def serve_rigdeck(n: int) -> None:
    from core.protocol import ExpMessage, RigAddress
    from transports.ibl.udp import serve_udp

    class StatusRig:
        name = "bench"

        async def handle(self, event, data, peer):
            if event is ExpMessage.EXPSTATUS:
                return [20]
            return [{"status": 20}]

    servers = [await serve_udp(RigAddress("udp", "127.0.0.1", 0), StatusRig()) for _ in range(n)]
    print(json.dumps([s.port for s in servers]), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def serve_iblutil(n: int) -> None:
    from iblutil.io.net import app, base

    ports = []
    servers = []
    import socket

    for _ in range(n):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # iblutil refuses port 0: find a free one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        server = await app.EchoProtocol.server(f"udp://127.0.0.1:{port}", name="bench", log=QUIET)

        def on_status(data, addr, server=server):
            asyncio.ensure_future(server.status(base.ExpStatus.RUNNING, addr=addr))

        server.assign_callback("EXPSTATUS", on_status)
        servers.append(server)
        ports.append(server._transport.get_extra_info("sockname")[1])
    print(json.dumps(ports), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


# ------------------------------------------------------------------------------------- clients
async def clients_rigdeck(ports: list[int]):
    from core.config import parse_rig
    from core.protocol import ExpMessage
    from transports.ibl.udp import UdpLink
    from transports.registry import TRANSPORTS

    links = [UdpLink(parse_rig(f"r{i}", f"udp://127.0.0.1:{p}", TRANSPORTS)) for i, p in enumerate(ports)]
    for link in links:
        await link.connect()

    async def once():
        await asyncio.gather(*(link.request(ExpMessage.EXPSTATUS, 20) for link in links))

    async def close():
        for link in links:
            await link.close()

    return once, close


async def clients_iblutil(ports: list[int]):
    from iblutil.io.net import app, base

    clients = [await app.EchoProtocol.client(f"udp://127.0.0.1:{p}", name=f"r{i}", log=QUIET)
               for i, p in enumerate(ports)]
    services = app.Services(clients, timeout=10)

    async def once():
        await services.status(base.ExpStatus.RUNNING)

    async def close():
        services.close()

    return once, close


async def measure_both(ports: dict[str, list[int]], rounds: int, warmup: int = 20, block: int = 10):
    """Alternate blocks of rounds between the two implementations, so machine noise hits both alike."""
    sides = {kind: await (clients_rigdeck if kind == "rigdeck" else clients_iblutil)(ports[kind])
             for kind in ("rigdeck", "iblutil")}
    times: dict[str, list[float]] = {kind: [] for kind in sides}
    try:
        for once, _ in sides.values():
            for _ in range(warmup):
                await once()
        while len(times["rigdeck"]) < rounds:
            for kind, (once, _) in sides.items():
                for _ in range(block):
                    t0 = time.perf_counter()
                    await once()
                    times[kind].append((time.perf_counter() - t0) * 1000)
        return times
    finally:
        for _, close in sides.values():
            await close()


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--serve", choices=["rigdeck", "iblutil"])
    parser.add_argument("-n", type=int, default=1)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_rigdeck(args.n) if args.serve == "rigdeck" else serve_iblutil(args.n))
        return
    results: dict[str, dict[str, float]] = {}
    print(f"EXPSTATUS fan-out, {args.rounds} rounds each, ms")
    print(f"{'rigs':>5} {'rigdeck median':>15} {'p99':>7} {'iblutil median':>15} {'p99':>7} {'ratio':>7}")
    for n in FANOUTS:
        procs = {kind: subprocess.Popen([sys.executable, __file__, "--serve", kind, "-n", str(n)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
                 for kind in ("rigdeck", "iblutil")}
        try:
            ports = {kind: json.loads(proc.stdout.readline()) for kind, proc in procs.items()}
            times = asyncio.run(measure_both(ports, args.rounds if n < 32 else args.rounds // 2))
        finally:
            for proc in procs.values():
                proc.stdin.close()
                proc.wait(10)
        row = {}
        for kind in ("rigdeck", "iblutil"):
            row[f"{kind}_median_ms"] = statistics.median(times[kind])
            row[f"{kind}_p99_ms"] = p99(times[kind])
        row["ratio_median"] = row["rigdeck_median_ms"] / row["iblutil_median_ms"]
        results[str(n)] = row
        print(f"{n:>5} {row['rigdeck_median_ms']:>15.3f} {row['rigdeck_p99_ms']:>7.3f} "
              f"{row['iblutil_median_ms']:>15.3f} {row['iblutil_p99_ms']:>7.3f} {row['ratio_median']:>6.2f}x")
    goal = results["8"]["ratio_median"] <= 0.4
    print(f"goal: 8-rig fan-out at most 0.4x iblutil's time -> {results['8']['ratio_median']:.2f}x "
          f"({'met' if goal else 'NOT met'})")
    print(json.dumps({"bench": "udp", "fanout": results, "goal_8rig_ratio_le_0.4": goal}))


if __name__ == "__main__":
    main()
