"""iblutil's Communicator API on a RigDeck endpoint, with the real iblutil (PyPI) as the oracle.

The same script runs against iblutil's ``EchoProtocol.client`` and RigDeck's ``UdpEndpoint.client``,
both talking to one scripted raw UDP peer: the bytes each Service method puts on the wire must be
identical, and callbacks, futures, compound events and error reports must behave alike — so code
ported from iblutil works unchanged.
"""

import asyncio
import json
import logging

import pytest
from helpers import run, wait_until
from iblutil.io.net import app as net_app  # (the test extra installs it: never skipped)
from udp_helpers import RawPeer, dumps

from core.protocol import ExpMessage, ExpStatus
from transports.ibl.udp import UdpEndpoint

QUIET = logging.getLogger("iblutil-api-interop")
ALYX_REPLY = dumps(128, "https://alyx.example.org", {"peer_user": {"token": "from-peer"}})


class Alyx:
    """What iblutil reads from ONE's AlyxClient."""

    base_url = "https://alyx.example.org"
    user = "experimenter"
    _token = {"token": "t0ken"}
    is_logged_in = True


class LoggedOut(Alyx):
    is_logged_in = False


def capture_peer(peer, raw, addr):
    """An iblutil-like peer: echo every new message, take the echoes of its own, answer a token request."""
    peer.last_addr = addr
    awaiting = peer.__dict__.setdefault("awaiting", [])
    if raw in awaiting:  # the echo of something we sent
        awaiting.remove(raw)
        return
    if raw.startswith(b"[0"):
        return
    peer.send(raw, addr)
    message = json.loads(raw)
    if message[0] == 128 and message[2] == {}:
        awaiting.append(ALYX_REPLY)
        peer.send_later(0.01, ALYX_REPLY, addr)


def send(peer, raw, addr):
    peer.__dict__.setdefault("awaiting", []).append(raw)
    peer.send(raw, addr)


async def iblutil_client(port):
    return await net_app.EchoProtocol.client(f"udp://127.0.0.1:{port}", name="ibl", log=QUIET)


async def rigdeck_client(port):
    return await UdpEndpoint.client(f"udp://127.0.0.1:{port}", name="rigdeck")


async def service_calls(com):
    """Every Service method, in the forms iblrig uses; returns what the calls returned."""
    await com.init({"exp_ref": "2026-11-22_1_KS001"})
    await com.init()
    await com.start("2026-11-22_1_KS001", {"x": [1, 2.5, None, True]})
    await com.start({"date": "2026-11-22", "sequence": "3", "subject": "KS001"})
    await com.start("", None)
    await com.stop({"a": 1})
    await com.stop(immediately=True)
    await com.cleanup()
    await com.status("RUNNING")  # (iblutil takes upper-case names only)
    await com.status(10)
    await com.status(ExpStatus.STOPPED)
    await com.info(0, {"subject": "caf\u00e9", "f": 1e-7, "n": float("nan")})
    await com.info("INITIALIZED")
    sent = await com.alyx(Alyx())
    asked = await asyncio.wait_for(com.alyx(None), 5)
    asked_logged_out = await asyncio.wait_for(com.alyx(LoggedOut()), 5)
    return sent, asked, asked_logged_out


def test_service_methods_put_the_same_bytes_on_the_wire_as_iblutil():
    async def session(factory):
        peer = await RawPeer.bind(capture_peer)
        com = await factory(peer.port)
        try:
            returned = await service_calls(com)
        finally:
            com.close()
        sent = [raw for raw in peer.received if raw != ALYX_REPLY]  # (the echoes of the token replies)
        return sent, returned

    ibl_bytes, ibl_returned = run(session(iblutil_client))
    our_bytes, our_returned = run(session(rigdeck_client))
    assert len(ibl_bytes) == 16
    assert our_bytes == ibl_bytes
    assert our_returned == ibl_returned == (None, json.loads(ALYX_REPLY)[1:], json.loads(ALYX_REPLY)[1:])
    assert ibl_bytes[4] == b'[2, null, null]' and ibl_bytes[3] == b'[2, "2026-11-22_3_KS001", null]'


@pytest.mark.parametrize("factory", [iblutil_client, rigdeck_client], ids=["iblutil", "rigdeck"])
def test_callbacks_futures_and_error_reports_behave_like_iblutil(factory):
    async def main():
        peer = await RawPeer.bind(capture_peer)
        com = await factory(peer.port)
        try:
            await com.status(0)  # the peer learns our address
            ours = peer.transport.get_extra_info("sockname")
            client_addr = peer.last_addr
            got = []
            with pytest.raises(TypeError):
                com.assign_callback("EXPSTART", "not callable")
            com.assign_callback("expstart", lambda data, a: got.append(("start", data, a[1])))
            com.assign_callback(ExpMessage.EXPEND | ExpMessage.EXPINTERRUPT,
                                lambda data, a, event: got.append(("stop", data, int(event))))
            com.assign_callback(0, lambda data, a: got.append(("report", data)))
            com.assign_callback(ExpMessage.EXPINIT, lambda data, a: 1 / 0)
            compound = asyncio.ensure_future(com.on_event(ExpMessage.EXPCLEANUP | ExpMessage.EXPSTATUS))
            await asyncio.sleep(0.01)
            for message in [dumps(2, "ref", None), dumps(16, {"why": "x"}), dumps(8, None),
                            b'[0, "ValueError: bad", 1]', dumps(1, {})]:
                send(peer, message, client_addr)
                await asyncio.sleep(0.03)
            data, a, event = await asyncio.wait_for(compound, 2)
            assert (data, a[1], int(event)) == ([None], ours[1], 8)
            # one registration of the compound callback cleared for EXPEND leaves EXPINTERRUPT's
            assert com.clear_callbacks(ExpMessage.EXPEND) == 1
            send(peer, dumps(4, None), client_addr)
            send(peer, dumps(16, None), client_addr)
            await wait_until(lambda: len(got) >= 4 and len(peer.received) >= 1, what="the callbacks and the report")
            await wait_until(lambda: b'[0, "ZeroDivisionError: division by zero", 1]' in peer.received,
                             what="the failing callback's report")
            assert got == [("start", ["ref", None], ours[1]), ("stop", [{"why": "x"}], 16),
                           ("report", ["ValueError: bad", 1]), ("stop", [None], 16)]
            # a failing callback is reported back, as iblutil does
            assert b'[0, "ZeroDivisionError: division by zero", 1]' in peer.received
            # expstart, expinterrupt, expinit; iblutil also still holds the compound future that EXPCLEANUP
            # resolved, on EXPSTATUS (a stale future, its Q9): RigDeck removes a future from every event
            assert com.clear_callbacks(ExpMessage.any()) == (4 if factory is iblutil_client else 3)
        finally:
            com.close()

    run(main())
