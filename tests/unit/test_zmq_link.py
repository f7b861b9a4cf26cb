"""zmq:// commands: replies, error reports, exactly-once under faults, dedupe, ACKs, timeouts, liveness."""

import asyncio
import json
import logging
import re
import time

import pytest
import zmq
import zmq.asyncio
from helpers import run, wait_until
from zmq_helpers import CountingRig, FaultProxy, hang_and_count, make_link, start_rig

from app.demo_rigs import RigProcess
from core.config import parse_rig
from core.link import LinkClosed, LinkState, RemoteError, RequestTimeout
from core.protocol import ExpMessage
from transports import registry
from transports.registry import TRANSPORTS
from transports.zmq import ZmqLink, serve_zmq
from transports.zmq.wire import Envelope, decode, encode


def test_registry_builds_a_zmq_link_with_exactly_once_and_push():
    link = registry.make_link(parse_rig("r", "zmq://127.0.0.1:11002", TRANSPORTS))
    assert isinstance(link, ZmqLink) and link.exactly_once and link.pushes_status
    assert registry.server_factory("zmq") is serve_zmq


def test_request_reply_error_report_and_rtt():
    async def main():
        rig, server = await start_rig()
        link = make_link(server.port)
        states = []
        link.on_state(lambda s, e: states.append(s))
        await link.connect()
        assert await link.request(ExpMessage.EXPSTATUS, "tok") == ["tok"]
        assert await link.request(ExpMessage.EXPINIT, {"exp_ref": "x"}) == [{"status": 10}]
        with pytest.raises(RemoteError) as err:
            await link.request(ExpMessage.EXPEND, {})
        assert err.value.text == "ValueError: no session to end" and err.value.event == ExpMessage.EXPEND
        assert link.state is LinkState.ONLINE and LinkState.ONLINE in states and link.last_rtt is not None
        with pytest.raises(ValueError):  # compound events are not single commands
            await link.request(ExpMessage.EXPINIT | ExpMessage.EXPSTART)
        await link.close()
        with pytest.raises(LinkClosed):
            await link.request(ExpMessage.EXPSTATUS)
        assert link.state is LinkState.CLOSED
        await server.close()
        return rig

    rig = run(main())
    assert rig.runs[(int(ExpMessage.EXPINIT), None)] == 1


def test_exactly_once_and_in_order_on_a_real_rig_through_a_proxy_faulting_60_percent_of_messages(tmp_path):
    """A real ``rigdeck serve`` behind a proxy that drops 20%, duplicates 20% and delays 20% of the messages
    (up to 200 ms, so they arrive out of order), each way. Sessions are walked with commands that are not
    idempotent (EXPINIT of a new exp ref, EXPSTART, EXPEND); the rig's own log, one line per command it ran,
    shows every command ran exactly once and in the order sent."""
    sessions = [f"2026-11-30_{i + 1}_fault" for i in range(12)]
    # EXPSTART names its session by position, the others in a dict (EXPEND ignores it: it is there for the log)
    sent = [(event, [ref] if event == "EXPSTART" else [{"exp_ref": ref}])
            for ref in sessions for event in ("EXPINIT", "EXPSTART", "EXPEND")]
    log_path = tmp_path / "cams.log"
    rig_file = tmp_path / "cams.rig.yaml"
    rig_file.write_text("name: cams\nuris: ['zmq://127.0.0.1:0']\n")
    proc = RigProcess("cams", rig_file, tmp_path / "data", log_path, verbose=1)
    try:
        proc.wait_ready()
        port = int(proc.uris[0].rsplit(":", 1)[1])

        async def main():
            proxy = await FaultProxy(port, drop=0.2, dup=0.2, delay=0.2, max_delay=0.2, seed=11).start()
            link = make_link(proxy.port, name="cams", timeout=30, retry_initial=0.02, retry_max=0.1)
            await link.connect()
            replies = []
            for event, data in sent:
                replies.append(await link.request(ExpMessage[event], *data))
            stats, faults = dict(link.stats), dict(proxy.counts)
            await link.close()
            await proxy.close()
            return replies, stats, faults

        replies, stats, faults = run(main(), timeout=60)
    finally:
        proc.stop()
    assert [r[0]["status"] if isinstance(r[0], dict) else r[1]["status"] for r in replies] == [10, 20, 30] * 12
    ran = re.findall(r"rig cams: (EXP[A-Z]+) from \S+: (.*)", log_path.read_text())
    assert ran == [(event, repr(data)) for event, data in sent], "each command ran exactly once, in order"
    # the faults really happened, both ways, and the protocol had to work around them
    assert min(faults.get(f"{d}_{k}", 0) for d in ("up", "down") for k in ("dropped", "duplicated", "delayed")) >= 5
    assert stats["resends"] >= 10


