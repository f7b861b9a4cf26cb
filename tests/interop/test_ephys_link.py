"""Interoperability with the real ephys-link 2.x (PyPI ``ephys-link``, fake platform) on loopback.

ephys-link is not a RigDeck dependency (it needs Python >= 3.12 and pins sensapex, whose build downloads a
driver archive), so these tests run only where an interpreter that can import it is named by
``$RIGDECK_EPHYS_LINK_PYTHON`` (or is the one running the tests); elsewhere they are skipped, saying why.
Setting one up: ``python3.12 -m venv VENV`` and ``SENSAPEX_UMSDK_ARCHIVE=<zip with bin/shared/libum.so from
the sensapex 1.504.3 wheel> VENV/bin/pip install ephys-link==2.3.6`` (see shared/reference/ephys-link-api.md).

(a) The same Pinpoint-style requests get byte-identical replies from ephys-link and from RigDeck's server
hosting a simulation configured like ephys-link's fake platform; (b) ``rigdeck manipulators`` drives the real
ephys-link (polling, its error texts, exit codes); (c) the console client polls it and is refused as a second
client; (d) the proxy driver serves it again with RigDeck's pushes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run, wait_until
from sio_helpers import LOOPBACK, ask, body, raw_client, served, url

from app.cli import main
from core.drivers.manipulator import INSIDE_BRAIN_TEXT, Vec4
from core.protocol import RigAddress
from transports.sio import serve_sio
from transports.sio.client import SioManipulatorClient, SioUnavailable
from transports.sio.proxy import EphysLinkManipulator

HERE = Path(__file__).resolve().parent
PYTHON = os.environ.get("RIGDECK_EPHYS_LINK_PYTHON") or sys.executable
FAKE = {"ids": [str(i) for i in range(8)], "name": "Fake Manipulator", "cli_name": "fake"}


def _importable() -> str | None:
    probe = subprocess.run([PYTHON, "-c", "import ephys_link, keyboard"], capture_output=True, text=True,
                           timeout=60)
    return None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["?"])[-1]


_WHY_NOT = _importable()
pytestmark = pytest.mark.skipif(_WHY_NOT is not None,
                                reason=f"ephys-link not importable by {PYTHON} ({_WHY_NOT}); "
                                       "set RIGDECK_EPHYS_LINK_PYTHON")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@pytest.fixture
def ephys_link(tmp_path: Path) -> Iterator[int]:
    """A fresh real ephys-link server (fake platform) on a free loopback port; yields the port."""
    port = free_port()
    log = open(tmp_path / "ephys-link.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([PYTHON, str(HERE / "ephys_link_launcher.py"), str(port)], stdout=subprocess.PIPE,
                            stderr=log, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("READY"):
                break
        else:
            pytest.fail(f"ephys-link exited ({proc.wait()}): {(tmp_path / 'ephys-link.log').read_text()[-500:]}")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


#: Pinpoint-style requests, in order (state carries over: the inside-brain lock, then its refusal)
SCRIPT = [
    ("get_version", ""),
    ("get_platform_info", ""),
    ("get_manipulators", ""),
    ("get_position", "0"),
    ("get_angles", "0"),
    ("get_shank_count", "0"),
    ("set_position", body(ManipulatorId="0", Position={"x": 1.0, "y": 2.0, "z": 3.0, "w": 4.0}, Speed=1000)),
    ("set_position", body(manipulator_id="1", position={"x": 5, "y": "6"}, speed=1000)),  # snake_case, strings
    ("get_position", "0"),
    ("set_depth", body(ManipulatorId="0", Depth=5.5, Speed=1000)),
    ("set_inside_brain", body(ManipulatorId="0", Inside=True)),
    ("set_position", body(ManipulatorId="0", Position={"x": 2.0}, Speed=1000)),  # refused inside the brain
    ("set_depth", body(ManipulatorId="0", Depth=6.0, Speed=1000)),
    ("stop", "0"),
    ("stop_all", ""),
    ("jackhammer_typo", ""),
    ("set_position", "{not json"),
    ("set_depth", body(ManipulatorId="0", Depth=1, Speed=0)),
    ("set_position", json.dumps({"ManipulatorId": "0", "Position": {"x": 1}, "Speed": 1})[:-1] + ', "Extra": 1}'),
]


def test_rigdeck_server_answers_pinpoint_requests_exactly_as_ephys_link_does(ephys_link):
    async def replies(port: int) -> list[str]:
        async with raw_client(port) as client:
            return [await ask(client, event, payload) for event, payload in SCRIPT]

    async def main_():
        theirs = await replies(ephys_link)
        async with served(ids=FAKE["ids"], name=FAKE["name"], cli_name=FAKE["cli_name"]) as (server, _):
            ours = await replies(server.port)
        return theirs, ours

    theirs, ours = run(main_(), timeout=60)
    for (event, payload), their, our in zip(SCRIPT, theirs, ours, strict=True):
        assert our == their, f"{event} {payload!r}: ephys-link {their!r}, RigDeck {our!r}"
    assert json.loads(theirs[11])["Error"] == INSIDE_BRAIN_TEXT  # the script did reach the refusal


def test_the_command_line_drives_a_real_ephys_link(ephys_link, capsys):
    uri = f"sio://{LOOPBACK}:{ephys_link}"

    def cli(*argv: str) -> tuple[int, str, str]:
        code = main(["manipulators", uri, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = cli("info", "--json")
    info = json.loads(out)
    assert code == 0 and info["server"] == "ephys-link" and info["version"] == "2.3.6"
    assert info["platform"]["name"] == "Fake Manipulator" and info["manipulators"] == FAKE["ids"]
    assert cli("move", "3", "1", "2", "3", "4", "--speed", "2") == (0, "3  x=1.0000 y=2.0000 z=3.0000 w=4.0000\n", "")
    assert cli("position", "3", "--json")[1] == '{"id":"3","position":{"x":1.0,"y":2.0,"z":3.0,"w":4.0}}\n'
    assert cli("inside", "3", "on") == (0, "3  inside brain: on\n", "")
    refused = (1, "", f"rigdeck manipulators: {INSIDE_BRAIN_TEXT}\n")
    assert cli("move", "3", "0", "0", "0", "0", "--speed", "2") == refused
    assert cli("depth", "3", "7", "--speed", "1")[:2] == (0, "3  depth=7.0000\n")
    code, _, err = cli("position", "99")  # ephys-link's own error text, one line
    assert code == 1 and err == "rigdeck manipulators: IndexError: list index out of range\n"
    assert cli("stop", "3") == (0, "3  stopped\n", "")
    assert cli("stop-all") == (0, "stopped all\n", "")
    code, out, _ = cli("watch", "--count", "8", "--json", "--poll-hz", "50")
    assert code == 0 and sorted(json.loads(line)["id"] for line in out.splitlines()) == FAKE["ids"]


def test_the_console_client_polls_ephys_link_and_is_refused_as_a_second_client(ephys_link):
    async def main_():
        client = SioManipulatorClient(url(ephys_link), poll_hz=50)
        await client.connect()
        try:
            assert not client.push and client.ids == FAKE["ids"]
            seen: list[str] = []
            client.subscribe(lambda i, p, m: seen.append(i))
            await wait_until(lambda: set(seen) == set(FAKE["ids"]), what="every manipulator polled")
            assert await client.set_position("5", Vec4(1, 1, 1, 1), 1.0) == Vec4(1, 1, 1, 1)
            await wait_until(lambda: client.positions.get("5") == Vec4(1, 1, 1, 1), what="polled new position")
            second = SioManipulatorClient(url(ephys_link), timeout=2)
            with pytest.raises(SioUnavailable, match="Connection rejected by server"):
                await second.connect()
            await second.close()
        finally:
            await client.close()

    run(main_(), timeout=60)


def test_the_proxy_driver_serves_a_real_ephys_link_with_pushes(ephys_link):
    async def main_():
        proxy = EphysLinkManipulator(url(ephys_link), poll_hz=50)
        assert await proxy.start(wait=10)
        front = await serve_sio(RigAddress("sio", LOOPBACK, 0), proxy, {})
        try:
            async with SioManipulatorClient(url(front.port)) as console:
                assert console.push and console.ids == FAKE["ids"]
                assert (await console.platform_info()).name == "Fake Manipulator"
                assert await console.set_position("6", Vec4(3, 2, 1, 0), 5.0) == Vec4(3, 2, 1, 0)
                # ephys-link serves one client (the proxy), so its state is read back through the proxy
                assert await console.position("6") == Vec4(3, 2, 1, 0)
                await wait_until(lambda: console.positions.get("6") == Vec4(3, 2, 1, 0), what="pushed position")
                await console.stop_all()
        finally:
            await front.close()
            await proxy.close()

    run(main_(), timeout=60)

