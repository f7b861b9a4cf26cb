"""pc_rpc and sync_struct over loopback: call latency, big payloads, mod throughput, PYON speed.

Prints a table, then one JSON line with the figures (``make bench`` gathers it).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from transports.rpc import pyon  # noqa: E402
from transports.rpc.client import RpcClient  # noqa: E402
from transports.rpc.server import RpcServer  # noqa: E402
from transports.rpc.sync_struct import Notifier, Publisher, Subscriber  # noqa: E402


class Echo:
    def echo(self, x):
        return x


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def rpc_figures() -> dict[str, float]:
    server = RpcServer({"echo": Echo()})
    await server.start()
    client = RpcClient("127.0.0.1", server.port, timeout=10)
    await client.connect()
    for _ in range(50):
        await client.echo(1)
    times = []
    for i in range(2000):
        t0 = time.perf_counter()
        await client.echo([i, "x", (1, 2)])
        times.append((time.perf_counter() - t0) * 1e3)
    array = np.random.default_rng(0).random(131072)  # 1 MiB of float64
    t0 = time.perf_counter()
    for _ in range(5):
        back = await client.echo(array)
    big_ms = (time.perf_counter() - t0) * 1e3 / 5
    assert np.array_equal(back, array)
    await client.close()
    await server.close()
    return {"call_p50_ms": statistics.median(times), "call_p90_ms": pct(times, 0.9), "call_p99_ms": pct(times, 0.99),
            "calls_per_s": 1e3 / statistics.mean(times), "echo_1MiB_array_ms": big_ms}


async def sync_figures(n: int = 20000) -> dict[str, float]:
    notifier = Notifier({"rigs": {"r1": {"x": 0.0}}})
    publisher = Publisher({"state": notifier}, queue_limit=n + 10)
    await publisher.start()
    got = asyncio.Event()
    count = 0

    def on_mod(mod):
        nonlocal count
        count += 1
        if count == n + 1:
            got.set()

    sub = Subscriber("state", notify_cb=on_mod)
    await sub.connect("127.0.0.1", publisher.port)
    t0 = time.perf_counter()
    rig = notifier["rigs"]["r1"]
    for i in range(n):
        rig["x"] = float(i)
        if i % 500 == 0:
            await asyncio.sleep(0)
    await asyncio.wait_for(got.wait(), 60)
    elapsed = time.perf_counter() - t0
    assert sub.struct["rigs"]["r1"]["x"] == float(n - 1)
    await sub.close()
    await publisher.close()
    return {"sync_mods_per_s": n / elapsed}


def pyon_figures(n: int = 20000) -> dict[str, float]:
    mod = {"action": "setitem", "path": ["manipulators", "rig1", "1"], "key": "x", "value": 12.345}
    t0 = time.perf_counter()
    for _ in range(n):
        line = pyon.encode(mod)
    enc = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for _ in range(n):
        pyon.decode(line)
    dec = (time.perf_counter() - t0) / n * 1e6
    return {"pyon_encode_mod_us": enc, "pyon_decode_mod_us": dec}


def hostile_lines() -> dict[str, bytes]:
    """Requests a hostile client may send, each within the server's 4 MiB line limit."""
    limit = 4 * 1024 * 1024 - 100
    big = "9" * pyon.MAX_INT_DIGITS
    return {
        "fraction_1e10000000": b'{"__jsonclass__":["Fraction",["1e10000000",1]]}',
        "int_5000_digits": b"9" * 5000,
        "deep_10000": b"[" * 10000 + b"]" * 10000,
        "4MiB_of_4300_digit_ints": ("[" + ",".join([big] * (limit // (len(big) + 1))) + "]").encode(),
        "4MiB_of_small_ints": ("[" + ",".join(["1"] * (limit // 2)) + "]").encode(),
        "4MiB_colliding_set": ('{"__jsonclass__":["set",[[' + ",".join(
            str(k * (2**61 - 1)) for k in range(1, limit // 24)) + "]]]}").encode()[:limit - 10] + b"0]]]}",
    }


async def hostile_figures() -> dict[str, float]:
    """How long one hostile request holds the server's event loop (the time every other connection waits):
    the longest gap a 1 ms ticker sees while the line is read, refused and answered."""
    server = RpcServer({"echo": Echo()})
    await server.start()
    figures = {}
    for name, line in hostile_lines().items():
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=2**24)
        writer.write(b"ARTIQ pc_rpc\necho pyon_v2\n")
        await reader.readline()
        await reader.readline()
        gaps: list[float] = []
        stop = asyncio.Event()

        async def tick(stop: asyncio.Event = stop, gaps: list[float] = gaps) -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0.01)
        writer.write(line + b"\n")
        reply = await reader.readline()
        stop.set()
        await ticker
        assert b'"failed"' in reply or b'"ok"' in reply, reply[:80]
        figures[f"hostile_{name}_max_stall_ms"] = max(gaps) * 1e3
        writer.close()
    await server.close()
    return figures


def main() -> int:
    figures = {}
    figures.update(asyncio.run(rpc_figures()))
    figures.update(asyncio.run(sync_figures()))
    figures.update(pyon_figures())
    figures.update(asyncio.run(hostile_figures()))
    print(f"{'figure':<48}{'value':>12}")
    for key, value in figures.items():
        print(f"{key:<48}{value:>12.3f}")
    print(json.dumps({k: round(v, 4) for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
