"""The ephys-link 2.x event table against RigDeck's server, spoken as Pinpoint does (raw id strings,
PascalCase JSON strings, ``""`` payloads), plus the malformed-input table where RigDeck does better."""

import asyncio
import json

import pytest
from helpers import run, wait_until
from sio_helpers import ask, body, raw_client, served

from core.drivers.manipulator import INSIDE_BRAIN_TEXT, Vec4

ZERO = {"x": 0.0, "y": 0.0, "z": 0.0, "w": 0.0}
MALFORMED = '{"error": "Malformed request."}'


def test_event_table_verbatim():
    async def main():
        async with served(ids=("0", "1", "2")) as (server, sim), raw_client(server.port) as c:
            assert await ask(c, "get_version", "") == "2.3.6"
            assert await ask(c, "get_platform_info", "") == (
                '{"Name":"Simulated Manipulator","CliName":"sim","AxesCount":4,'
                '"Dimensions":{"x":20.0,"y":20.0,"z":20.0,"w":20.0}}')
            assert await ask(c, "get_manipulators", "") == '{"Manipulators":["0","1","2"],"Error":""}'
            assert await ask(c, "get_position", "0") == '{"Position":{"x":0.0,"y":0.0,"z":0.0,"w":0.0},"Error":""}'
            assert await ask(c, "get_angles", "0") == '{"Angles":{"x":90.0,"y":60.0,"z":0.0},"Error":""}'
            assert await ask(c, "get_shank_count", "0") == '{"ShankCount":1,"Error":""}'
            request = '{"ManipulatorId": "0", "Position": {"x": 1.0, "y": 2.0, "z": 3.0, "w": 4.0}, "Speed": 50}'
            assert await ask(c, "set_position", request) == (
                '{"Position":{"x":1.0,"y":2.0,"z":3.0,"w":4.0},"Error":""}')
            assert await ask(c, "set_depth", '{"ManipulatorId": "0", "Depth": 5.5, "Speed": 50}') == (
                '{"Depth":5.5,"Error":""}')
            assert await ask(c, "set_inside_brain", '{"ManipulatorId": "0", "Inside": true}') == (
                '{"State":true,"Error":""}')
            reply = json.loads(await ask(c, "set_position", request))
            assert reply == {"Position": ZERO, "Error": INSIDE_BRAIN_TEXT}
            assert await sim.position("0") == Vec4(1, 2, 3, 5.5)  # refused: nothing moved
            assert await ask(c, "stop", "0") == ""
            assert await ask(c, "stop_all", "") == ""
            assert await ask(c, "jackhammer", '{"ManipulatorId": "0"}') == '{"error": "Unknown event."}'
            assert await ask(c, "no_such_event", "") == '{"error": "Unknown event."}'

    run(main())


def test_snake_case_keys_and_pascal_case_wins():
    async def main():
        async with served() as (server, sim), raw_client(server.port) as c:
            snake = body(manipulator_id="1", position={"x": 2}, speed=100)
            assert json.loads(await ask(c, "set_position", snake))["Position"] == {**ZERO, "x": 2.0}
            both = body(ManipulatorId="1", manipulator_id="0", Depth=3, depth=9, Speed=100, speed=-1)
            assert json.loads(await ask(c, "set_depth", both)) == {"Depth": 3.0, "Error": ""}
            assert await sim.position("1") == Vec4(2, 0, 0, 3)
            assert await sim.position("0") == Vec4()
            # numeric strings convert, missing components default to 0 (as in ephys-link)
            text = body(ManipulatorId="0", Position={"y": "1.5"}, Speed="100")
            assert json.loads(await ask(c, "set_position", text))["Position"] == {**ZERO, "y": 1.5}
            assert json.loads(await ask(c, "set_inside_brain", body(inside=True, manipulator_id="0")))["State"]

    run(main())


@pytest.mark.parametrize("bad_id", ["-1", "99", "2", " 0", "0.0"])
def test_unknown_ids_answer_an_error_and_move_nothing(bad_id):
    async def main():
        async with served() as (server, sim), raw_client(server.port) as c:
            for event in ("get_position", "get_angles", "get_shank_count"):
                reply = json.loads(await ask(c, event, bad_id))
                assert "unknown manipulator" in reply["Error"]
            for event, payload in [
                ("set_position", body(ManipulatorId=bad_id, Position={"x": 1}, Speed=100)),
                ("set_depth", body(ManipulatorId=bad_id, Depth=1, Speed=100)),
                ("set_inside_brain", body(ManipulatorId=bad_id, Inside=True)),
            ]:
                reply = json.loads(await ask(c, event, payload))
                assert reply["Error"].startswith("ManipulatorError: unknown manipulator"), reply
            assert (await ask(c, "stop", bad_id)).startswith("ManipulatorError: unknown manipulator")
            assert [await sim.position(i) for i in ("0", "1")] == [Vec4(), Vec4()]
            assert not sim.is_inside_brain("0") and not sim.is_inside_brain("1")

    run(main())


