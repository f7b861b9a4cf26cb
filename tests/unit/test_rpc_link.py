"""The console side (RpcLink from remote_rigs.yaml) and the rig side (serve_rpc) of the rpc:// transport."""

import dataclasses

import pytest
from helpers import run, wait_until
from rpc_helpers import Target

from core.config import parse_rig
from core.link import LinkState, RemoteError, RigError
from core.peers import peer_host
from core.protocol import ExpMessage, ExpStatus, RigAddress
from core.state import LiveState
from transports import registry
from transports.registry import TRANSPORTS
from transports.rpc import RpcLink, serve_rpc
from transports.rpc.client import RpcClient
from transports.rpc.link import parse_notifier
from transports.rpc.server import RpcServer
from transports.rpc.sync_struct import Notifier, Publisher, Subscriber
from transports.rpc.wire import RemoteException


def spec_for(port, target="tgt", **options):
    value = {"uri": f"rpc://127.0.0.1:{port}/{target}", **options} if options else f"rpc://127.0.0.1:{port}/{target}"
    return parse_rig("ctl", value, TRANSPORTS)


def test_parse_notifier():
    assert parse_notifier("state", 3251) == (3252, "state")
    assert parse_notifier("3250/schedule", 3251) == (3250, "schedule")
    for bad in ["", "99999/x", "abc/x", "3250/", "two words"]:
        with pytest.raises(ValueError):
            parse_notifier(bad, 3251)


def test_registry_builds_an_rpc_link():
    link = registry.make_link(spec_for(3251))
    assert isinstance(link, RpcLink) and link.target == "tgt" and link.port == 3251
    assert registry.server_factory("rpc") is serve_rpc


def test_link_lists_and_calls_methods_and_mirrors_the_notifier():
    async def main():
        server = RpcServer({"tgt": Target()}, "ctl")
        await server.start()
        notifier = Notifier({"status": 10, "temps": [20.5]})
        publisher = Publisher({"state": notifier})
        await publisher.start()
        link = RpcLink(spec_for(server.port, notifier=f"{publisher.port}/state", timeout=2))
        states, mods = [], []
        link.on_state(lambda state, err: states.append(state))
        link.on_update(mods.append)
        await link.connect()
        await wait_until(lambda: link.state is LinkState.ONLINE and mods)
        assert mods[0] == {"action": "init", "struct": {"status": 10, "temps": [20.5]}}
        assert link.pushes_status
        methods = await link.methods()
        assert methods["echo"] == {"argspec": {"args": ["x"], "varargs": None, "varkw": None, "defaults": None,
                                               "kwonlyargs": [], "kwonlydefaults": None}, "doc": "Return x."}
        assert not [m for m in methods if m.startswith("_")]
        assert await link.call("echo", (1, 2)) == (1, 2)
        assert await link.call("add", 1, b=5, scale=2) == 12
        assert link.last_rtt is not None
        with pytest.raises(ValueError, match="bad value"):
            await link.call("boom")
        with pytest.raises(RemoteException):
            await link.call("custom")
        for name in ["_private", "__init__", ""]:
            with pytest.raises(RigError, match="not a public method"):
                await link.call(name)
        with pytest.raises(RigError, match="no handle"):
            await link.request(ExpMessage.EXPSTATUS, 0)
        notifier["temps"].append(21.0)
        await wait_until(lambda: len(mods) == 2)
        assert mods[1] == {"action": "append", "path": ["temps"], "x": 21.0}
        assert link.published == {"status": 10, "temps": [20.5, 21.0]}
        await link.close()
        await publisher.close()
        await server.close()
        assert states[-1] is LinkState.CLOSED

    run(main())


def test_link_goes_unreachable_and_comes_back():
    async def main():
        server = RpcServer({"tgt": Target()})
        await server.start()
        port = server.port
        link = RpcLink(spec_for(port, timeout=1))
        await link.connect()
        await wait_until(lambda: link.state is LinkState.ONLINE)
        await server.close()
        await wait_until(lambda: link.state is LinkState.UNREACHABLE)
        with pytest.raises(RigError, match="not connected"):
            await link.call("echo", 1)
        server = RpcServer({"tgt": Target()})
        await server.start("127.0.0.1", port)
        await wait_until(lambda: link.state is LinkState.ONLINE, timeout=10)
        assert await link.call("echo", 1) == 1
        await link.close()
        await server.close()

    run(main())


