"""Interoperability with the real iblutil (PyPI) on loopback, in both directions, over UDP and over
iblutil's unframed TCP variant.

(a) iblutil's ``EchoProtocol.client`` + ``Services`` drive a RigDeck UDP server through a session and get
the replies iblutil expects; (b) RigDeck's ``UdpLink`` drives an iblutil ``EchoProtocol.server`` through the
same exchange (EXPINFO, EXPINIT, EXPSTART, EXPSTATUS, ALYX both ways, EXPEND).
"""

import asyncio
import importlib.metadata
import logging
import socket
from pathlib import Path

import pytest

# iblutil is imported, not importorskip'd: it is in the test extra, and a missing iblutil must fail the
# suite rather than quietly skip the interop tests.
from helpers import run, wait_until
from iblutil.io.net import app as net_app
from iblutil.io.net import base as net_base
from udp_helpers import EchoRig, udp_spec

from core.link import LinkState, RequestTimeout
from core.protocol import ExpMessage, RigAddress
from transports import registry
from transports.ibl.tcp import serve_tcp
from transports.ibl.udp import UdpEndpoint, serve_udp

QUIET = logging.getLogger("iblutil-interop")  # iblutil's default logger prints every payload at DEBUG


class Alyx:
    """What iblutil reads from ONE's AlyxClient."""

    base_url = "https://alyx.example.org"
    user = "experimenter"
    _token = {"token": "t0ken-not-logged"}
    is_logged_in = True


def test_the_iblutil_under_test_is_the_pypi_distribution():
    """Not a stub or a copy in this repository: the installed ``iblutil`` wheel, a version that speaks
    protocol 1.0.0 (event codes 1..128, since iblutil 1.11)."""
    dist = importlib.metadata.distribution("iblutil")
    version = tuple(int(part) for part in dist.version.split(".")[:2])
    assert version >= (1, 13), dist.version
    module_file = Path(net_app.__file__).resolve()
    assert module_file.is_relative_to(Path(dist.locate_file("")).resolve())
    assert not module_file.is_relative_to(Path(__file__).resolve().parents[2] / "tests")
    assert any(str(f).endswith("iblutil/io/net/app.py") for f in dist.files or [])
    assert net_base.ExpMessage.ALYX == 128 and net_base.PROTOCOL_VERSION == "1.0.0"


def free_port(scheme: str) -> int:
    kind = socket.SOCK_DGRAM if scheme == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVE = {"udp": serve_udp, "tcp": serve_tcp}


@pytest.mark.parametrize("scheme", ["udp", "tcp"])
def test_iblutil_services_drive_a_rigdeck_server(scheme):
    async def main():
        rig = EchoRig("rigdeck_aux")
        server = await SERVE[scheme](RigAddress(scheme, "127.0.0.1", 0), rig)
        client = await net_app.EchoProtocol.client(f"{scheme}://127.0.0.1:{server.port}", name="rigdeck_aux",
                                                   log=QUIET)
        services = net_app.Services([client], timeout=5)
        try:
            info = await services.info(net_base.ExpStatus.CONNECTED, {"subject": "KS001", "main_sync": False})
            assert info == {"rigdeck_aux": [0, {"exp_ref": "2026-11-22_1_KS001", "main_sync": True}]}
            ref = info["rigdeck_aux"][1]["exp_ref"]
            init = await services.init({"exp_ref": ref})
            assert init == {"rigdeck_aux": [{"status": 10, "exp_ref": ref}]}
            start = await services.start({"date": "2026-11-22", "sequence": 1, "subject": "KS001"})
            assert start == {"rigdeck_aux": [ref, {"status": 20}]}
            assert await services.status(net_base.ExpStatus.RUNNING) == {"rigdeck_aux": [20]}
            # ALYX: sending a token is fire-and-confirm; asking for one (empty dict) gets the rig's reply
            await services.alyx(Alyx())
            asked = asyncio.ensure_future(client.on_event(net_base.ExpMessage.ALYX))
            await client.alyx(None)
            data, _ = await asyncio.wait_for(asked, 5)
            assert data[0] == "https://alyx.example.org"
            assert await services.stop([]) == {"rigdeck_aux": [{"status": 30}]}
            assert client.is_connected  # no echo ever went missing, so iblutil never closed itself
            assert [c[0] for c in rig.calls] == ["EXPINFO", "EXPINIT", "EXPSTART", "EXPSTATUS", "ALYX", "ALYX",
                                                 "EXPEND"]
            assert rig.calls[2][1] == ["2026-11-22_1_KS001", None]
        finally:
            services.close()
            await server.close()

    run(main(), timeout=60)


async def iblutil_server(uri):
    return await net_app.EchoProtocol.server(uri, name="iblutil_aux", log=QUIET)


async def ported_server(uri):
    """The same iblutil service code, ported: only the endpoint class changes (Communicator API)."""
    return await UdpEndpoint.server(uri, name="ported_aux")


@pytest.mark.parametrize(("scheme", "make_server"), [("udp", iblutil_server), ("tcp", iblutil_server),
                                                     ("udp", ported_server)],
                         ids=["udp", "tcp", "udp-ported-to-rigdeck-endpoint"])
