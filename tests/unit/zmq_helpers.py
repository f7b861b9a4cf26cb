"""Shared bits of the zmq:// tests: a counting rig double, a fault-injecting proxy, bounded asyncio.run."""

from __future__ import annotations

import asyncio
import collections
import random
import re

import zmq
import zmq.asyncio
from helpers import wait_until

from core.config import RigSpec
from core.protocol import ExpMessage, RigAddress
from core.state import LiveState
from transports.zmq import ZmqLink, serve_zmq
from transports.zmq.sockets import send_now

FAST = {"retry_initial": 0.03, "retry_max": 0.2, "timeout": 5}


async def hang_and_count(server, link):
    """"Hang" the rig (it stops reading and its heartbeat task stops, the socket stays open) and wait for the link to
    say UNREACHABLE. Returns ``(beats, silence)``: how many messages (pings, when idle) the link sent into
    the silence before giving up, and the silence it reported. Closes both.

    Counting beats, not timing them, is what survives a loaded machine: a stalled loop delays the pings
    and the verdict alike, so the count stays the liveness whatever the scheduling."""
    from core.link import LinkState

    server._pump.stop()
    for task in server._tasks:
        task.cancel()
    sends = link.stats["sends"]
    await wait_until(lambda: link.state is LinkState.UNREACHABLE, timeout=10, what="the link to notice the hang")
    beats = link.stats["sends"] - sends
    silence = float(re.search(r"no traffic from the rig for ([0-9.]+) s", link.last_error or "").group(1))
    await link.close()
    await server.close()
    return beats, silence


class CountingRig:
    """A MessageHandler with a LiveState ``.state`` that counts how often each command token ran.

    EXPSTATUS ``[token]`` answers ``[token]``; EXPINIT sets status 10; EXPSTART may sleep ``start_delay``;
    EXPEND raises (to test error reports).
    """

    def __init__(self, name="rig1", start_delay=0.0):
        self.name = name
        self.state = LiveState({"name": name, "status": 0, "manipulators": {}})
        self.runs = collections.Counter()
        self.start_delay = start_delay

    async def handle(self, event, data, peer):
        token = data[0] if data and isinstance(data[0], str | int) else None
        self.runs[(int(event), token)] += 1
        if event == ExpMessage.EXPSTATUS:
            return [token if token is not None else self.state.get(["status"])]
        if event == ExpMessage.EXPINIT:
            self.state.set(["status"], 10)
            return [{"status": 10}]
        if event == ExpMessage.EXPSTART:
            await asyncio.sleep(self.start_delay)
            self.state.set(["status"], 20)
            return [token, {"status": 20}]
        if event == ExpMessage.EXPEND:
            raise ValueError("no session to end")
        return []


async def start_rig(rig=None, options=None, host="127.0.0.1", port=0):
    rig = rig or CountingRig()
    server = await serve_zmq(RigAddress("zmq", host, port), rig, dict(options or {}))
    return rig, server


def make_link(port, name="rig1", host="127.0.0.1", **options):
    """A ZmqLink with fast retries (tests' options may include ones a rigs file would not, e.g. client_key)."""
    return ZmqLink(RigSpec(name=name, address=RigAddress("zmq", host, port), options={**FAST, **options}))


class FaultProxy:
    """A ROUTER in front of a rig's ROUTER that drops, duplicates, delays (reorders) or corrupts messages.

    Each console connecting gets its own DEALER towards the rig, so the rig sees distinct peers. ``rates``
    are per message and per direction; ``only`` optionally limits faults to messages whose JSON contains
    one of those bytes (e.g. ``b'"MODS"'``).
    """

    def __init__(self, rig_port, drop=0.0, dup=0.0, delay=0.0, corrupt=0.0, max_delay=0.03, seed=1, only=None):
        self.rig_port = rig_port
        self.rates = (drop, dup, delay, corrupt)
        self.max_delay = max_delay
        self.rng = random.Random(seed)
        self.only = only
        self.counts = collections.Counter()
        self.port = 0
        self._ctx = zmq.asyncio.Context.instance()
        self._front = None
        self._backs = {}
        self._tasks = []
        self.enabled = True

    async def start(self):
        self._front = self._ctx.socket(zmq.ROUTER)
        self._front.linger = 0
        self.port = self._front.bind_to_random_port("tcp://127.0.0.1")
        self._tasks.append(asyncio.create_task(self._front_loop()))
        return self

    async def close(self):
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except BaseException:
                pass
        for sock in [self._front, *self._backs.values()]:
            sock.close(0)

    def _fault(self, sock, frames, direction):
        if not self.enabled or (self.only and not any(o in frames[-1] or o in frames[0] for o in self.only)):
            send_now(sock, frames)
            return
        drop, dup, delay, corrupt = self.rates
        r = self.rng.random()
        if r < drop:
            self.counts[f"{direction}_dropped"] += 1
            return
        r -= drop
        if r < dup:
            self.counts[f"{direction}_duplicated"] += 1
            send_now(sock, frames)
            send_now(sock, frames)
            return
        r -= dup
        if r < delay:
            self.counts[f"{direction}_delayed"] += 1
            asyncio.get_running_loop().call_later(self.rng.random() * self.max_delay, send_now, sock, list(frames))
            return
        r -= delay
        if r < corrupt and direction == "down" and len(frames) == 3 and frames[-1]:  # only binary chunks:
            # TCP checksums and CURVE's MAC keep JSON frames intact; a chunk can still be wrong on disk
            self.counts[f"{direction}_corrupted"] += 1
            last = bytearray(frames[-1])
            last[self.rng.randrange(len(last))] ^= 0x5A
            frames = [*frames[:-1], bytes(last)]
        send_now(sock, frames)

    async def _front_loop(self):
        while True:
            ident, *frames = await self._front.recv_multipart()
            back = self._backs.get(ident)
            if back is None:
                back = self._backs[ident] = self._ctx.socket(zmq.DEALER)
                back.linger = 0
                back.connect(f"tcp://127.0.0.1:{self.rig_port}")
                self._tasks.append(asyncio.create_task(self._back_loop(ident, back)))
            self._fault(back, frames, "up")

    async def _back_loop(self, ident, back):
        while True:
            frames = await back.recv_multipart()
            self._fault(self._front, [ident, *frames], "down")
