"""Datagrams that arrive twice: no echo is ever echoed again (no ping-pong), no request runs twice, and
a reply is only taken for the request it answers; between RigDeck peers and, as far as the iblutil wire
allows, with the tagged exchange off (as with an iblutil peer)."""

from __future__ import annotations

import asyncio

from helpers import run, wait_until
from udp_faults import Faults, FaultyRelay
from udp_helpers import EchoRig, dumps, udp_spec

from core.protocol import ExpMessage as S
from core.protocol import RigAddress
from transports.ibl import wire as ibl_wire
from transports.ibl.conversation import Conversation, Tuning
from transports.ibl.udp import UdpLink, serve_udp

LOOPBACK = RigAddress("udp", "127.0.0.1", 0)
EVERY_DATAGRAM_TWICE = Faults(duplicate=1.0)


async def _quiet(relay: FaultyRelay, settle: float = 0.3) -> tuple[int, int]:
    """The relay's counts once traffic has stopped: after ``settle`` s, then unchanged for as long again
    (a ping-pong would add thousands of datagrams in that time)."""
    await asyncio.sleep(settle)
    before = (relay.rig_counts.received, relay.console_counts.received)
    await asyncio.sleep(settle)
    after = (relay.rig_counts.received, relay.console_counts.received)
    assert after == before, f"still talking: {before} -> {after}"
    return after


async def _session_through(relay_faults: Faults, tagged: bool) -> tuple[EchoRig, list, FaultyRelay, list]:
    rig = EchoRig()
    server = await serve_udp(LOOPBACK, rig)
    relay = FaultyRelay(("127.0.0.1", server.port), to_rig=relay_faults, to_console=relay_faults)
    link = UdpLink(udp_spec(await relay.start()))
    await link.connect()
    if not tagged:  # both ends as plain as an iblutil peer (the copy rules stay)
        link.endpoint.rigdeck_tags = server.endpoint.rigdeck_tags = False
    try:
        replies = [await link.request(S.EXPSTATUS, 0, timeout=3)]
        for n in (1, 2, 3):
            replies.append(await link.request(S.EXPINIT, {"exp_ref": f"2026-11-30_{n}_pp"}, timeout=3))
        counts = [await _quiet(relay)]
        convs = [link.endpoint.conversation(link.endpoint.remote), *server.endpoint.conversations.values()]
        return rig, replies, relay, [counts, convs]
    finally:
        await link.close()
        relay.close()
        await server.close()


def test_every_datagram_twice_between_rigdeck_peers_runs_each_request_once_and_then_falls_silent():
    rig, replies, relay, (_, (console, rig_side)) = run(_session_through(EVERY_DATAGRAM_TWICE, tagged=True))
    assert replies == [[0]] + [[{"status": 10, "exp_ref": f"2026-11-30_{n}_pp"}] for n in (1, 2, 3)]
    assert rig.calls == [("EXPSTATUS", [0])] + [("EXPINIT", [{"exp_ref": f"2026-11-30_{n}_pp"}]) for n in (1, 2, 3)]
    assert console.rigdeck_peer  # learnt from the first reply: the EXPINITs went tagged
    assert rig_side.stats.replayed == 3 and console.stats.duplicates > 0
    # to the rig: each request and its reply's echo (+1: the first, plain, status took a copy of its echo
    # for its reply, which the iblutil wire cannot tell apart); back: echo and reply, and for each copy
    # of a tagged request the echo and cached reply again
    assert relay.rig_counts.received <= 2 * 4 + 1 and relay.console_counts.received == 2 + 3 * 4


def test_every_datagram_twice_with_plain_iblutil_messages_falls_silent_and_replies_match():
    rig, replies, relay, (_, (console, rig_side)) = run(_session_through(EVERY_DATAGRAM_TWICE, tagged=False))
    assert replies == [[0]] + [[{"status": 10, "exp_ref": f"2026-11-30_{n}_pp"}] for n in (1, 2, 3)]
    assert [name for name, _ in rig.calls] == ["EXPSTATUS"] + ["EXPINIT"] * 3  # the copies arrived together
    assert not console.rigdeck_peer
    assert relay.rig_counts.received == 2 * 4 and relay.console_counts.received == 2 * 4


