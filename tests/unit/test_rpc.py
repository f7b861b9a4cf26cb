"""pc_rpc client <-> server over loopback: calls, exceptions, timeouts, locking, reconnects."""

import asyncio

import pytest
from helpers import run, wait_until
from rpc_helpers import Target

from core.link import RequestTimeout, RigError
from transports.rpc.client import AUTO_TARGET, IncompatibleServer, RpcClient, RpcUnavailable
from transports.rpc.server import RpcServer
from transports.rpc.wire import RemoteException


async def started(targets=None, **kw):
    server = RpcServer(targets or {"tgt": Target()}, "demo server", **kw)
    await server.start("127.0.0.1", 0)
    return server


def test_echo_keeps_types_and_auto_target():
    async def main():
        server = await started()
        async with RpcClient("127.0.0.1", server.port) as client:
            assert client.selected_target == "tgt" and client.description == "demo server"
            assert await client.echo((1, 2)) == (1, 2)
            assert await client.call("echo", {3: b"x", "s": {1, 2}}) == {3: b"x", "s": {1, 2}}
            assert await client.call("add", 1, 2, 3, 4, scale=10) == 100
        await server.close()

    run(main())


def test_builtin_exception_raised_as_itself_with_remote_traceback():
    async def main():
        server = await started()
        async with RpcClient("127.0.0.1", server.port, "tgt") as client:
            with pytest.raises(ValueError, match="bad value") as info:
                await client.boom()
            assert any("boom" in line for line in info.value.parent_traceback)
            with pytest.raises(TypeError):  # wrong arguments: a built-in too
                await client.echo()
            assert await client.echo(1) == 1  # the connection survives failed calls
        await server.close()

    run(main())


def test_other_exceptions_are_remote_exceptions():
    async def main():
        server = await started()
        async with RpcClient("127.0.0.1", server.port, "tgt") as client:
            with pytest.raises(RemoteException) as info:
                await client.custom()
            assert str(info.value) == "Boom: mine"
            assert isinstance(info.value, RigError)
            assert any("raise Boom" in line for line in info.value.remote_traceback)
            with pytest.raises(TypeError, match="PYON"):
                await client.unencodable()
        await server.close()

    run(main())


def test_private_and_dunder_names_are_unreachable():
    async def main():
        target = Target()
        server = await started({"tgt": target})
        async with RpcClient("127.0.0.1", server.port, "tgt") as client:
            assert "echo" in client.methods and "slow" in client.methods
            assert not [m for m in client.methods if m.startswith("_")]
            assert "prop" not in client.methods and "secret" not in client.methods
            for name in ["_private", "__init__", "__class__", "__dict__", "secret", "prop", "nothere"]:
                with pytest.raises(AttributeError):
                    await client.call(name)
            listing = await client.method_list()
            assert not [m for m in listing["methods"] if m.startswith("_")]
        await server.close()

    run(main())


def test_method_list_has_docstrings_and_argspecs():
    async def main():
        server = await started()
        async with RpcClient("127.0.0.1", server.port) as client:
            listing = await client.method_list()
        await server.close()
        return listing

    listing = run(main())
    assert listing["docstring"] == "Demo target."
    spec, doc = listing["methods"]["echo"]
    assert doc == "Return x." and spec["args"] == ["x"]
    spec, _ = listing["methods"]["add"]
    assert spec["args"] == ["a", "b"] and spec["defaults"] == (2,)
    assert spec["varargs"] == "rest" and spec["varkw"] == "extra" and spec["kwonlydefaults"] == {"scale": 1}


def test_timeout_raises_and_next_call_works():
    async def main():
        target = Target()
        server = await started({"tgt": target})
        client = RpcClient("127.0.0.1", server.port, timeout=0.2)
        await client.connect()
        with pytest.raises(RequestTimeout):
            await client.slow(2)  # (the server runs calls one at a time: the next one waits for it)
        assert target.calls == [("start", None)]  # it gave up while the call was still running
        # a fresh connection, so the stale reply of slow() is never read as this answer
        assert await client.call_ex("slow", [0.01, "second"], timeout=10) == "second"
        await client.close()
        await server.close()

    run(main())


def test_calls_are_serialised_unless_parallel():
    async def overlap(allow_parallel):
        target = Target()
        server = await started({"tgt": target}, allow_parallel=allow_parallel)
        a = RpcClient("127.0.0.1", server.port)
        b = RpcClient("127.0.0.1", server.port)
        await a.connect()
        await b.connect()
        await asyncio.gather(a.slow(0.6, "a"), b.slow(0.6, "b"))
        await a.close()
        await b.close()
        await server.close()
        return [kind for kind, _ in target.calls]

    assert run(overlap(False)) == ["start", "end", "start", "end"]
    assert run(overlap(True)) == ["start", "start", "end", "end"]


