"""The robustness bullets of the iblutil UDP transport that test_udp.py does not cover on its own:
a server whose reply is never echoed, a client fed garbage mid-request, datagrams over the IPv4 limit
(possible over IPv6), and the bounds of the resend backoff."""

import asyncio
import json
import logging
import socket

import pytest
from helpers import run, wait_until
from udp_helpers import EchoRig, RawPeer, assert_still_serves_then_close, dumps, udp_spec

from core.config import parse_rig
from core.link import LinkState, RequestTimeout
from core.protocol import ExpMessage, RigAddress
from transports.ibl import wire as ibl_wire
from transports.ibl.conversation import Conversation, Tuning
from transports.ibl.udp import UdpEndpoint, UdpLink, serve_udp
from transports.registry import TRANSPORTS

S = ExpMessage
LOOPBACK = RigAddress("udp", "127.0.0.1", 0)


def test_a_reply_whose_echo_is_lost_never_stops_the_server(caplog):
    """iblutil's server closes its only socket when a client does not echo a reply; ours keeps serving."""

    async def main():
        rig = EchoRig()
        server = await serve_udp(LOOPBACK, rig, {"echo_timeout": 0.1})
        mute = await RawPeer.bind()  # takes replies, never echoes them
        for status in (10, 20, 30):  # (one byte-identical request three times would be read as copies)
            mute.send(dumps(S.EXPSTATUS, status), ("127.0.0.1", server.port))
        # each request echoed and answered once ...
        await wait_until(lambda: len(mute.received) == 6, what="three echoes and three replies")
        await asyncio.sleep(0.3)  # ... and what must NOT happen: a resend once the 0.1 s echo timeout is past
        assert [r for r in mute.received if r != b"[32, 0]\t\n"] == [b"[32, 10]", b"[32, 20]", b"[32, 30]"]
        assert mute.received.count(b"[32, 0]\t\n") == 3
        assert server.endpoint.is_connected
        link = UdpLink(udp_spec(server.port))
        await link.connect()
        assert await link.request(S.EXPINIT, {"exp_ref": "r"}) == [{"status": 10, "exp_ref": "r"}]
        # and the mute peer is still served too (a request it never sent before: not read as a copy)
        mute.send(b"[32, 40]", ("127.0.0.1", server.port))
        # (the whitespace tail marks a RigDeck rig's reply)
        await wait_until(lambda: mute.received[-1] == b"[32, 10]\t\n", what="the mute peer's answer")
        await link.close()
        await server.close()

    with caplog.at_level(logging.WARNING):
        run(main())


def test_garbage_arriving_during_a_request_does_not_fail_it(caplog):
    garbage = [b"", b"x", b"\xff\xfe", b"hello", b"[3, null]", b"[256, 1]", b"true", b"[true, 1]", b"{}", b"[32]",
               b'[0, "ValueError: unrelated report", 8]', b"[" * 3000]

    def rig(peer, raw, addr):
        if raw.startswith(b"[2,"):
            for bad in garbage:
                peer.send(bad, addr)
            peer.send_later(0.05, raw, addr)  # the echo ...
            peer.send_later(0.1, dumps(2, "ref", {"status": 20}), addr)  # ... and the reply

    async def main():
        peer = await RawPeer.bind(rig)
        link = UdpLink(udp_spec(peer.port))
        await link.connect()
        assert await link.request(S.EXPSTART, "ref", None, timeout=3) == ["ref", {"status": 20}]
        assert link.state is LinkState.ONLINE
        # a client echoes what iblutil would echo, but never answers garbage with error reports of its own
        await wait_until(lambda: b"hello" in peer.received, what="the echo of 'hello'")
        assert not [r for r in peer.received if r.startswith(b"[0,")]
        assert b"" not in peer.received and b"\xff\xfe" not in peer.received
        conv = link.endpoint.conversation(link.endpoint.remote)
        assert conv.stats.malformed >= 8
        await link.close()

    with caplog.at_level(logging.WARNING):
        run(main())
    assert "malformed message" in caplog.text and "unrelated report" in caplog.text


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_a_datagram_over_the_ipv4_limit_is_dropped_and_logged(caplog):
    """Over IPv6 a peer can send 65,527 bytes: more than any iblutil peer can, so the server drops it."""

    async def main():
        rig = EchoRig()
        server = await serve_udp(RigAddress("udp", "::1", 0), rig)
        big = json.dumps([32, "x" * (ibl_wire.MAX_DATAGRAM + 10)]).encode()
        assert len(big) > ibl_wire.MAX_DATAGRAM
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as raw:
            raw.sendto(big, ("::1", server.port))
        await wait_until(lambda: "over 65507 bytes" in caplog.text, what="the drop to be logged")
        assert rig.calls == []
        await assert_still_serves_then_close(server, parse_rig("rig6", f"udp://[::1]:{server.port}", TRANSPORTS))

    with caplog.at_level(logging.WARNING):
        run(main())
    assert "over 65507 bytes" in caplog.text


