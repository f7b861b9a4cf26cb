"""Hostile and odd input to the Socket.IO server and the relay, spoken at the packet level: deep nesting,
integers of thousands of digits, huge strings, events named ``connect``/``disconnect``, non-string event names.
Each gets the protocol's own answer (``Malformed request.`` / ``Unknown event.``), never a traceback, and a
flood of it is one log line. Also: a manipulator reading NaN is refused by name while everything else flows."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any

import aiohttp
import pytest
from helpers import run, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st
from sio_helpers import LOOPBACK, ask, body, raw_client, relayed, served

from core.drivers.manipulator import SimulatedManipulator, Vec4
from core.protocol import RigAddress
from transports.sio import serve_sio, wire

MALFORMED = json.dumps({"error": "Malformed request."})
UNKNOWN = json.dumps({"error": "Unknown event."})


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


class PacketClient:
    """A Socket.IO v5 client over a bare websocket, so a test can send packets no library would build."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 100

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, port: int, query: str = "") -> PacketClient:
        ws = await http.ws_connect(f"http://{LOOPBACK}:{port}/socket.io/?EIO=4&transport=websocket{query}")
        assert (await ws.receive_str()).startswith("0{")  # engine.io open
        await ws.send_str("40")  # socket.io connect to "/"
        assert (await ws.receive_str()).startswith("40{")
        return cls(ws)

    async def ask(self, packet_body: str, timeout: float = 5.0) -> Any:
        """Send ``42<id><packet_body>`` and return the acknowledgement's first argument."""
        self.next_id += 1
        ack = f"43{self.next_id}["
        await self.ws.send_str(f"42{self.next_id}{packet_body}")
        async with asyncio.timeout(timeout):
            while True:
                text = await self.ws.receive_str()
                if text == "2":  # engine.io ping
                    await self.ws.send_str("3")
                elif text.startswith(ack):
                    return json.loads(text[len(ack) - 1:])[0]


HOSTILE = [
    ('["get_position",' + nested(10_000) + "]", MALFORMED),  # past python-socketio's JSON parser
    ('["get_position",' + str(2**4000) + "]", MALFORMED),  # past engine.io's 100-digit guard
    ('["set_depth",' + json.dumps(body(ManipulatorId="0", Depth=2**4000, Speed=1)) + "]", MALFORMED),
    ('["set_position",' + json.dumps('{"ManipulatorId":"0","Position":' + nested(5000) + "}") + "]", MALFORMED),
    ('["set_depth",' + json.dumps('{"Depth":' + "9" * 5000 + "}") + "]", MALFORMED),
    ('["get_position","' + "x" * 500_000 + '"]', MALFORMED),
    ('["set_depth","' + "x" * 500_000 + '"]', MALFORMED),
    ('[{"a":1},"0"]', MALFORMED),  # an event name that is not a string
    ("[7]", MALFORMED),
    ('{"not":"a list"}', MALFORMED),
    ('["connect",{"HTTP_HOST":"x"}]', UNKNOWN),  # a client cannot fake its connection...
    ('["disconnect","client namespace disconnect"]', UNKNOWN),  # ...nor its departure
]


@pytest.mark.parametrize("through_relay", [False, True], ids=["server", "relay"])
def test_hostile_packets_get_the_protocols_answer_one_log_line_and_the_client_stays(caplog, through_relay):
    caplog.set_level(logging.INFO)

    async def main():
        async with aiohttp.ClientSession() as http:
            if through_relay:
                async with relayed(pinpoint_id="hostile") as (relay, server, sim):
                    client = await PacketClient.connect(http, relay.port, "&pinpoint_id=hostile")
                    return await exercise(client, server), dict(relay.client_of)
            async with served() as (server, sim):
                client = await PacketClient.connect(http, server.port)
                return await exercise(client, server), None

    async def exercise(client: PacketClient, server: Any) -> dict[str, Any]:
        for _ in range(3):  # a flood: the same log line is not repeated
            for packet_body, expected in HOSTILE:
                assert await client.ask(packet_body) == expected, packet_body[:60]
        # still connected, still the controller (the fake disconnect did not take), still answered
        assert await client.ask('["get_position","0"]') == '{"Position":{"x":0.0,"y":0.0,"z":0.0,"w":0.0},"Error":""}'
        assert json.loads(await client.ask('["get_control",""]'))["Controller"] is True
        clients = dict(server.clients)
        await client.ws.close()
        return clients

    clients, relay_clients = run(main(), timeout=60)
    assert len(clients) == 1 and (relay_clients is None or len(relay_clients) == 1)
    records = [r for r in caplog.records if r.name.startswith(("transports", "socketio", "engineio", "asyncio"))]
    assert not [r for r in records if r.exc_info or r.levelno >= logging.ERROR], "no traceback, no error"
    texts = [r.getMessage() for r in records]
    assert sum("malformed packet" in t for t in texts) == 1  # ten kinds x3, one rate-limited line
    assert sum("named 'connect'" in t for t in texts) == 1 and sum("named 'disconnect'" in t for t in texts) == 1