async def _raw_dealer(port):
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


async def _recv_key(sock, key, timeout=3.0):
    deadline = time.monotonic() + timeout
    while True:
        frames = await asyncio.wait_for(sock.recv_multipart(), max(0.01, deadline - time.monotonic()))
        env = decode(frames)
        if env.key == key:
            return env


def test_duplicates_get_the_cached_reply_and_running_commands_an_ack():
    async def main():
        rig, server = await start_rig(CountingRig(start_delay=0.3))
        sock = await _raw_dealer(server.port)
        cmd = encode(Envelope(5, "raw#1", "CMD", {"event": int(ExpMessage.EXPSTART), "data": ["ref"]}))
        await sock.send_multipart(cmd)
        ack = await _recv_key(sock, "ACK")  # the reply takes 0.3 s, so the rig acknowledges first
        assert ack.value == {"re": 5}
        await sock.send_multipart(cmd)  # a duplicate while running: acknowledged again, not run
        assert (await _recv_key(sock, "ACK")).value == {"re": 5}
        first = await _recv_key(sock, "REPLY")
        await sock.send_multipart(cmd)  # a duplicate after it finished: the same reply, byte for byte
        again = await _recv_key(sock, "REPLY")
        assert first == again and first.value == {"re": 5, "data": ["ref", {"status": 20}]}
        assert server.stats["duplicates"] == 2
        # the same id from another sender is another command
        await sock.send_multipart(encode(Envelope(5, "raw#2", "CMD", {"event": 2, "data": ["ref"]})))
        assert (await _recv_key(sock, "REPLY")).value["re"] == 5
        sock.close(0)
        await server.close()
        return rig

    rig = run(main())
    assert rig.runs[(int(ExpMessage.EXPSTART), "ref")] == 2


def test_bounded_dedupe_cache_refuses_expired_duplicates_instead_of_rerunning():
    async def main():
        rig, server = await start_rig(options={"dedupe_limit": 16})
        sock = await _raw_dealer(server.port)
        for i in range(40):
            await sock.send_multipart(encode(Envelope(i, "raw#1", "CMD", {"event": 32, "data": [f"t{i}"]})))
            await _recv_key(sock, "REPLY")
        assert len(server.cache.entries) <= 16
        await sock.send_multipart(encode(Envelope(1, "raw#1", "CMD", {"event": 32, "data": ["t1"]})))
        reply = await _recv_key(sock, "REPLY")
        sock.close(0)
        await server.close()
        return rig, reply

    rig, reply = run(main())
    assert reply.value["error"].startswith("Expired:")
    assert rig.runs[(32, "t1")] == 1


def test_bad_commands_are_answered_with_errors_and_never_run():
    async def main():
        rig, server = await start_rig()
        sock = await _raw_dealer(server.port)
        answers = []
        for i, value in enumerate([{"event": 3, "data": []}, {"event": 999}, {"event": 32, "data": "x"},
                                   "notadict", {"nope": 1}]):
            await sock.send_multipart(encode(Envelope(i, "raw#1", "CMD", value)))
            answers.append((await _recv_key(sock, "REPLY")).value["error"])
        sock.close(0)
        await server.close()
        return rig, answers

    rig, answers = run(main())
    assert "Compound" in answers[0] and "999" in answers[1] and "list" in answers[2]
    assert not rig.runs


def test_commands_for_an_earlier_rig_incarnation_are_refused():
    async def main():
        rig, server = await start_rig()
        sock = await _raw_dealer(server.port)
        env = Envelope(1, "raw#1", "CMD", {"event": 32, "data": ["x"]}, to="someoldepoch")
        await sock.send_multipart(encode(env))
        reply = await _recv_key(sock, "REPLY")
        sock.close(0)
        await server.close()
        return rig, reply

    rig, reply = run(main())
    assert reply.value["error"].startswith("RigRestarted:") and not rig.runs


