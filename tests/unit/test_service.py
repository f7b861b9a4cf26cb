"""RigService: the ExpStatus state machine, idempotency, out-of-order errors, reply shapes, live state."""

import asyncio
import datetime as dt
import json
import logging

import pytest
from helpers import run, wait_until

from core.drivers.manipulator import SimulatedManipulator, Vec4
from core.drivers.recorder import SimulatedRecorder, read_recording
from core.link import error_text
from core.protocol import ExpMessage as M
from core.service import COMMANDS_FILE, InjectedFailure, OutOfOrder, RigService, ServiceError

DAY = dt.date(2026, 11, 23)
REF = "2026-11-23_1_KS001"


def make(tmp_path, **kwargs):
    kwargs.setdefault("recorders", {"cam": SimulatedRecorder("cam", "camera", rate=100.0, chunk_interval=0.01)})
    return RigService("rig1", data_dir=tmp_path, today=lambda: DAY, **kwargs)


async def full_session(svc, ref=REF):
    replies = {}
    replies["init"] = await svc.handle(M.EXPINIT, [{"exp_ref": ref}], "test")
    replies["start"] = await svc.handle(M.EXPSTART, [ref, None], "test")
    if svc.recorders:
        await wait_until(lambda: svc.state.get(["recorders", "cam", "frames"], 0) >= 3, what="3 frames recorded")
    replies["status"] = await svc.handle(M.EXPSTATUS, [20], "test")
    replies["end"] = await svc.handle(M.EXPEND, [[]], "test")
    return replies


def test_happy_path_reply_shapes_and_files(tmp_path):
    async def main():
        svc = make(tmp_path)
        await svc.start()
        info = await svc.handle(M.EXPINFO, [0, {"subject": "KS001", "main_sync": False, "exp_ref": None}], "t")
        replies = await full_session(svc)
        cleanup = await svc.handle(M.EXPCLEANUP, [None], "t")
        await svc.close()
        return svc, info, replies, cleanup

    svc, info, r, cleanup = run(main())
    assert info[0] == 0 and info[1]["main_sync"] is False and info[1]["exp_ref"] is None
    assert info[1]["spec_version"] == "1.0.0" and "cameras" in info[1]["experiment_description"]["devices"]
    assert r["init"] == [{"status": 10, "exp_ref": REF}]
    assert r["start"] == [REF, {"status": 20}]
    assert r["status"] == [20]
    assert r["end"][0]["status"] == 30 and r["end"][0]["recorders"]["cam"]["frames"] >= 3
    assert cleanup == [{"status": 0}]
    path = tmp_path / "KS001" / "2026-11-23" / "001" / "raw_video_data" / "cam.camera.rdrec"
    frames, finfo = read_recording(path)
    assert finfo["complete"] and len(frames) == r["end"][0]["recorders"]["cam"]["frames"]
    assert svc.state.get(["status"]) == 0 and svc.state.get(["exp_ref"]) is None


def test_repeats_are_idempotent_and_never_restart_recorders(tmp_path):
    async def main():
        svc = make(tmp_path)
        cam = svc.recorders["cam"]
        starts = []
        real_start = cam.start

        async def counting_start(*a, **k):
            starts.append(a)
            return await real_start(*a, **k)

        cam.start = counting_start
        a = await svc.handle(M.EXPINIT, [{"exp_ref": REF}], "t")
        b = await svc.handle(M.EXPINIT, [{"exp_ref": REF}], "t")
        # two EXPSTARTs at once (a retry racing the original): one start only
        c, d = await asyncio.gather(svc.handle(M.EXPSTART, [REF, None], "t"), svc.handle(M.EXPSTART, [REF, None], "t"))
        e = await svc.handle(M.EXPINIT, [{"exp_ref": REF}], "t")  # late init retry while running
        f = await svc.handle(M.EXPEND, [[]], "t")
        g = await svc.handle(M.EXPEND, [[]], "t")
        return starts, a, b, c, d, e, f, g

    starts, a, b, c, d, e, f, g = run(main())
    assert len(starts) == 1
    assert a == b == [{"status": 10, "exp_ref": REF}]
    assert c == d == [REF, {"status": 20}]
    assert e == [{"status": 20, "exp_ref": REF}]
    assert f[0]["status"] == g[0]["status"] == 30 and f[0]["recorders"] == g[0]["recorders"]
    # the rig's own record of what ran, repeats included, in order, next to the session's data
    lines = [json.loads(line) for line in (tmp_path / "KS001" / "2026-11-23" / "001" / COMMANDS_FILE).open()]
    assert [(x["n"], x["event"], x["status"], x["exp_ref"]) for x in lines] == [
        (1, "EXPINIT", 10, REF), (2, "EXPINIT", 10, REF), (3, "EXPSTART", 20, REF), (4, "EXPSTART", 20, REF),
        (5, "EXPINIT", 20, REF), (6, "EXPEND", 30, REF), (7, "EXPEND", 30, REF)]
    assert {x["peer"] for x in lines} == {"t"}


