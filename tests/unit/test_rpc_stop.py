"""A pc_rpc stop runs at once, whatever else is running (issue item 4).

The pc_rpc server serialises calls with one lock; a stop queued behind the move it must stop used to wait
the whole move (19.5 s) while the move reached its target. Real servers on loopback here: a slow move on
one connection, a stop on another (or on the same client, which then opens a connection for it); the move
ends early and says it was stopped. Over Socket.IO the same is covered by test_sio_stop_all.
"""

from __future__ import annotations

import asyncio

import pytest
from helpers import run, wait_until

from core.drivers.manipulator import SimulatedManipulator, Vec4
from transports.rpc.client import RpcClient
from transports.rpc.server import RpcServer, urgent
from transports.rpc.targets import ManipulatorTarget
from transports.rpc.wire import RemoteException

FAR = [20.0, 20.0, 20.0, 20.0]
SLOW = 1.0  # mm/s: the move takes 40 s, far longer than any test should


async def manipulator_server(sim: SimulatedManipulator) -> RpcServer:
    server = RpcServer({"manipulator": ManipulatorTarget(sim)})  # calls serialised, as serve_rpc does
    await server.start()
    return server


async def move_then_stop(stop_client_for, stop_call) -> tuple[BaseException | object, Vec4, Vec4]:
    sim = SimulatedManipulator(ids=["1", "2"])
    server = await manipulator_server(sim)
    mover = RpcClient("127.0.0.1", server.port, timeout=60)
    await mover.connect()
    try:
        move = asyncio.create_task(mover.call("set_position", "1", FAR, SLOW))
        await wait_until(lambda: sim.is_moving("1"))
        stopper = stop_client_for(mover, server.port)
        if stopper is not mover:
            await stopper.connect()
        await stop_call(stopper)
        halted = await sim.position("1")
        outcome = await asyncio.wait_for(asyncio.gather(move, return_exceptions=True), 30)
        if stopper is not mover:
            await stopper.close()
        return outcome[0], halted, await sim.position("1")
    finally:
        await mover.close()
        await server.close()
        await sim.close()


def other_client(_mover: RpcClient, port: int) -> RpcClient:
    return RpcClient("127.0.0.1", port, timeout=10)


@pytest.mark.parametrize("stop_call", [lambda c: c.call("stop_all"), lambda c: c.call("stop", "1")],
                         ids=["stop_all", "stop"])
@pytest.mark.parametrize("stop_client_for", [other_client, lambda mover, _port: mover],
                         ids=["another-connection", "same-client"])
def test_stop_interrupts_a_move_running_on_a_pc_rpc_server(stop_client_for, stop_call):
    outcome, halted, after = run(move_then_stop(stop_client_for, stop_call), timeout=60)
    assert isinstance(outcome, RemoteException), outcome  # the move says it was stopped...
    assert "stopped before reaching its target" in str(outcome) and "ManipulatorError" in str(outcome)
    assert 0 < halted.x < 20 and halted == after  # ...it halted on its way and stayed there


def test_a_move_that_arrives_returns_its_position_and_depth_moves_say_when_stopped():
    async def main():
        sim = SimulatedManipulator(ids=["1"])
        server = await manipulator_server(sim)
        async with RpcClient("127.0.0.1", server.port, timeout=30) as client, \
                RpcClient("127.0.0.1", server.port, timeout=30) as other:
            arrived = await client.call("set_position", "1", [1, 1, 1, 1], 100.0)
            depth = asyncio.create_task(client.call("set_depth", "1", 19.0, SLOW))
            await wait_until(lambda: sim.is_moving("1"))
            await other.call("stop", "1")
            stopped = (await asyncio.gather(depth, return_exceptions=True))[0]
        await server.close()
        await sim.close()
        return arrived, stopped

    arrived, stopped = run(main())
    assert arrived == {"x": 1.0, "y": 1.0, "z": 1.0, "w": 1.0}
    assert isinstance(stopped, RemoteException) and "stopped before reaching depth 19.0" in str(stopped)


def test_methods_marked_urgent_skip_the_call_lock():
    class Target:
        def __init__(self):
            self.released = asyncio.Event()
            self.order: list[str] = []

        async def hold(self):
            await self.released.wait()
            self.order.append("hold")

        @urgent
        def abort(self):
            self.order.append("abort")
            self.released.set()

        def plain(self):
            self.order.append("plain")

    async def main():
        target = Target()
        server = RpcServer({"t": target})
        await server.start()
        clients = [RpcClient("127.0.0.1", server.port, timeout=30) for _ in range(3)]
        for client in clients:
            await client.connect()
        hold = asyncio.create_task(clients[0].call("hold"))
        await wait_until(lambda: server._lock.locked())
        plain = asyncio.create_task(clients[1].call("plain"))  # queued behind hold
        await clients[2].call("abort")  # would wait forever behind hold if it queued too
        await asyncio.gather(hold, plain)
        for client in clients:
            await client.close()
        await server.close()
        return target.order

    assert run(main()) == ["abort", "hold", "plain"]