def test_no_rig_means_unreachable_and_a_timeout_not_a_hang():
    async def main():
        probe = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
        port = probe.bind_to_random_port("tcp://127.0.0.1")
        probe.close(0)  # a port nobody listens on
        link = make_link(port, heartbeat=0.1, liveness=3)
        await link.connect()  # never fails because the rig is down
        start = time.monotonic()
        with pytest.raises(RequestTimeout) as err:
            async with asyncio.timeout(10):  # a ceiling for "not a hang", not a speed requirement
                await link.request(ExpMessage.EXPSTATUS, timeout=0.5)
        elapsed = time.monotonic() - start
        assert link.state is LinkState.UNREACHABLE
        assert link.stats["send_refused"] >= 1  # IMMEDIATE: nothing queued for a rig that is not there
        await link.close()
        return elapsed, str(err.value)

    elapsed, text = run(main())
    assert elapsed >= 0.5 and "never answered" in text  # it waited its timeout out, and says why


def test_rig_notices_a_dead_console_logs_it_and_keeps_running(caplog):
    caplog.set_level(logging.INFO, logger="transports.zmq.server")

    async def main():
        rig, server = await start_rig(options={"heartbeat": 0.1})
        link = make_link(server.port, heartbeat=0.1)
        await link.connect()
        await link.request(ExpMessage.EXPSTART, "ref")
        # the console "crashes": its socket vanishes without a goodbye
        link._pump.stop()
        for task in link._tasks:
            task.cancel()
        link._sock.close(0)
        await wait_until(lambda: server.stats["consoles_lost"] == 1, timeout=5)
        rig.state.set(["recorders"], {"cam": {"frames": 1}})  # the rig goes on; nothing is queued for the dead
        assert all(not p.queue for p in server.peers.values())
        other = make_link(server.port)
        await other.connect()
        assert await other.request(ExpMessage.EXPSTATUS, "still") == ["still"]
        await other.close()
        await server.close()
        return rig

    rig = run(main())
    assert rig.state.get(["status"]) == 20
    assert any("considered lost; the rig keeps running" in r.getMessage() for r in caplog.records)


def test_dead_rig_detected_by_heartbeat_when_the_process_hangs():
    """A rig whose loop stops answering (TCP still up) is UNREACHABLE after heartbeat*liveness."""

    async def main():
        rig, server = await start_rig(options={"heartbeat": 0.1})
        link = make_link(server.port, heartbeat=0.1, liveness=3)
        await link.connect()
        await wait_until(lambda: link.state is LinkState.ONLINE)
        return await hang_and_count(server, link)

    beats, silence = run(main())
    assert silence >= 0.3 and 1 <= beats <= 3 + 1, (beats, silence)  # 3 missed beats of 0.1 s, counted


def test_envelope_fields_are_json_with_id_sender_key_value_ts():
    frames = encode(Envelope(3, "c#1", "CMD", {"event": 32, "data": [1]}, 12.5))
    assert json.loads(frames[0]) == {"id": 3, "sender": "c#1", "key": "CMD", "value": {"event": 32, "data": [1]},
                                     "ts": 12.5}


def test_an_idle_rig_is_heard_through_its_heartbeats():
    """No request, no state change: the rig's heartbeats alone must keep "last heard" moving."""

    async def main():
        rig, server = await start_rig(options={"heartbeat": 0.1})
        link = make_link(server.port, heartbeat=0.1)
        heard = []
        link.on_heard(heard.append)
        await link.connect()
        await wait_until(lambda: link.state is LinkState.ONLINE)
        replies = link.last_reply
        mods = []
        link.on_update(mods.append)
        start = len(heard)
        # several heartbeat periods, each heard, beyond any pushed mod (a resync) meanwhile
        await wait_until(lambda: len(heard) - start - len(mods) >= 5)
        await link.close()
        await server.close()
        return link.last_reply == replies

    assert run(main())  # and no reply came: what was heard were heartbeats
