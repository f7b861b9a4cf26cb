"""SioLink: a sio:// manipulator rig as a RigLink (state, harmless session answers, position mods)."""

import asyncio

import pytest
from helpers import run, wait_until
from sio_helpers import LOOPBACK, served

from core.config import Role, parse_rig
from core.drivers.manipulator import Vec4
from core.link import LinkState, RigError
from core.protocol import ExpMessage
from core.state import LiveState
from transports.registry import TRANSPORTS, make_link, server_factory
from transports.sio.client import SioUnavailable


def spec(port, **options):
    return parse_rig("manip", {"uri": f"sio://{LOOPBACK}:{port}", "role": "manipulator", **options}, TRANSPORTS)


def test_registry_resolves_sio():
    link = make_link(spec(3000))
    assert type(link).__name__ == "SioLink" and link.pushes_status
    assert spec(3000).role is Role.MANIPULATOR and not spec(3000).in_sessions
    assert server_factory("sio").__name__ == "serve_sio"


def test_link_goes_online_answers_harmlessly_and_streams_position_mods():
    async def main():
        async with served(ids=("1", "2"), options={"token": "tok"}) as (server, sim):
            link = make_link(spec(server.port, token="tok", timeout=1))
            tree = LiveState()
            link.on_update(tree.apply)
            states = []
            link.on_state(lambda s, e: states.append(s))
            await link.connect()
            await wait_until(lambda: link.state is LinkState.ONLINE, what="online")
            assert tree.get(["role"]) == "manipulator" and tree.get(["main_sync"]) is False
            assert tree.get(["manipulators", "1"]) == {"x": 0.0, "y": 0.0, "z": 0.0, "w": 0.0, "moving": False,
                                                       "inside_brain": False}
            assert await link.request(ExpMessage.EXPSTATUS) == [0]
            status, info = await link.request(ExpMessage.EXPINFO, 0, {"subject": "s"})
            assert status == 0 and info["main_sync"] is False and info["manipulators"] == ["1", "2"]
            assert await link.request(ExpMessage.ALYX, None, {}) == [None, {}]
            with pytest.raises(RigError, match="take no session messages"):
                await link.request(ExpMessage.EXPSTART, "ref", {})
            assert link.last_rtt is not None
            await link.manipulators.set_position("2", Vec4(1, 1, 1, 1), 100.0)
            await wait_until(lambda: tree.get(["manipulators", "2", "moving"]) is False
                           and tree.get(["manipulators", "2", "x"]) == 1.0, what="final mod")
            await link.manipulators.set_inside_brain("2", True)
            await wait_until(lambda: tree.get(["manipulators", "2", "inside_brain"]) is True, what="inside mod")
            await link.close()
            assert link.state is LinkState.CLOSED
            assert states[0] is LinkState.ONLINE and states[-1] is LinkState.CLOSED

    run(main())


def test_link_reports_unreachable_and_requests_fail_clearly():
    async def main():
        link = make_link(spec(1, timeout=0.5))
        await link.connect()
        await wait_until(lambda: link.state is LinkState.UNREACHABLE, what="unreachable")
        assert "cannot connect" in (link.last_error or "")
        with pytest.raises(SioUnavailable, match="not connected"):
            await link.request(ExpMessage.EXPSTATUS)
        await link.close()

    run(main())


def test_link_with_wrong_token_is_unreachable_with_the_reason():
    async def main():
        async with served(options={"token": "right"}) as (server, _):
            link = make_link(spec(server.port, token="wrong", timeout=0.5))
            await link.connect()
            await wait_until(lambda: link.state is LinkState.UNREACHABLE, what="refused")
            assert "token required" in link.last_error
            await link.close()
            await asyncio.sleep(0)

    run(main())
