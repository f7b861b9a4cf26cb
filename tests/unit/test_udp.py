"""iblutil UDP transport: wire bytes, echo rules, and each way it is sturdier than iblutil."""

import asyncio
import json
import logging

import pytest
from helpers import run, wait_until
from udp_faults import FaultyRelay
from udp_helpers import EchoRig, Mirror, RawPeer, assert_still_serves_then_close, dumps, udp_spec

from core.config import parse_rig
from core.link import LinkState, RemoteError, RequestTimeout
from core.protocol import ExpMessage, RigAddress
from transports import registry
from transports.ibl import wire as ibl_wire
from transports.ibl.udp import UdpEndpoint, UdpLink, serve_udp
from transports.registry import TRANSPORTS

LOOPBACK = RigAddress("udp", "127.0.0.1", 0)
S = ExpMessage


# ----------------------------------------------------------------------------------------- wire

def test_encoding_is_json_dumps_defaults_byte_for_byte():
    assert ibl_wire.encode(S.EXPSTATUS, 20) == b"[32, 20]"
    assert ibl_wire.encode(S.EXPINIT, {"exp_ref": "2026-11-22_2_KS001"}) == b'[1, {"exp_ref": "2026-11-22_2_KS001"}]'
    assert ibl_wire.encode(S.EXPINFO, 0, {"subject": "caf\u00e9"}) == b'[64, 0, {"subject": "caf\\u00e9"}]'
    assert ibl_wire.error_report("ZeroDivisionError: division by zero", 2) == \
        b'[0, "ZeroDivisionError: division by zero", 2]'


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "empty"),
    (b"x", "not JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"hello", "not JSON"),
    (b'{"event": 32}', "expected a JSON array"),
    (b"[]", "empty array"),
    (b"[32]", "carries no data"),
    (b"[3, null]", "compound event code 3"),
    (b"[256, null]", "unknown event code 256"),
    (b"[true, 1]", "JSON true"),
    (b"[32.0, 1]", "got float"),
    (b'["nope", 1]', "unknown event name"),
    (b'[0, 5]', "error report without"),
])
def test_malformed_messages_say_what_is_wrong(raw, reason):
    decoded = ibl_wire.decode(raw)
    assert isinstance(decoded, ibl_wire.Malformed)
    assert reason in decoded.reason


def test_event_names_and_error_reports_decode():
    assert ibl_wire.decode(b'["expstatus", 0]') == ibl_wire.Message(S.EXPSTATUS, [0])
    assert ibl_wire.decode(b'[0, "ValueError: x", 2]') == ibl_wire.ErrorReport("ValueError: x", 2)


def test_registry_builds_udp_and_tcp_links():
    assert isinstance(registry.make_link(udp_spec(11001)), UdpLink)
    assert registry.server_factory("udp") is serve_udp


# ------------------------------------------------------------------------------ request / reply

def test_a_whole_exchange_between_rigdeck_link_and_server():
    async def main():
        rig = EchoRig()
        server = await serve_udp(LOOPBACK, rig)
        link = UdpLink(udp_spec(server.port))
        states = []
        link.on_state(lambda s, e: states.append(s))
        await link.connect()
        try:
            info = await link.request(S.EXPINFO, 0, {"subject": "KS001"})
            assert info == [0, {"exp_ref": "2026-11-22_1_KS001", "main_sync": True}]
            assert await link.request(S.EXPINIT, {"exp_ref": "2026-11-22_1_KS001"}) == \
                [{"status": 10, "exp_ref": "2026-11-22_1_KS001"}]
            assert await link.request(S.EXPSTART, "2026-11-22_1_KS001", None) == ["2026-11-22_1_KS001", {"status": 20}]
            assert await link.request(S.EXPSTATUS, 20) == [20]
            assert await link.request(S.EXPEND, []) == [{"status": 30}]
            assert [c[0] for c in rig.calls] == ["EXPINFO", "EXPINIT", "EXPSTART", "EXPSTATUS", "EXPEND"]
            assert LinkState.ONLINE in states and link.last_rtt is not None
            # every reply was echoed back to the server: nothing left awaiting an echo there
            conv = next(iter(server.endpoint.conversations.values()))
            # the last echo is sent just before the reply is handed over
            await wait_until(lambda: conv.stats.echoes == 5)
            assert conv.echoes_due == 0
        finally:
            await link.close()
            await server.close()

    run(main())


