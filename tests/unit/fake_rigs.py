"""In-memory rigs for engine tests: a tiny ExpStatus state machine behind a RigLink, with faults to order.

Not a mock of the engine's calls: the fake answers the iblutil reply shapes a rig service does
(common brief), refuses out-of-order commands, and can be told to fail, hang or time out per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from core.link import LinkState, RemoteError, RequestTimeout, RigLink
from core.protocol import ExpMessage, ExpStatus


class FakeRig:
    def __init__(self, name: str, main_sync: bool = False, exp_ref: str | None = None,
                 token: tuple[str, dict] | None = None, log: list | None = None) -> None:
        self.name = name
        self.main_sync = main_sync
        self.exp_ref_offer = exp_ref
        self.exp_ref: str | None = None
        self.status = ExpStatus.CONNECTED
        self.token = token
        self.received: list[tuple[str, list]] = []
        self.log = log if log is not None else []  # shared across rigs: global order of handled events
        #: event name -> "error" | "timeout" | "hang" | "late" (done on the rig, but the reply never comes)
        self.faults: dict[str, str] = {}
        self.delay = 0.0
        #: when set, every reply waits for this event: a test holds replies to see what is in flight at once
        self.gate: asyncio.Event | None = None
        self.dead = False
        self.told_main_sync: Any = None
        #: False: an iblrig-like rig that knows nothing of RigDeck's ``main_sync_rig``
        self.honours_choice = True

    def handle(self, event: ExpMessage, data: list[Any]) -> list[Any]:
        self.received.append((event.name, data))
        self.log.append((self.name, event.name))
        if event is ExpMessage.EXPINFO:
            info = data[1] if len(data) > 1 and isinstance(data[1], dict) else {}
            self.told_main_sync = info.get("main_sync")
            if info.get("main_sync") is True:
                self.main_sync = True
            elif info.get("main_sync_rig") is not None and self.honours_choice:
                self.main_sync = False
            return [int(self.status), {"main_sync": self.main_sync, "exp_ref": self.exp_ref_offer if self.main_sync
                                       else None, "experiment_description": {"devices": {self.name: {"x": 1}}}}]
        if event is ExpMessage.EXPINIT:
            if self.status not in (ExpStatus.CONNECTED, ExpStatus.STOPPED, ExpStatus.INITIALIZED):
                raise RuntimeError(f"cannot init while {self.status.name}")
            self.exp_ref = data[0]["exp_ref"]
            self.status = ExpStatus.INITIALIZED
            return [{"status": 10, "exp_ref": self.exp_ref}]
        if event is ExpMessage.EXPSTART:
            if self.status is not ExpStatus.INITIALIZED and self.status is not ExpStatus.RUNNING:
                raise RuntimeError(f"cannot start while {self.status.name}")
            self.status = ExpStatus.RUNNING
            return [data[0], {"status": 20}]
        if event in (ExpMessage.EXPEND, ExpMessage.EXPINTERRUPT):
            if self.status is ExpStatus.CONNECTED:
                raise RuntimeError("nothing to stop")
            self.status = ExpStatus.STOPPED
            return [{"status": 30}]
        if event is ExpMessage.EXPCLEANUP:
            self.status = ExpStatus.CONNECTED
            return [{"status": 0}]
        if event is ExpMessage.EXPSTATUS:
            return [int(self.status)]
        if event is ExpMessage.ALYX:
            if data and data[0] is not None and len(data) > 1 and data[1]:
                self.token = (data[0], data[1])
                return [data[0], {}]
            return [self.token[0], self.token[1]] if self.token else [None, {}]
        raise ValueError(f"unknown event {event!r}")


class FakeLink(RigLink):
    def __init__(self, rig: FakeRig, uri: str | None = None) -> None:
        super().__init__(rig.name, uri or f"udp://127.0.0.1:{20000 + abs(hash(rig.name)) % 1000}")
        self.rig = rig
        self.requests = 0
        self.concurrent = 0
        self.max_concurrent = 0

    async def connect(self) -> None:
        self.set_state(LinkState.ONLINE)

    async def close(self) -> None:
        self.set_state(LinkState.CLOSED)

    async def request(self, event: ExpMessage, *data: Any, timeout: float | None = None) -> list[Any]:
        self.requests += 1
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        t0 = time.perf_counter()
        try:
            fault = self.rig.faults.get(event.name)
            if fault == "late" and not self.rig.dead:
                with contextlib.suppress(Exception):
                    self.rig.handle(event, list(data))
            if self.rig.dead or fault in ("timeout", "late"):
                await asyncio.sleep(timeout or 0.05)
                self.set_state(LinkState.UNREACHABLE, "no reply")
                raise RequestTimeout(f"{self.name}: no reply to {event.name}")
            if fault == "hang":  # a broken link that ignores its timeout: the engine's guard must catch it
                await asyncio.sleep(3600)
            if self.rig.delay:
                await asyncio.sleep(self.rig.delay)
            if self.rig.gate is not None:
                await self.rig.gate.wait()
            try:
                if fault == "error":
                    raise RuntimeError(f"{event.name} refused by {self.name}")
                reply = self.rig.handle(event, list(data))
            except Exception as ex:
                self.note_reply(time.perf_counter() - t0)
                raise RemoteError(f"{type(ex).__name__}: {ex}", int(event)) from None
            self.note_reply(time.perf_counter() - t0)
            return reply
        finally:
            self.concurrent -= 1


def make_rigs(*names: str, main: str | None = None, exp_ref: str | None = None) -> tuple[dict, dict]:
    """(rigs by name, links by name) sharing one event log (``rigs[n].log``)."""
    log: list = []
    rigs = {n: FakeRig(n, main_sync=(n == main), exp_ref=exp_ref if n == main else None, log=log) for n in names}
    return rigs, {n: FakeLink(r) for n, r in rigs.items()}
