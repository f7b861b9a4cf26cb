"""zmq:// vs iblutil UDP (RigDeck's ``UdpLink`` against RigDeck UDP rigs) vs raw pyzmq, side by side in one run.

- command round trip to 1 rig, sequential: median and p99;
- fan-out to 32 rigs (``asyncio.gather`` of one EXPSTATUS per rig): median and p99 per round;
- CPU per round of each, summed over the console and the server process (Linux): on a shared machine wall
  times swing with the other jobs, CPU hardly does;
- state stream: a rig changes a value ``--updates`` times as fast as it can; the console counts the updates
  delivered to its listeners per second and the console CPU (``time.process_time``) per update. UDP has no
  stream: its figure is back-to-back EXPSTATUS polling, the only way a UDP console sees state.

The control (``raw``) is the floor zmq:// stands on: plain pyzmq asyncio DEALERs sending a message the size of
a zmq:// command to ROUTERs that echo it, 1 peer and 32 peers, the echo server in its own process; zmq:// is
reported as a ratio to it. The rigs run in separate processes (one per transport, hosting all its servers);
the measuring console runs here, alternating zmq, UDP and raw blocks of 5 rounds so machine noise hits all
alike. Prints a table, then one JSON line.

    python tests/benchmarks/bench_zmq.py [--rounds 300] [--updates 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

FANOUT = 32
KINDS = ("zmq", "udp", "raw")
#: a zmq:// EXPSTATUS command as it goes out, so the control moves as many bytes
RAW_PAYLOAD = (b'{"id":12345,"sender":"bench-host/r0#0123456789ab","key":"CMD","value":{"event":25,"data":[20]},'
               b'"ts":1764500000.123456,"to":"0123456789ab"}')


# ------------------------------------------------------------------------------------------- servers
class BenchRig:
    """Answers EXPSTATUS at once; EXPSTART ``n`` makes it publish ``n`` state changes as fast as it can."""

    name = "bench"

    def __init__(self) -> None:
        from core.state import LiveState

        self.state = LiveState({"status": 20, "manipulators": {"1": {"x": 0.0}}})
        self._tasks: set[asyncio.Task[Any]] = set()

    async def handle(self, event: Any, data: list[Any], peer: str) -> list[Any]:
        from core.protocol import ExpMessage

        if event == ExpMessage.EXPSTART and data and isinstance(data[0], int):
            task = asyncio.create_task(self._publish(int(data[0])))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return [20]

    async def _publish(self, count: int) -> None:
        for i in range(1, count + 1):
            self.state.set(["manipulators", "1", "x"], float(i))
            if i % 200 == 0:
                await asyncio.sleep(0)  # let the rig flush batches and answer heartbeats


async def echo(sock: Any) -> None:
    """The control's server: a ROUTER sending back every message as it came."""
    while True:
        await sock.send_multipart(await sock.recv_multipart())


