"""Beyond ephys-link: several clients (one controller, observers, take_control), the shared token, and the
``position`` push, checked with plain python-socketio clients."""

import asyncio
import json

import pytest
import socketio
from helpers import run, wait_until
from sio_helpers import ask, body, raw_client, served, url

from core.drivers.manipulator import Vec4

MOVE = body(ManipulatorId="0", Position={"x": 1}, Speed=1000)


def test_first_client_controls_observers_read_and_stop_but_cannot_move():
    async def main():
        async with served() as (server, sim), raw_client(server.port) as first, raw_client(server.port) as second:
            assert json.loads(await ask(first, "get_control"))["Controller"] is True
            info = json.loads(await ask(second, "get_control"))
            assert info == {"Controller": False, "Clients": 2, "Error": ""}
            for event, payload in [("set_position", MOVE), ("set_depth", body(ManipulatorId="0", Depth=1, Speed=9)),
                                   ("set_inside_brain", body(ManipulatorId="0", Inside=True))]:
                reply = json.loads(await ask(second, event, payload))
                assert reply["Error"].startswith("NotInControl: this client is an observer; send take_control")
            assert await sim.position("0") == Vec4() and not sim.is_inside_brain("0")
            assert json.loads(await ask(second, "get_position", "0"))["Error"] == ""
            assert await ask(second, "stop_all", "") == ""  # STOP is a safety command: anyone may send it
            assert json.loads(await ask(first, "set_position", MOVE))["Error"] == ""

    run(main())


def test_take_control_moves_control_and_tells_the_old_controller():
    async def main():
        async with served() as (server, sim), raw_client(server.port) as first, raw_client(server.port) as second:
            notices = []
            first.on("control", lambda data: notices.append(json.loads(data)))
            assert json.loads(await ask(second, "take_control", "")) == {"Controller": True, "Error": ""}
            await wait_until(lambda: notices, what="control notice")
            assert notices[0]["Controller"] is False and "control taken" in notices[0]["Reason"]
            assert json.loads(await ask(first, "set_position", MOVE))["Error"].startswith("NotInControl")
            assert json.loads(await ask(second, "set_position", MOVE))["Error"] == ""

    run(main())


def test_oldest_observer_is_promoted_when_the_controller_leaves():
    async def main():
        async with served() as (server, _):
            async with raw_client(server.port) as first, raw_client(server.port) as second, \
                    raw_client(server.port) as third:
                notices = []
                second.on("control", lambda data: notices.append(json.loads(data)))
                assert json.loads(await ask(second, "get_control"))["Controller"] is False
                await first.disconnect()
                await wait_until(lambda: notices, what="promotion notice")
                assert notices[0]["Controller"] is True and "promoted" in notices[0]["Reason"]
                assert json.loads(await ask(second, "get_control"))["Controller"] is True
                assert json.loads(await ask(third, "get_control"))["Controller"] is False

    run(main())


def test_token_refused_without_or_with_a_wrong_one_accepted_with_it(caplog):
    async def main():
        async with served(options={"token": "s3cret-token"}) as (server, _):
            for kwargs in ({}, {"auth": {"token": "wrong"}}, {"auth": {"nope": 1}}):
                client = socketio.AsyncClient(reconnection=False)
                errors = []
                client.on("connect_error", lambda data, errors=errors: errors.append(data))
                with pytest.raises(socketio.exceptions.ConnectionError):
                    await client.connect(url(server.port), transports=["websocket"], **kwargs)
                assert errors and "token required" in str(errors[0])
            assert server.refused == 3
            async with raw_client(server.port, auth={"token": "s3cret-token"}) as ok:
                assert await ask(ok, "get_version", "") == "2.3.6"
            query = socketio.AsyncClient(reconnection=False)
            await query.connect(url(server.port) + "?token=s3cret-token", transports=["websocket"])
            assert await ask(query, "get_version", "") == "2.3.6"
            await query.disconnect()

    with caplog.at_level("WARNING", logger="transports.sio.server"):
        run(main())
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 3
    assert not any("s3cret" in r or "wrong" in r.split(":")[-1].replace("wrong token", "") for r in refusals)
    assert all("s3cret" not in r.getMessage() for r in caplog.records)


def test_position_pushes_while_moving_and_at_start_and_end():
    async def main():
        async with served(options={"push_hz": 50}) as (server, sim), raw_client(server.port) as c:
            pushes = []
            c.on("position", lambda data: pushes.append(json.loads(data)["Positions"]))
            reply = await ask(c, "set_position", body(ManipulatorId="1", Position={"y": 2}, Speed=10))  # 0.2 s
            assert json.loads(reply)["Error"] == ""
            await wait_until(lambda: pushes and not pushes[-1].get("1", {}).get("Moving", True), what="end push")
            entries = [p["1"] for p in pushes if "1" in p]
            assert entries[0]["Moving"] is True and entries[0]["Position"]["y"] == 0.0
            assert entries[-1] == {"Position": {"x": 0.0, "y": 2.0, "z": 0.0, "w": 0.0}, "Moving": False,
                                   "InsideBrain": False}
            ys = [e["Position"]["y"] for e in entries]
            assert ys == sorted(ys) and len(entries) >= 3
            # the rate limit holds: at most ~50 Hz over 0.2 s (+ start/end pushes and scheduling slack)
            assert len(entries) <= 20
            pushes.clear()
            await ask(c, "set_inside_brain", body(ManipulatorId="1", Inside=True))
            await wait_until(lambda: pushes, what="inside-brain push")
            assert pushes[-1]["1"]["InsideBrain"] is True

    run(main())


def test_rigdeck_info_identifies_the_server_with_a_snapshot():
    async def main():
        async with served() as (server, sim), raw_client(server.port) as c:
            await sim.set_position("1", Vec4(1, 2, 3, 4), 1000)
            info = json.loads(await ask(c, "get_rigdeck_info", ""))
            assert info["Server"] == "RigDeck" and info["Push"] is True and info["Controller"] is True
            assert info["Positions"]["1"]["Position"] == {"x": 1.0, "y": 2.0, "z": 3.0, "w": 4.0}

    run(main())


def test_stop_all_is_answered_while_moves_are_pending():
    async def main():
        async with served(ids=[str(i) for i in range(8)]) as (server, sim), raw_client(server.port) as c:
            moves = [asyncio.create_task(ask(c, "set_position", body(ManipulatorId=str(i), Position={"z": 20},
                                                                        Speed=2))) for i in range(8)]
            await wait_until(lambda: all(sim.is_moving(str(i)) for i in range(8)), what="all moving")
            assert await ask(c, "stop_all", "") == ""
            assert not any(sim.is_moving(str(i)) for i in range(8))
            replies = [json.loads(r) for r in await asyncio.gather(*moves)]
            assert all("did not reach target" in r["Error"] for r in replies)

    run(main())
