"""sync_struct: wire lines as sipyco sends them, every mod type, slow subscribers, reconnect + re-init,
LiveState published and mirrored."""

import asyncio
import copy
import json
import logging
import socket

import pytest
from helpers import run, wait_until
from rpc_helpers import open_raw, read_line

from core.state import LiveState, process_mod
from transports.rpc.sync_struct import Notifier, Publisher, Subscriber, feed_live_state, prefix_mod


def test_wire_lines_match_the_reference_transcript():
    """The mods recorded from a sipyco Notifier(dict()), byte for byte."""

    async def main():
        notifier = Notifier({"rid1": {"status": "pending", "pipeline": "main"}})
        publisher = Publisher({"schedule": notifier})
        await publisher.start()
        reader, writer = await open_raw(publisher.port)
        writer.write(b"ARTIQ sync_struct\nschedule\n")
        lines = [await read_line(reader)]
        notifier["rid1"]["status"] = "running"
        notifier["lst"] = []
        notifier["lst"].append(42)
        notifier["lst"].insert(0, 7)
        notifier["lst"].pop(0)
        del notifier["rid1"]
        for _ in range(6):
            lines.append(await read_line(reader))
        writer.close()
        await publisher.close()
        return lines

    assert run(main()) == [
        b'{"action":"init","struct":{"rid1":{"status":"pending","pipeline":"main"}}}\n',
        b'{"action":"setitem","path":["rid1"],"key":"status","value":"running"}\n',
        b'{"action":"setitem","path":[],"key":"lst","value":[]}\n',
        b'{"action":"append","path":["lst"],"x":42}\n',
        b'{"action":"insert","path":["lst"],"i":0,"x":7}\n',
        b'{"action":"pop","path":["lst"],"i":0}\n',
        b'{"action":"delitem","path":[],"key":"rid1"}\n',
    ]


def test_subscriber_follows_every_mod_type_and_nested_paths():
    async def main():
        notifier = Notifier({"a": {"b": [1, 2]}, "t": (1, 2)})
        publisher = Publisher({"n": notifier})
        await publisher.start()
        seen = []
        sub = Subscriber("n", notify_cb=seen.append)
        await sub.connect("127.0.0.1", publisher.port)
        assert sub.struct == {"a": {"b": [1, 2]}, "t": (1, 2)}
        notifier["a"]["b"].append({"deep": []})
        notifier["a"]["b"][2]["deep"].insert(0, 3j)
        notifier["a"]["b"].pop()
        notifier["a"]["c"] = {5: b"bytes"}
        notifier["a"]["c"][5] = None
        del notifier["a"]["b"]
        notifier["a"]["list"] = [0, 1, 2]
        notifier["a"]["list"][1] = "one"
        notifier["a"]["list"].pop(0)
        await wait_until(lambda: len(seen) == 10)
        assert sub.struct == notifier.raw_view == {"a": {"c": {5: None}, "list": ["one", 2]}, "t": (1, 2)}
        assert [m["action"] for m in seen] == ["init", "append", "insert", "pop", "setitem", "setitem", "delitem",
                                               "setitem", "setitem", "pop"]
        await sub.close()
        await publisher.close()

    run(main())


