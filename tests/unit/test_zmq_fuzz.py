"""Fuzzed zmq:// frames (hypothesis): the decoder only ever raises WireError (deep nesting, integers of thousands
of digits and huge strings included), and neither a rig nor a console crashes or wedges: after every burst of
junk each still answers a real command; a flood of junk is logged as one line."""

import asyncio
import json
import logging
import math

import pytest
import zmq
import zmq.asyncio
from helpers import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zmq_helpers import make_link, start_rig

from core.link import LinkState
from core.protocol import ExpMessage
from transports.zmq.wire import CONSOLE_KEYS, RIG_KEYS, Envelope, WireError, decode, encode

huge_ints = st.integers(-2**4000, 2**4000) | st.sampled_from([2**4000, -2**4000, 2**1024, 10**309])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | huge_ints | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
keys = st.sampled_from(sorted(CONSOLE_KEYS | RIG_KEYS)) | st.text(max_size=6)
bodies = st.fixed_dictionaries(
    {"id": st.integers(-5, 2**64) | st.booleans() | st.text(max_size=3), "sender": st.text(max_size=12),
     "key": keys, "value": json_values | st.fixed_dictionaries({"re": st.integers(0, 50), "event": st.integers(-1, 300),
                                                                 "data": json_values, "seq": st.integers(-1, 99),
                                                                 "first": st.integers(-1, 99),
                                                                 "mods": st.lists(json_values, max_size=3)})},
    optional={"ts": json_values, "to": json_values},
)
def nested(depth: int, inner: str = "1", kinds: str = "[]") -> str:
    return kinds[0] * depth + inner + kinds[1] * depth


#: JSON text hypothesis would rarely build: nesting far past any stack, numbers past float and past str()
hostile_values = st.one_of(
    st.builds(nested, st.integers(90, 10_000), st.just("1"), st.sampled_from(["[]", "{}"]))
    .map(lambda t: t.replace("{", '{"k":') if t.startswith("{") else t),
    st.integers(300, 20_000).map(lambda n: "9" * n),  # 4300+ digits: Python refuses to convert them
    st.sampled_from([str(2**4000), "-" + str(2**4000), "1e400", "NaN", "-Infinity", '"' + "x" * 100_000 + '"']),
)
TEMPLATES = {"id": '{"id":X,"sender":"s","key":"CMD","ts":0}', "value": '{"id":1,"sender":"s","key":"CMD","value":X}',
             "ts": '{"id":1,"sender":"s","key":"CMD","ts":X}'}
hostile_bodies = st.builds(lambda template, text: template.replace("X", text).encode(),
                           st.sampled_from(sorted(TEMPLATES.values())), hostile_values)
messages = st.one_of(
    st.lists(st.binary(max_size=64), max_size=4),  # raw bytes
    st.builds(lambda body, blob: [json.dumps(body).encode(), *blob], bodies, st.lists(st.binary(max_size=16),
                                                                                       max_size=2)),
    hostile_bodies.map(lambda frame: [frame]),
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])


@settings(max_examples=1000, deadline=None)
@given(messages)
def test_decode_raises_only_wire_error(frames):
    try:
        env = decode(frames)
    except WireError:
        return
    assert isinstance(env.id, int) and isinstance(env.sender, str) and isinstance(env.key, str)
    assert math.isfinite(env.ts)
    encode(Envelope(env.id, env.sender, env.key, None, env.ts))  # what was accepted can be sent back


@pytest.mark.parametrize("frame, why", [
    (f'{{"id":1,"sender":"s","key":"CMD","value":{nested(10_000)},"ts":0}}', "nested too deeply"),
    (f'{{"id":1,"sender":"s","key":"CMD","value":{nested(101)},"ts":0}}', "nested deeper than 100"),
    (f'{{"id":1,"sender":"s","key":"CMD","value":0,"ts":{2**4000}}}', "ts must be a finite number"),
    (f'{{"id":{2**4000},"sender":"s","key":"CMD","value":0,"ts":0}}', "an integer of 4001 bits"),
    ('{"id":1,"sender":"s","key":"CMD","value":0,"ts":NaN}', "ts must be a finite number"),
    ('{"id":1,"sender":"s","key":"CMD","value":0,"ts":1e400}', "ts must be a finite number"),
    ('{"id":1,"sender":"s","key":"CMD","value":' + "9" * 5000 + "}", "not acceptable JSON"),
    ('{"id":1,"sender":"' + "s" * 100_000 + '","key":"CMD"}', "sender must be"),
    ('{"id":1,"sender":"s","key":"' + "k" * 100_000 + '"}', "str of length 100000"),
    ('"' + "x" * (8 * 1024 * 1024) + '"', "exceeds"),
])
def test_hostile_frames_get_a_wire_error_naming_the_problem(frame, why):
    with pytest.raises(WireError, match=why):
        decode([frame.encode()], CONSOLE_KEYS)