def test_a_copy_of_our_own_message_is_never_echoed_or_handled():
    """Sans I/O: whatever comes back twice (our request, our reply, a peer's message) is echoed at most once."""
    async def main():
        sent: list[bytes] = []
        handled: list = []
        conv = Conversation("peer", send=sent.append, on_message=handled.append, tuning=Tuning(echo_timeout=5),
                            rigdeck_wire=True)
        request = asyncio.ensure_future(conv.request(S.EXPINIT, [{"exp_ref": "r"}], timeout=5))
        await asyncio.sleep(0)
        (ours,) = sent
        conv.receive(ours)  # its echo
        conv.receive(ours)  # the echo again: not a new message, not the reply (EXPINIT replies differ)
        reply = dumps(S.EXPINIT, {"status": 10, "exp_ref": "r"})
        conv.receive(reply)
        conv.receive(reply)  # the reply again, before anything moved on: a copy
        assert await request == [{"status": 10, "exp_ref": "r"}]
        assert sent == [ours, reply] and handled == []
        conv.receive(reply)  # and once more after the request is done: still a copy, dropped
        assert sent == [ours, reply] and handled == [] and conv.stats.duplicates == 3

    run(main())


def test_a_tagged_request_seen_again_is_answered_from_the_cache_and_an_older_one_is_dropped():
    async def main():
        sent: list[bytes] = []
        ran: list = []
        rig = Conversation("console", send=sent.append, on_message=ran.append, rigdeck_wire=True)
        first = ibl_wire.with_tail(dumps(S.EXPINIT, {"exp_ref": "a"}), "q", "0badc0de.1")
        second = ibl_wire.with_tail(dumps(S.EXPINIT, {"exp_ref": "b"}), "q", "0badc0de.2")
        rig.receive(first)
        rig.reply(ran[0], dumps(S.EXPINIT, {"status": 10}))
        reply = ibl_wire.with_tail(dumps(S.EXPINIT, {"status": 10}), "r", "0badc0de.1")
        assert sent == [first, reply]
        rig.receive(first)  # a resend (or a copy): echo and reply again, not run again
        assert sent == [first, reply, first, reply] and len(ran) == 1
        rig.receive(second)
        rig.receive(first)  # a copy of the first, late, after the second ran: dropped
        assert [m.data for m in ran] == [[{"exp_ref": "a"}], [{"exp_ref": "b"}]]
        assert sent[-1] == second and rig.stats.replayed == 1 and rig.stats.stale == 1

    run(main())


def test_an_iblutil_console_repeating_a_request_is_heard_each_time_but_a_copy_is_not():
    """An iblutil console polls with identical bytes, but only after it has echoed the previous reply:
    that request is new. The same bytes again before anything moved on are a copy (not run, not echoed)."""
    from udp_helpers import RawPeer

    async def main():
        rig = EchoRig()
        server = await serve_udp(LOOPBACK, rig)
        address = ("127.0.0.1", server.port)

        def iblutil_console(peer, raw, addr):
            if raw.startswith(b"[32, 0]\t"):  # the rig's reply: echoed, as iblutil does
                peer.send(raw, addr)

        console = await RawPeer.bind(iblutil_console)

        def rig_side():
            return server.endpoint.conversations[("127.0.0.1", console.port)]
        for n in range(1, 4):
            console.send(b"[32, 20]", address)
            await wait_until(lambda n=n: console.received.count(b"[32, 0]\t\n") == n)
            await wait_until(lambda: rig_side().echoes_due == 0)  # (its echo of the reply has arrived)
        assert len(rig.calls) == 3
        console.on_datagram = None  # from now on the replies are not echoed: nothing moves on
        console.send(b"[32, 30]", address)
        console.send(b"[32, 30]", address)  # a copy
        await wait_until(lambda: len(rig.calls) == 4)
        await asyncio.sleep(0.2)  # a short look for what must NOT happen: the copy run, or a second echo
        assert len(rig.calls) == 4 and console.received.count(b"[32, 30]") == 1
        await server.close()

    run(main())
