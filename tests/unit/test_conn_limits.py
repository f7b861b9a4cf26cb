"""Connection limits of every stream listener, on real servers on loopback: a cap per listener (logged once),
a handshake timeout that closes a silent connection, and no timeout for a quiet client that said hello."""

import asyncio
import logging

import pytest
from helpers import run, wait_until
from rpc_helpers import Target
from sio_helpers import served
from udp_helpers import EchoRig
from zmq_helpers import make_link

from core.protocol import ExpMessage, RigAddress
from transports.conn_limits import ConnectionGuard
from transports.ibl.tcp import serve_tcp
from transports.rpc.server import RpcServer
from transports.rpc.sync_struct import Notifier, Publisher, Subscriber
from transports.rpc.wire import RPC_BANNER
from transports.sio.relay import SioRelay
from transports.zmq.server import serve_zmq

LOOPBACK = "127.0.0.1"


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True once the server has closed the connection (EOF or reset); waits for it."""
    try:
        while await reader.read(4096):
            pass
    except ConnectionError:
        pass
    return True


async def received(reader: asyncio.StreamReader, wanted: bytes) -> bool:
    """True once ``wanted`` has arrived on ``reader`` (whatever came before it)."""
    seen = b""
    while wanted not in seen:
        chunk = await reader.read(4096)
        assert chunk, f"closed before {wanted!r} came"
        seen += chunk
    return True


def is_open(writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> bool:
    return not reader.at_eof() and not writer.is_closing() and reader.exception() is None


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(LOOPBACK, port)


def test_tcp_listener_refuses_connections_over_its_cap_and_says_so_once(caplog):
    async def main():
        rig = EchoRig()
        server = await serve_tcp(RigAddress("tcp", LOOPBACK, 0), rig, {"max_connections": 3})
        try:
            kept = [await connect(server.port) for _ in range(3)]
            for _, writer in kept:
                writer.write(b" ")  # a byte: past the handshake
            await wait_until(lambda: server.guard.open == 3)
            extra = [await connect(server.port) for _ in range(20)]
            for reader, _ in extra:  # each closed on arrival
                assert await asyncio.wait_for(closed_by_peer(reader), 5)
            assert server.guard.refused == 20 and server.guard.open == 3
            assert all(is_open(w, r) for r, w in kept)
            kept[0][1].close()  # one leaves: a newcomer is taken again
            await wait_until(lambda: server.guard.open == 2)
            reader, writer = await connect(server.port)
            writer.write(b'[32, 0]')
            assert (await asyncio.wait_for(reader.read(7), 5)) == b"[32, 0]"  # echoed: it is served
            writer.close()
            for _, w in kept[1:]:
                w.close()
        finally:
            await server.close()

    with caplog.at_level(logging.INFO, logger="transports.conn_limits"):
        run(main())
    full = [r for r in caplog.records if "max_connections" in r.getMessage() and r.levelno == logging.WARNING]
    assert len(full) == 1  # 20 refusals, one line


def test_tcp_silent_connection_is_closed_after_the_handshake_timeout_a_quiet_console_is_not():
    async def main():
        server = await serve_tcp(RigAddress("tcp", LOOPBACK, 0), EchoRig(), {"handshake_timeout": 0.3})
        try:
            silent_reader, _ = await connect(server.port)
            console_reader, console = await connect(server.port)
            console.write(b"[32, 0]")  # said something once, then stays quiet
            assert (await asyncio.wait_for(console_reader.read(7), 5)) == b"[32, 0]"
            assert await asyncio.wait_for(closed_by_peer(silent_reader), 5)
            assert server.guard.timed_out == 1
            assert is_open(console, console_reader)  # quiet for longer than the timeout, still served
            console.write(b"[32, 10]")
            assert await asyncio.wait_for(received(console_reader, b"[32, 10]"), 5)  # its echo
            console.close()
        finally:
            await server.close()

    run(main())


def test_tcp_idle_timeout_when_the_rig_file_sets_one():
    async def main():
        server = await serve_tcp(RigAddress("tcp", LOOPBACK, 0), EchoRig(), {"idle_timeout": 0.3})
        try:
            reader, writer = await connect(server.port)
            writer.write(b"[32, 0]")
            assert await asyncio.wait_for(closed_by_peer(reader), 5)
            assert server.guard.timed_out == 1
        finally:
            await server.close()

    run(main())


def test_pc_rpc_closes_a_half_done_handshake_but_keeps_an_idle_client():
    async def main():
        server = RpcServer({"t": Target()})
        server.guard = ConnectionGuard("pc_rpc test", handshake_timeout=0.3)
        await server.start(LOOPBACK, 0)
        try:
            half_reader, half = await connect(server.port)
            half.write(RPC_BANNER)  # banner, then never a target
            client_reader, client = await connect(server.port)
            client.write(RPC_BANNER + b"t pyon_v2\n")
            await asyncio.wait_for(client_reader.readline(), 5)  # ident
            await asyncio.wait_for(client_reader.readline(), 5)  # method list: handshake done
            assert await asyncio.wait_for(closed_by_peer(half_reader), 5)
            assert is_open(client, client_reader)
            client.write(b'{"action": "call", "name": "echo", "args": [7], "kwargs": {}}\n')
            assert b'"ret":7' in (await asyncio.wait_for(client_reader.readline(), 5)).replace(b" ", b"")
            client.close()
        finally:
            await server.close()

    run(main())


def test_pc_rpc_cap():
    async def main():
        server = RpcServer({"t": Target()})
        server.guard = ConnectionGuard("pc_rpc test", max_connections=2)
        await server.start(LOOPBACK, 0)
        try:
            kept = [await connect(server.port) for _ in range(2)]
            await wait_until(lambda: server.guard.open == 2)
            reader, _ = await connect(server.port)
            assert await asyncio.wait_for(closed_by_peer(reader), 5)
            assert server.guard.refused == 1
            for _, w in kept:
                w.close()
        finally:
            await server.close()

    run(main())


def test_notifier_closes_a_silent_connection_and_keeps_its_silent_subscribers():
    async def main():
        notifier = Notifier({"x": 1})
        publisher = Publisher({"state": notifier})
        publisher.guard = ConnectionGuard("sync_struct test", handshake_timeout=0.3)
        await publisher.start(LOOPBACK, 0)
        got = []
        sub = Subscriber("state", notify_cb=got.append)
        try:
            await sub.connect(LOOPBACK, publisher.port)
            silent_reader, _ = await connect(publisher.port)
            assert await asyncio.wait_for(closed_by_peer(silent_reader), 5)
            notifier["x"] = 2  # the subscriber (silent by design since its handshake) still gets mods
            await wait_until(lambda: any(m.get("action") == "setitem" for m in got))
            assert publisher.subscriber_count("state") == 1
        finally:
            await sub.close()
            await publisher.close()

    run(main())


@pytest.mark.parametrize("kind", ["server", "relay"])
def test_http_listeners_close_half_sent_requests_and_cap_connections(kind):
    async def main():
        options = {"handshake_timeout": 0.3, "max_connections": 3}
        if kind == "relay":
            from transports.sio.server import listen_guard

            relay = SioRelay(guard=listen_guard("relay", options))
            await relay.start(LOOPBACK, 0)
            port, guard, close = relay.port, relay.guard, relay.close
        else:
            ctx = served(options=options)
            server, _ = await ctx.__aenter__()
            port, guard = server.port, server.guard

            async def close():
                await ctx.__aexit__(None, None, None)
        try:
            reader, writer = await connect(port)
            writer.write(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n")  # never ends
            assert await asyncio.wait_for(closed_by_peer(reader), 5)
            assert guard.timed_out == 1
            kept = [await connect(port) for _ in range(3)]
            await wait_until(lambda: guard.open == 3)
            reader, _ = await connect(port)
            assert await asyncio.wait_for(closed_by_peer(reader), 5)
            assert guard.refused == 1
            for _, w in kept:
                w.close()
        finally:
            await close()

    run(main())


def test_zmq_listener_caps_connections_and_closes_silent_ones():
    async def main():
        server = await serve_zmq(RigAddress("zmq", LOOPBACK, 0), EchoRig(),
                                 {"max_connections": 3, "handshake_timeout": 0.5})
        guard = server.cap.guard
        try:
            silent = [await connect(server.port) for _ in range(3)]
            await wait_until(lambda: guard.open == 3)
            extra = [await connect(server.port) for _ in range(10)]
            for reader, _ in extra:  # over the cap: shut down as soon as the monitor reports them
                assert await asyncio.wait_for(closed_by_peer(reader), 5)
            assert guard.refused == 10
            for reader, _ in silent:  # no ZMTP greeting within the handshake interval
                assert await asyncio.wait_for(closed_by_peer(reader), 5)
            await wait_until(lambda: guard.open == 0)
            link = make_link(server.port)  # a real console still gets in and is served
            await link.connect()
            assert (await link.request(ExpMessage.EXPSTATUS, 0))[0] == 0
            await link.close()
        finally:
            await server.close()

    run(main())
