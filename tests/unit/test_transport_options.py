"""Transport options are never silently ignored: every ``allow`` is enforced by a real server on every scheme
that offers it, a misspelt or misplaced option is refused when the file loads, and binding beyond loopback
follows one rule for every scheme (an access control, or ``open: true`` and a loud warning).

Allow lists are tested on loopback by allowing only an address other than 127.0.0.1 (a 127.0.0.1 client
is then refused) and then 127.0.0.1 (the same client gets in).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import run

from app.commands.serve import make_manipulator
from core.config import ConfigError, load_rigs, parse_rig
from core.drivers.manipulator import SimulatedManipulator
from core.link import RigError
from core.protocol import ExpMessage
from core.rig_config import load_rig_config, parse_rig_config
from core.service import RigService
from transports.registry import TRANSPORTS, make_link, options_markdown, server_factory
from transports.rpc.client import RpcClient
from transports.rpc.sync_struct import Subscriber
from transports.sio.client import SioManipulatorClient, SioUnavailable, sio_url
from transports.sio.proxy import EphysLinkManipulator

ROOT = Path(__file__).resolve().parents[2]
ELSEWHERE = "10.9.9.9"  # an address no loopback client has
MANIPULATOR = {"manipulator": {"type": "simulated", "ids": ["1"]}}


async def serve_one(scheme: str, options: dict) -> tuple[RigService, object]:
    """A rig service served on ``scheme`` as ``rigdeck serve`` would: rig file -> descriptor -> server."""
    path = "/rig" if scheme == "rpc" else ""
    config = parse_rig_config({"name": "guarded", "uris": [{"uri": f"{scheme}://127.0.0.1:0{path}", **options}],
                               "drivers": MANIPULATOR}, TRANSPORTS, "guarded.yaml")
    service = RigService.from_config(config)
    await service.start()
    spec = config.listen[0]
    handle = await server_factory(spec.scheme)(spec.address, service, dict(spec.options))
    return service, handle


async def session_link_reaches(scheme: str, port: int) -> bool:
    """A console link from 127.0.0.1 gets an EXPSTATUS answer (udp and tcp)."""
    link = make_link(parse_rig("r", {"uri": f"{scheme}://127.0.0.1:{port}", "timeout": 1}, TRANSPORTS))
    try:
        await link.connect()
        await link.request(ExpMessage.EXPSTATUS, "guarded")
        return True
    except RigError:
        return False
    finally:
        await link.close()


async def sio_reaches(port: int) -> bool:
    """A Socket.IO client from 127.0.0.1 can move manipulator 1 (what an allow list must prevent)."""
    client = SioManipulatorClient(sio_url("127.0.0.1", port), timeout=5)
    try:
        await client.connect()
    except SioUnavailable as ex:
        assert "not allowed" in str(ex)
        return False
    try:
        await client.set_depth("1", 0.5, 5.0)
        return True
    finally:
        await client.close()


async def rpc_reaches(port: int, notify_port: int) -> tuple[bool, bool]:
    """(pc_rpc call answered, sync_struct init received) for a 127.0.0.1 client."""
    client = RpcClient("127.0.0.1", port, "rig", connect_timeout=5)
    try:
        await client.connect()
        await client.method_list()
        rpc_ok = True
    except (OSError, ConnectionError, TimeoutError):
        rpc_ok = False
    finally:
        await client.close()
    subscriber = Subscriber("state", connect_timeout=5)
    try:
        await subscriber.connect("127.0.0.1", notify_port)
        notify_ok = True
    except (OSError, ConnectionError, TimeoutError):
        notify_ok = False
    finally:
        await subscriber.close()
    return rpc_ok, notify_ok


@pytest.mark.parametrize("scheme", ["udp", "tcp", "sio", "rpc"])
def test_allow_is_enforced_on_every_scheme_that_offers_it(scheme):
    async def attempt(allowed: str) -> object:
        service, handle = await serve_one(scheme, {"allow": [allowed]})
        try:
            if scheme == "sio":
                return await sio_reaches(handle.port)
            if scheme == "rpc":
                return await rpc_reaches(handle.port, handle.notify_port)
            return await session_link_reaches(scheme, handle.port)
        finally:
            await handle.close()
            await service.close()

    async def main():
        return await attempt(ELSEWHERE), await attempt("127.0.0.1")

    refused, admitted = run(main(), timeout=40)
    if scheme == "rpc":
        assert refused == (False, False) and admitted == (True, True)
    else:
        assert refused is False and admitted is True


@pytest.mark.parametrize("entry, words", [
    ({"uri": "sio://127.0.0.1:0", "tokn": "s3cret"}, "unknown option(s) ['tokn'] for sio://"),
    ({"uri": "udp://127.0.0.1:0", "token": "s3cret"}, "do not apply to udp:// URIs (token is for sio:// URIs)"),
    ({"uri": "zmq://127.0.0.1:0", "allow": ["10.0.0.1"]}, "allow is for rpc:// and sio:// and tcp:// and udp://"),
    ({"uri": "udp://127.0.0.1:0", "allow": [3]}, "allow must be a list of addresses"),
    ({"uri": "sio://127.0.0.1:0", "push_hz": 0}, "push_hz must be a positive number"),
    ({"uri": "sio://127.0.0.1:3000", "relay": True, "allow": ["10.0.0.1"]}, "allow do(es) not apply with relay"),
    ({"uri": "sio://127.0.0.1:0", "pinpoint_id": "rig-7"}, "pinpoint_id need(s) relay: true"),
    ({"uri": "zmq://127.0.0.1:0", "key": "rig"}, "key need keys"),
    ({"uri": "rpc://127.0.0.1:0", "notify_port": "next"}, "notify_port must be a TCP port"),
    ({"uri": "tcp://127.0.0.1:0", "open": "yes"}, "open must be true or false"),
])
def test_a_rig_file_option_that_would_be_ignored_is_refused_naming_file_and_key(tmp_path, entry, words):
    rig_file = tmp_path / "rig.yaml"
    rig_file.write_text(yaml.safe_dump({"name": "r", "uris": [entry]}))
    with pytest.raises(ConfigError) as info:
        load_rig_config(rig_file, TRANSPORTS)
    assert str(info.value).startswith(f"{rig_file}: uris[0]: ") and words in str(info.value)


def test_a_misspelt_rigs_file_option_is_refused_naming_file_and_key(tmp_path):
    path = tmp_path / "remote_rigs.yaml"
    path.write_text("probes: {uri: 'sio://10.0.0.3', role: manipulator, tokn: s3cret}\n")
    with pytest.raises(ConfigError) as info:
        load_rigs(path, TRANSPORTS)
    assert str(info.value).startswith(f"{path}: rig 'probes': unknown key(s) ['tokn']")


@pytest.mark.parametrize("scheme, guard", [
    ("udp", {"allow": ["10.0.0.0/24"]}), ("tcp", {"allow": ["10.0.0.5"]}), ("zmq", {"keys": "keys"}),
    ("sio", {"token": "s3cret"}), ("sio", {"allow": ["10.0.0.5"]}), ("rpc", {"allow": ["10.0.0.5"]}),
])
def test_binding_beyond_loopback_needs_an_access_control_or_open_true(scheme, guard):
    def load(options):
        return parse_rig_config({"name": "r", "uris": [{"uri": f"{scheme}://0.0.0.0:0", **options}]}, TRANSPORTS,
                                "r.yaml")

    with pytest.raises(ConfigError) as info:
        load({})
    text = str(info.value)
    assert text.startswith(f"r.yaml: uris[0]: {scheme}://0.0.0.0:0: listening on 0.0.0.0 (not loopback)")
    assert "open: true" in text and next(iter(guard)) in text
    assert load(guard).listen[0].options == guard
    assert load({"open": True}).listen[0].options == {"open": True}
    assert parse_rig_config({"name": "r", "uris": [f"{scheme}://127.0.0.1:0"]}, TRANSPORTS).listen  # loopback


def test_serve_refuses_an_unguarded_public_address_before_binding(tmp_path):
    rig_file = tmp_path / "open.rig.yaml"
    rig_file.write_text("name: open\nuris:\n  - udp://127.0.0.1:0\n  - sio://0.0.0.0:0\n")
    proc = subprocess.run([sys.executable, "-m", "app.cli", "serve", str(rig_file)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "uris[1]: sio://0.0.0.0:0: listening on 0.0.0.0 (not loopback)" in proc.stderr


def test_open_true_binds_every_interface_loudly_and_ready_says_what_is_bound(tmp_path):
    """READY names 0.0.0.0, and the rig really is reachable on another loopback address than 127.0.0.1
    (which a server bound to 127.0.0.1 would not be)."""
    rig_file = tmp_path / "open.rig.yaml"
    rig_file.write_text("name: open\nuris:\n  - {uri: 'zmq://0.0.0.0:0', open: true}\n")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", str(rig_file), "--data-dir",
                             str(tmp_path / "data")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        ready = proc.stdout.readline().split()
        assert ready[:2] == ["READY", "open"] and ready[2].startswith("zmq://0.0.0.0:"), ready
        port = int(ready[2].rsplit(":", 1)[1])

        async def reach() -> bool:
            return await session_link_reaches_zmq(f"zmq://127.0.0.2:{port}")

        assert run(reach(), timeout=30)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "zmq://0.0.0.0 listens OPENLY with no access control (open: true)" in err


def test_the_relay_follows_the_same_rule(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RIGDECK_SIO_TOKEN"}
    refused = subprocess.run([sys.executable, "-m", "app.cli", "relay", "--host", "0.0.0.0", "--port", "0"],
                             capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert refused.returncode == 2 and refused.stdout == ""
    assert "not loopback) with no token" in refused.stderr and "--open" in refused.stderr
    opened = subprocess.Popen([sys.executable, "-m", "app.cli", "relay", "--host", "0.0.0.0", "--port", "0", "--open"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        assert opened.stdout.readline().startswith("READY relay sio://0.0.0.0:")
    finally:
        opened.terminate()
        _, err = opened.communicate(timeout=20)
    assert "listens OPENLY with no token" in err


async def session_link_reaches_zmq(uri: str) -> bool:
    link = make_link(parse_rig("r", {"uri": uri, "timeout": 10}, TRANSPORTS))
    try:
        await link.connect()
        await link.request(ExpMessage.EXPSTATUS, "open")
        return True
    finally:
        await link.close()


def test_the_manipulator_driver_is_the_one_the_rig_file_declares():
    """simulated builds the simulator; ephys_link a proxy, connected to the server its URI names (here a
    RigDeck manipulator server), or one clear error when nothing answers there."""
    def rig(manipulator: dict) -> object:
        return parse_rig_config({"name": "r", "uri": "udp://127.0.0.1:0", "drivers": {"manipulator": manipulator}},
                                TRANSPORTS, "r.yaml")

    async def main():
        simulated = await make_manipulator(rig(MANIPULATOR["manipulator"]))
        none = await make_manipulator(parse_rig_config({"name": "r", "uri": "udp://127.0.0.1:0"}, TRANSPORTS))
        service, handle = await serve_one("sio", {})
        try:
            proxy = await make_manipulator(rig({"ephys_link": f"sio://127.0.0.1:{handle.port}"}))
            ids = await proxy.list_ids()
            await proxy.close()
        finally:
            await handle.close()
            await service.close()
        with pytest.raises(ConfigError, match=r"r.yaml: drivers.manipulator.ephys_link: cannot reach sio://"):
            await make_manipulator(rig({"ephys_link": f"sio://127.0.0.1:{handle.port}"}))
        return simulated, none, proxy, ids

    simulated, none, proxy, ids = run(main(), timeout=60)
    assert isinstance(simulated, SimulatedManipulator) and none is None
    assert isinstance(proxy, EphysLinkManipulator) and ids == ["1"]


def test_readme_documents_the_options_the_descriptors_declare():
    """The README's option tables are the descriptors' (regenerate with registry.options_markdown())."""
    assert options_markdown() in (ROOT / "README.md").read_text(encoding="utf-8")

