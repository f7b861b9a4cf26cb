"""iblutil's TCP variant: messages cut from an unframed stream, one conversation per connection."""

import asyncio

import pytest
from udp_helpers import EchoRig, run, udp_spec

from core.link import LinkState
from core.protocol import ExpMessage, RigAddress
from transports import registry
from transports.ibl_tcp import StreamError, StreamSplitter, TcpLink, serve_tcp

LOOPBACK = RigAddress("tcp", "127.0.0.1", 0)


def test_concatenated_and_split_messages_are_cut_exactly():
    s = StreamSplitter()
    assert s.feed(b"[32, 0][32, 10]") == [b"[32, 0]", b"[32, 10]"]  # iblutil fails on this one
    assert s.feed(b'[64, 0, {"subject": "K') == []
    assert s.feed(b'S001"}]  \n[1,') == [b'[64, 0, {"subject": "KS001"}]']
    assert s.feed(b' {"a": [1, 2]}]') == [b'[1, {"a": [1, 2]}]']
    assert s.feed("[2, \"caf\u00e9\"]".encode()[:9]) == []  # a split multi-byte character
    assert s.feed("[2, \"caf\u00e9\"]".encode()[9:]) == ["[2, \"caf\u00e9\"]".encode()]


def test_garbage_in_the_stream_is_an_error():
    with pytest.raises(StreamError, match="not JSON"):
        StreamSplitter().feed(b"hello world, this is not json at all")
    with pytest.raises(StreamError, match="not UTF-8"):
        StreamSplitter().feed(b"[1, \xff\xfe]")


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