json_text = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(-2**4000, 2**4000) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["ManipulatorId", "Position", "Depth", "Speed", "Inside", "x", "y"]) | st.text(max_size=5),
        inner, max_size=4),
    max_leaves=10,
).map(lambda v: json.dumps(v)) | st.builds(lambda d, inner: "[" * d + inner + "]" * d,
                                           st.integers(1, 10_000), st.sampled_from(["", "1", '{"x":1}']))


@settings(max_examples=400, deadline=None)
@given(json_text | st.text(max_size=50) | st.integers(-2**4000, 2**4000) | st.none())
def test_request_parsers_raise_only_malformed(payload):
    for parse in (wire.parse_id, wire.parse_set_position, wire.parse_set_depth, wire.parse_set_inside_brain):
        try:
            parse(payload)
        except wire.Malformed:
            pass


class BrokenEncoder(SimulatedManipulator):
    """Hardware double: manipulator "1"'s x encoder reads NaN while ``broken`` (a disconnected axis)."""

    broken = False

    async def position(self, manipulator_id: str) -> Vec4:
        pos = await super().position(manipulator_id)
        return Vec4(math.nan, pos.y, pos.z, pos.w) if self.broken and manipulator_id == "1" else pos

    def glitch(self) -> None:
        self.broken = True
        self._listeners.notify("1", Vec4(math.nan, 0.0, 0.0, 0.0), False)
        self._listeners.notify("0", Vec4(0.5, 0.0, 0.0, 0.0), False)


def test_a_nan_position_is_refused_by_name_and_every_other_change_still_arrives(caplog):
    caplog.set_level(logging.INFO)

    async def main():
        sim = BrokenEncoder(ids=("0", "1"))
        server = await serve_sio(RigAddress("sio", LOOPBACK, 0), sim, {})
        try:
            async with raw_client(server.port) as c:
                pushes: list[dict[str, Any]] = []
                c.on("position", lambda data: pushes.append(json.loads(data)["Positions"]))
                sim.glitch()
                await wait_until(lambda: any("0" in p for p in pushes), what="the finite manipulator's push")
                assert all("1" not in p for p in pushes)
                reply = json.loads(await ask(c, "get_position", "1"))
                assert reply["Position"] == {"x": 0.0, "y": 0.0, "z": 0.0, "w": 0.0}
                assert "Position.x is nan" in reply["Error"]
                info = json.loads(await ask(c, "get_rigdeck_info", ""))
                assert set(info["Positions"]) == {"0"} and info["Error"] == ""
                sim.broken = False  # the axis is back: its next position goes out as usual
                assert json.loads(await ask(c, "set_position", body(ManipulatorId="1", Position={"y": 1},
                                                                     Speed=100)))["Error"] == ""
                await wait_until(lambda: any(p.get("1", {}).get("Position", {}).get("y") == 1.0 for p in pushes),
                               what="the repaired manipulator's push")
        finally:
            await server.close()
            await sim.close()

    run(main())
    records = [r for r in caplog.records if r.name.startswith("transports")]
    assert not [r for r in records if r.exc_info], "no traceback"
    assert any("not finite" in r.getMessage() for r in records)