def test_link_to_absent_controller_does_not_fail_connect():
    async def main():
        probe = RpcServer({"tgt": Target()})
        await probe.start()
        port = probe.port
        await probe.close()
        link = RpcLink(spec_for(port, timeout=1))
        await link.connect()
        await wait_until(lambda: link.state is LinkState.UNREACHABLE)
        assert link.last_error
        await link.close()

    run(main())


# ------------------------------------------------------------------------------------- rig side

@dataclasses.dataclass
class Pos:
    x: float
    y: float
    z: float
    w: float


class FakeManipulator:
    def __init__(self):
        self.pos = {"1": Pos(1.0, 2.0, 3.0, 4.0)}

    async def list_ids(self):
        return list(self.pos)

    async def position(self, manipulator_id):
        return self.pos[manipulator_id]

    def is_moving(self, manipulator_id):
        return False

    async def stop_all(self):
        return None


class FakeService:
    """The RigService contract, reduced to what serve_rpc uses."""

    def __init__(self):
        self.name = "rig1"
        self.state = LiveState({"status": 0})
        self.manipulator = FakeManipulator()
        self.messages = []

    async def handle(self, event, data, peer):
        self.messages.append((event, data, peer))
        if event == ExpMessage.EXPSTATUS:
            return [int(ExpStatus(self.state.get(["status"])))]
        if event == ExpMessage.EXPINIT:
            self.state.set(["status"], 10)
            return [{"status": 10, "exp_ref": data[0]["exp_ref"]}]
        if event == ExpMessage.EXPINFO:
            return [0, {"main_sync": False, "exp_ref": None}]
        raise ValueError(f"{event.name} not allowed now")


def test_serve_rpc_exposes_the_rig_to_rpc_links_and_artiq_tools():
    async def main():
        service = FakeService()
        handle = await serve_rpc(RigAddress("rpc", "127.0.0.1", 0), service, {"notify_port": 0})
        assert handle.notifier_name == "state" and handle.notify_port
        link = RpcLink(spec_for(handle.port, "rig", notifier=f"{handle.notify_port}/state", timeout=2))
        mods = []
        link.on_update(mods.append)
        await link.connect()
        await wait_until(lambda: link.state is LinkState.ONLINE and mods)
        assert link.pushes_status
        assert await link.request(ExpMessage.EXPSTATUS, 0) == [0]
        reply = await link.request(ExpMessage.EXPINIT, {"exp_ref": "2026-11-22_1_KS001"})
        assert reply == [{"status": 10, "exp_ref": "2026-11-22_1_KS001"}]
        assert peer_host(service.messages[-1][2]) == "127.0.0.1"  # the calling connection's address
        await wait_until(lambda: link.published == {"status": 10})
        with pytest.raises(RemoteError, match="ValueError: EXPEND not allowed now") as info:
            await link.request(ExpMessage.EXPEND, {})
        assert info.value.event == int(ExpMessage.EXPEND)
        assert await link.call("status") == 10
        assert await link.call("info") == {"main_sync": False, "exp_ref": None}
        assert await link.call("handle", "expstatus", [0]) == [10]
        assert await link.call("state") == {"status": 10}
        await link.close()

        # the manipulator target, as an ARTIQ experiment would use it
        async with RpcClient("127.0.0.1", handle.port, "manipulator") as client:
            assert await client.list_ids() == ["1"]
            assert await client.position("1") == {"x": 1.0, "y": 2.0, "z": 3.0, "w": 4.0}
            assert await client.is_moving("1") is False
            assert not [m for m in client.methods if m.startswith("_")]
        # a plain sync_struct subscriber (artiq_dashboard-style) sees the rig's live state
        sub = Subscriber("state")
        await sub.connect("127.0.0.1", handle.notify_port)
        assert sub.struct == {"status": 10}
        await sub.close()
        await handle.close()

    run(main())


def test_serve_rpc_default_ports_and_no_notifier():
    async def main():
        service = FakeService()
        service.manipulator = None
        handle = await serve_rpc(RigAddress("rpc", "127.0.0.1", 0), service, {"notify_port": False})
        assert handle.publisher is None and handle.notify_port is None
        async with RpcClient("127.0.0.1", handle.port, None) as lister:
            assert lister.targets == ["rig"]
        await handle.close()

    run(main())
