"""``rigdeck rpc`` and ``rigdeck watch`` as real subprocesses against in-test servers."""

import asyncio
import json
import sys

from helpers import run
from rpc_helpers import Target

from transports.rpc.server import RpcServer
from transports.rpc.sync_struct import Notifier, Publisher

CLI = [sys.executable, "-m", "app.cli"]


async def rigdeck(*args, stdin=None, timeout=30):
    proc = await asyncio.create_subprocess_exec(
        *CLI, *map(str, args), stdin=asyncio.subprocess.PIPE if stdin else None,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), timeout)
    return proc.returncode, out.decode(), err.decode()


async def demo_server():
    server = RpcServer({"tgt": Target()}, "demo server")
    await server.start()
    return server


def test_rpc_list_targets_methods_and_calls():
    async def main():
        server = await demo_server()
        port = server.port
        results = await asyncio.gather(
            rigdeck("rpc", "127.0.0.1", port, "list-targets"),
            rigdeck("rpc", "127.0.0.1", port, "list-methods"),
            rigdeck("rpc", "127.0.0.1", port, "call", "echo", '{"__jsonclass__":["tuple",[[1,2]]]}'),
            rigdeck("rpc", "127.0.0.1", port, "call", "--target", "tgt", "echo", "hello world"),
            rigdeck("rpc", "127.0.0.1", port, "call", "add", "1", "b=5", "scale=2"),
            rigdeck("rpc", "127.0.0.1", port, "call", "echo", "__import__('os').getcwd()"),
        )
        await server.close()
        return results

    (rc1, targets, _), (rc2, methods, _), (rc3, tup, _), (rc4, text, _), (rc5, added, _), (rc6, code, _) = run(main())
    assert (rc1, rc2, rc3, rc4, rc5, rc6) == (0, 0, 0, 0, 0, 0)
    assert targets.splitlines() == ["Target(s):   tgt", "Description: demo server"]
    assert "echo(x)\n    Return x." in methods
    assert "add(a, b=2, *rest, scale=1, **extra)" in methods
    assert "_private" not in methods and "__init__" not in methods
    assert tup.strip() == "(1, 2)"
    assert text.strip() == '"hello world"'
    assert added.strip() == "12"
    assert code.strip() == json.dumps("__import__('os').getcwd()")  # a string, never evaluated


def test_rpc_errors_are_one_line_and_non_zero():
    async def main():
        server = await demo_server()
        port = server.port
        results = await asyncio.gather(
            rigdeck("rpc", "127.0.0.1", port, "call", "boom"),
            rigdeck("rpc", "127.0.0.1", port, "call", "_private"),
            rigdeck("rpc", "127.0.0.1", port, "call", "--target", "nope", "echo", "1"),
            rigdeck("rpc", "127.0.0.1", port, "--timeout", "0.5", "call", "slow", "2"),
        )
        await server.close()
        results.append(await rigdeck("rpc", "127.0.0.1", port, "list-targets"))
        return results

    boom, private, target, slow, refused = run(main())
    assert boom[0] == 1 and boom[2].strip() == "rigdeck rpc: ValueError: bad value"
    assert private[0] == 1 and "AttributeError" in private[2]
    assert target[0] == 2 and "no target 'nope'" in target[2]
    assert slow[0] == 1 and "no reply within 0.5 s" in slow[2]
    assert refused[0] == 2 and refused[2].startswith("rigdeck rpc: cannot use 127.0.0.1:")
    for _, _, err in (boom, private, target, slow, refused):
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_rpc_interactive():
    async def main():
        server = await demo_server()
        result = await rigdeck("rpc", "127.0.0.1", server.port, "interactive",
                               stdin='echo "[1, 2]"\nboom\nnosuch\nmethods\necho ok\nquit\n')
        await server.close()
        return result

    rc, out, _ = run(main())
    lines = out.splitlines()
    assert rc == 0
    assert "[1, 2]" in lines and "error: ValueError: bad value" in lines and '"ok"' in lines
    assert any(line.startswith("error: AttributeError") for line in lines)
    assert "echo(x)" in lines  # from 'methods'


def test_watch_json_follows_changes_and_once_prints_the_structure():
    async def main():
        notifier = Notifier({"status": 0})
        publisher = Publisher({"state": notifier})
        await publisher.start()
        port = publisher.port
        once = await rigdeck("watch", "127.0.0.1", port, "state", "--once")
        proc = await asyncio.create_subprocess_exec(
            *CLI, "watch", "127.0.0.1", str(port), "state", "--json", "--count", "3",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        first = await asyncio.wait_for(proc.stdout.readline(), 20)
        notifier["status"] = 20
        notifier["m"] = {1: (1.5, 2.5)}
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        unknown = await rigdeck("watch", "127.0.0.1", port, "nope")
        await publisher.close()
        return once, first, out, proc.returncode, unknown

    once, first, rest, rc, unknown = run(main())
    assert once[0] == 0 and once[1].splitlines()[0].startswith("== state @ 127.0.0.1:")
    assert json.loads("\n".join(once[1].splitlines()[1:])) == {"status": 0}
    assert rc == 0 and first == b'{"status":0}\n'
    assert rest.decode().splitlines() == [
        '{"status":20}',
        '{"status":20,"m":{"__jsonclass__":["dict",[[[1,{"__jsonclass__":["tuple",[[1.5,2.5]]]}]]]]}}',
    ]
    assert unknown[0] == 2 and "before init" in unknown[2] and len(unknown[2].strip().splitlines()) == 1


def test_watch_human_lines_and_no_reconnect_exit():
    async def main():
        notifier = Notifier({"lst": []})
        publisher = Publisher({"n": notifier})
        await publisher.start()
        proc = await asyncio.create_subprocess_exec(
            *CLI, "watch", "127.0.0.1", str(publisher.port), "n", "--no-reconnect",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        header = await asyncio.wait_for(proc.stdout.readline(), 20)
        notifier["lst"].append(1)
        notifier["lst"].insert(0, "a")
        notifier["lst"].pop(1)
        notifier["k"] = {"x": 1}
        del notifier["k"]["x"]
        lines = []
        while len(lines) < 5 + 3:  # init prints the indented structure over 3 lines
            lines.append((await asyncio.wait_for(proc.stdout.readline(), 20)).decode().rstrip("\n"))
        await publisher.close()
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        return header, lines, proc.returncode, err.decode()

    header, lines, rc, err = run(main())
    assert header.startswith(b"== n @ 127.0.0.1:")
    assert lines[-5:] == ["append  lst += 1", 'insert  lst[0] = "a"', "pop     lst[1]", 'setitem k = {"x": 1}',
                          "delitem k.x"]
    assert rc == 1 and "connection lost" in err