def test_unknown_notifier_is_refused_clearly():
    async def main():
        publisher = Publisher({"n": Notifier({})})
        await publisher.start()
        with pytest.raises(ConnectionError, match="before init"):
            await Subscriber("other").connect("127.0.0.1", publisher.port)
        reader, writer = await open_raw(publisher.port)
        writer.write(b"ARTIQ pc_rpc\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await publisher.close()

    run(main())


def test_slow_subscriber_is_disconnected_not_buffered(caplog):
    caplog.set_level(logging.WARNING, "transports.rpc.sync_struct")

    async def main():
        notifier = Notifier({"items": []})
        publisher = Publisher({"n": notifier}, queue_limit=8)
        await publisher.start()
        # a subscriber that never reads, with a small receive buffer
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", publisher.port))
        raw.sendall(b"ARTIQ sync_struct\nn\n")
        seen = []
        fast = Subscriber("n", notify_cb=seen.append)
        await fast.connect("127.0.0.1", publisher.port)
        await wait_until(lambda: publisher.subscriber_count("n") == 2)
        chunk = "x" * 65536
        for i in range(400):
            notifier["items"].append(chunk)
            await wait_until(lambda n=i + 2: len(seen) == n)  # the fast one keeps up, whatever the CPU load
            if publisher.kicked:
                break
        assert publisher.kicked == 1
        await wait_until(lambda: publisher.subscriber_count("n") == 1)
        notifier["done"] = True
        await wait_until(lambda: fast.struct.get("done"))
        assert fast.struct == notifier.raw_view  # the fast subscriber was never affected
        raw.close()
        await fast.close()
        await publisher.close()

    run(main())
    assert "too slow" in caplog.text and "disconnecting" in caplog.text


def test_subscriber_reconnects_and_reinits():
    async def main():
        notifier = Notifier({"v": 0})
        publisher = Publisher({"n": notifier})
        await publisher.start()
        port = publisher.port
        lost = []
        sub = Subscriber("n", disconnect_cb=lost.append, retry_max=0.2)
        await sub.connect("127.0.0.1", port, reconnect=True)
        assert sub.inits == 1
        await publisher.close()
        await wait_until(lambda: lost)
        notifier["v"] = 1  # changed while nobody publishes
        publisher = Publisher({"n": notifier})
        await publisher.start("127.0.0.1", port)
        await wait_until(lambda: sub.inits == 2, timeout=10)
        assert sub.struct == {"v": 1}
        notifier["v"] = 2
        await wait_until(lambda: sub.struct == {"v": 2})
        await sub.close()
        await publisher.close()

    run(main())


def test_start_waits_for_an_absent_publisher():
    async def main():
        probe = Publisher({"n": Notifier({})})
        await probe.start()
        port = probe.port
        await probe.close()
        sub = Subscriber("n", retry_max=0.2)
        sub.start("127.0.0.1", port)
        await wait_until(lambda: sub.last_error, what="a failed connection attempt")
        assert sub.inits == 0
        publisher = Publisher({"n": Notifier({"up": True})})
        await publisher.start("127.0.0.1", port)
        assert await sub.wait_init(10) == {"up": True}
        await sub.close()
        await publisher.close()

    run(main())


def test_callback_errors_do_not_stop_the_subscriber():
    async def main():
        notifier = Notifier({})
        publisher = Publisher({"n": notifier})
        await publisher.start()
        good = []

        def broken(mod):
            raise RuntimeError("view bug")

        sub = Subscriber("n", notify_cb=[broken, good.append])
        await sub.connect("127.0.0.1", publisher.port)
        notifier["a"] = 1
        notifier["b"] = 2
        await wait_until(lambda: len(good) == 3)
        assert sub.struct == {"a": 1, "b": 2}
        await sub.close()
        await publisher.close()

    run(main())


def test_live_state_is_publishable_and_mirrors_into_another_live_state():
    async def main():
        rig = LiveState()
        rig.set(["status"], 0)
        publisher = Publisher({"state": rig})
        await publisher.start()
        console = LiveState()
        sub = Subscriber("state", notify_cb=feed_live_state(console, ["rigs", "r1", "service"]))
        await sub.connect("127.0.0.1", publisher.port)
        assert console.get(["rigs", "r1", "service"]) == {"status": 0}
        rig.set(["status"], 20)
        rig.set(["manipulators", "m1", "x"], 1.5)
        rig.set(["log"], ["a"])
        rig.append(["log"], "b")
        rig.insert(["log"], 0, "z")
        rig.pop(["log"], 1)
        rig.delete(["manipulators", "m1", "x"])
        await wait_until(lambda: console.get(["rigs", "r1", "service"]) == rig.raw)
        assert rig.raw == {"status": 20, "manipulators": {"m1": {}}, "log": ["z", "b"]}
        rig.reset({"fresh": True})  # an init mod mid-stream replaces the copy
        await wait_until(lambda: console.get(["rigs", "r1", "service"]) == {"fresh": True})
        await sub.close()
        await publisher.close()

    run(main())


def test_prefix_mod_and_process_mod_agree():
    base = {"x": {"y": [1]}}
    mods = [{"action": "append", "path": ["y"], "x": 2}, {"action": "setitem", "path": [], "key": "k", "value": 1}]
    inner = copy.deepcopy(base["x"])
    outer = copy.deepcopy(base)
    for mod in mods:
        inner = process_mod(inner, mod)
        outer = process_mod(outer, prefix_mod(mod, ["x"]))
    assert outer["x"] == inner
    init = prefix_mod({"action": "init", "struct": {"a": 1}}, ["p", "q"])
    assert init == {"action": "setitem", "path": ["p"], "key": "q", "value": {"a": 1}}
    assert json.dumps(init)


def test_a_mod_that_does_not_apply_makes_the_subscriber_reinit():
    connections = []

    async def publisher(reader, writer):
        await reader.readline()
        await reader.readline()
        connections.append(writer)
        writer.write(b'{"action":"init","struct":{"a":[]}}\n')
        if len(connections) == 1:
            writer.write(b'{"action":"setitem","path":["missing"],"key":"k","value":1}\n')
        else:
            writer.write(b'{"action":"append","path":["a"],"x":1}\n')
        await reader.read()

    async def main():
        srv = await asyncio.start_server(publisher, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        lost = []
        sub = Subscriber("n", disconnect_cb=lost.append, retry_max=0.1)
        await sub.connect("127.0.0.1", port, reconnect=True)
        await wait_until(lambda: sub.inits == 2 and sub.struct == {"a": [1]})
        assert "cannot apply setitem" in lost[0]
        await sub.close()
        srv.close()

    run(main())