def test_non_finite_numbers_travel_both_ways_as_the_same_floats():
    frames = encode(Envelope(1, "rig#1", "REPLY", {"re": 1, "data": [math.nan, math.inf, -math.inf, 2**4000]}))
    data = decode(frames, RIG_KEYS).value["data"]
    assert math.isnan(data[0]) and data[1:] == [math.inf, -math.inf, 2**4000]
    with pytest.raises(WireError, match="not JSON-serialisable"):
        encode(Envelope(1, "rig#1", "REPLY", {"re": 1, "data": [object()]}))


class Loop:
    """One event loop for all examples: a rig, a console link, a raw DEALER and a fake rig's ROUTER."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.go(self._start())

    def go(self, coro, timeout=10):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    async def _start(self):
        self.rig, self.server = await start_rig()
        self.link = make_link(self.server.port)
        await self.link.connect()
        ctx = zmq.asyncio.Context.instance()
        self.raw = ctx.socket(zmq.DEALER)
        self.raw.linger = 0
        self.raw.connect(f"tcp://127.0.0.1:{self.server.port}")
        # a fake rig for the console-side fuzz
        self.fake = ctx.socket(zmq.ROUTER)
        self.fake.linger = 0
        fake_port = self.fake.bind_to_random_port("tcp://127.0.0.1")
        self.victim = make_link(fake_port, name="victim", timeout=3)
        await self.victim.connect()
        self.victim_id = (await self.fake.recv_multipart())[0]  # its HELLO tells us its routing id
        self.incarnation = 0

    async def drain(self, sock):
        while await sock.poll(0):
            await sock.recv_multipart()

    async def rig_still_answers(self):
        await self.drain(self.raw)
        token = f"alive-{self.incarnation}"
        self.incarnation += 1
        assert await self.link.request(ExpMessage.EXPSTATUS, token, timeout=5) == [token]
        assert self.server._pump.running and not any(t.done() for t in self.server._tasks)

    async def console_still_answers(self):
        """The fake rig answers one real command from the victim link (as a fresh incarnation)."""
        self.incarnation += 1
        sender = f"fake#{self.incarnation}"
        # a link sends commands only to a rig it has heard from: introduce this incarnation first
        await self.fake.send_multipart([self.victim_id, *encode(Envelope(0, sender, "HB"))])
        request = asyncio.ensure_future(self.victim.request(ExpMessage.EXPSTATUS, "ok", timeout=3))
        while True:
            ident, *frames = await self.fake.recv_multipart()
            env = decode(frames)
            if env.key == "CMD":
                break
        reply = Envelope(1, sender, "REPLY", {"re": env.id, "data": ["ok"]})
        await self.fake.send_multipart([ident, *encode(reply)])
        assert await request == ["ok"]
        assert self.victim.state is LinkState.ONLINE and self.victim._pump.running
        assert not any(t.done() for t in self.victim._tasks)

    def close(self):
        async def shut():
            await self.link.close()
            await self.victim.close()
            self.raw.close(0)
            self.fake.close(0)
            await self.server.close()

        self.go(shut())
        self.loop.close()


def test_fuzzed_frames_never_crash_or_wedge_the_rig_or_the_console():
    env = Loop()
    try:
        @FUZZ
        @given(st.lists(messages, min_size=1, max_size=5))
        def burst(batch):
            async def one():
                for frames in batch:
                    if frames:  # libzmq cannot send an empty multipart message
                        await env.raw.send_multipart(frames)
                        await env.fake.send_multipart([env.victim_id, *frames])
                await env.rig_still_answers()
                await env.console_still_answers()

            env.go(one())

        burst()
        assert env.server.stats["bad_frames"] > 0 and env.victim.stats["bad_frames"] > 0
    finally:
        env.close()


def test_a_flood_of_bad_frames_is_one_log_line_and_the_rig_still_answers(caplog):
    caplog.set_level(logging.INFO)
    env = Loop()
    try:
        async def flood():
            for i in range(200):
                await env.raw.send_multipart([nested(5000 + i).encode()])
                await env.fake.send_multipart([env.victim_id, f'{{"id":{2**4000},"sender":"x","key":"HB"}}'.encode()])
            # the rig's answer to the console (another socket) can overtake the last bad frames: wait for them
            await wait_until(lambda: env.server.stats["bad_frames"] >= 200 and env.victim.stats["bad_frames"] >= 200,
                             what="all 200 bad frames counted at each end")
            await env.rig_still_answers()
            await env.console_still_answers()

        env.go(flood(), timeout=30)
    finally:
        env.close()
    lines = [r for r in caplog.records if r.name.startswith("transports.zmq")]
    assert not any(r.exc_info for r in lines)  # no traceback
    assert len([r for r in lines if "bad message" in r.getMessage()]) == 2  # one line from each end
