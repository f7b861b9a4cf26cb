"""zmq:// liveness and state streams: dead-rig detection with the default heartbeats, a rig process killed and
restarted (state resynchronised, stale commands refused), late joiners, gap resync, counted drops, NaN in state."""

import asyncio
import math
import socket

import pytest
from helpers import run, wait_until
from zmq_helpers import CountingRig, FaultProxy, hang_and_count, make_link, start_rig

from app.demo_rigs import RigProcess
from core.link import LinkState, RemoteError
from core.protocol import ExpMessage
from core.state import LiveState


def mirror_of(link):
    """A LiveState kept up to date only by the link's pushed updates (what the GUI binds to)."""
    mirror = LiveState()
    link.on_update(lambda mod: mirror.reset(mod["struct"]) if mod["action"] == "init" else mirror.apply(mod))
    return mirror


def test_a_hung_rig_is_unreachable_after_liveness_missed_heartbeats_with_the_defaults():
    async def main():
        rig, server = await start_rig()  # defaults: heartbeat 0.5 s, liveness 3
        link = make_link(server.port)
        assert (link.heartbeat, link.liveness) == (0.5, 3)
        await link.connect()
        await link.request(ExpMessage.EXPSTATUS, "x")
        return await hang_and_count(server, link)

    beats, silence = run(main())
    # it gave up after the liveness window of silence (1.5 s), having pinged about once per heartbeat into
    # it: never before, and not after many more beats than the liveness (a stalled loop only sends fewer)
    assert silence >= 1.5 and 1 <= beats <= 3 + 1, (beats, silence)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_rig_process(tmp_path, port, tag):
    rig_file = tmp_path / "cams.rig.yaml"
    rig_file.write_text(f"name: cams\nuris: ['zmq://127.0.0.1:{port}']\n"
                        "drivers:\n  recorders:\n    left: {kind: camera, rate: 100}\n")
    proc = RigProcess("cams", rig_file, tmp_path / "data", tmp_path / f"cams-{tag}.log")
    proc.wait_ready()
    return proc


def test_killed_rig_process_is_noticed_at_once_and_its_restart_resynchronises_the_state(tmp_path):
    """kill -9 of a real ``rigdeck serve``: UNREACHABLE from the dropped connection, not the heartbeats;
    after the restart on the same port the link is ONLINE again, knows it is a new incarnation, and its
    mirror shows the new rig's state."""
    port = free_port()
    first = start_rig_process(tmp_path, port, "1")
    second = None

    async def main():
        nonlocal second
        link = make_link(port, name="cams")
        mirror = mirror_of(link)
        await link.connect()
        await link.request(ExpMessage.EXPINIT, {"exp_ref": "2026-01-01_1_KS001"})
        await wait_until(lambda: mirror.get(["status"]) == 10, timeout=5)  # pushed, never polled
        old_epoch = link.rig_epoch
        first.kill()
        await wait_until(lambda: link.state is LinkState.UNREACHABLE, timeout=5)
        detected = link.last_error
        second = await asyncio.to_thread(start_rig_process, tmp_path, port, "2")
        await wait_until(lambda: link.state is LinkState.ONLINE and link.rig_epoch != old_epoch, timeout=15)
        await wait_until(lambda: mirror.get(["status"]) == 0 and link.published == mirror.raw, timeout=5)
        stats = dict(link.stats)
        # a command meant for the dead incarnation (as if sent just before the restart) is refused, not run
        link.rig_sender = f"cams#{old_epoch}"
        with pytest.raises(RemoteError) as refused:
            await link.request(ExpMessage.EXPINIT, {"exp_ref": "2026-01-01_1_KS001"})
        await link.close()
        return detected, stats, str(refused.value)

    try:
        detected, stats, refused = run(main(), timeout=60)
    finally:
        first.kill()
        if second is not None:
            second.stop()
    # noticed by the dropped connection, at once: not by the heartbeats running out (1.5 s later)
    assert detected == "connection to the rig lost; reconnecting", detected
    assert stats["rig_restarts"] == 1 and stats["snapshots"] >= 2
    assert refused.startswith("RigRestarted:")


def test_late_joiner_gets_a_snapshot_then_sequenced_changes_without_polling():
    async def main():
        rig, server = await start_rig()
        for i in range(50):  # history the late joiner never saw as changes
            rig.state.set(["counter"], i)
        early = make_link(server.port, name="early")
        early_mirror = mirror_of(early)
        await early.connect()
        await wait_until(lambda: early_mirror.get(["counter"]) == 49)
        rig.state.set(["manipulators", "1"], {"x": 0.0})
        late = make_link(server.port, name="late")
        await late.connect()
        await wait_until(lambda: late.published == rig.state.raw)
        late_mirror = mirror_of(late)  # subscribing after the snapshot: it is replayed to us
        assert late_mirror.raw == rig.state.raw
        for i in range(300):  # 100 Hz-like positions, many per batch
            rig.state.set(["manipulators", "1", "x"], float(i + 1))
            if i % 50 == 0:
                await asyncio.sleep(0.01)
        for mirror in (early_mirror, late_mirror):
            await wait_until(lambda m=mirror: m.raw == rig.state.raw)
        stats = [dict(early.stats), dict(late.stats), dict(server.stats)]
        await early.close()
        await late.close()
        await server.close()
        return stats

    early, late, server = run(main())
    assert early["snapshots"] == 1 and late["snapshots"] == 1  # one snapshot each, then only changes
    assert early["mods"] >= 301 and late["mods"] == 300 and early["gaps"] == late["gaps"] == 0
    assert server["mods_dropped"] == 0