def test_class_target_is_instantiated_per_connection():
    class Counter:
        def __init__(self):
            self.n = 0

        def bump(self):
            self.n += 1
            return self.n

    async def main():
        server = await started({"c": Counter})
        async with RpcClient("127.0.0.1", server.port) as one, RpcClient("127.0.0.1", server.port) as two:
            assert [await one.bump(), await one.bump(), await two.bump()] == [1, 2, 1]
        await server.close()

    run(main())


def test_unknown_target_and_several_targets():
    async def main():
        server = await started({"a": Target(), "b": Target()})
        with pytest.raises(IncompatibleServer, match="no target 'zz'"):
            await RpcClient("127.0.0.1", server.port, "zz").connect()
        with pytest.raises(IncompatibleServer, match="name the one"):
            await RpcClient("127.0.0.1", server.port, AUTO_TARGET).connect()
        lister = RpcClient("127.0.0.1", server.port, None)
        await lister.connect()
        assert lister.targets == ["a", "b"] and lister.selected_target is None
        await lister.close()
        await server.close()

    run(main())


def test_builtin_terminate():
    async def main():
        server = await started(builtin_terminate=True)
        async with RpcClient("127.0.0.1", server.port) as client:
            assert "terminate" in client.methods
            await client.terminate()
        await asyncio.wait_for(server.wait_terminate(), 2)
        await server.close()

    run(main())


def test_plain_client_refused_and_unencodable_argument():
    async def main():
        server = await started()
        port = server.port
        async with RpcClient("127.0.0.1", port) as client:
            with pytest.raises(ValueError, match="PYON"):
                await client.echo(object())
            assert await client.echo(2) == 2
        await server.close()
        with pytest.raises(OSError):
            await RpcClient("127.0.0.1", port, connect_timeout=2).connect()

    run(main())


def test_reconnecting_and_best_effort_clients():
    async def main():
        server = await started()
        port = server.port
        strict = RpcClient("127.0.0.1", port, reconnect=True, retry=0.2)
        lax = RpcClient("127.0.0.1", port, best_effort=True, retry=0.2)
        seen = []
        strict.on_connection(lambda up, err: seen.append(up))
        await strict.connect()
        await lax.connect()
        assert await strict.echo(1) == 1 and await lax.echo(1) == 1
        await server.close()
        # the idle connection's loss is noticed without a call
        await wait_until(lambda: not strict.connected and not lax.connected, what="both losses noticed")
        assert seen == [True, False]
        with pytest.raises(RpcUnavailable, match="not connected"):
            await strict.echo(1)
        assert await lax.echo(1) is None
        with pytest.raises(ValueError):  # remote exceptions still raise in best-effort mode
            server = RpcServer({"tgt": Target()})
            await server.start("127.0.0.1", port)
            await wait_until(lambda: strict.connected and lax.connected, what="both reconnected")
            assert await strict.echo(3) == 3 and await lax.echo(3) == 3
            await lax.boom()
        await strict.close()
        await lax.close()
        await server.close()

    run(main())


def test_reconnecting_client_starts_while_server_down():
    async def main():
        probe = await started()
        port = probe.port
        await probe.close()
        client = RpcClient("127.0.0.1", port, reconnect=True, retry=0.2, connect_timeout=1)
        await client.connect()  # does not raise
        assert not client.connected
        server = RpcServer({"tgt": Target()})
        await server.start("127.0.0.1", port)
        await wait_until(lambda: client.connected, what="the reconnection")
        assert await client.echo("up") == "up"
        await client.close()
        await server.close()

    run(main())


def test_client_leaving_mid_call_does_not_hurt_the_server():
    async def main():
        target = Target()
        server = await started({"tgt": target})
        quitter = RpcClient("127.0.0.1", server.port, timeout=0.1)
        await quitter.connect()
        with pytest.raises(RequestTimeout):
            await quitter.slow(0.3, "orphan")
        await quitter.close()
        async with RpcClient("127.0.0.1", server.port, timeout=5) as client:
            assert await client.slow(0, "next") == "next"  # waited for the orphan to finish, then ran
        assert [tag for kind, tag in target.calls if kind == "end"] == ["orphan", "next"]
        await server.close()

    run(main())


def test_client_refuses_a_pyon_v1_only_server():
    async def old_sipyco(reader, writer):
        await reader.readline()
        writer.write(b'{"targets":["tgt"],"description":null}\n')  # no features: PYON v1 only
        await reader.read()
        writer.close()

    async def main():
        srv = await asyncio.start_server(old_sipyco, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        with pytest.raises(IncompatibleServer, match="PYON v2"):
            await RpcClient("127.0.0.1", port, "tgt", connect_timeout=5).connect()
        srv.close()

    run(main())