@pytest.mark.parametrize("steps, event, data, match", [
    ([], M.EXPSTART, [REF, None], "EXPSTART before EXPINIT"),
    ([], M.EXPEND, [[]], "EXPEND with no session"),
    (["init"], M.EXPSTART, ["2026-11-23_2_KS001", None], "EXPSTART for .*_2_KS001, but rig rig1 is INITIALIZED"),
    (["init", "start"], M.EXPINIT, [{"exp_ref": "2026-11-23_2_KS001"}], "is RUNNING session .*send EXPEND"),
    (["init", "start"], M.EXPCLEANUP, [None], "EXPCLEANUP while rig rig1 is RUNNING"),
    (["init", "start", "end"], M.EXPSTART, [REF, None], "already stopped"),
])
def test_out_of_order_is_a_clear_error(tmp_path, steps, event, data, match):
    async def main():
        svc = make(tmp_path, recorders={})
        actions = {"init": (M.EXPINIT, [{"exp_ref": REF}]), "start": (M.EXPSTART, [REF, None]), "end": (M.EXPEND, [[]])}
        for step in steps:
            await svc.handle(*actions[step], "t")
        before = svc.status
        with pytest.raises(OutOfOrder, match=match) as info:
            await svc.handle(event, data, "t")
        assert svc.status == before  # a refused command changes nothing
        assert svc.state.get(["last_error"]).startswith("OutOfOrder: ")
        return error_text(info.value)

    text = run(main())
    assert text.startswith("OutOfOrder: ")


@pytest.mark.parametrize("data, match", [
    ([{"exp_ref": "yesterday"}], "EXPINIT exp_ref: Malformed experiment reference"),
    ([], "EXPINIT needs an exp_ref"),
    ([{"exp_ref": None}], "EXPINIT needs an exp_ref"),
])
def test_bad_expinit_data(tmp_path, data, match):
    async def main():
        with pytest.raises(ServiceError, match=match):
            await make(tmp_path).handle(M.EXPINIT, data, "t")

    run(main())


def test_exp_ref_forms_and_new_session_after_stop_without_cleanup(tmp_path):
    """iblrig never sends EXPCLEANUP: the next session's EXPINIT arrives in STOPPED."""
    async def main():
        svc = make(tmp_path, recorders={})
        await svc.handle(M.EXPINIT, [REF], "t")
        await svc.handle(M.EXPSTART, [{"date": "2026-11-23", "sequence": 1, "subject": "KS001"}, None], "t")
        await svc.handle(M.EXPEND, [[]], "t")
        second = await svc.handle(M.EXPINIT, [{"exp_ref": {"date": "2026-11-23", "sequence": 2, "subject": "KS001"}}],
                                  "t")
        start = await svc.handle(M.EXPSTART, [None, None], "t")  # null ref: the initialized one
        return second, start

    second, start = run(main())
    assert second == [{"status": 10, "exp_ref": "2026-11-23_2_KS001"}]
    assert start == ["2026-11-23_2_KS001", {"status": 20}]