def test_a_rig_named_by_hostname_answers():
    """A rigs file names rigs by hostname (``udp://behaviour-rig:11001``): replies come from the rig's
    IP address, and must still reach the request (they once went to a conversation of their own)."""
    async def main():
        server = await serve_udp(LOOPBACK, EchoRig())
        link = UdpLink(parse_rig("rig", f"udp://localhost:{server.port}", TRANSPORTS))
        await link.connect()
        try:
            assert await link.request(S.EXPSTATUS, 20, timeout=2) == [0]  # the rig's status: CONNECTED
            assert link.state is LinkState.ONLINE
        finally:
            await link.close()
            await server.close()

    run(main())


def test_state_listeners_hear_of_changes_not_of_every_reply():
    """Once a rig has been unreachable, its replies must not each re-announce ONLINE (the console's
    status view would be refreshed on every status poll of every rig)."""
    link = UdpLink(udp_spec(11001))
    heard = []
    link.on_state(lambda state, error: heard.append((state, error)))
    link.set_state(LinkState.UNREACHABLE, "no reply to EXPSTATUS within 5 s")
    for _ in range(3):
        link.note_reply(0.001)
    link.set_state(LinkState.UNREACHABLE, "nothing listens on 127.0.0.1:11001")
    assert heard == [(LinkState.UNREACHABLE, "no reply to EXPSTATUS within 5 s"), (LinkState.ONLINE, None),
                     (LinkState.UNREACHABLE, "nothing listens on 127.0.0.1:11001")]


def test_handler_failure_is_an_error_report_and_the_server_keeps_serving():
    async def main():
        server = await serve_udp(LOOPBACK, EchoRig())
        link = UdpLink(udp_spec(server.port))
        await link.connect()
        with pytest.raises(RemoteError, match="ZeroDivisionError: division by zero"):
            await link.request(S.EXPSTART, "boom", None)
        assert link.state is LinkState.ONLINE
        assert await link.request(S.EXPSTATUS, 0) == [0]
        await link.close()
        await server.close()

    run(main())


def test_a_reply_that_overtakes_its_echo_is_taken():
    def rig(peer, raw, addr):
        msg = json.loads(raw)
        peer.send(dumps(msg[0], "reply"), addr)  # the reply first ...
        peer.send_later(0.05, raw, addr)  # ... its echo after

    async def main():
        peer = await RawPeer.bind(rig)
        link = UdpLink(udp_spec(peer.port, echo_timeout=2))
        await link.connect()
        assert await link.request(S.EXPSTART, "ref", None) == ["reply"]
        assert link.state is LinkState.ONLINE
        await link.close()

    run(main())


def test_an_unrelated_message_while_awaiting_the_echo_does_not_fail_the_request():
    async def main():
        endpoint_box = {}

        def rig(peer, raw, addr):
            if raw.startswith(b"[1,"):
                peer.send(dumps(128, None, {}), addr)  # the rig asks for an Alyx token meanwhile
                peer.send_later(0.02, raw, addr)
                peer.send_later(0.04, dumps(1, {"status": 10}), addr)

        peer = await RawPeer.bind(rig)
        endpoint = await UdpEndpoint.client(f"udp://127.0.0.1:{peer.port}")
        endpoint_box["e"] = endpoint
        asked = asyncio.ensure_future(endpoint.on_event(S.ALYX))
        assert await endpoint.request(S.EXPINIT, {"exp_ref": "r"}, timeout=2) == [{"status": 10}]
        data, addr = await asyncio.wait_for(asked, 1)
        assert data == [None, {}] and addr[1] == peer.port
        # the unrelated message was echoed too, exactly
        assert dumps(128, None, {}) in peer.received
        endpoint.close()

    run(main())