MALFORMED_TABLE = [
    # (event, payloads) — each payload tuple is spread into that many emit arguments
    ("get_position", ()),  # missing payload: ephys-link never acks
    ("get_position", ("0", "1")),  # extra payload: ephys-link never acks
    ("get_position", ("",)),
    ("get_position", (None,)),
    ("get_position", (0,)),
    ("get_position", (1,)),  # non-string id
    ("get_position", ({"ManipulatorId": "0"},)),
    ("stop", ("",)),
    ("stop", (None,)),
    ("set_position", ({"ManipulatorId": "0", "Position": {"x": 1}, "Speed": 1},)),  # dict, not a JSON string
    ("set_position", ("[1,2,3]",)),  # list payload: ephys-link never acks
    ("set_position", ('"just a string"',)),
    ("set_position", ("not json",)),
    ("set_position", (body(ManipulatorId="0", Speed=1),)),  # no Position
    ("set_position", (body(ManipulatorId="0", Position={"x": 1}),)),  # no Speed
    ("set_position", (body(ManipulatorId=0, Position={"x": 1}, Speed=1),)),  # numeric id
    ("set_position", (body(ManipulatorId="0", Position={"x": 1}, Speed=0),)),
    ("set_position", (body(ManipulatorId="0", Position={"x": 1}, Speed=-2),)),
    ("set_position", ('{"ManipulatorId": "0", "Position": {"x": NaN}, "Speed": 1}',)),
    ("set_position", ('{"ManipulatorId": "0", "Position": {"x": Infinity}, "Speed": 1}',)),
    ("set_position", ('{"ManipulatorId": "0", "Position": {"x": 1}, "Speed": NaN}',)),
    ("set_position", (body(ManipulatorId="0", Position={"x": "abc"}, Speed=1),)),
    ("set_position", (body(ManipulatorId="0", Position={"x": True}, Speed=1),)),
    ("set_position", (body(ManipulatorId="0", Position=[1, 2, 3, 4], Speed=1),)),
    ("set_position", (body(ManipulatorId="0", Position={"x": 1}, Speed=1), "extra")),
    ("set_depth", (body(ManipulatorId="0", Depth="deep", Speed=1),)),
    ("set_depth", ('{"ManipulatorId": "0", "Depth": -Infinity, "Speed": 1}',)),
    ("set_depth", (body(ManipulatorId="0", Speed=1),)),
    ("set_inside_brain", (body(ManipulatorId="0", Inside="yes"),)),
    ("set_inside_brain", (body(ManipulatorId="0"),)),
    ("set_inside_brain", ("",)),
    ("get_version", ("", "")),
]


@pytest.mark.parametrize(("event", "payloads"), MALFORMED_TABLE, ids=lambda v: repr(v)[:40])
def test_malformed_requests_get_a_reply_and_move_nothing(event, payloads):
    async def main():
        async with served() as (server, sim), raw_client(server.port) as c:
            assert await ask(c, event, *payloads, timeout=3) == MALFORMED
            assert await sim.position("0") == Vec4() and not sim.is_inside_brain("0")
            assert await ask(c, "get_version", "") == "2.3.6"  # the server is fine

    run(main())


def test_payload_less_queries_are_answered_without_a_payload():
    async def main():
        async with served() as (server, _), raw_client(server.port) as c:
            assert await ask(c, "get_version") == "2.3.6"
            assert json.loads(await ask(c, "get_manipulators"))["Manipulators"] == ["0", "1"]
            assert await ask(c, "stop_all") == ""

    run(main())


@pytest.mark.parametrize(
    ("event", "payload", "what"),
    [
        ("set_position", body(ManipulatorId="0", Position={"x": 25}, Speed=1), "travel range"),
        ("set_position", body(ManipulatorId="0", Position={"w": -1}, Speed=1), "travel range"),
        ("set_depth", body(ManipulatorId="0", Depth=21, Speed=1), "travel range"),
    ],
)
def test_limits_are_errors_in_the_reply_shape(event, payload, what):
    async def main():
        async with served() as (server, sim), raw_client(server.port) as c:
            reply = json.loads(await ask(c, event, payload))
            assert what in reply["Error"] and reply["Error"].startswith("ManipulatorError:")
            assert await sim.position("0") == Vec4()

    run(main())


def test_stop_interrupts_a_move_and_set_position_reports_it():
    async def main():
        async with served() as (server, sim), raw_client(server.port) as c:
            move = asyncio.create_task(ask(c, "set_position", body(ManipulatorId="0", Position={"x": 20}, Speed=5)))
            await wait_until(lambda: sim.is_moving("0"), what="the move under way")
            assert await ask(c, "stop", "0") == ""  # answered while the move's request is still pending
            reply = json.loads(await move)
            assert "did not reach target position on axis x" in reply["Error"]
            assert 0 < reply["Position"]["x"] < 20
            assert not sim.is_moving("0")

    run(main())
