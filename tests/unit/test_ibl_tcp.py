"""iblutil's TCP variant: messages cut from an unframed stream, one conversation per connection."""

import asyncio
import json

import pytest
from helpers import run
from hypothesis import given, settings
from hypothesis import strategies as st
from udp_helpers import EchoRig, Mirror, udp_spec

from core.link import LinkState
from core.protocol import ExpMessage, RigAddress
from transports import registry
from transports.ibl.tcp import StreamError, StreamSplitter, TcpLink, serve_tcp

LOOPBACK = RigAddress("tcp", "127.0.0.1", 0)


def test_concatenated_and_split_messages_are_cut_exactly():
    s = StreamSplitter()
    assert s.feed(b"[32, 0][32, 10]") == [b"[32, 0]", b"[32, 10]"]  # iblutil fails on this one
    assert s.feed(b'[64, 0, {"subject": "K') == []
    assert s.feed(b'S001"}]  \n[1,') == [b'[64, 0, {"subject": "KS001"}]']
    assert s.feed(b' {"a": [1, 2]}]') == [b'[1, {"a": [1, 2]}]']
    assert s.feed("[2, \"caf\u00e9\"]".encode()[:9]) == []  # a split multi-byte character
    assert s.feed("[2, \"caf\u00e9\"]".encode()[9:]) == ["[2, \"caf\u00e9\"]".encode()]


def test_splits_that_a_json_parser_would_misjudge():
    whole = b'[64, -Infinity, {"a]\\"[": "\\\\", "b": NaN}]'
    for i in range(1, len(whole)):  # cut anywhere: inside Infinity, a string, an escape
        s = StreamSplitter()
        assert s.feed(whole[:i]) == [] and s.feed(whole[i:]) == [whole], i
    assert json.loads(whole)[2]["a]\"["] == "\\"  # the key holds brackets and a quote, the value a backslash


def test_malformed_messages_and_junk_are_cut_out_and_the_stream_goes_on():
    s = StreamSplitter()
    # a complete but invalid message is handed on whole (it gets an error report), the next one is fine
    assert s.feed(b"[32, x][32, 0]") == [b"[32, x]", b"[32, 0]"]
    # a stray bracket, an HTTP request, invalid UTF-8 inside a message: each its own piece
    assert s.feed(b"] [32, 10]") == [b"]", b"[32, 10]"]
    assert s.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n[1, {}]") == [b"GET / HTTP/1.1\r\nHost: x", b"[1, {}]"]
    assert s.feed(b"[1, \"\xff\xfe\"][2, null, null]") == [b'[1, "\xff\xfe"]', b"[2, null, null]"]
    assert s.feed(b"  \n ") == [] and s.feed(b"[4, []]") == [b"[4, []]"]


def test_a_message_over_the_limit_is_an_error():
    s = StreamSplitter(limit=100)
    assert s.feed(b'[1, "' + b"x" * 50) == []
    with pytest.raises(StreamError, match="over 100 bytes"):
        s.feed(b"x" * 60)


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(alphabet=st.sampled_from('ab[]{}"\\ \u00e9\u4e2d')),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(st.lists(_values, min_size=1, max_size=3), min_size=1, max_size=5),
       gaps=st.lists(st.sampled_from(["", " ", "\n", "\r\n"]), min_size=5, max_size=5),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_any_stream_of_messages_cut_anywhere_comes_out_exactly(messages, gaps, cuts):
    raws = [json.dumps([32, *m], ensure_ascii=False).encode() for m in messages]
    stream = b"".join(raw + gaps[i % len(gaps)].encode() for i, raw in enumerate(raws))
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    s = StreamSplitter()
    out = []
    for a, b in zip(points, points[1:], strict=False):
        out += s.feed(stream[a:b])
    assert out == raws


def test_registry_points_tcp_at_the_tcp_link():
    assert isinstance(registry.make_link(udp_spec(11001, scheme="tcp")), TcpLink)
    assert registry.server_factory("tcp") is serve_tcp