def test_a_late_reply_is_never_handed_to_the_next_request():
    """The rig answers the first EXPSTATUS 0.5 s late (after the request timed out), then answers the
    second at once. The second request must get the second answer, not the stale first one."""
    answers = iter([101, 202])

    def rig(peer, raw, addr):
        if raw.startswith(b"[32"):
            peer.send(raw, addr)  # echo
            value = next(answers)
            peer.send_later(0.5 if value == 101 else 0.0, dumps(32, value), addr)

    async def main():
        peer = await RawPeer.bind(rig)
        link = UdpLink(udp_spec(peer.port, retry_after=5))  # no resend: one request, one answer
        await link.connect()
        with pytest.raises(RequestTimeout, match="echo received, no reply"):
            await link.request(S.EXPSTATUS, 0, timeout=0.2)
        assert link.state is LinkState.UNREACHABLE
        assert await link.request(S.EXPSTATUS, 0, timeout=3) == [202]
        conv = link.endpoint.conversation(link.endpoint.remote)
        assert conv.stats.late_dropped == 1
        await link.close()

    run(main())


def test_a_late_reply_does_not_hold_up_requests_with_another_event():
    def rig(peer, raw, addr):
        peer.send(raw, addr)
        if raw.startswith(b"[1,"):
            peer.send_later(0.05, dumps(1, {"status": 10}), addr)
        # EXPSTATUS is never answered

    async def main():
        peer = await RawPeer.bind(rig)
        link = UdpLink(udp_spec(peer.port, retry_after=5))
        await link.connect()
        with pytest.raises(RequestTimeout):
            await link.request(S.EXPSTATUS, 0, timeout=0.2)
        # answered within its own timeout, although the unanswered EXPSTATUS may still get a late reply
        assert await link.request(S.EXPINIT, {"exp_ref": "r"}, timeout=2) == [{"status": 10}]
        await link.close()

    run(main())


def test_a_lost_request_is_never_resent_to_a_rig_not_known_to_be_rigdeck():
    """An iblutil rig would run a resent request twice (and send two replies while it can await one
    echo): whatever the event, a request to a peer whose replies are plain is sent once."""
    seen = []

    def iblutil_like_rig(peer, raw, addr):
        seen.append(raw)
        if len(seen) == 1:
            return  # the first datagram is lost
        if raw.startswith(b"[32"):
            peer.send(raw, addr)
            peer.send(dumps(32, 20), addr)

    async def main():
        peer = await RawPeer.bind(iblutil_like_rig)
        link = UdpLink(udp_spec(peer.port, retry_after=0.05, echo_timeout=0.3, late_window=0.3))
        await link.connect()
        with pytest.raises(RequestTimeout, match="not resent: only a RigDeck rig is sent a request twice"):
            await link.request(S.EXPSTATUS, 0, timeout=3)
        assert seen == [b"[32, 0]"]
        assert await link.request(S.EXPSTATUS, 0, timeout=3) == [20]  # the link still works
        assert seen == [b"[32, 0]"] * 2 and link.endpoint.conversation(link.endpoint.remote).stats.retries == 0
        await link.close()

    run(main(), timeout=30)


def test_lost_datagrams_are_resent_to_a_rigdeck_rig_which_runs_each_request_once():
    """Once a rig's reply carried the RigDeck tail, every request to it carries an id and is resent until
    its reply comes; the rig runs an id once and answers its copies from a reply cache."""
    async def main():
        rig = EchoRig()
        server = await serve_udp(LOOPBACK, rig)
        relay = FaultyRelay(("127.0.0.1", server.port))
        relay_port = await relay.start()
        link = UdpLink(udp_spec(relay_port, retry_after=0.05))
        await link.connect()
        assert await link.request(S.EXPSTATUS, 0, timeout=3) == [0]  # plain: the rig's reply teaches
        conv = link.endpoint.conversation(link.endpoint.remote)
        assert conv.rigdeck_peer
        relay.to_rig.drop = 1.0  # the request is lost twice, then its reply twice
        asyncio.get_running_loop().call_later(0.12, setattr, relay.to_rig, "drop", 0.0)
        asyncio.get_running_loop().call_later(0.12, setattr, relay.to_console, "drop", 1.0)
        asyncio.get_running_loop().call_later(0.5, setattr, relay.to_console, "drop", 0.0)
        assert await link.request(S.EXPSTART, "ref", None, timeout=5) == ["ref", {"status": 20}]
        assert [name for name, _ in rig.calls] == ["EXPSTATUS", "EXPSTART"]  # run once
        rig_conv = next(iter(server.endpoint.conversations.values()))
        assert conv.stats.retries >= 3 and rig_conv.stats.replayed >= 1
        starts = [raw for raw in relay.rig_counts.log if raw.startswith(b'[2, "ref", null]')]
        assert len(set(starts)) == 1 and len(starts) == conv.stats.retries + 1  # one id, every attempt
        await link.close()
        relay.close()
        await server.close()

    run(main(), timeout=30)


