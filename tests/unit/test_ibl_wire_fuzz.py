"""Hostile input to the iblutil wire: decoding never raises, whatever the bytes (JSON nested 10,000 deep,
integers up to 2**4000 and past Python's 4300-digit limit), and neither a rig nor a console shows a
traceback: each bad message is one rate-limited log line, answered with an error report by a rig."""

from __future__ import annotations

import asyncio
import json
import logging

from helpers import run, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st
from udp_helpers import EchoRig, RawPeer, assert_still_serves_then_close, udp_spec

from core.link import RequestTimeout
from core.protocol import ExpMessage as S
from core.protocol import RigAddress
from transports.ibl import wire as ibl_wire
from transports.ibl.tcp import serve_tcp
from transports.ibl.udp import UdpLink, serve_udp

DEEP = 10_000

#: what a hostile peer sends: deep nesting (balanced and not), deep nesting inside a message, huge integers
HOSTILE = [
    b"[" * DEEP + b"]" * DEEP,
    b"[" * DEEP,
    b"[32, " + b"{\"a\": " * DEEP + b"1" + b"}" * DEEP + b"]",
    b"[1, " + b"[" * 65 + b"]" * 65 + b"]",
    f"[32, {2 ** 4000}]".encode(),
    b"[32, " + b"9" * 5000 + b"]",  # over the 4300-digit limit of int()
    f"[{2 ** 4000}, 0]".encode(),
]


def _no_tracebacks(caplog) -> None:
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert tracebacks == [], [r.getMessage() for r in tracebacks]


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_decode_never_raises_on_any_bytes(raw):
    assert isinstance(ibl_wire.decode(raw), ibl_wire.Message | ibl_wire.ErrorReport | ibl_wire.Malformed)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=DEEP), st.sampled_from([b"[", b"{\"k\": "]))
def test_decode_never_raises_at_any_nesting_depth(depth, opener):
    closer = b"]" if opener == b"[" else b"}"
    raw = b"[32, " + opener * depth + b"0" + closer * depth + b"]"
    decoded = ibl_wire.decode(raw)
    if depth + 1 > ibl_wire.MAX_DEPTH:
        assert isinstance(decoded, ibl_wire.Malformed) and "nested deeper" in decoded.reason
    else:
        assert isinstance(decoded, ibl_wire.Message)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=-(2 ** 4000), max_value=2 ** 4000))
def test_integers_up_to_2_to_the_4000_decode(value):
    decoded = ibl_wire.decode(json.dumps([32, value]).encode())
    assert isinstance(decoded, ibl_wire.Message) and decoded.data == [value]


def test_nesting_depth_ignores_brackets_inside_strings():
    assert ibl_wire.nesting_depth(b'[1, {"a": [2, "]]\\"[[[["]}]') == 3
    assert ibl_wire.nesting_depth(nested(DEEP)) == DEEP


def test_a_rig_answers_hostile_datagrams_with_error_reports_and_no_traceback(caplog):
    async def main():
        rig = EchoRig()
        server = await serve_udp(RigAddress("udp", "127.0.0.1", 0), rig)
        peer = await RawPeer.bind()
        for raw in HOSTILE:
            peer.send(raw, ("127.0.0.1", server.port))
        await wait_until(lambda: sum(r.startswith(b"[0,") for r in peer.received) >= len(HOSTILE) - 2)
        reports = [json.loads(r)[1] for r in peer.received if r.startswith(b"[0,")]
        assert any("nested deeper than" in text for text in reports)
        assert any("4300 digits" in text for text in reports)
        # the 2**4000 status is a well-formed message: executed, like any other
        assert [name for name, _ in rig.calls] == ["EXPSTATUS"]
        await assert_still_serves_then_close(server)

    with caplog.at_level(logging.DEBUG):
        run(main())
    _no_tracebacks(caplog)


def test_a_tcp_rig_survives_hostile_messages_without_a_traceback(caplog):
    async def main():
        rig = EchoRig()
        server = await serve_tcp(RigAddress("tcp", "127.0.0.1", 0), rig, {"write_gap": 0})
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for raw in HOSTILE[:1] + HOSTILE[2:]:  # (an unclosed array would hold the stream open)
            writer.write(raw)
        writer.write(b"[32, 20]")  # (not [32, 0]: that is the echo the rig awaits of its last reply)
        await writer.drain()
        got = bytearray()

        async def read_more() -> None:
            got.extend(await reader.read(65536))

        while b"nested deeper than" not in got or [name for name, _ in rig.calls] != ["EXPSTATUS"] * 2:
            await asyncio.wait_for(read_more(), 5)
        writer.close()
        await server.close()

    with caplog.at_level(logging.DEBUG):
        run(main())
    _no_tracebacks(caplog)


def test_a_console_facing_a_hostile_rig_fails_the_request_cleanly(caplog):
    """The rig echoes, then answers with JSON nested 10,000 deep: one log line, no traceback, a timeout."""
    def hostile_rig(peer, raw, addr):
        if raw.startswith(b"[32"):
            peer.send(raw, addr)
            peer.send(b"[32, " + nested(DEEP) + b"]", addr)

    async def main():
        peer = await RawPeer.bind(hostile_rig)
        link = UdpLink(udp_spec(peer.port, retry_after=5))
        await link.connect()
        try:
            await link.request(S.EXPSTATUS, 0, timeout=0.5)
        except RequestTimeout:
            pass
        else:
            raise AssertionError("a nested reply was taken")
        await link.close()

    with caplog.at_level(logging.DEBUG):
        run(main())
    _no_tracebacks(caplog)
    assert "nested deeper than" in caplog.text