def test_rigdeck_link_drives_an_iblutil_server(scheme, make_server):
    port = free_port(scheme)

    async def main():
        server = await make_server(f"{scheme}://127.0.0.1:{port}")
        status = {"s": net_base.ExpStatus.CONNECTED}

        def reply(coro_factory):
            def callback(data, addr):
                asyncio.ensure_future(coro_factory(data, addr))
            return callback

        async def on_info(data, addr):
            await server.info(status["s"], {"exp_ref": "2026-11-22_2_KS001", "main_sync": True}, addr=addr)

        async def on_init(data, addr):
            status["s"] = net_base.ExpStatus.INITIALIZED
            await server.init({"status": 10, "exp_ref": data[0]["exp_ref"]}, addr=addr)

        async def on_start(data, addr):
            status["s"] = net_base.ExpStatus.RUNNING
            await server.start(data[0], {"status": 20}, addr=addr)

        async def on_status(data, addr):
            await server.status(status["s"], addr=addr)

        async def on_stop(data, addr):
            status["s"] = net_base.ExpStatus.STOPPED
            await server.stop({"status": 30}, addr=addr)

        async def on_alyx(data, addr):
            if data[1] == {}:  # a token request: iblrig's main sync answers with its own token
                await server.alyx(Alyx(), addr=addr)
            else:
                alyx_received.append(data)

        alyx_received = []
        for event, handler in [("EXPINFO", on_info), ("EXPINIT", on_init), ("EXPSTART", on_start),
                               ("EXPSTATUS", on_status), ("ALYX", on_alyx), ("EXPEND", on_stop)]:
            server.assign_callback(event, reply(handler))

        link = registry.make_link(udp_spec(port, name="iblutil_aux", scheme=scheme))
        await link.connect()
        try:
            S = ExpMessage
            assert await link.request(S.EXPINFO, 0, {"subject": "KS001"}) == \
                [0, {"exp_ref": "2026-11-22_2_KS001", "main_sync": True}]
            assert await link.request(S.EXPINIT, {"exp_ref": "2026-11-22_2_KS001"}) == \
                [{"status": 10, "exp_ref": "2026-11-22_2_KS001"}]
            assert await link.request(S.EXPSTART, "2026-11-22_2_KS001", None) == \
                ["2026-11-22_2_KS001", {"status": 20}]
            assert await link.request(S.EXPSTATUS, 20) == [20]
            # ALYX both ways: ask the iblutil rig for its token, then hand it ours (no reply expected)
            assert await link.request(S.ALYX, None, {}) == \
                ["https://alyx.example.org", {"experimenter": {"token": "t0ken-not-logged"}}]
            # a token delivery is one-way in iblutil: done when echoed (the session's relay does this)
            token = {"experimenter": {"token": "t0ken-not-logged"}}
            assert await link.request(S.ALYX, "https://alyx.example.org", token, timeout=2) == \
                ["https://alyx.example.org", {}]
            await wait_until(lambda: alyx_received, what="the token at the iblutil peer")
            assert alyx_received == [["https://alyx.example.org", {"experimenter": {"token": "t0ken-not-logged"}}]]
            assert await link.request(S.EXPEND, []) == [{"status": 30}]
            assert link.state is LinkState.ONLINE
            # we echoed every reply, each apart from our next request: the iblutil server never timed out
            # or choked on two messages in one read, so it never closed itself
            assert server.is_connected
        finally:
            await link.close()
            server.close()

    run(main(), timeout=60)


def test_an_iblutil_rig_never_receives_a_resend_nor_a_tag():
    """RigDeck resends (and tags) requests only to a rig whose replies carry the RigDeck tail: an iblutil
    rig gets each request once, as from an iblutil console, whatever is lost on the way back (a resent
    EXPINIT would run twice there; a resent EXPSTATUS would make it send two replies while it can await
    one echo). Through a relay that loses every datagram back to the console, then none, then every one."""
    from udp_faults import FaultyRelay

    port = free_port("udp")

    async def main():
        server = await iblutil_server(f"udp://127.0.0.1:{port}")
        server.assign_callback("EXPSTATUS", lambda data, addr: asyncio.ensure_future(
            server.status(net_base.ExpStatus.CONNECTED, addr=addr)))
        relay = FaultyRelay(("127.0.0.1", port))
        link = registry.make_link(udp_spec(await relay.start(), name="iblutil_aux", retry_after=0.05,
                                           echo_timeout=0.3, late_window=0.3))
        await link.connect()
        S = ExpMessage
        # (not EXPSTATUS here: the iblutil rig answers it, and closes itself when that reply's echo is lost)
        sent = [(S.EXPINFO, 0, {"subject": "KS001"}), (S.EXPINIT, {"exp_ref": "2026-11-22_1_KS001"})]
        try:
            relay.to_console.drop = 1.0
            for event, *data in sent:
                with pytest.raises(RequestTimeout, match="not resent"):
                    await link.request(event, *data, timeout=2)
            relay.to_console.drop = 0.0
            assert await link.request(S.EXPSTATUS, 0, timeout=2) == [0]  # a plain reply: no tail, no tags
            relay.to_console.drop = 1.0
            with pytest.raises(RequestTimeout, match="not resent"):
                await link.request(S.EXPINIT, {"exp_ref": "2026-11-22_2_KS001"}, timeout=2)
            assert relay.rig_counts.log == [
                b'[64, 0, {"subject": "KS001"}]', b'[1, {"exp_ref": "2026-11-22_1_KS001"}]',
                b'[32, 0]', b'[32, 0]',  # the status request, and the echo of its (identical) reply
                b'[1, {"exp_ref": "2026-11-22_2_KS001"}]']
            assert server.is_connected
            assert not any(b"\t\n" in raw for raw in relay.rig_counts.log)
        finally:
            await link.close()
            relay.close()
            server.close()

    run(main(), timeout=60)