def test_malformed_datagrams_never_stop_the_server(caplog):
    bad = [b"", b"x", b"\xff\xfe", b"hello", b"[32]", b"[3, null]", b"[256, null]", b"true", b"[true, 1]",
           b'{"event": 32}', b"[0, 5]", b'[0, "ValueError: peer report", 32]', b"[" * 5000, b"a" * 70_000]

    async def main():
        rig = EchoRig()
        server = await serve_udp(LOOPBACK, rig)
        peer = await RawPeer.bind()
        for raw in bad:
            if len(raw) > ibl_wire.MAX_DATAGRAM:
                continue  # the kernel refuses it; covered by the size test
            peer.send(raw, ("127.0.0.1", server.port))

        def reports():
            return [json.loads(r)[1] for r in peer.received if r.startswith(b"[0,")]

        # unknown / compound codes are echoed and then answered with an error report that says why
        await wait_until(lambda: any("compound event code 3" in r for r in reports())
                         and any("unknown event code 256" in r for r in reports()), what="both error reports")
        assert b"[3, null]" in peer.received
        # nothing was executed, and the server still answers
        assert rig.calls == []
        await assert_still_serves_then_close(server)

    with caplog.at_level(logging.WARNING):
        run(main())
    assert "malformed message" in caplog.text


def test_two_rigdeck_peers_never_ping_pong():
    async def main():
        a = UdpEndpoint("a")
        b = UdpEndpoint("b")
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: a, local_addr=("127.0.0.1", 0))
        await loop.create_datagram_endpoint(lambda: b, local_addr=("127.0.0.1", 0))
        got = []
        b.assign_callback(S.EXPSTATUS, lambda data, addr: got.append(data))
        a.send((S.EXPSTATUS, 20), addr=("127.0.0.1", b.port))  # unconfirmed: iblutil peers loop here
        conv_a = a.conversation(("127.0.0.1", b.port))
        await wait_until(lambda: got and b.conversation(("127.0.0.1", a.port)).stats.sent == 1, what="the echo")
        conv_b = b.conversation(("127.0.0.1", a.port))
        await asyncio.sleep(0.3)  # what must NOT happen: an echo of the echo, and so on
        assert got == [[20]]
        assert conv_a.stats.sent == 1 and conv_b.stats.sent == 1  # one message, one echo, then silence
        a.close()
        b.close()

    run(main())


def test_an_oversized_message_fails_at_once():
    async def main():
        peer = await RawPeer.bind()
        link = UdpLink(udp_spec(peer.port))
        await link.connect()
        with pytest.raises(ibl_wire.MessageTooLarge, match="over the UDP limit of 65507 bytes"):
            await link.request(S.EXPINIT, {"blob": "x" * 70_000})
        # at once: refused before anything was sent (so no waiting for an echo or a timeout)
        assert all(conv.stats.sent == 0 for conv in link.endpoint.conversations.values())
        await link.close()

    run(main())


def test_the_largest_message_a_datagram_carries_goes_through_whole_both_ways():
    """Sockets read at most MAX_DATAGRAM + 1 bytes (asyncio's default 256 KiB buffer costs an mmap per
    datagram): a message of exactly the UDP limit must still arrive whole, request and reply."""
    async def main():
        server = await serve_udp(LOOPBACK, Mirror())
        link = UdpLink(udp_spec(server.port))
        await link.connect()
        try:
            # (the mirrored reply has no room for the RigDeck tail: it is byte-identical to the request,
            # which only an EXPSTATUS reply may be)
            text = "x" * (ibl_wire.MAX_DATAGRAM - len(ibl_wire.encode(S.EXPSTATUS, "")))
            assert len(ibl_wire.encode(S.EXPSTATUS, text)) == ibl_wire.MAX_DATAGRAM
            assert await link.request(S.EXPSTATUS, text) == [text]
        finally:
            await link.close()
            await server.close()

    run(main())


