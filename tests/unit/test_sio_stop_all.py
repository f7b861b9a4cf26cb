"""STOP ALL is a priority path (issue 4, deliverable 6) where no push helps: against an ephys-link server the
console polls get_position for every manipulator, and through the proxy driver a RigDeck server forwards to
such a server. With 8 manipulators moving and being polled, STOP ALL must still go out at once on its own
(not behind the polls or the pending moves) and halt every manipulator where it is.

The push path (RigDeck server, 8 moving, observers streaming) is covered by
test_sio_client.test_stop_all_under_load_reaches_every_rig_and_halts_every_manipulator and, from the command
line, by test_manipulators_cli.test_stop_all_from_the_command_line_halts_8_moving_streaming_manipulators.
"""

from __future__ import annotations

import asyncio

from helpers import run, wait_until
from sio_helpers import LOOPBACK, FakeEphysLink, url

from core.drivers.manipulator import SimulatedManipulator, Vec4
from core.protocol import RigAddress
from transports.sio import serve_sio
from transports.sio.client import SioManipulatorClient, SioRemoteError
from transports.sio.proxy import EphysLinkManipulator

IDS = [str(i) for i in range(8)]
FAR = Vec4(20, 20, 20, 20)


async def stop_all_halts_them_mid_move(client: SioManipulatorClient, sim: SimulatedManipulator,
                                      moves: list[asyncio.Task[Vec4]]) -> list[Vec4]:
    """STOP ALL is not queued behind the moves: every stage is halted on its way, and every pending move
    then reports that it stopped short. Returns the halted positions. (Where they halted, not how fast
    the stop came back: a loaded machine makes everything slower, never reordered.)"""
    await client.stop_all()
    positions = [await sim.position(i) for i in IDS]
    assert not any(sim.is_moving(i) for i in IDS)
    assert all(0 < p.x < 20 and p.x == p.y == p.z == p.w for p in positions), positions
    outcomes = await asyncio.gather(*moves, return_exceptions=True)
    assert all(isinstance(o, SioRemoteError) and "did not reach target" in o.text for o in outcomes)
    return positions


def test_stop_all_against_a_polled_ephys_link_server_with_8_moving():
    async def main():
        sim = SimulatedManipulator(ids=IDS)
        fake = FakeEphysLink(sim)
        await fake.start()
        client = SioManipulatorClient(url(fake.port), poll_hz=50, timeout=5)
        try:
            await client.connect()
            assert not client.push
            client.subscribe(lambda *_: None)  # polling all 8 at 50 Hz from now on
            moves = [asyncio.create_task(client.set_position(i, FAR, 1.2)) for i in IDS]  # 33 s each
            await wait_until(lambda: all(client.moving.get(i) for i in IDS), what="8 moving, seen by polling")
            polls = fake.calls.count("get_position")
            halted = await stop_all_halts_them_mid_move(client, sim, moves)
            # the polls went on around the stop, and the client settles on where each one halted
            await wait_until(lambda: fake.calls.count("get_position") > polls + 16, what="polls after the stop")
            await wait_until(lambda: [client.positions[i] for i in IDS] == halted and not any(client.moving.values()),
                           what="client state settled on the halted positions")
        finally:
            await client.close()
            await fake.close()
            await sim.close()

    run(main(), timeout=60)


def test_stop_all_through_the_proxy_driver_reaches_the_ephys_link_hardware():
    """Console -> RigDeck server (proxy driver) -> ephys-link server (polled) -> stages: one STOP ALL at the
    front halts every stage at the back while 8 moves are pending through both hops."""

    async def main():
        sim = SimulatedManipulator(ids=IDS)
        fake = FakeEphysLink(sim)
        await fake.start()
        proxy = EphysLinkManipulator(url(fake.port), poll_hz=50, timeout=5)
        assert await proxy.start(wait=5)
        front = await serve_sio(RigAddress("sio", LOOPBACK, 0), proxy, {"push_hz": 50})
        console = SioManipulatorClient(url(front.port), timeout=5)
        try:
            await console.connect()
            assert console.push
            console.subscribe(lambda *_: None)
            moves = [asyncio.create_task(console.set_position(i, FAR, 1.2)) for i in IDS]
            await wait_until(lambda: all(sim.is_moving(i) for i in IDS), what="8 stages moving")
            await wait_until(lambda: all(console.moving.get(i) for i in IDS), what="console sees 8 moving")
            halted = await stop_all_halts_them_mid_move(console, sim, moves)
            await asyncio.sleep(0.05)  # a short look for what must NOT happen: a stage moving again
            assert [await sim.position(i) for i in IDS] == halted
        finally:
            await console.close()
            await front.close()
            await proxy.close()
            await fake.close()
            await sim.close()

    run(main(), timeout=60)
