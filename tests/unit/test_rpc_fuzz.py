"""Fuzzed PYON, pc_rpc and sync_struct input (hypothesis): each decoder raises only its protocol's error
type (PyonError; ProtocolError or ConnectionError for the line readers), whatever arrives — random text,
markers with random arguments, nesting 10,000 deep, integers up to 2**4000 — and a peer keeps being
served after it."""

import asyncio
import json

from helpers import run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rpc_helpers import Target

from transports.rpc import pyon
from transports.rpc.server import RpcServer
from transports.rpc.sync_struct import Subscriber
from transports.rpc.wire import ProtocolError, decode_line, read_line

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MARKERS = ["tuple", "dict", "OrderedDict", "set", "frozenset", "complex", "bytes", "slice", "Fraction",
           "nparray", "npscalar", "nope"]
big_ints = st.integers(-(2**4000), 2**4000)
scalars = (st.none() | st.booleans() | big_ints | st.floats() | st.text(max_size=12)
           | st.sampled_from(["<i4", "|b1", "<U2", ">c8", "|O", "|V0", "<M8[ns]", "(3,)i4", "AAAA", "1e10000000"]))
json_trees = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
                   | st.builds(lambda name, args: {"__jsonclass__": [name, args]}, st.sampled_from(MARKERS),
                               st.lists(inner, max_size=4))),
    max_leaves=20,
)


def deep(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    if kind == "dict":
        return '{"a":' * depth + "1" + "}" * depth
    return '{"__jsonclass__":["tuple",[' * depth + "[]" + "]]}" * depth


DEEP = [deep(n, kind) for n in (99, 101, 1000, 10_000) for kind in ("list", "dict", "marker")]


def decodes_or_refuses(text) -> None:
    try:
        pyon.decode(text)
    except pyon.PyonError:
        pass


@FUZZ
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_random_text_is_decoded_or_refused_with_a_pyon_error(text):
    decodes_or_refuses(text)


@FUZZ
@given(json_trees)
def test_random_markers_are_decoded_or_refused_with_a_pyon_error(tree):
    decodes_or_refuses(json.dumps(tree))


@settings(max_examples=100, deadline=None)
@given(big_ints)
def test_integers_up_to_2_4000_round_trip_or_are_refused_clearly(n):
    text = pyon.encode(n)
    if len(text.lstrip("-")) <= pyon.MAX_INT_DIGITS:
        assert pyon.decode(text) == n
        assert pyon.decode(pyon.encode({"__jsonclass__": 0, "k": (n, n)})) is not None
    else:
        decodes_or_refuses(text)


def test_nesting_10000_deep_is_refused_and_100_deep_accepted():
    for text in DEEP:
        decodes_or_refuses(text)
    assert pyon.decode(deep(99, "list")) is not None
    for kind in ("list", "dict", "marker"):
        try:
            pyon.decode(deep(10_000, kind))
        except pyon.PyonError as ex:
            assert "nested" in str(ex)
        else:
            raise AssertionError(f"{kind} nested 10000 deep was accepted")


def lines_for_readers():
    return (st.binary(max_size=120).map(lambda b: b.replace(b"\n", b" ") + b"\n")
            | json_trees.map(lambda t: json.dumps(t).encode() + b"\n")
            | st.sampled_from([d.encode() + b"\n" for d in DEEP])
            | big_ints.map(lambda n: b'{"action":"setitem","path":[],"key":"k","value":%d}\n' % n))


async def read_everything(data: bytes, what: str) -> None:
    """The shared line reader on a real StreamReader: a line decodes or raises ProtocolError; an over-long
    line or EOF ends the stream with ProtocolError/ConnectionError (framing lost: callers hang up)."""
    reader = asyncio.StreamReader(limit=4096)
    reader.feed_data(data)
    reader.feed_eof()
    while True:
        try:
            line = await read_line(reader, what)
        except ConnectionError:  # ProtocolError included
            return
        try:
            decode_line(line, what)
        except ProtocolError:
            continue


@FUZZ
@given(st.lists(lines_for_readers(), max_size=5))
def test_line_reader_raises_only_protocol_errors(lines):
    run(read_everything(b"".join(lines), "a line"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(lines_for_readers(), min_size=1, max_size=6))
def test_sync_struct_subscriber_survives_any_mods(lines):
    """A publisher sends an init and then junk: the subscriber ends that connection with a ProtocolError
    (or keeps a valid copy), its callbacks never see a bad mod, and it never raises anything else."""
    async def main():
        async def publish(reader, writer):
            await reader.readline()
            await reader.readline()
            writer.write(b'{"action":"init","struct":{"a":[1,2],"d":{}}}\n' + b"".join(lines))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(publish, "127.0.0.1", 0)
        seen = []
        sub = Subscriber("n", notify_cb=seen.append)
        await sub.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        await asyncio.wait_for(sub._task, 10)  # ends when the connection does: no reconnect asked
        server.close()
        assert sub.last_error is not None and seen[0]["action"] == "init"
        return sub.last_error

    run(main())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(lines_for_readers(), min_size=1, max_size=6))
def test_pc_rpc_server_answers_every_line_and_goes_on(lines):
    """Every junk request line gets a reply line ("failed" unless it happens to be a valid call), and the
    same connection then answers a real call."""
    async def main():
        server = RpcServer({"tgt": Target()})
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"ARTIQ pc_rpc\ntgt pyon_v2\n")
        await reader.readline()
        await reader.readline()
        for line in lines:
            writer.write(line)
            reply = json.loads(await asyncio.wait_for(reader.readline(), 10))
            assert reply["status"] in ("ok", "failed")
        writer.write(b'{"action":"call","name":"echo","args":[5],"kwargs":{}}\n')
        assert json.loads(await asyncio.wait_for(reader.readline(), 10)) == {"status": "ok", "ret": 5}
        writer.close()
        await server.close()
        return server.rejected

    assert run(main()) == 0


def test_integer_bound_holds_where_python_has_its_own_limit_off():
    """``-X int_max_str_digits=0`` turns Python's limit off: PYON's own hook then refuses long literals."""
    import subprocess
    import sys

    code = ("from transports.rpc import pyon\n"
            "assert pyon.decode('9' * 4300) == int('9' * 4300)\n"
            "try:\n    pyon.decode('[' + '9' * 4301 + ']')\nexcept pyon.PyonError as ex:\n    print(ex)\n")
    out = subprocess.run([sys.executable, "-X", "int_max_str_digits=0", "-c", code], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "at most 4300 digits" in out