def test_main_sync_hands_out_exp_ref_once_per_session(tmp_path):
    async def main():
        svc = make(tmp_path, main_sync=True, recorders={})
        info1 = await svc.handle(M.EXPINFO, [0, {"subject": "KS001", "main_sync": False}], "t")
        info2 = await svc.handle(M.EXPINFO, [0, {"subject": "KS001"}], "t")  # repeat: same number
        init = await svc.handle(M.EXPINIT, [{"exp_ref": info1[1]["exp_ref"]}], "t")
        await svc.handle(M.EXPSTART, [None, None], "t")
        running_info = await svc.handle(M.EXPINFO, [20, {"subject": "KS001"}], "t")
        await svc.handle(M.EXPEND, [[]], "t")
        info3 = await svc.handle(M.EXPINFO, [0, {"subject": "KS001"}], "t")  # next session
        return info1, info2, init, running_info, info3

    info1, info2, init, running_info, info3 = run(main())
    assert info1[1]["main_sync"] is True and info1[1]["exp_ref"] == REF
    assert "sync" in info1[1]["experiment_description"]
    assert info2[1]["exp_ref"] == REF and init[0]["exp_ref"] == REF
    assert running_info[0] == 20 and running_info[1]["exp_ref"] == REF
    assert info3[1]["exp_ref"] == "2026-11-23_2_KS001"


def test_expinfo_creates_nothing_on_disk_expinit_makes_the_folder(tmp_path):
    """Any peer can send EXPINFO, as often as it likes, with any subject: a main-sync rig hands out
    numbers without writing anything; the session folder appears when a session is initialised."""
    async def main():
        svc = make(tmp_path / "data", main_sync=True, recorders={})
        for n in range(200):
            reply = await svc.handle(M.EXPINFO, [0, {"subject": f"S{n}"}], "hostile")
            assert reply[1]["exp_ref"] == f"2026-11-23_1_S{n}"
        assert not (tmp_path / "data").exists() or list((tmp_path / "data").rglob("*")) == []
        info = await svc.handle(M.EXPINFO, [0, {"subject": "KS001"}], "console")
        ref = info[1]["exp_ref"]
        await svc.handle(M.EXPINIT, [{"exp_ref": ref}], "console")
        return ref

    ref = run(main())
    assert ref == REF
    assert [p.relative_to(tmp_path / "data").as_posix() for p in sorted((tmp_path / "data").rglob("*"))] == \
        ["KS001", "KS001/2026-11-23", "KS001/2026-11-23/001", f"KS001/2026-11-23/001/{COMMANDS_FILE}"]


def test_console_makes_a_rig_main_sync_for_the_session(tmp_path):
    async def main():
        aux = make(tmp_path, recorders={})
        promoted = await aux.handle(M.EXPINFO, [0, {"subject": "S1", "main_sync": True}], "t")
        await aux.handle(M.EXPCLEANUP, [None], "t")
        back = await aux.handle(M.EXPINFO, [0, {"subject": "S1"}], "t")
        main_rig = make(tmp_path / "m", main_sync=True, recorders={})
        demoted = await main_rig.handle(M.EXPINFO, [0, {"subject": "S1", "main_sync_rig": "other"}], "t")
        chosen = await aux.handle(M.EXPINFO, [0, {"subject": "S1", "main_sync_rig": "rig1"}], "t")
        return promoted, back, demoted, chosen

    promoted, back, demoted, chosen = run(main())
    assert promoted[1]["main_sync"] is True and promoted[1]["exp_ref"] == "2026-11-23_1_S1"
    assert back[1]["main_sync"] is False and back[1]["exp_ref"] is None
    assert demoted[1]["main_sync"] is False and demoted[1]["exp_ref"] is None
    assert chosen[1]["main_sync"] is True and chosen[1]["exp_ref"] == "2026-11-23_2_S1"


def test_interrupt_stops_recording_from_any_state(tmp_path):
    async def main():
        svc = make(tmp_path)
        idle = await svc.handle(M.EXPINTERRUPT, [None], "t")
        await svc.handle(M.EXPINIT, [{"exp_ref": REF}], "t")
        await svc.handle(M.EXPSTART, [REF, None], "t")
        err = {"error": "ValueError", "message": "boom", "traceback": "", "file": "x.py", "line_no": [1, 2]}
        stopped = await svc.handle(M.EXPINTERRUPT, [[err]], "t")
        return svc, idle, stopped

    svc, idle, stopped = run(main())
    assert idle == [{"status": 0, "exp_ref": None}]
    assert stopped[0]["status"] == 30 and not svc.recorders["cam"].running
    assert read_recording(svc.recorders["cam"].path)[1]["complete"]


