"""A Socket.IO manipulator server on its own event loop in a background thread.

The command line under test runs ``asyncio.run`` in the test's thread (as ``rigdeck`` does), so the server
it talks to cannot share that loop; a thread with its own loop keeps both real (loopback sockets) and
lets the test reach into the simulated driver between commands.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from sio_helpers import LOOPBACK, FakeEphysLink

from core.drivers.manipulator import SimulatedManipulator
from core.protocol import RigAddress
from transports.sio import serve_sio


class LoopThread:
    """An event loop running in a daemon thread; ``call`` runs a coroutine there and waits for it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sio-server-loop", daemon=True)
        self._thread.start()

    def spawn(self, coro: Awaitable[Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def call(self, coro: Awaitable[Any], timeout: float = 10.0) -> Any:
        return self.spawn(coro).result(timeout)

    def check(self, predicate: Callable[[], bool]) -> bool:
        """Evaluate ``predicate`` on the loop's thread (driver state is not thread-safe to read)."""

        async def read() -> bool:
            return bool(predicate())

        return self.call(read())

    def stop(self) -> None:
        """Cancel what is left (engine.io pings, unfinished moves), then stop and close the loop."""

        async def cancel_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.call(cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def served_in_thread(ids: Any = ("0", "1"), options: dict[str, Any] | None = None, ephys_link: bool = False,
                     **sim_kwargs: Any) -> Iterator[tuple[LoopThread, Any, SimulatedManipulator]]:
    """(loop thread, server, simulated driver): RigDeck's server, or the ephys-link stand-in when asked."""
    loop = LoopThread()

    async def start() -> tuple[Any, SimulatedManipulator]:
        sim = SimulatedManipulator(ids=ids, **sim_kwargs)
        if ephys_link:
            server: Any = FakeEphysLink(sim)
            await server.start()
        else:
            server = await serve_sio(RigAddress("sio", LOOPBACK, 0), sim, options or {})
        return server, sim

    server, sim = loop.call(start())
    try:
        yield loop, server, sim
    finally:
        async def finish() -> None:
            await server.close()
            await sim.close()

        loop.call(finish())
        loop.stop()