def test_fan_out_to_many_rigs_is_concurrent():
    async def main():
        gate = asyncio.Event()
        rigs = [EchoRig(f"r{i}", gate=gate) for i in range(8)]
        servers = [await serve_udp(LOOPBACK, rig) for rig in rigs]
        links = [UdpLink(udp_spec(s.port, name=f"r{i}")) for i, s in enumerate(servers)]
        for link in links:
            await link.connect()
        fan_out = asyncio.gather(*(link.request(S.EXPINIT, {"exp_ref": "r"}, timeout=30) for link in links))
        # every rig has its request before any rig answers (one echo at a time, as iblutil does, never would)
        await wait_until(lambda: all(rig.calls for rig in rigs) or fan_out.done(), what="all 8 requests at the rigs")
        assert not fan_out.done()
        gate.set()
        assert await fan_out == [[{"status": 10, "exp_ref": "r"}]] * 8
        for link in links:
            await link.close()
        for s in servers:
            await s.close()

    run(main())


def test_allow_list_drops_other_peers(caplog):
    async def main():
        rig = EchoRig()
        server = await serve_udp(LOOPBACK, rig, {"allow": ["10.9.8.7"]})
        link = UdpLink(udp_spec(server.port))
        await link.connect()
        with pytest.raises(RequestTimeout):
            await link.request(S.EXPSTATUS, 0, timeout=0.3)
        assert rig.calls == [] and server.endpoint.refused >= 1
        await link.close()
        await server.close()
        allowed = await serve_udp(LOOPBACK, rig, {"allow": ["127.0.0.1"]})
        link = UdpLink(udp_spec(allowed.port))
        await link.connect()
        assert await link.request(S.EXPSTATUS, 0) == [0]
        await link.close()
        await allowed.close()

    with caplog.at_level(logging.WARNING):
        run(main())
    assert "not in the allow list" in caplog.text


def test_a_rig_that_is_down_is_unreachable_not_an_exception_at_connect():
    async def main():
        peer = await RawPeer.bind()
        port = peer.port
        peer.transport.close()
        link = UdpLink(udp_spec(port))
        await link.connect()  # never raises because the rig is down
        with pytest.raises(RequestTimeout):
            await link.request(S.EXPSTATUS, 0, timeout=0.3)
        assert link.state is LinkState.UNREACHABLE and link.last_error
        await link.close()

    run(main())


def test_server_keeps_peers_apart():
    async def main():
        rig = EchoRig(delay=0.05)
        server = await serve_udp(LOOPBACK, rig)
        links = [UdpLink(udp_spec(server.port, name=f"c{i}")) for i in range(3)]
        for link in links:
            await link.connect()
        out = await asyncio.gather(*(link.request(S.EXPSTATUS, 0) for link in links))
        assert out == [[0]] * 3 and len(server.endpoint.conversations) == 3
        for link in links:
            await link.close()
        await server.close()

    run(main())


def test_an_alyx_token_delivery_is_one_way_as_in_iblutil():
    """iblutil never answers a token delivery and fails when an answer it did not wait for arrives; so a
    RigDeck rig takes the token without answering, and a RigDeck link is done when the echo is back."""
    token = {"alice": {"token": "t"}}

    async def main():
        rig = EchoRig()
        server = await serve_udp(LOOPBACK, rig)
        peer = await RawPeer.bind()
        peer.send(dumps(128, "https://a", token), ("127.0.0.1", server.port))
        await wait_until(lambda: peer.received and rig.calls, what="the echo and the delivery")
        await asyncio.sleep(0.2)  # what must NOT happen: an answer after the echo
        assert peer.received == [dumps(128, "https://a", token)]  # the echo, and nothing else
        assert rig.calls == [("ALYX", ["https://a", token])]
        link = UdpLink(udp_spec(server.port))
        await link.connect()
        assert await link.request(S.ALYX, "https://a", token) == ["https://a", {}]
        # asking for a token (an empty dict) is a request like any other
        assert await link.request(S.ALYX, None, {}) == ["https://alyx.example.org", {"user": {"token": "s3cret"}}]
        await link.close()
        await server.close()

    run(main())