def test_alyx_relay_and_tokens_never_logged_or_published(tmp_path, caplog):
    secret = "s3cr3t-token-value"

    async def main():
        svc = make(tmp_path, recorders={})
        empty = await svc.handle(M.ALYX, [None, {}], "127.0.0.1:5000")
        stored = await svc.handle(M.ALYX, ["https://alyx.example.org", {"alice": {"token": secret}}], "127.0.0.1:5000")
        given = await svc.handle(M.ALYX, [None, {}], "127.0.0.1:5000")
        with pytest.raises(ServiceError) as bad:
            await svc.handle(M.ALYX, ["u", {"a": {"token": secret}, "b": {"token": secret}}], "127.0.0.1:5000")
        configured = RigService("r2", data_dir=tmp_path, alyx={"base_url": "https://a", "user": "bob",
                                                               "token": secret})
        from_config = await configured.handle(M.ALYX, [None, {}], "127.0.0.1:5000")
        return svc, empty, stored, given, str(bad.value), configured, from_config

    with caplog.at_level(logging.DEBUG):
        svc, empty, stored, given, bad, configured, from_config = run(main())
    assert empty == [None, {}]
    assert stored == ["https://alyx.example.org", {}]
    assert given == ["https://alyx.example.org", {"alice": {"token": secret}}]
    assert from_config == ["https://a", {"bob": {"token": secret}}]
    assert secret not in caplog.text and secret not in bad
    assert secret not in repr(svc.state.snapshot()) and secret not in repr(configured.state.snapshot())
    assert svc.state.get(["alyx"]) == {"base_url": "https://alyx.example.org", "user": "alice", "has_token": True}


def test_fail_on_and_delay_on_hooks(tmp_path):
    async def main():
        svc = make(tmp_path, recorders={}, fail_on={"EXPSTART"}, delay_on={"EXPINIT": 0.05})
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        init = asyncio.create_task(svc.handle(M.EXPINIT, [{"exp_ref": REF}], "t"))
        status = await svc.handle(M.EXPSTATUS, [0], "t")  # a delayed command does not block status
        assert not init.done()
        await init
        assert loop.time() - t0 >= 0.05
        with pytest.raises(InjectedFailure, match="set to fail on EXPSTART"):
            await svc.handle(M.EXPSTART, [REF, None], "t")
        return svc, status

    svc, status = run(main())
    assert status == [0] and svc.status == 10


def test_recorder_start_failure_leaves_rig_initialized(tmp_path):
    async def main():
        good = SimulatedRecorder("good", "microphone", rate=100.0)
        svc = make(tmp_path, recorders={"good": good, "dup": SimulatedRecorder("good", "microphone", rate=100.0)})
        await svc.handle(M.EXPINIT, [{"exp_ref": REF}], "t")
        with pytest.raises(ServiceError, match="could not start recording: RecorderError: .*already exists"):
            await svc.handle(M.EXPSTART, [REF, None], "t")
        return svc, good

    svc, good = run(main())
    assert svc.status == 10 and not good.running


def test_manipulator_positions_in_live_state(tmp_path):
    async def main():
        manip = SimulatedManipulator(ids=("1", "2"), update_hz=50)
        svc = make(tmp_path, recorders={}, manipulator=manip)
        mods = []
        svc.state.subscribe(mods.append)
        await svc.start()
        await manip.set_position("1", Vec4(1, 2, 3, 0), speed=100.0)
        await svc.close()
        return svc, mods

    svc, mods = run(main())
    assert svc.state.get(["manipulators", "1"]) == {"x": 1.0, "y": 2.0, "z": 3.0, "w": 0.0, "moving": False,
                                                     "inside_brain": False}
    assert svc.state.get(["manipulators", "2", "x"]) == 0.0
    assert any(m.get("key") == "moving" and m.get("value") is True for m in mods)


def test_unknown_or_compound_event_refused(tmp_path):
    async def main():
        svc = make(tmp_path)
        with pytest.raises(ValueError):
            await svc.handle(M.EXPEND | M.EXPINTERRUPT, [], "t")

    run(main())
