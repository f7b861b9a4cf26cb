"""What ``rigdeck rpc`` prints for every PYON type, with and without numpy, and what the command-line
tools do against a hostile peer: one clear line on stderr, never a traceback, never a stall."""

import asyncio
import json
import sys
from fractions import Fraction

import numpy as np
import pytest
from helpers import run

from app.commands.pyon_text import plain, readable
from transports.rpc import pyon
from transports.rpc.pyon_arrays import PlainArray
from transports.rpc.server import RpcServer

CLI = [sys.executable, "-m", "app.cli"]
#: the same CLI in a process where ``import numpy`` fails
CLI_WITHOUT_NUMPY = [sys.executable, "-c",
                     "import sys; sys.modules['numpy'] = None; from app.cli import main; sys.exit(main())"]
#: what a sipyco controller sends for np.arange(4, dtype=np.int32) (the issue's example)
SIPYCO_ARRAY = '{"__jsonclass__":["nparray",[[4],"<i4","AAAAAAEAAAACAAAAAwAAAA=="]]}'


async def rigdeck(*args, cli=CLI, timeout=30):
    proc = await asyncio.create_subprocess_exec(*cli, *map(str, args), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


class Lab:
    """A controller returning what sipyco controllers return."""

    def array(self):
        return np.arange(4, dtype=np.int32)

    def matrix(self):
        return np.arange(6, dtype=np.float64).reshape(2, 3)

    def mixed(self):
        return {"t": (1, 2), "s": {3}, "b": b"\x00a", "c": 1 + 2j, "f": Fraction(1, 3), 7: None,
                "scalar": np.float32(0.5), "empty": np.zeros((2, 0))}


@pytest.mark.parametrize("cli", [CLI, CLI_WITHOUT_NUMPY], ids=["numpy", "no-numpy"])
def test_rpc_prints_arrays_and_every_pyon_type_readably(cli):
    async def main():
        server = RpcServer({"lab": Lab()})
        await server.start()
        port = server.port
        results = await asyncio.gather(
            rigdeck("rpc", "127.0.0.1", port, "call", "array", cli=cli),
            rigdeck("rpc", "127.0.0.1", port, "call", "matrix", cli=cli),
            rigdeck("rpc", "127.0.0.1", port, "call", "mixed", cli=cli),
            rigdeck("rpc", "127.0.0.1", port, "call", "--json", "mixed", cli=cli),
            rigdeck("rpc", "--json", "127.0.0.1", port, "call", "array", cli=cli),
            rigdeck("rpc", "127.0.0.1", port, "call", "--pyon", "array", cli=cli),
        )
        await server.close()
        return results

    (array, matrix, mixed, mixed_json, array_json, array_pyon) = run(main())
    assert all(rc == 0 and err == "" for rc, _, err in (array, matrix, mixed, mixed_json, array_json, array_pyon))
    assert array[1].strip() == "[0, 1, 2, 3] (int32)"
    assert matrix[1].strip() == "[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]"
    assert mixed[1].strip() == ('{"t": (1, 2), "s": {3}, "b": b"\\x00a", "c": (1+2j), "f": 1/3, 7: null, '
                                '"scalar": 0.5 (float32), "empty": [[], []] (shape 2x0)}')
    assert json.loads(mixed_json[1]) == {"t": [1, 2], "s": [3], "b": "AGE=", "c": {"real": 1.0, "imag": 2.0},
                                         "f": {"numerator": 1, "denominator": 3}, "7": None, "scalar": 0.5,
                                         "empty": [[], []]}
    assert json.loads(array_json[1]) == [0, 1, 2, 3]
    assert array_pyon[1].strip() == SIPYCO_ARRAY


def test_arrays_decode_without_numpy_and_encode_back_unchanged(monkeypatch):
    monkeypatch.setitem(sys.modules, "numpy", None)
    value = pyon.decode(SIPYCO_ARRAY)
    assert isinstance(value, PlainArray) and value.tolist() == [0, 1, 2, 3] and value.shape == (4,)
    assert pyon.encode(value) == SIPYCO_ARRAY
    assert readable(value) == "[0, 1, 2, 3] (int32)" and plain(value) == [0, 1, 2, 3]
    complex_big_endian = np.array([[1 + 2j], [3 - 4j]], dtype=">c8")  # encoded while numpy was there
    data = pyon._b64(complex_big_endian.tobytes())
    text = '{"__jsonclass__":["nparray",[[2,1],">c8","' + data + '"]]}'
    assert pyon.decode(text).tolist() == [[1 + 2j], [3 - 4j]]
    strings = pyon.decode('{"__jsonclass__":["nparray",[[2],"<U2","YQAAAGIAAABjAAAAAAAAAA=="]]}')
    assert strings.tolist() == ["ab", "c"]
    scalar = '{"__jsonclass__":["npscalar",["<f8","AAAAAAAA+D8="]]}'
    assert pyon.decode(scalar).tolist() == 1.5 and pyon.encode(pyon.decode(scalar)) == scalar


@pytest.mark.parametrize("value, text", [
    (None, "null"), (True, "true"), (2**70, str(2**70)), (float("nan"), "NaN"), (float("-inf"), "-Infinity"),
    ("é\n", '"é\\n"'), ((1,), "(1,)"), ((), "()"), (set(), "set()"), (frozenset({2, 1}), "{1, 2}"),
    (b"it's \"q\"", 'b"it\'s \\"q\\""'), (slice(1, None, 2), "slice(1, null, 2)"),
    ({(1, 2): [3]}, "{(1, 2): [3]}"), (np.array(7, dtype=np.int16), "7 (int16, shape ())"),
    (np.array([True, False]), "[true, false]"), (np.array(["ab", "c"]), '["ab", "c"]'),
])
def test_readable_forms(value, text):
    assert readable(value) == text
    json.dumps(plain(value), allow_nan=False)  # always plain JSON


# ----------------------------------------------------------------------------------------- hostile peers

def hostile_lines():
    deep = "[" * 10000 + "]" * 10000
    return {
        "fraction": '{"status":"ok","ret":{"__jsonclass__":["Fraction",["1e10000000",1]]}}',
        "huge int": '{"status":"ok","ret":' + "9" * 100000 + "}",
        "deep": '{"status":"ok","ret":' + deep + "}",
        "deep but parseable": '{"status":"ok","ret":' + "[" * 500 + "]" * 500 + "}",
        "not pyon": "<html>",
        "bad reply": '{"status":"maybe"}',
        "multi-line error": '{"status":"failed","exception":{"class":"ValueError","message":"a\\nb\\nc"}}',
    }


GOOD_IDENT = '{"targets":["t"],"description":null,"features":["pyon_v2"]}'


async def hostile_rpc_server(reply: str, ident: str = GOOD_IDENT):
    """Speaks the pc_rpc handshake (with ``ident``), then answers every request with ``reply``."""
    async def handle(reader, writer):
        await reader.readline()
        writer.write(ident.encode() + b"\n")
        await reader.readline()
        writer.write(b'{"__jsonclass__":["set",[["m"]]]}\n')
        while await reader.readline():
            writer.write(reply.encode() + b"\n")
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_rpc_against_a_hostile_server_prints_one_line_and_exits():
    async def main():
        results = {}
        for name, line in hostile_lines().items():
            server = await hostile_rpc_server(line)
            port = server.sockets[0].getsockname()[1]
            results[name] = await rigdeck("rpc", "127.0.0.1", port, "call", "m")
            server.close()
        return results

    results = run(main(), timeout=120)
    for name, (rc, out, err) in results.items():
        assert rc == 1 and out == "", (name, out, err)
        assert err.startswith("rigdeck rpc: ") and len(err.splitlines()) == 1 and "Traceback" not in err, (name, err)
    assert "Fraction marker needs two integers" in results["fraction"][2]
    assert "at most 4300 digits" in results["huge int"][2]
    assert "nested" in results["deep"][2] and "nested more than 100 deep" in results["deep but parseable"][2]
    assert results["multi-line error"][2].strip() == "rigdeck rpc: ValueError: a b c"


@pytest.mark.parametrize("ident", [
    '{"targets":["t"],"features":5}', '{"targets":5}', '{"targets":["a b\\nc"],"features":["pyon_v2"]}',
    '{"targets":[' + "[" * 5000 + "]" * 5000 + '],"features":["pyon_v2"]}', '{"targets":["t"],"features":[]}',
    "[]", "<html>",
])
def test_rpc_against_a_hostile_identification_prints_one_line(ident):
    async def main():
        server = await hostile_rpc_server('{"status":"ok","ret":1}', ident)
        result = await rigdeck("rpc", "127.0.0.1", server.sockets[0].getsockname()[1], "call", "m")
        server.close()
        return result

    rc, out, err = run(main())
    assert rc == 2 and out == "" and err.startswith("rigdeck rpc: cannot use 127.0.0.1:"), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err


async def hostile_publisher(mods: list[str]):
    """Speaks sync_struct: an init, then ``mods``, then keeps the connection open."""
    async def handle(reader, writer):
        await reader.readline()
        await reader.readline()
        writer.write(b'{"action":"init","struct":{"a":[1]}}\n')
        for mod in mods:
            writer.write(mod.encode() + b"\n")
        await writer.drain()
        await reader.read()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("mod", [
    '{"action":"setitem","path":[],"key":"b","value":' + "[" * 900 + "]" * 900 + "}",
    '{"action":"setitem","path":[],"key":"b","value":' + "[" * 10000 + "]" * 10000 + "}",
    '{"action":"setitem","path":[],"key":"b","value":{"__jsonclass__":["Fraction",["1e10000000",1]]}}',
    '{"action":"setitem","path":[],"key":"b","value":' + "7" * 5000 + "}",
    '{"action":"pop","path":["a"]}',
    '{"action":"insert","path":["a"],"i":"x","x":1}',
    '{"action":"setitem","path":5,"key":"b","value":1}',
    '{"action":"teleport"}',
    "[1,2]",
], ids=["deep-900", "deep-10000", "fraction", "huge-int", "pop-no-index", "insert-bad-index", "bad-path",
        "unknown-action", "not-a-mod"])
def test_watch_against_a_hostile_publisher_prints_one_line(mod):
    async def main():
        server = await hostile_publisher([mod])
        port = server.sockets[0].getsockname()[1]
        result = await rigdeck("watch", "127.0.0.1", port, "n", "--no-reconnect")
        server.close()
        return result

    rc, out, err = run(main())
    assert out.startswith("== n @ 127.0.0.1:")
    assert rc == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("rigdeck watch: connection lost (") and len(err) < 400, err
