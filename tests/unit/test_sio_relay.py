"""Remote reach (issue 4, deliverable 8): a manipulator server connects out to a relay under a Pinpoint ID and
clients reach it through the relay by that ID, Pinpoint-style raw clients and RigDeck's client alike; the
token, unknown and duplicate IDs, STOP ALL and pushes through the relay; and the real processes
(``rigdeck relay``, ``rigdeck serve`` with a relay URI, ``rigdeck manipulators sio://relay/ID``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import socketio
import yaml
from helpers import run, wait_until
from sio_helpers import LOOPBACK, ask, body, relayed, via

from app.cli import main
from app.demo_rigs import RigProcess
from core.drivers.manipulator import SimulatedManipulator, Vec4
from core.protocol import RigAddress
from transports.registry import TRANSPORTS
from transports.sio import serve_sio
from transports.sio.client import SioManipulatorClient, SioRemoteError, SioUnavailable
from transports.sio.relay import RelayedSioServer, SioRelay

ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def pinpoint(url: str, **kwargs: Any) -> AsyncIterator[socketio.AsyncClient]:
    client = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    await client.connect(url, transports=["websocket"], **kwargs)
    try:
        yield client
    finally:
        await client.disconnect()


async def refusal(url: str, **kwargs: Any) -> str:
    """Connect and expect a refusal; returns the relay's message."""
    client = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    messages: list[Any] = []
    client.on("connect_error", lambda data: messages.append(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(url, transports=["websocket"], **kwargs)
    return str(messages[0].get("message") if isinstance(messages[0], dict) else messages[0])


def test_a_pinpoint_style_client_reaches_the_server_through_the_relay_by_its_id():
    async def main_():
        async with relayed(pinpoint_id="rig2-probes") as (relay, server, sim):
            assert server.public_uri == f"sio://{LOOPBACK}:{relay.port}/rig2-probes"
            async with pinpoint(via(relay, "rig2-probes")) as c:
                assert json.loads(await ask(c, "get_pinpoint_id", "")) == {"PinpointId": "rig2-probes",
                                                                          "IsRequester": False}
                assert await ask(c, "get_version", "") == "2.3.6"
                assert json.loads(await ask(c, "get_manipulators", "")) == {"Manipulators": ["0", "1"], "Error": ""}
                assert json.loads(await ask(c, "get_position", "-1"))["Error"].startswith(
                    "ManipulatorError: unknown manipulator '-1'")
                assert await ask(c, "get_position") == wire_malformed()  # a missing payload still gets a reply
                assert json.loads(await ask(c, "jackhammer", "{}")) == {"error": "Unknown event."}
                pushes: list[dict] = []
                c.on("position", lambda data: pushes.append(json.loads(data)["Positions"]))
                reply = json.loads(await ask(c, "set_position", body(ManipulatorId="1", Position={"y": 2}, Speed=10)))
                assert reply == {"Position": {"x": 0.0, "y": 2.0, "z": 0.0, "w": 0.0}, "Error": ""}
                assert await sim.position("1") == Vec4(0, 2, 0, 0)
                await wait_until(lambda: any(not p.get("1", {}).get("Moving", True) for p in pushes), what="end push")
                assert any(p.get("1", {}).get("Moving") for p in pushes)  # pushes while it moved, via the relay

    run(main_())


def wire_malformed() -> str:
    return json.dumps({"error": "Malformed request."})


def test_unknown_or_missing_id_is_refused_with_a_clear_message():
    async def main_():
        async with relayed(pinpoint_id="abc123") as (relay, _, _sim):
            message = await refusal(via(relay, "zzz999"))
            assert "unknown Pinpoint ID 'zzz999'" in message and "no manipulator server" in message
            assert "no Pinpoint ID given" in await refusal(f"http://{LOOPBACK}:{relay.port}")
            client = SioManipulatorClient(via(relay, "nope00"), timeout=2)
            with pytest.raises(SioUnavailable, match="unknown Pinpoint ID 'nope00'"):
                await client.connect()
            await client.close()
            # a second server cannot take an ID in use
            other = RelayedSioServer(SimulatedManipulator(), f"http://{LOOPBACK}:{relay.port}", pinpoint_id="abc123")
            with pytest.raises(ValueError, match="already in use"):
                await other.start_relayed()
            assert relay.refused == 4

    run(main_())


def test_the_relay_token_is_required_of_servers_and_clients(caplog):
    async def main_():
        async with relayed(token="relay-s3cret", pinpoint_id="tok001") as (relay, server, _sim):
            assert "token required" in await refusal(via(relay, "tok001"))
            assert "token required" in await refusal(via(relay, "tok001"), auth={"token": "wrong"})
            async with pinpoint(via(relay, "tok001"), auth={"token": "relay-s3cret"}) as c:
                assert json.loads(await ask(c, "get_pinpoint_id", ""))["PinpointId"] == "tok001"
            client = SioManipulatorClient(via(relay, "tok001"), token="relay-s3cret")
            await client.connect()
            assert client.push and client.ids == ["0", "1"]
            await client.close()
            stranger = RelayedSioServer(SimulatedManipulator(), f"http://{LOOPBACK}:{relay.port}")
            with pytest.raises(ValueError, match="token required"):
                await stranger.start_relayed()

    with caplog.at_level("INFO"):
        run(main_())
    assert all("relay-s3cret" not in r.getMessage() for r in caplog.records)
    assert sum("refused" in r.getMessage() for r in caplog.records) == 3


def test_rigdeck_client_through_the_relay_observers_control_and_stop_all():
    async def main_():
        ids = [str(i) for i in range(8)]
        async with relayed(ids=ids, pinpoint_id="stop42") as (relay, server, sim):
            controller = SioManipulatorClient(via(relay, "stop42"))
            observer = SioManipulatorClient(via(relay, "stop42"))
            await controller.connect()
            await observer.connect()
            try:
                assert controller.controller is True and observer.controller is False
                observer.subscribe(lambda *_: None)
                with pytest.raises(SioRemoteError, match="NotInControl"):
                    await observer.set_position("0", Vec4(1, 0, 0, 0), 10)
                moves = [asyncio.create_task(controller.set_position(i, Vec4(20, 20, 20, 20), 2.0)) for i in ids]
                await wait_until(lambda: all(observer.moving.get(i) for i in ids), what="observer sees 8 moving")
                await observer.stop_all()  # a safety command: observers may send it, through the relay too
                assert not any(sim.is_moving(i) for i in ids)
                outcomes = await asyncio.gather(*moves, return_exceptions=True)
                assert all(isinstance(o, SioRemoteError) and "did not reach target" in o.text for o in outcomes)
                halted = [await sim.position(i) for i in ids]
                assert all(0 < p.x < 20 for p in halted)
                await wait_until(lambda: [observer.positions[i] for i in ids] == halted, what="halted positions pushed")
                notices: list[bool] = []
                controller.on_control(notices.append)
                assert await observer.take_control() is True
                await wait_until(lambda: notices == [False], what="control notice through the relay")
            finally:
                await controller.close()
                await observer.close()

    run(main_())


def test_clients_are_dropped_when_their_server_leaves():
    async def main_():
        relay = SioRelay()
        await relay.start(LOOPBACK, 0)
        sim = SimulatedManipulator()
        server = await serve_sio(RigAddress("sio", LOOPBACK, relay.port), sim, {"relay": True, "pinpoint_id": "bye001"})
        try:
            async with pinpoint(via(relay, "bye001")) as c:
                gone = asyncio.Event()
                c.on("disconnect", lambda *a: gone.set())
                await server.close()
                await asyncio.wait_for(gone.wait(), 5)
                assert "bye001" not in relay.servers
            assert "unknown Pinpoint ID" in await refusal(via(relay, "bye001"))
        finally:
            await sim.close()
            await relay.close()

    run(main_())


def test_real_processes_relay_serve_and_the_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RIGDECK_SIO_TOKEN", raising=False)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", RIGDECK_SIO_TOKEN="proc-token")
    relay = subprocess.Popen([sys.executable, "-m", "app.cli", "relay", "--port", "0"], cwd=str(ROOT), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rig = None
    try:
        assert relay.stdout is not None
        ready = relay.stdout.readline().split()
        assert ready[:2] == ["READY", "relay"], ready
        relay_uri = ready[2]
        token_file = tmp_path / "token"
        token_file.write_text("proc-token\n")
        rig_file = tmp_path / "probes.rig.yaml"
        rig_file.write_text(yaml.safe_dump({
            "name": "probes", "uris": [{"uri": relay_uri, "relay": True, "token": "proc-token"}],
            "drivers": {"manipulator": {"type": "simulated", "ids": ["1", "2"], "dimensions": [20, 20, 20, 20]}},
        }))
        rig = RigProcess("probes", rig_file, data_dir=tmp_path / "data", log_path=tmp_path / "probes.log")
        (uri,) = rig.wait_ready()
        assert uri.startswith(relay_uri + "/") and len(uri.rsplit("/", 1)[1]) == 8  # the printed Pinpoint ID
        assert main(["manipulators", uri, "list", "--token-file", str(token_file)]) == 0
        assert capsys.readouterr().out == "1\n2\n"
        assert main(["manipulators", uri, "move", "2", "1", "2", "3", "4", "--speed", "50",
                     "--token-file", str(token_file), "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == {"id": "2", "position": {"x": 1.0, "y": 2.0, "z": 3.0, "w": 4.0}}
        assert main(["manipulators", relay_uri + "/00000000", "list", "--token-file", str(token_file)]) == 2
        assert "unknown Pinpoint ID '00000000'" in capsys.readouterr().err
        assert main(["manipulators", uri, "list"]) == 2
        assert "token required" in capsys.readouterr().err
    finally:
        if rig is not None:
            rig.stop()
        relay.terminate()
        out, err = relay.communicate(timeout=15)
    assert relay.returncode == 0 and "STOPPED relay" in out and "proc-token" not in out + err


def test_a_rigs_file_entry_reaches_a_manipulator_server_through_the_relay():
    """``probes: {uri: sio://relay:port/ID, role: manipulator}``: the console's link finds the server by its ID."""
    from core.config import parse_rig
    from transports.sio.link import SioLink

    async def main_():
        async with relayed(ids=("a", "b"), pinpoint_id="rig7-probes") as (relay, _server, sim):
            spec = parse_rig("probes", {"uri": f"sio://{LOOPBACK}:{relay.port}/rig7-probes", "role": "manipulator"},
                             TRANSPORTS)
            link = SioLink(spec)
            mods: list = []
            link.on_update(mods.append)
            await link.connect()
            try:
                await wait_until(lambda: link.state.value == "online", what="online through the relay")
                assert sorted(mods[0]["struct"]["manipulators"]) == ["a", "b"]
                await link.manipulators.set_position("a", Vec4(1, 2, 3, 4), 20.0)
                assert await sim.position("a") == Vec4(1, 2, 3, 4)
            finally:
                await link.close()

    run(main_())