def test_link_and_server_exchange_over_tcp_with_two_clients():
    async def main():
        rig = EchoRig()
        server = await serve_tcp(LOOPBACK, rig)
        links = [TcpLink(udp_spec(server.port, name=f"c{i}", scheme="tcp")) for i in range(2)]
        for link in links:
            await link.connect()
            assert link.state is LinkState.ONLINE
        out = await asyncio.gather(*(link.request(ExpMessage.EXPINIT, {"exp_ref": f"r{i}"})
                                     for i, link in enumerate(links)))
        assert out == [[{"status": 10, "exp_ref": "r0"}], [{"status": 10, "exp_ref": "r1"}]]
        assert await links[0].request(ExpMessage.EXPSTATUS, 0) == [10]
        for link in links:
            await link.close()
        await server.close()

    run(main())


def test_a_message_larger_than_one_read_arrives_whole():
    """Connections read at most 64 KiB at a time: a bigger message is put together from several reads."""
    async def main():
        server = await serve_tcp(LOOPBACK, Mirror())
        link = TcpLink(udp_spec(server.port, scheme="tcp"))
        await link.connect()
        text = "\u00e9x" * 100_000  # 700 kB on the wire (ASCII-escaped): about eleven reads each way
        assert await link.request(ExpMessage.EXPINFO, text) == [text]
        await link.close()
        await server.close()

    run(main())


def test_back_to_back_messages_from_a_raw_client_are_each_echoed_and_answered():
    async def main():
        server = await serve_tcp(LOOPBACK, EchoRig())
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"[32, 0][32, 10]")
        await writer.drain()
        got = b""
        while got.count(b"]") < 4:
            got += await asyncio.wait_for(reader.read(1000), 2)
        assert got.count(b"[32, 0]") >= 2 and got.count(b"[32, 10]") == 1  # 2 echoes + 2 replies of status 0
        writer.close()
        await server.close()

    run(main())


def test_a_tcp_rig_that_is_down_is_unreachable():
    async def main():
        link = TcpLink(udp_spec(1, scheme="tcp"))
        await link.connect()
        assert link.state is LinkState.UNREACHABLE and "cannot connect" in link.last_error
        await link.close()

    run(main())


def test_writes_on_a_connection_are_spaced_so_iblutil_reads_them_apart():
    """An echo and the reply behind it must not reach an iblutil peer in one read (it cannot split them)."""

    async def main():
        server = await serve_tcp(LOOPBACK, EchoRig(), {"write_gap": 0.1})
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"[32, 10]")
        # two reads, two messages: without the gap the echo and the reply go out in one loop step and
        # arrive in one read (timing the gap instead would fail whenever a loaded machine stalls the loop)
        echo = await asyncio.wait_for(reader.read(1000), 10)
        reply = await asyncio.wait_for(reader.read(1000), 10)
        assert (echo, reply) == (b"[32, 10]", b"[32, 0]")
        writer.close()
        await server.close()

    run(main())


def test_a_peer_that_never_reads_is_paused_then_dropped_once(caplog):
    """Past ``max_backlog`` bytes owed to a peer, the endpoint stops reading from it; still stalled after
    ``stall_timeout`` seconds, the peer is dropped with one warning, and others are served throughout."""
    import logging
    import socket

    from transports.ibl.tcp import TcpEndpoint

    async def main():
        endpoint = TcpEndpoint("rig tcp", service=EchoRig(), write_gap=0, max_backlog=64 * 1024,
                               stall_timeout=0.3)
        server = await asyncio.start_server(endpoint.run_connection, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        mute = socket.create_connection(("127.0.0.1", port))
        mute.setblocking(False)
        mute.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # it never reads: keep its buffers small
        message = json.dumps([32, "x" * 30_000]).encode()
        written = 0
        loop = asyncio.get_running_loop()
        while not endpoint.dropped:
            try:
                written += await loop.sock_sendall(mute, message) or len(message)
            except (BrokenPipeError, ConnectionResetError):
                break
            assert written < 64 * 1024 * 1024, "the endpoint kept reading"
        assert endpoint.dropped == 1 and not endpoint.writers
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # the next peer is served
        writer.write(b"[32, 20]")
        echo_and_reply = b""
        while echo_and_reply != b"[32, 20][32, 0]":
            echo_and_reply += await asyncio.wait_for(reader.read(100), 5)
        writer.close()
        mute.close()
        endpoint.close()
        server.close()

    with caplog.at_level(logging.WARNING):
        run(main(), timeout=60)
    drops = [r for r in caplog.records if "dropping" in r.getMessage()]
    assert len(drops) == 1 and "has not read" in drops[0].getMessage()