def test_lost_batches_are_noticed_and_healed_by_a_snapshot_even_the_last_one():
    """A proxy drops 30% of MODS messages: every gap is noticed (the next batch, or the heartbeat's seq when
    the lost batch was the last), a fresh snapshot follows, and the console ends equal to the rig."""

    async def main():
        rig, server = await start_rig(options={"heartbeat": 0.2})
        proxy = await FaultProxy(server.port, drop=0.3, seed=3, only=[b'"MODS"']).start()
        link = make_link(proxy.port, heartbeat=0.2)
        mirror = mirror_of(link)
        await link.connect()
        await wait_until(lambda: link.stats["snapshots"] == 1)
        for i in range(60):
            rig.state.set(["recorders", "left", "frames"], i)
            await asyncio.sleep(0.025)  # about one batch per change
        await wait_until(lambda: mirror.raw == rig.state.raw and link.published == rig.state.raw, timeout=5)
        stats, faults = dict(link.stats), dict(proxy.counts)
        await link.close()
        await proxy.close()
        await server.close()
        return stats, faults

    stats, faults = run(main())
    assert faults["down_dropped"] >= 5
    assert stats["gaps"] >= 1 and stats["snapshots"] >= 2


def test_a_heartbeat_reveals_a_lost_final_batch():
    async def main():
        rig, server = await start_rig(options={"heartbeat": 0.2})
        proxy = await FaultProxy(server.port, drop=1.0, only=[b'"MODS"']).start()
        proxy.enabled = False
        link = make_link(proxy.port, heartbeat=0.2)
        await link.connect()
        await wait_until(lambda: link.stats["snapshots"] == 1)
        proxy.enabled = True  # the next (and last) batch vanishes
        rig.state.set(["status"], 20)
        await wait_until(lambda: proxy.counts["down_dropped"] == 1)
        proxy.enabled = False
        await wait_until(lambda: link.published == rig.state.raw, timeout=3)
        stats = dict(link.stats)
        await link.close()
        await proxy.close()
        await server.close()
        return stats

    stats = run(main())
    assert stats["gaps"] == 1 and stats["snapshots"] == 2


def test_a_full_queue_is_dropped_counted_reported_and_replaced_by_a_snapshot(caplog):
    async def main():
        rig, server = await start_rig(CountingRig(), options={"queue_limit": 20, "batch_interval": 0.3})
        link = make_link(server.port)
        mirror = mirror_of(link)
        await link.connect()
        await wait_until(lambda: link.stats["snapshots"] == 1)
        for i in range(100):  # 100 changes before the next flush: the 20-deep queue overflows
            rig.state.set(["recorders", "mic", "frames"], i)
        await wait_until(lambda: link.stats["snapshots"] >= 2 and mirror.raw == rig.state.raw, timeout=5)
        stats, server_stats = dict(link.stats), dict(server.stats)
        await link.close()
        await server.close()
        return stats, server_stats

    stats, server_stats = run(main())
    assert server_stats["mods_dropped"] >= 21
    assert stats["rig_dropped"] == server_stats["mods_dropped"]  # the console is told exactly how many
    assert any("dropped" in r.getMessage() for r in caplog.records if r.name == "transports.zmq.server")


def test_a_nan_in_the_rigs_state_reaches_consoles_which_stay_in_sync():
    """A NaN (a sensor with no reading) and infinities are state like any other: an early console gets them
    as changes, a late one in its snapshot, and both keep receiving what changes after."""

    def same(a, b):  # NaN != NaN: compare the JSON-ish trees with NaN treated as equal to itself
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        return a == b

    async def main():
        rig, server = await start_rig()
        early = make_link(server.port, name="early")
        early_mirror = mirror_of(early)
        await early.connect()
        await wait_until(lambda: early.published == rig.state.raw)
        rig.state.set(["manipulators", "1"], {"x": math.nan, "depth": math.inf, "min": -math.inf})
        await wait_until(lambda: same(early_mirror.raw, rig.state.raw))
        late = make_link(server.port, name="late")
        late_mirror = mirror_of(late)
        await late.connect()
        await wait_until(lambda: same(late_mirror.raw, rig.state.raw))  # in the snapshot
        rig.state.set(["manipulators", "1", "x"], 1.5)  # later changes still arrive
        rig.state.set(["status"], 20)
        for mirror in (early_mirror, late_mirror):
            await wait_until(lambda m=mirror: m.raw == rig.state.raw)
        stats = [dict(early.stats), dict(late.stats)]
        await early.close()
        await late.close()
        await server.close()
        return stats

    for stats in run(main()):
        assert stats["bad_frames"] == 0 and stats["gaps"] == 0 and stats["snapshots"] == 1
