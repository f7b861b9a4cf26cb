"""SioManipulatorClient against RigDeck's server (push) and an ephys-link stand-in (polling), the proxy driver,
reconnects, timeouts and STOP ALL under load."""

import asyncio

import pytest
from helpers import run, wait_until
from sio_helpers import LOOPBACK, FakeEphysLink, served, url

from core.drivers.manipulator import INSIDE_BRAIN_TEXT, ManipulatorError, SimulatedManipulator, Vec4
from core.protocol import RigAddress
from transports.sio import serve_sio
from transports.sio.client import (
    SioManipulatorClient,
    SioRemoteError,
    SioTimeout,
    SioUnavailable,
    stop_everything,
)
from transports.sio.proxy import EphysLinkManipulator


def test_client_against_rigdeck_uses_push_and_moves_take_time():
    async def main():
        async with served(ids=("a", "b")) as (server, sim):
            async with SioManipulatorClient(url(server.port)) as client:
                assert client.push and client.controller is True and client.ids == ["a", "b"]
                assert client.positions["a"] == Vec4()
                seen = []
                client.subscribe(lambda i, p, m: seen.append((i, p, m)))
                assert await client.version() == "2.3.6"
                info = await client.platform_info()
                assert info.cli_name == "sim" and info.dimensions == Vec4(20, 20, 20, 20)
                loop = asyncio.get_running_loop()
                t0 = loop.time()
                assert await client.set_position("a", Vec4(0, 0, 4, 0), 20.0) == Vec4(0, 0, 4, 0)  # 0.2 s
                assert loop.time() - t0 >= 0.19
                assert any(m and 0 < p.z < 4 for i, p, m in seen)  # intermediate pushes arrived
                assert client.positions["a"] == Vec4(0, 0, 4, 0) and client.moving["a"] is False
                assert await client.position("a") == Vec4(0, 0, 4, 0)
                assert (await client.angles("b")).y == 60.0 and await client.shank_count("b") == 1

    run(main())


def test_client_surfaces_errors_limits_stop_and_inside_brain():
    async def main():
        async with served() as (server, sim), SioManipulatorClient(url(server.port)) as client:
            with pytest.raises(SioRemoteError, match="unknown manipulator '-1'"):
                await client.position("-1")
            with pytest.raises(SioRemoteError, match="travel range"):
                await client.set_position("0", Vec4(30, 0, 0, 0), 1.0)
            with pytest.raises(ManipulatorError, match="speed"):
                await client.set_position("0", Vec4(1, 0, 0, 0), 0)  # refused before sending
            move = asyncio.create_task(client.set_position("0", Vec4(20, 0, 0, 0), 5.0))
            await wait_until(lambda: sim.is_moving("0"), what="move start")
            await client.stop("0")
            with pytest.raises(SioRemoteError, match="did not reach target") as err:
                await move
            halted = err.value.data["Position"]["x"]
            assert 0 < halted < 20 and (await sim.position("0")).x == halted
            assert await client.set_inside_brain("0", True) is True
            with pytest.raises(SioRemoteError) as err:
                await client.set_position("0", Vec4(1, 1, 1, 1), 100.0)
            assert err.value.text == INSIDE_BRAIN_TEXT
            assert await client.set_depth("0", 2.0, 100.0) == 2.0
            with pytest.raises(SioRemoteError, match="Unknown event"):
                await client.call("jackhammer", "{}")

    run(main())


def test_polling_fallback_against_an_ephys_link_server():
    async def main():
        sim = SimulatedManipulator(ids=("0", "1"))
        fake = FakeEphysLink(sim)
        await fake.start()
        client = SioManipulatorClient(url(fake.port), poll_hz=50)
        try:
            await client.connect()
            assert not client.push and client.server_info is None and client.ids == ["0", "1"]
            seen = []
            client.subscribe(lambda i, p, m: seen.append((i, p, m)))
            await client.set_position("1", Vec4(2, 0, 0, 0), 10.0)  # 0.2 s: several polls
            await wait_until(lambda: client.positions.get("1") == Vec4(2, 0, 0, 0) and not client.moving["1"],
                           what="final polled position")
            assert any(i == "1" and m and 0 < p.x < 2 for i, p, m in seen)
            assert fake.calls.count("get_position") >= 4
            # ephys-link refuses a second client: the error says so
            other = SioManipulatorClient(url(fake.port))
            with pytest.raises(SioUnavailable, match="refused|cannot connect"):
                await other.connect()
            await other.close()
        finally:
            await client.close()
            await fake.close()
            await sim.close()

    run(main())


def test_per_call_timeout_raises_sio_timeout():
    async def main():
        sim = SimulatedManipulator()
        fake = FakeEphysLink(sim)
        await fake.start()
        client = SioManipulatorClient(url(fake.port), timeout=2.0)
        try:
            await client.connect()
            fake.answer_delay = 1.0
            with pytest.raises(SioTimeout, match="no reply to get_position within 0.1 s"):
                await client.position("1", timeout=0.1)
        finally:
            await client.close()
            await fake.close()
            await sim.close()

    run(main())