def test_resends_back_off_and_the_backoff_is_bounded():
    """EXPSTATUS to a RigDeck rig that never answers: resent with doubling intervals, never more often than the
    first interval, never less often than the cap; the request fails alone at its deadline.

    The intervals checked are the ones the conversation plans for each attempt (read right after each
    send), not gaps between arrivals, which a loaded machine stretches."""
    planned = []

    async def main():
        loop = asyncio.get_running_loop()
        tuning = Tuning(retry_after=0.05, max_retry_interval=0.2)

        def sent(raw):
            # the attempt's end is set right after its send, in the same step: read it on the next turn
            sent_at = loop.time()
            loop.call_soon(lambda: planned.append(round(conv.pending.attempt_ends - sent_at, 3)))

        conv = Conversation("rig", send=sent, on_message=lambda msg: None, tuning=tuning, rigdeck_wire=True)
        conv.rigdeck_peer = True  # (only a RigDeck rig is sent resends)
        start = loop.time()
        with pytest.raises(RequestTimeout, match=r"no reply to EXPSTATUS within 1.5 s \(no echo; \d+ attempts\)"):
            await conv.request(S.EXPSTATUS, [0], timeout=1.5)
        assert loop.time() - start >= 1.5  # never gives up early

        peer = await RawPeer.bind()  # and the endpoint stays usable after a request timed out
        endpoint = await UdpEndpoint.client(f"udp://127.0.0.1:{peer.port}", tuning=tuning)
        with pytest.raises(RequestTimeout):
            await endpoint.request(S.EXPSTATUS, 0, timeout=0.3)
        assert endpoint.is_connected  # iblutil closes itself here
        endpoint.close()

    run(main())
    intervals = planned[:-1]  # the last attempt ends at the request's deadline
    # 0.05, 0.1, 0.2, 0.2, ...: it backs off, up to the cap and no further (a fixed 0.05 s would send 30)
    expected = [min(0.05 * 2 ** k, 0.2) for k in range(len(intervals))]
    assert len(intervals) >= 2 and intervals == pytest.approx(expected, abs=0.002), planned
    assert len(planned) <= 9, planned


def test_the_echo_is_the_exact_bytes_received_and_comes_before_the_reply():
    """iblutil compares echoes byte for byte: a compact message comes back compact, the reply is encoded
    like json.dumps; error reports are never echoed."""

    async def main():
        server = await serve_udp(LOOPBACK, EchoRig())
        peer = await RawPeer.bind()
        peer.send(b'[64,0,{"subject":"KS001"}]', ("127.0.0.1", server.port))
        peer.send(b'[0, "ValueError: a report", 32]', ("127.0.0.1", server.port))
        await wait_until(lambda: len(peer.received) >= 2, what="the echo and the reply")
        assert peer.received == [b'[64,0,{"subject":"KS001"}]',
                                 b'[64, 0, {"exp_ref": "2026-11-22_1_KS001", "main_sync": true}]\t\n']
        await server.close()

    run(main())


def test_a_reply_arriving_as_its_attempt_ends_is_not_lost():
    """An attempt's time can run out in the same loop turn as the reply comes in (the timer fires, then
    the datagram is read, before the request resumes): the reply is kept and returned, not dropped."""

    async def main():
        sent: list[bytes] = []
        conv = Conversation("rig", send=sent.append, on_message=lambda msg: None, tuning=Tuning(echo_timeout=5))
        request = asyncio.ensure_future(conv.request(S.EXPSTART, ["2026-11-23_1_KS001", None], timeout=10))
        await asyncio.sleep(0)
        conv.receive(sent[0])  # its echo
        conv.pending.attempt_ends = 0.0  # the attempt's time is up: the timer fires ...
        conv._attempt_timer()
        conv.receive(b'[2, "2026-11-23_1_KS001", {"status": 20}]')  # ... and the reply is read, same turn
        assert await asyncio.wait_for(request, 1) == ["2026-11-23_1_KS001", {"status": 20}]
        assert sent == [b'[2, "2026-11-23_1_KS001", null]', b'[2, "2026-11-23_1_KS001", {"status": 20}]']
        assert conv.stats.retries == 0 and not conv._late  # answered once: nothing resent, nothing late

    run(main())


def test_a_client_reads_waiting_datagrams_in_one_turn_but_a_flood_cannot_hold_the_loop():
    """A client reads every datagram waiting when it wakes (a request's echo and reply come together),
    but at most READ_BATCH more, so a rig flooding its console leaves the console's other work a turn."""
    from transports.ibl.udp import READ_BATCH

    async def main():
        rig = await RawPeer.bind()
        client = await UdpEndpoint.client(f"udp://127.0.0.1:{rig.port}")
        handled: list[int] = []
        at_first_turn_end: list[int] = []

        def on_status(data, addr):
            if not handled:  # the first one: see how many were handled when the loop next runs other work
                asyncio.get_running_loop().call_soon(lambda: at_first_turn_end.append(len(handled)))
            handled.append(data[0])

        client.assign_callback(S.EXPSTATUS, on_status)
        flood = 3 * READ_BATCH
        for i in range(flood):  # all sent before the client's loop gets to read any
            rig.transport.sendto(dumps(S.EXPSTATUS, i), ("127.0.0.1", client.port))
        await wait_until(lambda: len(handled) == flood)
        assert handled == list(range(flood))  # every one, in order
        assert at_first_turn_end == [READ_BATCH + 1]  # one turn took a batch, not the whole flood
        client.close()
        rig.transport.close()

    run(main())