async def serve_raw(n: int) -> None:
    import zmq
    import zmq.asyncio

    ctx = zmq.asyncio.Context.instance()
    socks = [ctx.socket(zmq.ROUTER) for _ in range(n)]
    ports = [sock.bind_to_random_port("tcp://127.0.0.1") for sock in socks]
    tasks = [asyncio.create_task(echo(sock)) for sock in socks]
    print(json.dumps(ports), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for task in tasks:
        task.cancel()
    for sock in socks:
        sock.close(0)


async def serve(kind: str, n: int) -> None:
    if kind == "raw":
        await serve_raw(n)
        return
    from core.protocol import RigAddress
    from transports.registry import server_factory

    factory = server_factory(kind)
    servers = [await factory(RigAddress(kind, "127.0.0.1", 0), BenchRig(), {}) for _ in range(n)]
    print(json.dumps([s.port for s in servers]), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the console is done
    for server in servers:
        await server.close()


# ------------------------------------------------------------------------------------------- console
class RawPeer:
    """The control's console end: one plain pyzmq asyncio DEALER; ``request`` sends and awaits the echo."""

    def __init__(self, port: int) -> None:
        import zmq
        import zmq.asyncio

        self.sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    async def connect(self) -> None:
        pass

    async def request(self, *_: Any) -> list[Any]:
        await self.sock.send(RAW_PAYLOAD)
        return await self.sock.recv_multipart()

    async def close(self) -> None:
        self.sock.close(0)


def make_links(kind: str, ports: list[int]) -> list[Any]:
    if kind == "raw":
        return [RawPeer(port) for port in ports]
    from core.config import parse_rig
    from transports.registry import TRANSPORTS, make_link

    return [make_link(parse_rig(f"r{i}", f"{kind}://127.0.0.1:{p}", TRANSPORTS)) for i, p in enumerate(ports)]


async def round_trips(links: list[Any], rounds: int) -> list[float]:
    from core.protocol import ExpMessage

    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await asyncio.gather(*(link.request(ExpMessage.EXPSTATUS, 20) for link in links))
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def server_cpu(pid: int | None) -> float:
    """CPU seconds a server process has used (Linux /proc; 0 elsewhere, and the figure is left out)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure_commands(links: dict[str, list[Any]], rounds: int, pids: dict[str, int] | None = None,
                           block: int = 5) -> dict[str, Any]:
    """Median/p99 for 1 rig and for all rigs at once, alternating transports in small blocks, so a busy spell of
    a shared machine falls on all of them. CPU per round (console + servers) is reported too: unlike wall
    time it hardly depends on what else the machine runs."""
    results: dict[str, dict[str, list[float]]] = {k: {"rtt": [], "fanout": []} for k in links}
    cpu: dict[str, dict[str, float]] = {k: {"rtt": 0.0, "fanout": 0.0} for k in links}
    for kind in links:  # warm-up: connections, first-contact handshakes
        await round_trips(links[kind], 20)
    done = 0
    while done < rounds:
        for kind, group in links.items():
            for name, peers in (("rtt", group[:1]), ("fanout", group)):
                pid = (pids or {}).get(kind)
                c0, s0 = time.process_time(), server_cpu(pid)
                results[kind][name] += await round_trips(peers, block)
                cpu[kind][name] += time.process_time() - c0 + server_cpu(pid) - s0
        done += block
    return {kind: {name: {"median_ms": round(statistics.median(v), 3), "p99_ms": round(p99(v), 3), "n": len(v),
                          "cpu_us_per_round": round(cpu[kind][name] / len(v) * 1e6)}
                   for name, v in r.items()} for kind, r in results.items()}


async def measure_stream(link: Any, updates: int) -> dict[str, Any]:
    from core.protocol import ExpMessage

    seen = {"mods": 0, "last": 0.0}
    done = asyncio.Event()

    def listener(mod: dict[str, Any]) -> None:
        if mod.get("action") == "init":
            x = (((mod.get("struct") or {}).get("manipulators") or {}).get("1") or {}).get("x", 0.0)
        else:
            seen["mods"] += 1
            x = mod.get("value", 0.0)
        if isinstance(x, float) and x >= target:
            done.set()

    target = float(updates)
    link.on_update(listener)
    await link.request(ExpMessage.EXPSTATUS, 20)
    dropped0 = link.stats["rig_dropped"]
    cpu0, t0 = time.process_time(), time.perf_counter()
    await link.request(ExpMessage.EXPSTART, updates)
    await asyncio.wait_for(done.wait(), 120)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    delivered = seen["mods"]
    return {"updates": updates, "delivered": delivered, "dropped_reported": link.stats["rig_dropped"] - dropped0,
            "updates_per_s": round(delivered / wall),
            "console_cpu_us_per_update": round(cpu / max(delivered, 1) * 1e6, 2)}


async def measure_polling(link: Any, seconds: float = 2.0) -> dict[str, Any]:
    from core.protocol import ExpMessage

    count = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        await link.request(ExpMessage.EXPSTATUS, 20)
        count += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"updates": count, "delivered": count, "dropped_reported": 0, "updates_per_s": round(count / wall),
            "console_cpu_us_per_update": round(cpu / count * 1e6, 2), "method": "EXPSTATUS polling"}


async def console(ports: dict[str, list[int]], rounds: int, updates: int, pids: dict[str, int]) -> dict[str, Any]:
    links = {kind: make_links(kind, p) for kind, p in ports.items()}
    for group in links.values():
        for link in group:
            await link.connect()
    try:
        commands = await measure_commands(links, rounds, pids)
        stream = {"zmq": await measure_stream(links["zmq"][0], updates),
                  "udp": await measure_polling(links["udp"][0])}
    finally:
        for group in links.values():
            for link in group:
                await link.close()
    return {"commands": commands, "stream": stream}


def ratios(commands: dict[str, Any]) -> dict[str, float]:
    """zmq:// medians over the raw pyzmq control's (the goal: round trip <= 1.3x, fan-out <= 1.5x)."""
    return {name: round(commands["zmq"][name]["median_ms"] / commands["raw"][name]["median_ms"], 2)
            for name in ("rtt", "fanout")}


def print_table(result: dict[str, Any]) -> None:
    c, s = result["commands"], result["stream"]
    print(f"{'':34s} {'zmq://':>14s} {'udp:// (UdpLink)':>18s} {'raw pyzmq echo':>16s} {'zmq/raw':>8s}")
    for name, title in (("rtt", "round trip, 1 rig"), ("fanout", f"fan-out, {FANOUT} rigs")):
        for stat in ("median_ms", "p99_ms"):
            label = f"{title} {stat.replace('_ms', '')} (ms)"
            ratio = f"{c['zmq'][name][stat] / c['raw'][name][stat]:7.2f}x"
            print(f"{label:34s} {c['zmq'][name][stat]:14.3f} {c['udp'][name][stat]:18.3f} "
                  f"{c['raw'][name][stat]:16.3f} {ratio:>8s}")
        label = f"{title} CPU (us, all procs)"
        cpu = [c[k][name]["cpu_us_per_round"] for k in ("zmq", "udp", "raw")]
        print(f"{label:34s} {cpu[0]:14d} {cpu[1]:18d} {cpu[2]:16d} {cpu[0] / max(cpu[2], 1):7.2f}x")
    print(f"{'state updates delivered / s':34s} {s['zmq']['updates_per_s']:14d} {s['udp']['updates_per_s']:18d}")
    print(f"{'console CPU per update (us)':34s} {s['zmq']['console_cpu_us_per_update']:14.2f} "
          f"{s['udp']['console_cpu_us_per_update']:18.2f}")
    print(f"(zmq stream: {s['zmq']['delivered']} of {s['zmq']['updates']} changes delivered as changes, "
          f"{s['zmq']['dropped_reported']} dropped and reported; udp: {s['udp']['method']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--updates", type=int, default=50000)
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("-n", type=int, default=FANOUT, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.n))
        return
    procs = {kind: subprocess.Popen([sys.executable, __file__, "--serve", kind, "-n", str(FANOUT)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
             for kind in KINDS}
    try:
        ports = {kind: json.loads(proc.stdout.readline()) for kind, proc in procs.items()}
        result = asyncio.run(console(ports, args.rounds, args.updates, {k: p.pid for k, p in procs.items()}))
    finally:
        for proc in procs.values():
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print_table(result)
    print(json.dumps({"bench": "zmq", "fanout_rigs": FANOUT, "zmq_over_raw": ratios(result["commands"]), **result}))


if __name__ == "__main__":
    main()