def test_not_connected_calls_fail_at_once():
    async def main():
        client = SioManipulatorClient(f"http://{LOOPBACK}:1", timeout=0.5)
        with pytest.raises(SioUnavailable, match="cannot connect"):
            await client.connect()
        with pytest.raises(SioUnavailable, match="not connected"):
            await client.stop_all()
        await client.close()

    run(main())


def test_reconnects_with_backoff_after_the_server_restarts():
    async def main():
        sim = SimulatedManipulator()
        server = await serve_sio(RigAddress("sio", LOOPBACK, 0), sim, {})
        port = server.port
        client = SioManipulatorClient(url(port), timeout=1.0, backoff=(0.05, 0.2))
        events = []
        client.on_connection(lambda up, err: events.append(up))
        await client.start()
        assert await client.wait_connected(5)
        await server.close()
        await wait_until(lambda: not client.connected, what="disconnect noticed")
        await asyncio.sleep(0.3)  # a few refused attempts with backoff
        server = await serve_sio(RigAddress("sio", LOOPBACK, port), sim, {})
        try:
            assert await client.wait_connected(5)
            assert events[0] is True and False in events and events[-1] is True
            assert await client.position("1") == Vec4()
        finally:
            await client.close()
            await server.close()
            await sim.close()

    run(main())


def test_proxy_driver_serves_an_ephys_link_server_again_with_rigdeck_features():
    async def main():
        sim = SimulatedManipulator(ids=("0", "1"))
        fake = FakeEphysLink(sim)
        await fake.start()
        proxy = EphysLinkManipulator(url(fake.port), poll_hz=50)
        assert await proxy.start(wait=5)
        front = await serve_sio(RigAddress("sio", LOOPBACK, 0), proxy, {})
        try:
            async with SioManipulatorClient(url(front.port)) as client:
                assert client.push and client.ids == ["0", "1"]
                assert (await client.platform_info()).name == "Simulated Manipulator"
                assert await client.set_position("0", Vec4(1, 2, 3, 4), 100.0) == Vec4(1, 2, 3, 4)
                assert await sim.position("0") == Vec4(1, 2, 3, 4)
                with pytest.raises(SioRemoteError, match="unknown manipulator"):
                    await client.position("-1")
                await client.set_inside_brain("0", True)
                assert proxy.is_inside_brain("0") and sim.is_inside_brain("0")
                with pytest.raises(SioRemoteError, match="inside the brain"):
                    await client.set_position("0", Vec4(), 100.0)
                # a stopped move returns where it halted (the driver contract), the front server reports it
                move = asyncio.create_task(client.set_depth("0", 20.0, 5.0))
                await wait_until(lambda: sim.is_moving("0"), what="proxied move")
                await client.stop_all()
                with pytest.raises(SioRemoteError, match="did not reach target depth"):
                    await move
                assert not sim.is_moving("0")
            with pytest.raises(ManipulatorError):
                proxy.is_moving("9")
        finally:
            await front.close()
            await proxy.close()
            await fake.close()
            await sim.close()

    run(main())


def test_stop_all_under_load_reaches_every_rig_and_halts_every_manipulator():
    async def main():
        ids = [str(i) for i in range(8)]
        async with served(ids=ids, options={"push_hz": 50}) as (s1, sim1), \
                served(ids=ids, options={"push_hz": 50}) as (s2, sim2):
            clients = [SioManipulatorClient(url(s.port)) for s in (s1, s2)]
            observers = [SioManipulatorClient(url(s.port)) for s in (s1, s2)]
            for c in clients + observers:
                await c.connect()
                c.subscribe(lambda *a: None)
            moves = [asyncio.create_task(c.set_position(i, Vec4(20, 20, 20, 20), 2.0)) for c in clients for i in ids]
            await wait_until(lambda: all(s.is_moving(i) for s in (sim1, sim2) for i in ids), what="16 moving")
            await wait_until(lambda: all(o.updates > 8 for o in observers), what="streaming")
            results = await stop_everything(clients)
            assert results == {c.url: None for c in clients}
            assert not any(s.is_moving(i) for s in (sim1, sim2) for i in ids)
            outcomes = await asyncio.gather(*moves, return_exceptions=True)
            assert all(isinstance(o, SioRemoteError) and "did not reach" in o.text for o in outcomes)
            halted = [await s.position(i) for s in (sim1, sim2) for i in ids]
            await asyncio.sleep(0.05)  # a short look for what must NOT happen: a stage moving on
            assert halted == [await s.position(i) for s in (sim1, sim2) for i in ids]
            for c in clients + observers:
                await c.close()

    run(main())
